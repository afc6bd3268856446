//! AuthorizationPolicy → Authorization (protocol.md 8.3). Root namespace `istio-system`;
//! verdicts are for a workload in `shop` labelled `app: cart`.

use crate::{AP, ApRow};

const FRONTEND: &str = "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web/sa/frontend";
const ADMIN: &str = "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web/sa/admin";
const PLAIN: &str = "10.0.0.5 -> 10.1.0.11:8080";

pub const ROWS: &[ApRow] = &[
    // --- scope ----------------------------------------------------------------------------
    ApRow {
        name: "selector gives WorkloadSelector and the labels",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/web/sa/frontend"]}
"#,
        want: r#"
- name: cart-allow
  namespace: shop
  scope: WorkloadSelector
  action: Allow
  rules:
  - - - principals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        selector: Some(&[("app", "cart")]),
        verdicts: &[
            (FRONTEND, "allow shop/cart-allow#0"),
            (ADMIN, "deny no-allow-matched"),
        ],
        ..AP
    },
    ApRow {
        name: "a selector that does not select the workload leaves it alone",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: shop}
spec:
  selector: {matchLabels: {app: other}}
  rules: [{}]
  action: DENY
"#,
        want: r#"
- {name: other, namespace: shop, scope: WorkloadSelector, action: Deny, rules: [[]]}
"#,
        selector: Some(&[("app", "other")]),
        verdicts: &[(FRONTEND, "allow no-policies")],
        ..AP
    },
    ApRow {
        name: "no selector outside the root namespace gives Namespace",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {namespaces: [legacy]}
"#,
        want: r#"
- name: ns-wide
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - namespaces: [!Exact legacy]
"#,
        verdicts: &[
            (FRONTEND, "allow no-allow-policies"),
            (
                "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/legacy/sa/default",
                "deny shop/ns-wide#0",
            ),
        ],
        ..AP
    },
    ApRow {
        name: "no selector in the root namespace gives Global",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny-plaintext, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from:
    - source: {notPrincipals: ["*"]}
"#,
        want: r#"
- name: mesh-deny-plaintext
  namespace: istio-system
  scope: Global
  action: Deny
  rules:
  - - - notPrincipals:
        - !Presence
"#,
        verdicts: &[
            (PLAIN, "deny istio-system/mesh-deny-plaintext#0"),
            (FRONTEND, "allow no-allow-policies"),
        ],
        ..AP
    },
    ApRow {
        name: "a selector in the root namespace selects workloads of every namespace",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: carts, namespace: istio-system}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules:
  - to:
    - operation: {ports: ["22"]}
"#,
        want: r#"
- name: carts
  namespace: istio-system
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - destinationPorts: [22]
"#,
        selector: Some(&[("app", "cart")]),
        verdicts: &[
            (
                "10.0.0.5 -> 10.1.0.11:22 as cluster.local/ns/web/sa/frontend",
                "deny istio-system/carts#0",
            ),
            (FRONTEND, "allow no-allow-policies"),
        ],
        ..AP
    },
    // --- string, IP and service-account conversion -----------------------------------------
    ApRow {
        name: "principals: * is presence, x* prefix, *x suffix, else exact",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source:
        principals: ["*", "cluster.local/ns/web/*", "*/sa/frontend", "cluster.local/ns/a/sa/b"]
        notPrincipals: ["*/sa/admin"]
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - !Presence
        - !Prefix cluster.local/ns/web/
        - !Suffix /sa/frontend
        - !Exact cluster.local/ns/a/sa/b
        notPrincipals: [!Suffix /sa/admin]
"#,
        verdicts: &[
            (FRONTEND, "allow shop/p#0"),
            (ADMIN, "deny no-allow-matched"),
            (PLAIN, "deny no-allow-matched"),
        ],
        ..AP
    },
    ApRow {
        name: "namespaces: wildcard forms",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {namespaces: ["we*", "*-prod", "*"], notNamespaces: ["web"]}
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces:
        - !Prefix we
        - !Suffix -prod
        - !Presence
        notNamespaces: [!Exact web]
"#,
        verdicts: &[
            (FRONTEND, "deny no-allow-matched"),
            (
                "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web-prod/sa/x",
                "allow shop/p#0",
            ),
        ],
        ..AP
    },
    ApRow {
        name: "ipBlocks without a prefix length become /32 and /128",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.5", "10.2.0.0/16", "fd00::5"]
        notIpBlocks: ["10.2.3.4"]
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [10.0.0.5/32, 10.2.0.0/16, "fd00::5/128"]
        notSourceIps: [10.2.3.4/32]
"#,
        verdicts: &[
            (PLAIN, "allow shop/p#0"),
            ("10.0.0.6 -> 10.1.0.11:8080", "deny no-allow-matched"),
            ("10.2.3.4 -> 10.1.0.11:8080", "deny no-allow-matched"),
            ("10.2.3.5 -> 10.1.0.11:8080", "allow shop/p#0"),
            ("fd00::5 -> [fd00::11]:8080", "allow shop/p#0"),
        ],
        ..AP
    },
    ApRow {
        name: "serviceAccounts ns/sa and bare sa in the policy namespace",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {serviceAccounts: ["web/frontend", "checkout"], notServiceAccounts: ["shop/legacy"]}
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - serviceAccounts:
        - {namespace: web, serviceAccount: frontend}
        - {namespace: shop, serviceAccount: checkout}
        notServiceAccounts: [{namespace: shop, serviceAccount: legacy}]
"#,
        verdicts: &[
            (FRONTEND, "allow shop/p#0"),
            (
                "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/shop/sa/checkout",
                "allow shop/p#0",
            ),
            (ADMIN, "deny no-allow-matched"),
        ],
        ..AP
    },
    // --- rule structure -------------------------------------------------------------------
    ApRow {
        name: "to entries form one clause; ports may be numbers",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - to:
    - operation: {ports: ["8080", 9090]}
    - operation: {notPorts: ["22"]}
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080, 9090]
      - notDestinationPorts: [22]
