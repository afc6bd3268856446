//! Policies by key and the inbound decision for one workload (protocol.md 8.1 and 8.2).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::model::{Action, Connection, Policy, Scope};

#[derive(Debug)]
struct Entry {
    key: Arc<str>,
    policy: Policy,
}

/// All known Authorization resources, indexed for evaluation.
///
/// Cloning is cheap relative to the policies (entries are shared).
#[derive(Debug, Clone, Default)]
pub struct PolicyStore {
    by_key: HashMap<Arc<str>, Arc<Entry>>,
    /// Namespace-scoped policies by namespace, each list sorted by key.
    by_namespace: HashMap<String, Vec<Arc<Entry>>>,
    /// Global policies, sorted by key.
    global: Vec<Arc<Entry>>,
    /// How many dry-run policies exist; with none, their passes are skipped.
    dry_run_policies: usize,
}

/// The outcome of [`PolicyStore::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Decision,
    /// What dry-run policies would have done; never affects `allowed`.
    pub dry_run: Vec<DryRunResult>,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An enforced DENY policy matched (`rule` is its first matching rule).
    DeniedBy { policy: Arc<str>, rule: usize },
    /// An enforced ALLOW policy matched.
    AllowedBy { policy: Arc<str>, rule: usize },
    /// Enforced ALLOW policies apply but none matched.
    NoAllowMatched,
    /// Only enforced DENY policies apply and none matched.
    NoAllowPolicies,
    /// No enforced policy applies to the workload.
    NoPolicies,
}

/// One dry-run policy's would-be effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunResult {
    /// Policy key `namespace/name`.
    pub policy: Arc<str>,
    pub action: Action,
    /// The matching rule; `None` when the policy did not match.
    pub rule: Option<usize>,
    pub outcome: DryRunOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRunOutcome {
    WouldAllow,
    WouldDeny,
}

