//! The policies of one waypoint (or one of its targets) and the decision for one request, in
//! the order Envoy applies Istio's filters.
//!
//! Rules, in order:
//! 1. CUSTOM first ([`HttpPolicies::custom`]): the first enforced CUSTOM policy that matches,
//!    by key, names the external authorizer to ask. Istio allows one provider per workload;
//!    when policies of several providers match, the first by key wins.
//! 2. AUDIT: every matching enforced AUDIT policy is reported, whatever the verdict.
//! 3. Dry-run DENY: matches reported.
//! 4. An enforced DENY that matches denies.
//! 5. Dry-run ALLOW: matches reported; when none matched and no enforced ALLOW exists, each is
//!    reported as "would deny" (enabling them would deny this request). As at L4 (store.rs).
//! 6. No enforced ALLOW policy: allowed. Otherwise the first matching ALLOW allows, and none
//!    matching denies.
//!
//! Dry-run CUSTOM and AUDIT policies are neither enforced nor reported (Istio supports dry-run
//! for ALLOW and DENY only; the translation warns). Every list is sorted by key, so results
//! are deterministic. Deciding allocates nothing unless something is audited or dry-run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::model::{HttpAction, HttpPolicy};
use super::request::{Attrs, Request};
use crate::model::Action;
use crate::store::{DryRunOutcome, DryRunResult};

#[derive(Debug)]
struct Entry {
    key: Arc<str>,
    /// The CUSTOM provider, shared with every [`CustomCheck`].
    provider: Option<Arc<str>>,
    policy: HttpPolicy,
}

impl Entry {
    fn matching(&self, a: &Attrs<'_>) -> Option<RuleRef> {
        let rule = self.policy.matching_rule_attrs(a)?;
        Some(RuleRef {
            policy: self.key.clone(),
            rule,
        })
    }
}

/// Which list a policy is evaluated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Custom,
    Audit,
    Deny,
    Allow,
    DryDeny,
    DryAllow,
    /// Dry-run CUSTOM or AUDIT: kept, never evaluated.
    Inert,
}

fn class(p: &HttpPolicy) -> Class {
    match (&p.action, p.dry_run) {
        (HttpAction::Custom { .. }, false) => Class::Custom,
        (HttpAction::Audit, false) => Class::Audit,
        (HttpAction::Deny, false) => Class::Deny,
        (HttpAction::Allow, false) => Class::Allow,
        (HttpAction::Deny, true) => Class::DryDeny,
        (HttpAction::Allow, true) => Class::DryAllow,
        (HttpAction::Custom { .. } | HttpAction::Audit, true) => Class::Inert,
    }
}

/// The L7 policies that apply to one waypoint target.
///
/// Cloning is cheap relative to the policies (entries are shared).
#[derive(Debug, Clone, Default)]
pub struct HttpPolicies {
    by_key: BTreeMap<Arc<str>, Arc<Entry>>,
    /// Per [`Class`], each sorted by key.
    custom: Vec<Arc<Entry>>,
    audit: Vec<Arc<Entry>>,
    deny: Vec<Arc<Entry>>,
    allow: Vec<Arc<Entry>>,
    dry_deny: Vec<Arc<Entry>>,
    dry_allow: Vec<Arc<Entry>>,
}

/// A policy and the index of its first matching rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// `namespace/name`.
    pub policy: Arc<str>,
    pub rule: usize,
}

/// Ask `provider` before deciding (rule 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCheck {
    pub policy: Arc<str>,
    pub rule: usize,
    pub provider: Arc<str>,
}

/// The outcome of [`HttpPolicies::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpDecision {
    pub verdict: HttpVerdict,
    /// Matching AUDIT policies, by key; never affects `verdict`.
    pub audited: Vec<RuleRef>,
    /// What dry-run DENY and ALLOW policies would have done; never affects `verdict`.
    pub dry_run: Vec<DryRunResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    /// `by`: the matching ALLOW policy; `None` when no enforced ALLOW policy applies.
    Allowed { by: Option<RuleRef> },
    /// `by`: the matching DENY policy; `None` when ALLOW policies apply and none matched.
    Denied {
        by: Option<RuleRef>,
        reason: DenyReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    DenyPolicyMatched,
    NoAllowMatched,
}

