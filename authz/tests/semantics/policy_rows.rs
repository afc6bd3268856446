//! Empty policy / rule / clause / match, rule and clause combination, DENY before ALLOW,
//! scopes and policy keys, and dry-run.

use crate::{ROW, Row};

const PLAIN: &str = "10.0.0.5 -> 10.1.0.11:8080";

pub const ROWS: &[Row] = &[
    // --- empty policy / rule / clause / match ---------------------------------------------
    Row {
        name: "no policies: allow",
        policies: "",
        want: "allow no-policies",
        ..ROW
    },
    Row {
        name: "ALLOW with zero rules matches nothing: deny",
        policies: r#"
- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: []}
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "DENY with zero rules has no effect",
        policies: r#"
- {name: d, namespace: shop, scope: Namespace, action: Deny}
"#,
        want: "allow no-allow-policies",
        ..ROW
    },
    Row {
        name: "ALLOW with one rule of zero clauses allows all",
        policies: r#"
- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[]]}
"#,
        conn: PLAIN,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "DENY with one rule of zero clauses denies all",
        policies: r#"
- {name: d, namespace: shop, scope: Namespace, action: Deny, rules: [[]]}
"#,
        want: "deny shop/d#0",
        ..ROW
    },
    Row {
        name: "a clause with zero matches matches",
        policies: r#"
- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[]]]}
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "an empty match is skipped: ALLOW never matches",
        policies: r#"
- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{}]]]}
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "an empty match is skipped: DENY has no effect",
        policies: r#"
- {name: d, namespace: shop, scope: Namespace, action: Deny, rules: [[[{}]]]}
"#,
        want: "allow no-allow-policies",
        ..ROW
    },
    Row {
        name: "an empty match beside a matching one",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - {}
      - namespaces: [!Exact web]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "a clause of only empty matches fails its rule",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080]
    - - {}
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    // --- rules OR-ed, clauses AND-ed ------------------------------------------------------
    Row {
        name: "rules are OR-ed and the matching rule is reported",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact admin]
  - - - namespaces: [!Exact web]
"#,
        want: "allow shop/p#1",
        ..ROW
    },
    Row {
        name: "the first matching rule is reported",
        policies: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - destinationPorts: [22]
  - - - destinationPorts: [8080]
  - - - namespaces: [!Exact web]
"#,
        want: "deny shop/d#1",
        ..ROW
    },
    Row {
        name: "clauses are AND-ed: all pass",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080]
    - - namespaces: [!Exact web]
    - - sourceIps: [10.0.0.0/16]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    Row {
        name: "clauses are AND-ed: one fails",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080]
    - - namespaces: [!Exact admin]
"#,
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "matches of a clause are OR-ed",
        policies: r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact admin]
      - sourceIps: [10.0.0.5/32]