impl PolicyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace (by key) a policy. Returns true when it replaced one.
    pub fn insert(&mut self, policy: Policy) -> bool {
        let key: Arc<str> = Arc::from(policy.key());
        let replaced = self.remove(&key);
        let entry = Arc::new(Entry {
            key: key.clone(),
            policy,
        });
        self.dry_run_policies += usize::from(entry.policy.dry_run);
        match entry.policy.scope {
            Scope::Global => insert_sorted(&mut self.global, entry.clone()),
            Scope::Namespace => insert_sorted(
                self.by_namespace
                    .entry(entry.policy.namespace.clone())
                    .or_default(),
                entry.clone(),
            ),
            Scope::WorkloadSelector => {}
        }
        self.by_key.insert(key, entry);
        replaced
    }

    /// Remove a policy by key `namespace/name`. Returns true when it existed.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.by_key.remove(key) else {
            return false;
        };
        self.dry_run_policies -= usize::from(entry.policy.dry_run);
        match entry.policy.scope {
            Scope::Global => self.global.retain(|e| *e.key != *key),
            Scope::Namespace => {
                if let Some(list) = self.by_namespace.get_mut(&entry.policy.namespace) {
                    list.retain(|e| *e.key != *key);
                    if list.is_empty() {
                        self.by_namespace.remove(&entry.policy.namespace);
                    }
                }
            }
            Scope::WorkloadSelector => {}
        }
        true
    }

    pub fn get(&self, key: &str) -> Option<&Policy> {
        self.by_key.get(key).map(|e| &e.policy)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// All policies, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_key.values().map(|e| &e.policy)
    }

    /// The keys in `workload_policy_keys` that name no known policy (for a warning).
    pub fn unknown_keys<'k>(
        &self,
        workload_policy_keys: &'k [String],
    ) -> impl Iterator<Item = &'k str> {
        workload_policy_keys
            .iter()
            .map(String::as_str)
            .filter(|k| !self.by_key.contains_key(*k))
    }

    /// Decide an inbound connection to a workload in `workload_namespace` whose
    /// `authorization_policies` are `workload_policy_keys` (protocol.md 8.1, 8.2).
    ///
    /// Applicable: Namespace-scoped policies of that namespace, all Global policies, then the
    /// listed keys (unknown keys skipped). Order: dry-run DENY (reported), enforced DENY,
    /// dry-run ALLOW (reported), then ALLOW. Allocates only for the result.
    pub fn evaluate(
        &self,
        workload_namespace: &str,
        workload_policy_keys: &[String],
        conn: &Connection,
    ) -> Verdict {
        let applicable = || {
            self.by_namespace
                .get(workload_namespace)
                .into_iter()
                .flatten()
                .chain(self.global.iter())
                .chain(
                    workload_policy_keys
                        .iter()
                        .filter_map(|k| self.by_key.get(k.as_str())),
                )
        };
        let any_dry_run = self.dry_run_policies > 0;
        // Policies of one action and mode; the dry-run passes are skipped when none exist.
        let of = move |action: Action, dry_run: bool| {
            (any_dry_run || !dry_run)
                .then(applicable)
                .into_iter()
                .flatten()
                .filter(move |e| e.policy.action == action && e.policy.dry_run == dry_run)
        };
        let mut dry = Vec::new();

        // 1. Dry-run DENY: report matches.
        for e in of(Action::Deny, true) {
            if let Some(rule) = e.policy.matching_rule(conn) {
                push_once(&mut dry, e, Some(rule), DryRunOutcome::WouldDeny);
            }
        }

        // 2. Enforced DENY.
        let mut any_enforced = false;
        for e in of(Action::Deny, false) {
            any_enforced = true;
            if let Some(rule) = e.policy.matching_rule(conn) {
                return Verdict {
                    allowed: false,
                    reason: Decision::DeniedBy {
                        policy: e.key.clone(),
                        rule,
                    },
                    dry_run: dry,
                };
            }
        }

        // 3. Dry-run ALLOW: report matches, and "would deny" when none matched and no
        //    enforced ALLOW exists (enabling them would then deny this connection).
        let has_enforced_allow = of(Action::Allow, false).next().is_some();
        let mut dry_allow_matched = false;
        let mut dry_allow_seen = false;
        for e in of(Action::Allow, true) {
            dry_allow_seen = true;
            if let Some(rule) = e.policy.matching_rule(conn) {
                dry_allow_matched = true;
                push_once(&mut dry, e, Some(rule), DryRunOutcome::WouldAllow);
            }
        }
        if dry_allow_seen && !dry_allow_matched && !has_enforced_allow {
            for e in of(Action::Allow, true) {
                push_once(&mut dry, e, None, DryRunOutcome::WouldDeny);
            }
        }

        // 4. No enforced ALLOW: allow.
        if !has_enforced_allow {
            return Verdict {
                allowed: true,
                reason: if any_enforced {
                    Decision::NoAllowPolicies
                } else {
                    Decision::NoPolicies
                },
                dry_run: dry,
            };
        }

        // 5. Any enforced ALLOW matches: allow; otherwise deny.
        for e in of(Action::Allow, false) {
            if let Some(rule) = e.policy.matching_rule(conn) {
                return Verdict {
                    allowed: true,
                    reason: Decision::AllowedBy {
                        policy: e.key.clone(),
                        rule,
                    },
                    dry_run: dry,
                };
            }
        }
        Verdict {
            allowed: false,
            reason: Decision::NoAllowMatched,
            dry_run: dry,
        }
    }
}

impl FromIterator<Policy> for PolicyStore {
    fn from_iter<I: IntoIterator<Item = Policy>>(iter: I) -> Self {
        let mut store = PolicyStore::new();
        store.extend(iter);
        store
    }
}

impl Extend<Policy> for PolicyStore {
    fn extend<I: IntoIterator<Item = Policy>>(&mut self, iter: I) {
        for p in iter {
            self.insert(p);
        }
    }
}

fn insert_sorted(list: &mut Vec<Arc<Entry>>, entry: Arc<Entry>) {
    let at = list.partition_point(|e| e.key < entry.key);
    list.insert(at, entry);
}