impl HttpDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, HttpVerdict::Allowed { .. })
    }
}

impl HttpPolicies {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace (by key) a policy. Returns true when it replaced one.
    pub fn insert(&mut self, policy: HttpPolicy) -> bool {
        let key: Arc<str> = Arc::from(policy.key());
        let replaced = self.remove(&key);
        let provider = match &policy.action {
            HttpAction::Custom { provider } => Some(Arc::from(provider.as_str())),
            _ => None,
        };
        let entry = Arc::new(Entry {
            key: key.clone(),
            provider,
            policy,
        });
        if let Some(list) = self.list_mut(class(&entry.policy)) {
            let at = list.partition_point(|e| e.key < entry.key);
            list.insert(at, entry.clone());
        }
        self.by_key.insert(key, entry);
        replaced
    }

    /// Remove a policy by key `namespace/name`. Returns true when it existed.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.by_key.remove(key) else {
            return false;
        };
        if let Some(list) = self.list_mut(class(&entry.policy)) {
            list.retain(|e| *e.key != *key);
        }
        true
    }

    fn list_mut(&mut self, class: Class) -> Option<&mut Vec<Arc<Entry>>> {
        match class {
            Class::Custom => Some(&mut self.custom),
            Class::Audit => Some(&mut self.audit),
            Class::Deny => Some(&mut self.deny),
            Class::Allow => Some(&mut self.allow),
            Class::DryDeny => Some(&mut self.dry_deny),
            Class::DryAllow => Some(&mut self.dry_allow),
            Class::Inert => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&HttpPolicy> {
        self.by_key.get(key).map(|e| &e.policy)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// All policies, by key.
    pub fn iter(&self) -> impl Iterator<Item = &HttpPolicy> {
        self.by_key.values().map(|e| &e.policy)
    }

    /// Rule 1: the external authorizer to ask first, if any CUSTOM policy matches.
    pub fn custom(&self, req: &Request<'_>) -> Option<CustomCheck> {
        let attrs = Attrs::new(req);
        self.custom.iter().find_map(|e| {
            let provider = e.provider.clone()?;
            let RuleRef { policy, rule } = e.matching(&attrs)?;
            Some(CustomCheck {
                policy,
                rule,
                provider,
            })
        })
    }

    /// Rules 2 to 6: the DENY/ALLOW verdict, with what AUDIT and dry-run policies report.
    pub fn decide(&self, req: &Request<'_>) -> HttpDecision {
        let attrs = Attrs::new(req);
        let audited: Vec<RuleRef> = self
            .audit
            .iter()
            .filter_map(|e| e.matching(&attrs))
            .collect();
        let mut dry_run = Vec::new();
        let report = |dry: &mut Vec<DryRunResult>, e: &Entry, action, rule, outcome| {
            dry.push(DryRunResult {
                policy: e.key.clone(),
                action,
                rule,
                outcome,
            });
        };
        let done = |verdict, dry_run| HttpDecision {
            verdict,
            audited,
            dry_run,
        };

        for e in &self.dry_deny {
            if let Some(r) = e.matching(&attrs) {
                let outcome = DryRunOutcome::WouldDeny;
                report(&mut dry_run, e, Action::Deny, Some(r.rule), outcome);
            }
        }
        if let Some(by) = self.deny.iter().find_map(|e| e.matching(&attrs)) {
            let reason = DenyReason::DenyPolicyMatched;
            return done(
                HttpVerdict::Denied {
                    by: Some(by),
                    reason,
                },
                dry_run,
            );
        }

        let mut dry_allow_matched = false;
        for e in &self.dry_allow {
            if let Some(r) = e.matching(&attrs) {
                dry_allow_matched = true;
                let outcome = DryRunOutcome::WouldAllow;
                report(&mut dry_run, e, Action::Allow, Some(r.rule), outcome);
            }
        }
        if self.allow.is_empty() {
            if !dry_allow_matched {
                for e in &self.dry_allow {
                    report(
                        &mut dry_run,
                        e,
                        Action::Allow,
                        None,
                        DryRunOutcome::WouldDeny,
                    );
                }
            }
            return done(HttpVerdict::Allowed { by: None }, dry_run);
        }
        match self.allow.iter().find_map(|e| e.matching(&attrs)) {
            Some(by) => done(HttpVerdict::Allowed { by: Some(by) }, dry_run),
            None => {
                let reason = DenyReason::NoAllowMatched;
                done(HttpVerdict::Denied { by: None, reason }, dry_run)
            }
        }
    }
}

impl FromIterator<HttpPolicy> for HttpPolicies {
    fn from_iter<I: IntoIterator<Item = HttpPolicy>>(iter: I) -> Self {
        let mut set = HttpPolicies::new();
        set.extend(iter);
        set
    }
}

impl Extend<HttpPolicy> for HttpPolicies {
    fn extend<I: IntoIterator<Item = HttpPolicy>>(&mut self, iter: I) {
        for p in iter {
            self.insert(p);
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}", self.policy, self.rule)
    }
}

impl fmt::Display for CustomCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "custom {} rule {} (provider {})",
            self.policy, self.rule, self.provider
        )
    }
}

