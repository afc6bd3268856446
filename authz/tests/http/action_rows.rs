//! Actions and their order (CUSTOM, AUDIT, DENY, ALLOW), dry-run, zero rules versus
//! `rules: [{}]`, and the scenarios the seeds describe.

use crate::Row;

const GET: &str = "GET a/x";
const ADMIN: &str = "GET a/admin/x";

pub const ROWS: &[Row] = &[
    // --- no rules, empty rule -------------------------------------------------------------
    Row {
        name: "no policies allow",
        policies: "",
        cases: &[(GET, "allow no-allow-policies")],
    },
    Row {
        name: "an ALLOW without rules matches nothing, so it denies everything",
        policies: "metadata: {name: allow-nothing, namespace: shop}\nspec: {}\n",
        cases: &[
            (GET, "deny no-allow-matched"),
            (ADMIN, "deny no-allow-matched"),
        ],
    },
    Row {
        name: "an ALLOW with an empty rules list also matches nothing",
        policies: "metadata: {name: p, namespace: shop}\nspec: {rules: []}\n",
        cases: &[(GET, "deny no-allow-matched")],
    },
    Row {
        name: "a DENY without rules never matches",
        policies: "metadata: {name: d, namespace: shop}\nspec: {action: DENY}\n",
        cases: &[(GET, "allow no-allow-policies")],
    },
    Row {
        name: "rules [{}] in an ALLOW allows everything",
        policies: "metadata: {name: allow-all, namespace: shop}\nspec: {rules: [{}]}\n",
        cases: &[
            (GET, "allow shop/allow-all#0"),
            ("DELETE b", "allow shop/allow-all#0"),
        ],
    },
    Row {
        name: "rules [{}] in a DENY denies everything",
        policies: "metadata: {name: deny-all, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n",
        cases: &[(GET, "deny shop/deny-all#0")],
    },
    // --- DENY and ALLOW -------------------------------------------------------------------
    Row {
        name: "DENY beats ALLOW",
        policies: r#"
metadata: {name: a, namespace: shop}
spec: {rules: [{}]}
---
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"#,
        cases: &[(ADMIN, "deny shop/d#0"), (GET, "allow shop/a#0")],
    },
    Row {
        name: "ALLOW policies present and none matches: denied",
        policies: r#"
metadata: {name: a, namespace: shop}
spec:
  rules: [{to: [{operation: {methods: [POST]}}]}]
"#,
        cases: &[
            (GET, "deny no-allow-matched"),
            ("POST a/x", "allow shop/a#0"),
        ],
    },
    Row {
        name: "only DENY policies and none matches: allowed",
        policies: r#"
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
"#,
        cases: &[
            (GET, "allow no-allow-policies"),
            ("DELETE a/x", "deny shop/d#0"),
        ],
    },
    Row {
        name: "the first matching ALLOW and DENY by key are reported",
        policies: r#"
metadata: {name: b, namespace: shop}
spec: {rules: [{}]}
---
metadata: {name: a, namespace: shop}
spec: {rules: [{to: [{operation: {methods: [PUT]}}]}, {}]}
---
metadata: {name: z, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
---
metadata: {name: mesh, namespace: istio-system}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
"#,
        cases: &[
            (GET, "allow shop/a#1"),
            ("PUT a/x", "allow shop/a#0"),
            ("DELETE a/x", "deny istio-system/mesh#0"),
        ],
    },
    // --- CUSTOM ---------------------------------------------------------------------------
    Row {
        name: "CUSTOM is reported before DENY and ALLOW are decided",
        policies: r#"
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
---
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"#,
        cases: &[
            (ADMIN, "custom shop/ext#0 opa, deny shop/d#0"),
            (GET, "allow no-allow-policies"),
        ],
    },
    Row {
        name: "a CUSTOM policy is not an ALLOW policy",
        policies: r#"
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
"#,
        cases: &[(GET, "custom shop/ext#0 opa, allow no-allow-policies")],
    },
    Row {
        name: "CUSTOM with ALLOW: both apply",
        policies: r#"
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {methods: [POST]}}]}]
---
metadata: {name: a, namespace: shop}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
"#,
        cases: &[
            (GET, "allow shop/a#0"),
            ("POST a/x", "custom shop/ext#0 opa, deny no-allow-matched"),
        ],
    },
    Row {
        name: "several CUSTOM providers: the first matching by key",
        policies: r#"
metadata: {name: ext-b, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: b}
  rules: [{}]
---
metadata: {name: ext-a, namespace: istio-system}
spec:
  action: CUSTOM
  provider: {name: a}
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"#,
        cases: &[
            (
                ADMIN,
                "custom istio-system/ext-a#0 a, allow no-allow-policies",
            ),
            (GET, "custom shop/ext-b#0 b, allow no-allow-policies"),
        ],
    },
    // --- AUDIT ----------------------------------------------------------------------------
    Row {
        name: "AUDIT never changes the verdict",
        policies: r#"
metadata: {name: audit, namespace: shop}
spec: {action: AUDIT, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
---
metadata: {name: d, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
---
metadata: {name: a, namespace: shop}
spec: {rules: [{to: [{operation: {methods: [GET, DELETE]}}]}]}
"#,
        cases: &[
            (ADMIN, "allow shop/a#0, audit shop/audit#0"),
            ("DELETE a/admin/x", "deny shop/d#0, audit shop/audit#0"),
            (
                "POST a/admin/x",
                "deny no-allow-matched, audit shop/audit#0",
            ),
            (GET, "allow shop/a#0"),
        ],
    },
    Row {
        name: "every matching AUDIT policy is reported, by key",
        policies: r#"
metadata: {name: b, namespace: shop}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: [POST]}}]}, {}]}
---
metadata: {name: a, namespace: shop}
spec: {action: AUDIT, rules: [{}]}
---
metadata: {name: c, namespace: shop}
spec: {action: AUDIT, rules: [{to: [{operation: {methods: [PUT]}}]}]}
"#,
        cases: &[
            (
                GET,
                "allow no-allow-policies, audit shop/a#0, audit shop/b#1",
            ),
            (
                "PUT a/x",
                "allow no-allow-policies, audit shop/a#0, audit shop/b#1, audit shop/c#0",
            ),
        ],
    },
    // --- dry run --------------------------------------------------------------------------
    Row {
        name: "a dry-run DENY is reported and not enforced",
        policies: r#"
metadata: {name: d, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
"#,
        cases: &[
            (
                ADMIN,
                "allow no-allow-policies, dry-run shop/d#0 would-deny",
            ),
            (GET, "allow no-allow-policies"),
        ],
    },
    Row {
        name: "a dry-run DENY is reported beside an enforced DENY",
        policies: r#"
metadata: {name: dry, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{}]}
---
metadata: {name: deny, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
"#,
        cases: &[
            (ADMIN, "deny shop/deny#0, dry-run shop/dry#0 would-deny"),
            (
                GET,
                "allow no-allow-policies, dry-run shop/dry#0 would-deny",
            ),
        ],
    },
    Row {
        name: "a matching dry-run ALLOW would allow and changes nothing",
        policies: r#"
metadata: {name: dry, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{to: [{operation: {methods: [GET]}}]}]}
---
metadata: {name: a, namespace: shop}
spec: {rules: [{to: [{operation: {methods: [POST]}}]}]}
"#,
        cases: &[
            (GET, "deny no-allow-matched, dry-run shop/dry#0 would-allow"),
            ("POST a/x", "allow shop/a#0"),
        ],
    },
    Row {
        name: "dry-run ALLOWs that do not match and no enforced ALLOW would deny",
        policies: r#"
metadata: {name: x, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{to: [{operation: {methods: [POST]}}]}]}
---
metadata: {name: y, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {}
"#,
        cases: &[
            (
                GET,
                "allow no-allow-policies, dry-run shop/x#- would-deny, dry-run shop/y#- would-deny",
            ),
            (
                "POST a/x",
                "allow no-allow-policies, dry-run shop/x#0 would-allow",
            ),
        ],
    },
    Row {
        name: "dry-run ALLOW is not evaluated once an enforced DENY matched",
        policies: r#"
metadata: {name: dry, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {rules: [{}]}
---
metadata: {name: d, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
"#,
        cases: &[
            (ADMIN, "deny shop/d#0"),
            (
                GET,
                "allow no-allow-policies, dry-run shop/dry#0 would-allow",
            ),
        ],
    },
    Row {
        name: "dry-run CUSTOM and AUDIT are neither enforced nor reported",
        policies: r#"
metadata: {name: ext, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}
---
metadata: {name: audit, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {action: AUDIT, rules: [{}]}
"#,
        cases: &[(GET, "allow no-allow-policies")],
    },
    Row {
        name: "a dry-run annotation that is not true enforces",
        policies: r#"
metadata: {name: d, namespace: shop, annotations: {istio.io/dry-run: "false"}}
spec: {action: DENY, rules: [{}]}
"#,
        cases: &[(GET, "deny shop/d#0")],
    },
    // --- the seeds ------------------------------------------------------------------------
    Row {
        name: "seed: only order-service and checkout-service may POST /api/v2/payments/process",
        policies: PAYMENTS,
        cases: &[
            (
                "POST payments.shop/api/v2/payments/process as=cluster.local/ns/shop/sa/order-service",
                "allow shop/payments-process#0",
            ),
            (
                "POST payments.shop/api/v2/payments/process as=cluster.local/ns/shop/sa/checkout-service",
                "allow shop/payments-process#0",
            ),
            (
                "POST payments.shop/api/v2/payments/process?retry=1 as=cluster.local/ns/shop/sa/order-service",
                "allow shop/payments-process#0",
            ),
            (
                "GET payments.shop/api/v2/payments/process as=cluster.local/ns/shop/sa/order-service",
                "deny no-allow-matched",
            ),
            (
                "POST payments.shop/api/v2/payments/process as=cluster.local/ns/shop/sa/cart-service",
                "deny no-allow-matched",
            ),
            (
                "POST payments.shop/api/v2/payments/process as=cluster.local/ns/web/sa/order-service",
                "deny no-allow-matched",
            ),
            (
                "POST payments.shop/api/v2/payments/process",
                "deny no-allow-matched",
            ),
            (
                "POST payments.shop/api/v2/payments/process/ as=cluster.local/ns/shop/sa/order-service",
                "deny no-allow-matched",
            ),
            (
                "POST payments.shop/api/v2/payments/refund as=cluster.local/ns/shop/sa/order-service",
                "deny no-allow-matched",
            ),
        ],
    },
    Row {
        name: "seed: mesh-wide DENY of scanner user agents",
        policies: SCANNERS,
        cases: &[
            (
                r#"GET a/ h:User-Agent="sqlmap/1.7.2#stable (https://sqlmap.org)""#,
                "deny istio-system/deny-scanners#0",
            ),
            (
                r#"GET a/ h:user-agent="Mozilla/5.0 (compatible; nmap scripting engine)""#,
                "deny istio-system/deny-scanners#0",
            ),
            (
                r#"GET a/ h:User-Agent="Mozilla/5.0 (nikto/2.1.6)""#,
                "deny istio-system/deny-scanners#0",
            ),
            (
                r#"GET a/ h:User-Agent=curl/8.5.0 h:User-Agent=sqlmap"#,
                "deny istio-system/deny-scanners#0",
            ),
            // Contains is case-sensitive, like every other match: `Nikto` needs `*Nikto*`.
            (
                r#"GET a/ h:User-Agent="Mozilla/5.0 (Nikto/2.5.0)""#,
                "allow no-allow-policies",
            ),
            (
                r#"GET a/ h:User-Agent=curl/8.5.0"#,
                "allow no-allow-policies",
            ),
            ("GET a/", "allow no-allow-policies"),
        ],
    },
    Row {
        name: "seeds together: a scanner is denied even from an allowed caller",
        policies: SEEDS_TOGETHER,
        cases: &[
            (
                "POST payments.shop/api/v2/payments/process h:user-agent=sqlmap/1.7 as=cluster.local/ns/shop/sa/order-service",
                "deny istio-system/deny-scanners#0",
            ),
            (
                "POST payments.shop/api/v2/payments/process h:user-agent=okhttp/4 as=cluster.local/ns/shop/sa/order-service",
                "allow shop/payments-process#0",
            ),
        ],
    },
];

// The seeds' policies as macros, so `concat!` can join them without repeating them.
macro_rules! payments {
    () => {
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments-process, namespace: shop}
spec:
  targetRefs:
  - {kind: Service, group: "", name: payments}
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/shop/sa/order-service
        - cluster.local/ns/shop/sa/checkout-service
    to:
    - operation: {methods: [POST], paths: [/api/v2/payments/process]}
"#
    };
}

macro_rules! scanners {
    () => {
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-scanners, namespace: istio-system}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[User-Agent]
      values: ["*sqlmap*", "*nmap*", "*nikto*"]
"#
    };
}

pub const PAYMENTS: &str = payments!();
pub const SCANNERS: &str = scanners!();
const SEEDS_TOGETHER: &str = concat!(payments!(), "---", scanners!());