"#,
        verdicts: &[
            (FRONTEND, "allow shop/p#0"),
            ("10.0.0.5 -> 10.1.0.11:22", "deny no-allow-matched"),
            ("10.0.0.5 -> 10.1.0.11:3306", "allow shop/p#0"),
        ],
        ..AP
    },
    ApRow {
        name: "clauses in order to, from, then one per when",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source: {namespaces: [web]}
    - source: {ipBlocks: [192.168.0.0/16]}
    to:
    - operation: {ports: ["8080"]}
    when:
    - key: source.principal
      values: ["*/sa/frontend"]
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080]
    - - namespaces: [!Exact web]
      - sourceIps: [192.168.0.0/16]
    - - principals: [!Suffix /sa/frontend]
"#,
        verdicts: &[
            (FRONTEND, "allow shop/p#0"),
            (ADMIN, "deny no-allow-matched"),
        ],
        ..AP
    },
    ApRow {
        name: "the five L4 when keys with values and notValues",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
  - when:
    - {key: source.ip, values: ["10.0.0.0/24"], notValues: ["10.0.0.9"]}
    - {key: source.namespace, values: [web], notValues: ["kube-*"]}
    - {key: source.principal, notValues: ["*/sa/admin"]}
    - {key: destination.ip, values: ["10.1.0.11"]}
    - {key: destination.port, values: ["8080"], notValues: ["22"]}
"#,
        want: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - sourceIps: [10.0.0.0/24]
        notSourceIps: [10.0.0.9/32]
    - - namespaces: [!Exact web]
        notNamespaces: [!Prefix kube-]
    - - notPrincipals: [!Suffix /sa/admin]
    - - destinationIps: [10.1.0.11/32]
    - - destinationPorts: [8080]
        notDestinationPorts: [22]
"#,
        verdicts: &[
            (FRONTEND, "deny shop/p#0"),
            (ADMIN, "allow no-allow-policies"),
        ],
        ..AP
    },
    ApRow {
        name: "rules: [{}] in an ALLOW allows everything",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: shop}
spec:
  rules: [{}]
"#,
        want: "- {name: allow-all, namespace: shop, scope: Namespace, action: Allow, rules: [[]]}",
        verdicts: &[(PLAIN, "allow shop/allow-all#0")],
        ..AP
    },
    ApRow {
        name: "an empty spec is an ALLOW with no rules: allow nothing",
        crd: r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
"#,
        want: "- {name: allow-nothing, namespace: shop, scope: Namespace, action: Allow}",
        verdicts: &[(FRONTEND, "deny no-allow-matched")],
        ..AP
    },
    ApRow {
        name: "DENY without rules is accepted with a warning and does nothing",
        crd: r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: shop}
spec: {action: DENY}
"#,
        want: "- {name: d, namespace: shop, scope: Namespace, action: Deny}",
        warning: "no effect",
        verdicts: &[(FRONTEND, "allow no-allow-policies")],
        ..AP
    },
];