impl fmt::Display for HttpVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpVerdict::Allowed { by: Some(by) } => write!(f, "allowed by {by}"),
            HttpVerdict::Allowed { by: None } => f.write_str("allowed: no ALLOW policy applies"),
            HttpVerdict::Denied { by: Some(by), .. } => write!(f, "denied by {by}"),
            HttpVerdict::Denied { by: None, reason } => write!(f, "denied: {reason}"),
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::DenyPolicyMatched => "a DENY policy matched",
            DenyReason::NoAllowMatched => "no ALLOW policy matched",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpRule;

    fn policy(name: &str, action: HttpAction, dry_run: bool) -> HttpPolicy {
        HttpPolicy {
            name: name.into(),
            namespace: "shop".into(),
            action,
            dry_run,
            rules: vec![HttpRule::default()],
        }
    }

    #[test]
    fn replace_moves_a_policy_between_lists() {
        let req = Request::new(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "GET",
            "a",
            "/",
        );
        let mut set = HttpPolicies::new();
        assert!(!set.insert(policy("p", HttpAction::Deny, false)));
        assert!(!set.decide(&req).is_allowed());
        assert!(set.insert(policy("p", HttpAction::Deny, true)));
        assert!(set.decide(&req).is_allowed());
        assert_eq!(set.decide(&req).dry_run.len(), 1);
        assert!(set.insert(policy("p", HttpAction::Audit, true)));
        assert_eq!(set.len(), 1);
        assert!(set.decide(&req).dry_run.is_empty() && set.decide(&req).audited.is_empty());
        assert!(set.remove("shop/p"));
        assert!(!set.remove("shop/p"));
        assert!(set.is_empty() && set.deny.is_empty() && set.dry_deny.is_empty());
    }

    #[test]
    fn verdicts_display() {
        let by = RuleRef {
            policy: Arc::from("shop/d"),
            rule: 2,
        };
        let denied = HttpVerdict::Denied {
            by: Some(by),
            reason: DenyReason::DenyPolicyMatched,
        };
        assert_eq!(denied.to_string(), "denied by shop/d rule 2");
        let none = HttpVerdict::Denied {
            by: None,
            reason: DenyReason::NoAllowMatched,
        };
        assert_eq!(none.to_string(), "denied: no ALLOW policy matched");
    }
}
