//! How rules, sources, operations, conditions and fields combine, with a few whole-policy
//! cases per field. Without `as=` a request has no peer identity.

use crate::Row;

const FE: &str = "GET a/ as=cluster.local/ns/web/sa/frontend";
const PLAIN: &str = "GET a/";

pub const ROWS: &[Row] = &[
    Row {
        name: "fields of one source are AND-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {principals: [cluster.local/ns/web/sa/frontend], ipBlocks: [10.0.0.0/24]}
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            (
                "GET a/ src=10.9.0.1 as=cluster.local/ns/web/sa/frontend",
                "deny no-allow-matched",
            ),
            (
                "GET a/ as=cluster.local/ns/web/sa/admin",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "values of one field are OR-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {principals: [cluster.local/ns/web/sa/admin, cluster.local/ns/web/sa/frontend]}
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            ("GET a/ as=cluster.local/ns/web/sa/admin", "allow shop/p#0"),
            (
                "GET a/ as=cluster.local/ns/web/sa/other",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "sources are OR-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {namespaces: [web]}
    - source: {ipBlocks: [192.168.0.0/16]}
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            ("GET a/ src=192.168.1.1", "allow shop/p#0"),
            (
                "GET a/ as=cluster.local/ns/shop/sa/x",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "operations are OR-ed and their fields AND-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to:
    - operation: {methods: [GET], paths: ["/public/*"]}
    - operation: {methods: [POST], paths: ["/api/*"]}
"#,
        cases: &[
            ("GET a/public/x", "allow shop/p#0"),
            ("POST a/api/x", "allow shop/p#0"),
            ("GET a/api/x", "deny no-allow-matched"),
            ("POST a/public/x", "deny no-allow-matched"),
        ],
    },
    Row {
        name: "from, to and when of one rule are AND-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from: [{source: {namespaces: [web]}}]
    to: [{operation: {methods: [GET]}}]
    when: [{key: "request.headers[x-env]", values: [prod]}]
"#,
        cases: &[
            (
                "GET a/ h:x-env=prod as=cluster.local/ns/web/sa/x",
                "allow shop/p#0",
            ),
            (
                "GET a/ h:x-env=prod as=cluster.local/ns/api/sa/x",
                "deny no-allow-matched",
            ),
            (
                "PUT a/ h:x-env=prod as=cluster.local/ns/web/sa/x",
                "deny no-allow-matched",
            ),
            (
                "GET a/ h:x-env=dev as=cluster.local/ns/web/sa/x",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "conditions are AND-ed",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - when:
    - {key: "request.headers[x-env]", values: [prod]}
    - {key: destination.port, values: ["8080"]}
"#,
        cases: &[
            ("GET a/ h:x-env=prod", "allow shop/p#0"),
            (
                "GET a/ h:x-env=prod dst=10.1.0.11:9090",
                "deny no-allow-matched",
            ),
            ("GET a/", "deny no-allow-matched"),
        ],
    },
    Row {
        name: "rules are OR-ed and the first matching rule is reported",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [web]}}]
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            (
                "POST a/ as=cluster.local/ns/web/sa/frontend",
                "allow shop/p#1",
            ),
            ("POST a/", "deny no-allow-matched"),
        ],
    },
    Row {
        name: "a not field excludes inside a positive one",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from: [{source: {namespaces: ["*"], notNamespaces: [legacy]}}]
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            (
                "GET a/ as=cluster.local/ns/legacy/sa/x",
                "deny no-allow-matched",
            ),
            (PLAIN, "deny no-allow-matched"),
        ],
    },
    Row {
        name: "paths and notPaths together",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to: [{operation: {paths: ["/api/*"], notPaths: ["/api/internal/*"]}}]
"#,
        cases: &[
            ("GET a/api/orders", "allow shop/p#0"),
            ("GET a/api/internal/keys?x=1", "deny no-allow-matched"),
            ("GET a/other", "deny no-allow-matched"),
        ],
    },
    Row {
        name: "without an identity notPrincipals matches: L7 require-mTLS",
        policies: r#"
metadata: {name: require-mtls, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {notPrincipals: ["*"]}}]
"#,
        cases: &[
            (PLAIN, "deny shop/require-mtls#0"),
            (FE, "allow no-allow-policies"),
        ],
    },
    Row {
        name: "ipBlocks read the direct peer, remoteIpBlocks the original client",
        policies: r#"
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]
  - from: [{source: {ipBlocks: [198.51.100.0/24]}}]
"#,
        cases: &[
            ("GET a/ src=10.0.0.5 remote=203.0.113.7", "deny shop/d#0"),
            (
                "GET a/ src=203.0.113.7 remote=10.0.0.5",
                "allow no-allow-policies",
            ),
            ("GET a/ src=198.51.100.1 remote=10.0.0.5", "deny shop/d#1"),
            (
                "GET a/ src=10.0.0.5 remote=198.51.100.1",
                "allow no-allow-policies",
            ),
        ],
    },
    Row {
        name: "notHosts ignore case and the port",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to: [{operation: {notHosts: [admin.example.com]}}]
"#,
        cases: &[
            ("GET ADMIN.example.com:8080/", "deny no-allow-matched"),
            ("GET admin.example.com/", "deny no-allow-matched"),
            ("GET shop.example.com/", "allow shop/p#0"),
        ],
    },
    Row {
        name: "ports and notPorts of one operation",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {notPorts: ["8080", "8443"], methods: [GET]}}]
"#,
        cases: &[
            ("GET a/ dst=10.1.0.11:9090", "deny shop/p#0"),
            ("GET a/", "allow no-allow-policies"),
            ("GET a/ dst=10.1.0.11:8443", "allow no-allow-policies"),
            ("POST a/ dst=10.1.0.11:9090", "allow no-allow-policies"),
        ],
    },
    Row {
        name: "serviceAccounts and notServiceAccounts",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from: [{source: {serviceAccounts: [web/frontend, cart]}}]
  - from: [{source: {notServiceAccounts: [web/frontend], ipBlocks: [10.0.0.0/8]}}]
"#,
        cases: &[
            (FE, "allow shop/p#0"),
            ("GET a/ as=cluster.local/ns/shop/sa/cart", "allow shop/p#0"),
            ("GET a/ as=cluster.local/ns/web/sa/cart", "allow shop/p#1"),
            (
                "GET a/ src=192.168.0.1 as=cluster.local/ns/web/sa/cart",
                "deny no-allow-matched",
            ),
            (PLAIN, "allow shop/p#1"),
        ],
    },
    Row {
        name: "requestPrincipals with notRequestPrincipals",
        policies: r#"
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["https://idp.example.com/*"]
        notRequestPrincipals: ["*/bob"]
"#,
        cases: &[
            ("GET a/ jwt=alice", "allow shop/p#0"),
            ("GET a/ jwt=bob", "deny no-allow-matched"),
            (PLAIN, "deny no-allow-matched"),
        ],
    },
];
