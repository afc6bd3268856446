//! `when` keys: each key with its match kinds and missing attributes (the matrix also checks
//! each `notValues` form), then conditions in whole policies. JWTs are `alice` (a list claim
//! `groups`, nested `realm_access`, audiences `shop-api` and `web`, presenter `web-client`),
//! `bob` (a string claim `groups`, no presenter) and `bare` (no principal); see `jwt`.

use crate::{MatchCase, Row};

const FE: &str = "GET a/ as=cluster.local/ns/web/sa/frontend";
const PLAIN: &str = "GET a/";
const ALICE: &str = "GET a/ jwt=alice";
const BOB: &str = "GET a/ jwt=bob";

pub const MATRIX: &[MatchCase] = &[
    // request.headers[...]: names ignore case; several values match when any does; `*` is
    // presence of the header, even empty.
    (
        "when.request.headers[x-user]",
        "alice",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "alice",
        "GET a/ h:X-User=alice",
        true,
    ),
    (
        "when.request.headers[X-User]",
        "alice",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "Alice",
        "GET a/ h:x-user=alice",
        false,
    ),
    ("when.request.headers[x-user]", "alice", PLAIN, false),
    (
        "when.request.headers[x-user]",
        "alice",
        "GET a/ h:x-user=bob h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "alice",
        "GET a/ h:x-user=bob h:x-other=alice",
        false,
    ),
    (
        "when.request.headers[x-user]",
        "ali*",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "*ice",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "*ice",
        "GET a/ h:x-user=bob",
        false,
    ),
    (
        "when.request.headers[x-user]",
        "*",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "*",
        r#"GET a/ h:x-user="""#,
        true,
    ),
    ("when.request.headers[x-user]", "*", PLAIN, false),
    (
        "when.request.headers[x-user]",
        "*lic*",
        "GET a/ h:x-user=alice",
        true,
    ),
    (
        "when.request.headers[x-user]",
        "*lic*",
        "GET a/ h:x-user=bob",
        false,
    ),
    // Pseudo-headers read the request line (:path with its query).
    (
        "when.request.headers[:authority]",
        "shop.example.com:8080",
        "GET shop.example.com:8080/",
        true,
    ),
    ("when.request.headers[:method]", "POST", "POST a/", true),
    ("when.request.headers[:method]", "POST", "GET a/", false),
    ("when.request.headers[:path]", "/a?b=1", "GET h/a?b=1", true),
    // source.ip is the direct peer, remote.ip the original client.
    ("when.source.ip", "10.0.0.0/24", PLAIN, true),
    (
        "when.source.ip",
        "203.0.113.0/24",
        "GET a/ remote=203.0.113.7",
        false,
    ),
    (
        "when.remote.ip",
        "203.0.113.7",
        "GET a/ remote=203.0.113.7",
        true,
    ),
    (
        "when.remote.ip",
        "10.0.0.5",
        "GET a/ remote=203.0.113.7",
        false,
    ),
    ("when.remote.ip", "10.0.0.5", PLAIN, true),
    // source.namespace / source.principal: need a peer identity.
    ("when.source.namespace", "web", FE, true),
    ("when.source.namespace", "web", PLAIN, false),
    ("when.source.namespace", "w*", FE, true),
    ("when.source.namespace", "*", PLAIN, false),
    (
        "when.source.principal",
        "cluster.local/ns/web/sa/frontend",
        FE,
        true,
    ),
    (
        "when.source.principal",
        "cluster.local/ns/web/sa/admin",
        FE,
        false,
    ),
    ("when.source.principal", "*/sa/frontend", FE, true),
    ("when.source.principal", "*/ns/web/*", FE, true),
    ("when.source.principal", "*", PLAIN, false),
    // destination.ip / destination.port
    ("when.destination.ip", "10.1.0.0/16", PLAIN, true),
    ("when.destination.ip", "10.2.0.0/16", PLAIN, false),
    ("when.destination.port", "8080", PLAIN, true),
    ("when.destination.port", "80", PLAIN, false),
    // request.auth.*: need a JWT.
    (
        "when.request.auth.principal",
        "https://idp.example.com/alice",
        ALICE,
        true,
    ),
    (
        "when.request.auth.principal",
        "https://idp.example.com/alice",
        BOB,
        false,
    ),
    ("when.request.auth.principal", "*", PLAIN, false),
    ("when.request.auth.principal", "*", "GET a/ jwt=bare", false),
    ("when.request.auth.audiences", "shop-api", ALICE, true),
    ("when.request.auth.audiences", "shop-api", BOB, false),
    ("when.request.auth.audiences", "web", BOB, true),
    ("when.request.auth.audiences", "*-api", ALICE, true),
    ("when.request.auth.audiences", "*", PLAIN, false),
    ("when.request.auth.presenter", "web-client", ALICE, true),
    ("when.request.auth.presenter", "web-*", ALICE, true),
    ("when.request.auth.presenter", "*", BOB, false),
    // Claims: a list matches when any string element does, a string matches itself,
    // numbers, booleans and objects never match.
    ("when.request.auth.claims[groups]", "admin", ALICE, true),
    ("when.request.auth.claims[groups]", "ops", ALICE, false),
    ("when.request.auth.claims[groups]", "7", ALICE, false),
    ("when.request.auth.claims[groups]", "dev", BOB, true),
    ("when.request.auth.claims[groups]", "ad*", ALICE, true),
    ("when.request.auth.claims[groups]", "admin", PLAIN, false),
    (
        "when.request.auth.claims[realm_access][roles]",
        "seller",
        ALICE,
        true,
    ),
    (
        "when.request.auth.claims[realm_access][roles]",
        "*",
        BOB,
        false,
    ),
    (
        "when.request.auth.claims[realm_access][level]",
        "gold",
        ALICE,
        true,
    ),
    (
        "when.request.auth.claims[email_verified]",
        "true",
        ALICE,
        false,
    ),
    ("when.request.auth.claims[tier]", "3", ALICE, false),
    ("when.request.auth.claims[org]", "*", ALICE, false),
    ("when.request.auth.claims[org][name]", "acme", ALICE, true),
    ("when.request.auth.claims[missing]", "*", ALICE, false),
    ("when.request.auth.claims[sub][x]", "*", ALICE, false),
    ("when.request.auth.claims[email]", "*@example*", ALICE, true),
    // connection.sni
    (
        "when.connection.sni",
        "x.example",
        "GET a/ sni=x.example",
        true,
    ),
    (
        "when.connection.sni",
        "*.example",
        "GET a/ sni=x.example",
        true,
    ),
    ("when.connection.sni", "x.example", PLAIN, false),
];

