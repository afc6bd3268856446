//! The identity fields (namespaces, principals, serviceAccounts), their `not_` forms and every
//! StringMatch kind. Unless a row says otherwise the connection is
//! `10.0.0.5 -> 10.1.0.11:8080` from `cluster.local/ns/web/sa/frontend`, to a workload in
//! `shop`.

use crate::{ROW, Row};

pub const ROWS: &[Row] = &[
    // --- namespaces / notNamespaces -------------------------------------------------------
    Row {
        name: "namespaces exact matches the peer namespace",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact web]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "namespaces exact does not match another namespace",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact shop]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "namespaces values are OR-ed",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact admin, !Exact web]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "namespaces prefix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Prefix we]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "namespaces suffix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Suffix eb]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "namespaces suffix mismatch",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Suffix we]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "namespaces presence matches any identity",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces:
        - !Presence
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "notNamespaces containing the peer namespace fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notNamespaces: [!Exact web]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notNamespaces not containing the peer namespace matches",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notNamespaces: [!Exact legacy]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    // --- principals / notPrincipals -------------------------------------------------------
    Row {
        name: "principals exact without spiffe prefix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "principals exact of another service account",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Exact cluster.local/ns/web/sa/admin]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "principals written with spiffe:// never match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Exact spiffe://cluster.local/ns/web/sa/frontend]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "principals prefix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Prefix cluster.local/ns/web/]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "principals suffix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Suffix /sa/frontend]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "principals suffix mismatch",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Suffix /sa/backend]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "principals presence matches any identity",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - !Presence
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "principals exact in another trust domain",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Exact example.org/ns/web/sa/frontend]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notPrincipals naming the peer fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notPrincipals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notPrincipals naming someone else matches",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notPrincipals: [!Exact cluster.local/ns/web/sa/admin]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "positive and negative forms of one field: prefix minus one principal",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Prefix cluster.local/ns/web/]
        notPrincipals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "positive and negative forms of one field: another principal passes",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Prefix cluster.local/ns/web/]
        notPrincipals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        conn: "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web/sa/admin",
        want: "allow shop/p#0",
        ..ROW
    },
    // --- serviceAccounts / notServiceAccounts ---------------------------------------------
    Row {
        name: "serviceAccounts matches namespace and account",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - serviceAccounts: [{namespace: web, serviceAccount: frontend}]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "serviceAccounts same account name in another namespace",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - serviceAccounts: [{namespace: shop, serviceAccount: frontend}]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notServiceAccounts naming the peer fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notServiceAccounts: [{namespace: web, serviceAccount: frontend}]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notServiceAccounts naming someone else matches",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notServiceAccounts: [{namespace: web, serviceAccount: admin}]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
];
