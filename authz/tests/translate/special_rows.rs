//! AuthorizationPolicy rows for what ztunnel cannot or must not enforce: L7 attributes
//! (fail closed), targetRefs, CUSTOM/AUDIT and the dry-run annotation.

use crate::{AP, ApRow};

const FRONTEND: &str = "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web/sa/frontend";
const PLAIN: &str = "10.0.0.5 -> 10.1.0.11:8080";

pub const ROWS: &[ApRow] = &[
    // --- L7 attributes fail closed --------------------------------------------------------
    ApRow {
        name: "ALLOW: a rule with methods is dropped, the L4 rule stays",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to:
    - operation: {methods: [GET], ports: ["8080"]}
  - from:
    - source: {namespaces: [web]}
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact web]
"#,
        warning: "methods",
        verdicts: &[
            (FRONTEND, "allow shop/p#0"),
            (PLAIN, "deny no-allow-matched"),
        ],
        ..AP
    },
    ApRow {
        name: "ALLOW: every rule L7 leaves no rules and denies all",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to:
    - operation: {paths: ["/api/*"]}
  - from:
    - source: {requestPrincipals: ["*"]}
  - when:
    - {key: "request.headers[x-user]", values: [alice]}
"#,
        want: "- {name: p, namespace: shop, scope: Namespace, action: Allow}",
        warning: "request.headers[x-user]",
        verdicts: &[(FRONTEND, "deny no-allow-matched")],
        ..AP
    },
    ApRow {
        name: "DENY: L7 fields removed, L4 part still denies",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/web/sa/frontend"]}
    to:
    - operation: {methods: [POST], ports: ["8080"]}
"#,
        want: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - destinationPorts: [8080]
    - - principals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        warning: "denies more",
        verdicts: &[
            (FRONTEND, "deny shop/d#0"),
            (
                "10.0.0.5 -> 10.1.0.11:9090 as cluster.local/ns/web/sa/frontend",
                "allow no-allow-policies",
            ),
        ],
        ..AP
    },
    ApRow {
        name: "DENY: only L7 left an empty match, so the rule never matches",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin"]}
"#,
        want: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - {}
"#,
        warning: "no effect",
        verdicts: &[(FRONTEND, "allow no-allow-policies")],
        ..AP
    },
    ApRow {
        name: "DENY: an L7 when key empties its clause, so the rule never matches",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {namespaces: [web]}
    when:
    - {key: "request.auth.claims[group]", values: [admin]}
"#,
        want: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - namespaces: [!Exact web]
    - - {}
"#,
        warning: "request.auth.claims[group]",
        verdicts: &[(FRONTEND, "allow no-allow-policies")],
        ..AP
    },
    ApRow {
        name: "DENY: remoteIpBlocks dropped, ipBlocks kept",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {remoteIpBlocks: ["1.2.3.4"], ipBlocks: ["10.0.0.0/8"]}
"#,
        want: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - sourceIps: [10.0.0.0/8]
"#,
        warning: "remoteIpBlocks",
        verdicts: &[(PLAIN, "deny shop/d#0")],
        ..AP
    },
    // --- not for ztunnel ------------------------------------------------------------------
    ApRow {
        name: "targetRefs: not sent to ztunnel",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint-only, namespace: shop}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  action: DENY
  rules: [{}]
"#,
        want: "skip: targetRefs",
        verdicts: &[(FRONTEND, "allow no-policies")],
        ..AP
    },
    ApRow {
        name: "targetRef (singular): not sent to ztunnel",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: svc, namespace: shop}
spec:
  targetRef: {kind: Service, group: "", name: cart}
  rules: [{}]
"#,
        want: "skip: targetRefs",
        ..AP
    },
    ApRow {
        name: "CUSTOM: not sent",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
"#,
        want: "skip: action CUSTOM",
        warning: "CUSTOM",
        ..AP
    },
    ApRow {
        name: "AUDIT: not sent",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec: {action: AUDIT, rules: [{}]}
"#,
        want: "skip: action AUDIT",
        warning: "AUDIT",
        ..AP
    },
    // --- dry-run annotation ---------------------------------------------------------------
    ApRow {
        name: "dry-run annotation without dry-run support: not sent",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: trial
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec: {action: DENY, rules: [{}]}
"#,
        want: "skip: dry-run",
        warning: "dry-run",
        verdicts: &[(FRONTEND, "allow no-policies")],
        ..AP
    },
    ApRow {
        name: "dry-run annotation with dry-run support: reported, not enforced",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: trial
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec: {action: DENY, rules: [{}]}
"#,
        enable_dry_run: true,
        want: "- {name: trial, namespace: shop, scope: Namespace, action: Deny, dryRun: true, rules: [[]]}",
        verdicts: &[(FRONTEND, "allow no-policies")],
        ..AP
    },
    ApRow {
        name: "dry-run annotation false: enforced",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: real
  namespace: shop
  annotations: {istio.io/dry-run: "false", other: x}
spec: {action: DENY, rules: [{}]}
"#,
        want: "- {name: real, namespace: shop, scope: Namespace, action: Deny, rules: [[]]}",
        verdicts: &[(FRONTEND, "deny shop/real#0")],
        ..AP
    },
    ApRow {
        name: "dry-run annotation that is not a boolean: enforced, with a warning",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: real
  namespace: shop
  annotations: {istio.io/dry-run: "maybe"}
spec: {action: DENY, rules: [{}]}
"#,
        want: "- {name: real, namespace: shop, scope: Namespace, action: Deny, rules: [[]]}",
        warning: "not a boolean",
        verdicts: &[(FRONTEND, "deny shop/real#0")],
        ..AP
    },
];
