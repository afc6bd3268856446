//! Table-driven Istio authorization semantics: local-config policies, one connection, the
//! expected verdict, the deciding policy/rule and the dry-run reports.

#[path = "../common/mod.rs"]
mod common;
mod match_rows;
mod network_rows;
mod policy_rows;

use authz::{Decision, DryRunOutcome, PolicyStore, parse_policies};
use common::{connection, verdict_text};

/// One case. Connections read `SRC -> DST:PORT [as TD/ns/NS/sa/SA]`; without `as` the
/// connection is plaintext. `want` reads `allow|deny` then `NS/NAME#RULE`, `no-policies`,
/// `no-allow-policies` or `no-allow-matched`. Dry-run entries read `NS/NAME#RULE would-allow`
/// (`#-` when no rule matched).
pub struct Row {
    pub name: &'static str,
    pub policies: &'static str,
    pub workload_namespace: &'static str,
    pub workload_keys: &'static [&'static str],
    pub conn: &'static str,
    pub want: &'static str,
    pub dry_run: &'static [&'static str],
}

/// Defaults for `..ROW`: a workload in `shop` listing no policy keys.
pub const ROW: Row = Row {
    name: "",
    policies: "",
    workload_namespace: "shop",
    workload_keys: &[],
    conn: "10.0.0.5 -> 10.1.0.11:8080 as cluster.local/ns/web/sa/frontend",
    want: "",
    dry_run: &[],
};

/// Runs every row and reports all failures at once.
fn run(rows: &[Row]) -> usize {
    let mut failures = Vec::new();
    for row in rows {
        let policies = match parse_policies(row.policies) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: policies do not parse: {e}", row.name));
                continue;
            }
        };
        let store: PolicyStore = policies.into_iter().collect();
        let keys: Vec<String> = row.workload_keys.iter().map(|k| k.to_string()).collect();
        let v = store.evaluate(row.workload_namespace, &keys, &connection(row.conn));
        let got = verdict_text(&v);
        // The decision kind must agree with `allowed`.
        let consistent = match v.reason {
            Decision::DeniedBy { .. } | Decision::NoAllowMatched => !v.allowed,
            _ => v.allowed,
        };
        let dry: Vec<String> = v
            .dry_run
            .iter()
            .map(|d| {
                let rule = d.rule.map_or("-".to_string(), |r| r.to_string());
                let outcome = match d.outcome {
                    DryRunOutcome::WouldAllow => "would-allow",
                    DryRunOutcome::WouldDeny => "would-deny",
                };
                format!("{}#{rule} {outcome}", d.policy)
            })
            .collect();
        if got != row.want || dry != row.dry_run || !consistent {
            failures.push(format!(
                "{}: want `{}` dry-run {:?}, got `{got}` dry-run {dry:?}",
                row.name, row.want, row.dry_run
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    rows.len()
}

#[test]
fn identity_fields_table() {
    assert!(run(match_rows::ROWS) >= 20);
}

#[test]
fn network_fields_and_plaintext_table() {
    assert!(run(network_rows::ROWS) >= 25);
}

#[test]
fn policy_structure_order_scope_and_dry_run_table() {
    assert!(run(policy_rows::ROWS) >= 30);
}

#[test]
fn row_names_are_unique() {
    let names = match_rows::ROWS
        .iter()
        .chain(network_rows::ROWS)
        .chain(policy_rows::ROWS)
        .map(|r| r.name);
    let total = common::assert_unique_names(names);
    assert!(total >= 60, "only {total} rows");
}
