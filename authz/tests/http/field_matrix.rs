//! Source and operation fields, one pattern at a time: every match kind (exact, prefix,
//! suffix, presence, contains) and, through the matrix harness, each `not` form. Without
//! `as=` a request has no peer identity.

use crate::MatchCase;

const FE: &str = "GET a/ as=cluster.local/ns/web/sa/frontend";
const PLAIN: &str = "GET a/";

pub const SOURCE: &[MatchCase] = &[
    // principals: compared without spiffe://; no identity matches nothing.
    (
        "from.principals",
        "cluster.local/ns/web/sa/frontend",
        FE,
        true,
    ),
    (
        "from.principals",
        "cluster.local/ns/web/sa/admin",
        FE,
        false,
    ),
    (
        "from.principals",
        "spiffe://cluster.local/ns/web/sa/frontend",
        FE,
        false,
    ),
    ("from.principals", "cluster.local/ns/web/*", FE, true),
    ("from.principals", "cluster.local/ns/shop/*", FE, false),
    ("from.principals", "*/sa/frontend", FE, true),
    ("from.principals", "*/sa/admin", FE, false),
    ("from.principals", "*", FE, true),
    ("from.principals", "*", PLAIN, false),
    ("from.principals", "*/ns/web/*", FE, true),
    ("from.principals", "*/ns/shop/*", FE, false),
    (
        "from.principals",
        "cluster.local/ns/web/sa/frontend",
        PLAIN,
        false,
    ),
    // requestPrincipals: the JWT's iss/sub; `*` needs one.
    (
        "from.requestPrincipals",
        "https://idp.example.com/alice",
        "GET a/ jwt=alice",
        true,
    ),
    (
        "from.requestPrincipals",
        "https://idp.example.com/alice",
        "GET a/ jwt=bob",
        false,
    ),
    (
        "from.requestPrincipals",
        "https://idp.example.com/*",
        "GET a/ jwt=bob",
        true,
    ),
    (
        "from.requestPrincipals",
        "https://other.example.com/*",
        "GET a/ jwt=bob",
        false,
    ),
    (
        "from.requestPrincipals",
        "*/alice",
        "GET a/ jwt=alice",
        true,
    ),
    ("from.requestPrincipals", "*/alice", "GET a/ jwt=bob", false),
    ("from.requestPrincipals", "*", "GET a/ jwt=alice", true),
    ("from.requestPrincipals", "*", PLAIN, false),
    ("from.requestPrincipals", "*", "GET a/ jwt=bare", false),
    (
        "from.requestPrincipals",
        "*idp.example*",
        "GET a/ jwt=alice",
        true,
    ),
    (
        "from.requestPrincipals",
        "*evil*",
        "GET a/ jwt=alice",
        false,
    ),
    // namespaces
    ("from.namespaces", "web", FE, true),
    ("from.namespaces", "shop", FE, false),
    ("from.namespaces", "we*", FE, true),
    ("from.namespaces", "*eb", FE, true),
    ("from.namespaces", "*op", FE, false),
    ("from.namespaces", "*", FE, true),
    ("from.namespaces", "*", PLAIN, false),
    ("from.namespaces", "*e*", FE, true),
    ("from.namespaces", "*x*", FE, false),
    ("from.namespaces", "web", PLAIN, false),
    // trustDomains
    ("from.trustDomains", "cluster.local", FE, true),
    ("from.trustDomains", "other.local", FE, false),
    ("from.trustDomains", "*.local", FE, true),
    ("from.trustDomains", "clus*", FE, true),
    ("from.trustDomains", "*ster*", FE, true),
    ("from.trustDomains", "*", PLAIN, false),
    // serviceAccounts: exact; a bare name is in the policy's namespace (shop).
    ("from.serviceAccounts", "web/frontend", FE, true),
    ("from.serviceAccounts", "frontend", FE, false),
    (
        "from.serviceAccounts",
        "frontend",
        "GET a/ as=cluster.local/ns/shop/sa/frontend",
        true,
    ),
    ("from.serviceAccounts", "web/frontend", PLAIN, false),
    // ipBlocks: the direct peer, whatever the original client.
    ("from.ipBlocks", "10.0.0.0/24", PLAIN, true),
    ("from.ipBlocks", "10.0.1.0/24", PLAIN, false),
    ("from.ipBlocks", "10.0.0.5", PLAIN, true),
    (
        "from.ipBlocks",
        "10.0.0.5",
        "GET a/ remote=203.0.113.7",
        true,
    ),
    (
        "from.ipBlocks",
        "203.0.113.0/24",
        "GET a/ remote=203.0.113.7",
        false,
    ),
    ("from.ipBlocks", "fd00::/8", "GET a/ src=fd00::1", true),
    (
        "from.ipBlocks",
        "10.0.0.0/8",
        "GET a/ src=::ffff:10.0.0.5",
        true,
    ),
    // remoteIpBlocks: the original client, the source by default.
    (
        "from.remoteIpBlocks",
        "203.0.113.0/24",
        "GET a/ remote=203.0.113.7",
        true,
    ),
    (
        "from.remoteIpBlocks",
        "10.0.0.0/8",
        "GET a/ remote=203.0.113.7",
        false,
    ),
    ("from.remoteIpBlocks", "10.0.0.0/8", PLAIN, true),
    (
        "from.remoteIpBlocks",
        "203.0.113.7",
        "GET a/ src=203.0.113.7 remote=10.9.9.9",
        false,
    ),
];