pub const ROWS: &[Row] = &[
    Row {
        name: "values and notValues of one condition",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - when: [{key: "request.headers[x-env]", values: ["prod*"], notValues: [prod-canary]}]
"#,
        cases: &[
            ("GET a/ h:x-env=prod-eu", "allow shop/p#0"),
            ("GET a/ h:x-env=prod-canary", "deny no-allow-matched"),
            ("GET a/ h:x-env=staging", "deny no-allow-matched"),
            (PLAIN, "deny no-allow-matched"),
        ],
    },
    Row {
        name: "notValues fail when any value of a repeated header matches",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - when: [{key: "request.headers[x-tenant]", notValues: [blocked]}]
"#,
        cases: &[
            ("GET a/ h:x-tenant=ok", "allow shop/p#0"),
            (
                "GET a/ h:x-tenant=ok h:x-tenant=blocked",
                "deny no-allow-matched",
            ),
            (PLAIN, "allow shop/p#0"),
        ],
    },
    Row {
        name: "require a JWT with notRequestPrincipals",
        policies: r#"
metadata: {name: require-jwt, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {notRequestPrincipals: ["*"]}}]
"#,
        cases: &[
            (PLAIN, "deny shop/require-jwt#0"),
            ("GET a/ jwt=bare", "deny shop/require-jwt#0"),
            (ALICE, "allow no-allow-policies"),
        ],
    },
    Row {
        name: "admins by group claim on the admin paths",
        policies: r#"
metadata: {name: admins, namespace: shop}
spec:
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
"#,
        cases: &[
            ("GET a/admin/users jwt=alice", "allow shop/admins#0"),
            ("GET a/admin/users jwt=bob", "deny no-allow-matched"),
            ("GET a/admin/users", "deny no-allow-matched"),
            ("GET a/shop jwt=alice", "deny no-allow-matched"),
        ],
    },
    Row {
        name: "remote.ip deny while the peer is a gateway",
        policies: r#"
metadata: {name: blocklist, namespace: shop}
spec:
  action: DENY
  rules:
  - when: [{key: remote.ip, values: [203.0.113.0/24, "2001:db8::/32"]}]
"#,
        cases: &[
            (
                "GET a/ src=10.0.0.9 remote=203.0.113.50",
                "deny shop/blocklist#0",
            ),
            (
                "GET a/ src=10.0.0.9 remote=2001:db8::1",
                "deny shop/blocklist#0",
            ),
            (
                "GET a/ src=203.0.113.50 remote=10.0.0.9",
                "allow no-allow-policies",
            ),
        ],
    },
    Row {
        name: "audience and presenter together",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - when:
    - {key: request.auth.audiences, values: [shop-api]}
    - {key: request.auth.presenter, notValues: [legacy-client]}
"#,
        cases: &[
            (ALICE, "allow shop/p#0"),
            (BOB, "deny no-allow-matched"),
            (PLAIN, "deny no-allow-matched"),
        ],
    },
    Row {
        name: "ip and port conditions with notValues",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - when:
    - {key: source.ip, values: [10.0.0.0/8], notValues: [10.0.0.5]}
    - {key: destination.ip, notValues: [10.9.0.0/16]}
    - {key: destination.port, values: ["8080", "8443"], notValues: ["8443"]}
"#,
        cases: &[
            ("GET a/ src=10.0.0.6", "allow shop/p#0"),
            (PLAIN, "deny no-allow-matched"),
            (
                "GET a/ src=10.0.0.6 dst=10.9.0.1:8080",
                "deny no-allow-matched",
            ),
            (
                "GET a/ src=10.0.0.6 dst=10.1.0.11:8443",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "connection.sni and a header of the same rule",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
  - when:
    - {key: connection.sni, values: ["*.internal"]}
    - {key: "request.headers[x-debug]", values: ["*"]}
"#,
        cases: &[
            ("GET a/ sni=db.internal h:x-debug=1", "deny shop/p#0"),
            ("GET a/ sni=db.internal", "allow no-allow-policies"),
            ("GET a/ h:x-debug=1", "allow no-allow-policies"),
        ],
    },
];