/// A policy reachable twice (namespace index and workload keys) is reported once.
fn push_once(dry: &mut Vec<DryRunResult>, e: &Entry, rule: Option<usize>, outcome: DryRunOutcome) {
    if dry.iter().any(|d| Arc::ptr_eq(&d.policy, &e.key)) {
        return;
    }
    dry.push(DryRunResult {
        policy: e.key.clone(),
        action: e.policy.action,
        rule,
        outcome,
    });
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::DeniedBy { policy, rule } => write!(f, "denied by {policy} rule {rule}"),
            Decision::AllowedBy { policy, rule } => write!(f, "allowed by {policy} rule {rule}"),
            Decision::NoAllowMatched => f.write_str("no allow policy matched"),
            Decision::NoAllowPolicies => f.write_str("no deny matched and no allow policies"),
            Decision::NoPolicies => f.write_str("no policies"),
        }
    }
}

impl fmt::Display for DryRunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.outcome {
            DryRunOutcome::WouldAllow => "would allow",
            DryRunOutcome::WouldDeny => "would deny",
        };
        match self.rule {
            Some(rule) => write!(f, "dry-run {} rule {rule} {outcome}", self.policy),
            None => write!(f, "dry-run {} (no rule matched) {outcome}", self.policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Clause, Rule};

    fn deny_all(name: &str, namespace: &str, scope: Scope, dry_run: bool) -> Policy {
        Policy {
            name: name.into(),
            namespace: namespace.into(),
            scope,
            action: Action::Deny,
            dry_run,
            rules: vec![Rule {
                clauses: vec![Clause::default()],
            }],
        }
    }

    fn conn() -> Connection {
        Connection {
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.0.2".parse().unwrap(),
            dst_port: 80,
            peer: None,
        }
    }

    #[test]
    fn replace_moves_a_policy_between_indexes() {
        let mut store = PolicyStore::new();
        assert!(!store.insert(deny_all("d", "shop", Scope::Namespace, false)));
        assert!(!store.evaluate("shop", &[], &conn()).allowed);
        // Same key, now selector-scoped: the namespace index must forget it.
        assert!(store.insert(deny_all("d", "shop", Scope::WorkloadSelector, false)));
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.evaluate("shop", &[], &conn()).reason,
            Decision::NoPolicies
        );
        assert!(!store.evaluate("shop", &["shop/d".into()], &conn()).allowed);
        // Now global.
        store.insert(deny_all("d", "shop", Scope::Global, false));
        assert!(!store.evaluate("other", &[], &conn()).allowed);
        assert!(store.remove("shop/d"));
        assert!(!store.remove("shop/d"));
        assert!(store.is_empty());
        assert_eq!(
            store.evaluate("other", &[], &conn()).reason,
            Decision::NoPolicies
        );
    }

    #[test]
    fn dry_run_count_follows_inserts_and_removals() {
        let mut store = PolicyStore::new();
        store.insert(deny_all("d", "shop", Scope::Namespace, true));
        assert_eq!(store.evaluate("shop", &[], &conn()).dry_run.len(), 1);
        store.insert(deny_all("d", "shop", Scope::Namespace, false));
        assert_eq!(store.dry_run_policies, 0);
        store.insert(deny_all("d", "shop", Scope::Namespace, true));
        store.remove("shop/d");
        assert_eq!(store.dry_run_policies, 0);
    }

    #[test]
    fn unknown_keys_are_listed() {
        let store: PolicyStore = [deny_all("d", "shop", Scope::WorkloadSelector, false)]
            .into_iter()
            .collect();
        let keys = vec!["shop/d".to_string(), "shop/x".to_string()];
        assert_eq!(store.unknown_keys(&keys).collect::<Vec<_>>(), ["shop/x"]);
    }

    #[test]
    fn decisions_display() {
        let d = Decision::DeniedBy {
            policy: Arc::from("shop/d"),
            rule: 2,
        };
        assert_eq!(d.to_string(), "denied by shop/d rule 2");
    }
}
