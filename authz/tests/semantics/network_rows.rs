//! Source and destination CIDRs (v4 and v6), ports, AND of fields, and plaintext connections
//! (no peer identity) against every identity field. Same defaults as `match_rows`.

use crate::{ROW, Row};

const PLAIN: &str = "10.0.0.5 -> 10.1.0.11:8080";

pub const ROWS: &[Row] = &[
    // --- sourceIps / destinationIps, v4 and v6 --------------------------------------------
    Row {
        name: "sourceIps v4 CIDR contains the source",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [10.0.0.0/24]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "sourceIps v4 CIDR does not contain the source",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [10.0.1.0/24]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notSourceIps containing the source fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notSourceIps: [10.0.0.5/32]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notSourceIps not containing the source matches",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notSourceIps: [192.168.0.0/16]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "destinationIps single v4 host",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationIps: [10.1.0.11/32]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "destinationIps another v4 host",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationIps: [10.1.0.12/32]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notDestinationIps containing the destination fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notDestinationIps: [10.1.0.0/16]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "sourceIps v6 CIDR contains the source",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: ["fd00:10::/64"]
"#,
        conn: "fd00:10::5 -> [fd00:20::11]:8080 as cluster.local/ns/web/sa/frontend",
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "sourceIps v6 CIDR does not contain the source",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: ["fd00:11::/64"]
"#,
        conn: "fd00:10::5 -> [fd00:20::11]:8080 as cluster.local/ns/web/sa/frontend",
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "destinationIps v6 /128 host",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationIps: ["fd00:20::11/128"]
"#,
        conn: "fd00:10::5 -> [fd00:20::11]:8080 as cluster.local/ns/web/sa/frontend",
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "notDestinationIps v6 containing the destination fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notDestinationIps: ["fd00:20::/32"]
"#,
        conn: "fd00:10::5 -> [fd00:20::11]:8080 as cluster.local/ns/web/sa/frontend",
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "a v4 CIDR never contains a v6 source",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [0.0.0.0/0]
"#,
        conn: "fd00:10::5 -> [fd00:20::11]:8080 as cluster.local/ns/web/sa/frontend",
        want: "deny no-allow-matched",
        ..ROW
    },
    // --- destinationPorts / notDestinationPorts -------------------------------------------
    Row {
        name: "destinationPorts matches the target port",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [9090, 8080]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "destinationPorts other port",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [9090]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notDestinationPorts naming the target port fails the match",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notDestinationPorts: [8080]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "notDestinationPorts naming another port matches",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notDestinationPorts: [22]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "fields of one match are AND-ed",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact web]
        destinationPorts: [9090]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    // --- plaintext (no peer identity) -----------------------------------------------------
    Row {
        name: "plaintext never matches principals presence",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - !Presence
"#,
        conn: PLAIN,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "plaintext never matches namespaces presence",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces:
        - !Presence
"#,
        conn: PLAIN,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "plaintext never matches an empty principal prefix",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals: [!Prefix ""]
"#,
        conn: PLAIN,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "plaintext never matches an empty namespace exact",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact ""]
"#,
        conn: PLAIN,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "plaintext never matches serviceAccounts",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - serviceAccounts: [{namespace: web, serviceAccount: frontend}]
"#,
        conn: PLAIN,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "plaintext passes notPrincipals",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notPrincipals: [!Exact cluster.local/ns/web/sa/frontend]
"#,
        conn: PLAIN,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "plaintext passes notNamespaces",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notNamespaces: [!Exact web]
"#,
        conn: PLAIN,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "plaintext passes notServiceAccounts",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - notServiceAccounts: [{namespace: web, serviceAccount: frontend}]
"#,
        conn: PLAIN,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "DENY notPrincipals presence rejects plaintext",
        policies: r#"
- name: strict
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - notPrincipals:
        - !Presence
"#,
        conn: PLAIN,
        want: "deny shop/strict#0",
        ..ROW
    },
    Row {
        name: "DENY notPrincipals presence lets mTLS through",
        policies: r#"
- name: strict
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - notPrincipals: [!Presence []]
"#,
        want: "allow no-allow-policies",
        ..ROW
    },
    Row {
        name: "plaintext still matches IP and port fields",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [10.0.0.0/8]
        destinationPorts: [8080]
"#,
        conn: PLAIN,
        want: "allow shop/p#0",
        ..ROW
    },
];