"#,
        want: "allow shop/p#0",
        ..ROW
    },
    // --- DENY before ALLOW ----------------------------------------------------------------
    Row {
        name: "DENY beats a matching ALLOW",
        policies: r#"
- {name: a, namespace: shop, scope: Namespace, action: Allow, rules: [[]]}
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - namespaces: [!Exact web]
"#,
        want: "deny shop/d#0",
        ..ROW
    },
    Row {
        name: "a DENY that does not match leaves the ALLOW",
        policies: r#"
- {name: a, namespace: shop, scope: Namespace, action: Allow, rules: [[]]}
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - namespaces: [!Exact legacy]
"#,
        want: "allow shop/a#0",
        ..ROW
    },
    Row {
        name: "ALLOW exists but none matches: deny",
        policies: r#"
- name: a
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
        name: "a later ALLOW matches",
        policies: r#"
- name: a1
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [9090]
- name: a2
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080]
"#,
        want: "allow shop/a2#0",
        ..ROW
    },
    Row {
        name: "only non-matching DENY policies: allow",
        policies: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  rules:
  - - - sourceIps: [192.168.0.0/16]
"#,
        want: "allow no-allow-policies",
        ..ROW
    },
    // --- scopes and workload keys ---------------------------------------------------------
    Row {
        name: "a Namespace policy of another namespace does not apply",
        policies: r#"
- {name: d, namespace: web, scope: Namespace, action: Deny, rules: [[]]}
"#,
        want: "allow no-policies",
        ..ROW
    },
    Row {
        name: "a Global policy applies in every namespace",
        policies: r#"
- {name: d, namespace: istio-system, scope: Global, action: Deny, rules: [[]]}
"#,
        want: "deny istio-system/d#0",
        ..ROW
    },
    Row {
        name: "a Global ALLOW counts with a Namespace ALLOW",
        policies: r#"
- name: mesh
  namespace: istio-system
  scope: Global
  action: Allow
  rules:
  - - - namespaces: [!Exact web]
- name: local
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - namespaces: [!Exact shop]
"#,
        want: "allow istio-system/mesh#0",
        ..ROW
    },
    Row {
        name: "a WorkloadSelector policy not listed by the workload does not apply",
        policies: r#"
- {name: d, namespace: shop, scope: WorkloadSelector, action: Deny, rules: [[]]}
"#,
        want: "allow no-policies",
        ..ROW
    },
    Row {
        name: "a WorkloadSelector policy listed by the workload applies",
        policies: r#"
- {name: d, namespace: shop, scope: WorkloadSelector, action: Deny, rules: [[]]}
"#,
        workload_keys: &["shop/d"],
        want: "deny shop/d#0",
        ..ROW
    },
    Row {
        name: "a listed key applies whatever namespace the policy is in",
        policies: r#"
- {name: a, namespace: istio-system, scope: WorkloadSelector, action: Allow, rules: [[[{namespaces: [!Exact web]}]]]}
"#,
        workload_keys: &["istio-system/a"],
        want: "allow istio-system/a#0",
        ..ROW
    },
    Row {
        name: "unknown workload keys are skipped",
        policies: r#"
- {name: d, namespace: shop, scope: WorkloadSelector, action: Deny, rules: [[]]}
"#,
        workload_keys: &["shop/missing", "other/missing"],
        want: "allow no-policies",
        ..ROW
    },
    Row {
        name: "a listed ALLOW makes unmatched traffic denied",
        policies: r#"
- name: a
  namespace: shop
  scope: WorkloadSelector
  action: Allow
  rules:
  - - - principals: [!Exact cluster.local/ns/web/sa/admin]
"#,
        workload_keys: &["shop/a"],
        want: "deny no-allow-matched",
        ..ROW
    },
    Row {
        name: "the workload's namespace selects Namespace policies",
        policies: r#"
- {name: d, namespace: web, scope: Namespace, action: Deny, rules: [[]]}
"#,
        workload_namespace: "web",
        want: "deny web/d#0",
        ..ROW
    },
    // --- dry-run --------------------------------------------------------------------------
    Row {
        name: "dry-run DENY that matches is reported, not enforced",
        policies: r#"
- {name: d, namespace: shop, scope: Namespace, action: Deny, dryRun: true, rules: [[]]}
"#,
        want: "allow no-policies",
        dry_run: &["shop/d#0 would-deny"],
        ..ROW
    },
    Row {
        name: "dry-run DENY that does not match is not reported",
        policies: r#"
- name: d
  namespace: shop
  scope: Namespace
  action: Deny
  dryRun: true
  rules:
  - - - destinationPorts: [22]
"#,
        want: "allow no-policies",
        ..ROW
    },
    Row {
        name: "dry-run ALLOW that matches is reported",
        policies: r#"
- name: a
  namespace: shop
  scope: Namespace
  action: Allow
  dryRun: true
  rules:
  - - - destinationPorts: [9090]
  - - - destinationPorts: [8080]
"#,
        want: "allow no-policies",
        dry_run: &["shop/a#1 would-allow"],
        ..ROW
    },
    Row {
        name: "dry-run ALLOW that does not match would deny when no ALLOW is enforced",
        policies: r#"
- name: a
  namespace: shop
  scope: Namespace
  action: Allow
  dryRun: true
  rules:
  - - - destinationPorts: [9090]
"#,
        want: "allow no-policies",
        dry_run: &["shop/a#- would-deny"],
        ..ROW
    },
    Row {
        name: "dry-run ALLOW that does not match is silent when an enforced ALLOW exists",
        policies: r#"
- {name: a, namespace: shop, scope: Namespace, action: Allow, dryRun: true, rules: []}
- {name: b, namespace: shop, scope: Namespace, action: Allow, rules: [[]]}
"#,
        want: "allow shop/b#0",
        ..ROW
    },
    Row {
        name: "a dry-run ALLOW does not turn on default deny",
        policies: r#"
- {name: a, namespace: shop, scope: Namespace, action: Allow, dryRun: true, rules: []}
- {name: d, namespace: shop, scope: Namespace, action: Deny, rules: [[[{destinationPorts: [22]}]]]}
"#,
        want: "allow no-allow-policies",
        dry_run: &["shop/a#- would-deny"],
        ..ROW
    },
    Row {
        name: "enforced DENY wins and earlier dry-run DENY is still reported",
        policies: r#"
- {name: dry, namespace: shop, scope: Namespace, action: Deny, dryRun: true, rules: [[]]}
- {name: real, namespace: shop, scope: Namespace, action: Deny, rules: [[]]}
- {name: a, namespace: shop, scope: Namespace, action: Allow, dryRun: true, rules: [[]]}
"#,
        want: "deny shop/real#0",
        dry_run: &["shop/dry#0 would-deny"],
        ..ROW
    },
    Row {
        name: "dry-run ALLOW matching while the enforced ALLOW does not",
        policies: r#"
- {name: dry, namespace: shop, scope: Namespace, action: Allow, dryRun: true, rules: [[]]}
- {name: real, namespace: shop, scope: Namespace, action: Allow, rules: []}
"#,
        want: "deny no-allow-matched",
        dry_run: &["shop/dry#0 would-allow"],
        ..ROW
    },
    Row {
        name: "a dry-run policy reached by scope and by key is reported once",
        policies: r#"
- {name: d, namespace: shop, scope: Namespace, action: Deny, dryRun: true, rules: [[]]}
"#,
        workload_keys: &["shop/d"],
        want: "allow no-policies",
        dry_run: &["shop/d#0 would-deny"],
        ..ROW
    },
];