pub const OPERATION: &[MatchCase] = &[
    // hosts: ASCII case ignored; with or without the request's :port.
    (
        "to.hosts",
        "shop.example.com",
        "GET shop.example.com/",
        true,
    ),
    (
        "to.hosts",
        "Shop.Example.COM",
        "GET shop.example.com/",
        true,
    ),
    (
        "to.hosts",
        "shop.example.com",
        "GET SHOP.example.com/",
        true,
    ),
    (
        "to.hosts",
        "shop.example.com",
        "GET shop.example.com:8080/",
        true,
    ),
    (
        "to.hosts",
        "shop.example.com:8080",
        "GET shop.example.com:8080/",
        true,
    ),
    (
        "to.hosts",
        "shop.example.com:8080",
        "GET shop.example.com/",
        false,
    ),
    (
        "to.hosts",
        "shop.example.com",
        "GET shop.example.com.evil/",
        false,
    ),
    ("to.hosts", "[fd00::1]", "GET [fd00::1]:8080/", true),
    ("to.hosts", "shop.*", "GET shop.example.com:8080/", true),
    ("to.hosts", "cart.*", "GET shop.example.com/", false),
    (
        "to.hosts",
        "*.example.com",
        "GET api.example.com:443/",
        true,
    ),
    ("to.hosts", "*.EXAMPLE.com", "GET api.example.com/", true),
    ("to.hosts", "*.example.org", "GET api.example.com/", false),
    ("to.hosts", "*", "GET shop.example.com/", true),
    ("to.hosts", "*", "GET /x", false),
    ("to.hosts", "*example*", "GET API.EXAMPLE.com/", true),
    ("to.hosts", "*sample*", "GET api.example.com/", false),
    // ports: the destination port.
    ("to.ports", "8080", PLAIN, true),
    ("to.ports", "9090", PLAIN, false),
    ("to.ports", "9090", "GET a/ dst=10.1.0.11:9090", true),
    // methods: case-sensitive.
    ("to.methods", "GET", "GET a/", true),
    ("to.methods", "get", "GET a/", false),
    ("to.methods", "POST", "GET a/", false),
    ("to.methods", "P*", "PUT a/", true),
    ("to.methods", "P*", "GET a/", false),
    ("to.methods", "*ET", "GET a/", true),
    ("to.methods", "*", "DELETE a/", true),
    ("to.methods", "*AT*", "PATCH a/", true),
    ("to.methods", "*AT*", "POST a/", false),
    // paths: without ?query; case-sensitive; `*` is any path, even an empty one.
    (
        "to.paths",
        "/api/v2/payments",
        "GET a/api/v2/payments",
        true,
    ),
    (
        "to.paths",
        "/api/v2/payments",
        "GET a/api/v2/payments?x=1",
        true,
    ),
    (
        "to.paths",
        "/api/v2/payments?x=1",
        "GET a/api/v2/payments?x=1",
        false,
    ),
    (
        "to.paths",
        "/api/v2/payments",
        "GET a/api/v2/payments/",
        false,
    ),
    (
        "to.paths",
        "/API/v2/payments",
        "GET a/api/v2/payments",
        false,
    ),
    ("to.paths", "/api/*", "GET a/api/v2?x=1", true),
    ("to.paths", "/admin/*", "GET a/api/v2", false),
    ("to.paths", "/api/v2?x*", "GET a/api/v2?x=1", false),
    ("to.paths", "*.php", "GET a/index.php?id=1", true),
    ("to.paths", "*.php", "GET a/index.php.bak", false),
    ("to.paths", "*", "GET a/anything?q", true),
    ("to.paths", "*", "GET a", true),
    ("to.paths", "*/admin/*", "GET a/v1/admin/users", true),
    ("to.paths", "*/admin/*", "GET a/v1/users", false),
];
