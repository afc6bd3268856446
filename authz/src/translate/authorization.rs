//! `security.istio.io/v1` AuthorizationPolicy → Authorization for ztunnel (protocol.md 8.3).

use std::collections::BTreeSet;

use super::spec::{
    ActionName, DRY_RUN_ANNOTATION, KIND, RuleSpec, Spec, conditions, header, operations, rules,
    sources,
};
use super::values::{accounts, nets, port_strings, ports, string_matches};
use super::{Ctx, ISTIO_SECURITY, Input, Labels, TranslateError, parse_object, selector_matches};
use crate::model::{Action, Clause, Match, Policy, Rule, Scope};

/// Control-plane settings that change the translation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// istiod `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY` (default false): when false, a
    /// policy annotated `istio.io/dry-run: "true"` is not sent to ztunnel at all.
    pub enable_dry_run: bool,
}

/// The result of translating one AuthorizationPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub name: String,
    pub namespace: String,
    /// The Authorization to send to ztunnel; `None` when it is not for ztunnel (see `skipped`).
    pub policy: Option<Policy>,
    /// `spec.selector.matchLabels` when a selector is set (scope WorkloadSelector): add the
    /// policy key to the `authorization_policies` of the workloads it selects (see
    /// [`Translated::selects`]).
    pub selector: Option<Labels>,
    /// Why `policy` is `None`.
    pub skipped: Option<SkipReason>,
    /// Accepted-with-warning conditions (for the resource status / logs).
    pub warnings: Vec<String>,
}

/// Why an AuthorizationPolicy produced nothing for ztunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `targetRef`/`targetRefs`: enforced by waypoints or gateways instead.
    TargetRefs,
    /// `CUSTOM` or `AUDIT` (status reason `UnsupportedValue`).
    UnsupportedAction(String),
    /// Dry-run annotation while dry-run support is disabled (status reason `UnsupportedValue`).
    DryRunNotEnabled,
}

impl Translated {
    /// Key `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether a workload should list this policy's key: a selector policy selects workloads of
    /// its own namespace, or of every namespace when it lives in the root namespace.
    pub fn selects(&self, root_namespace: &str, workload_namespace: &str, labels: &Labels) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        self.policy.is_some()
            && (self.namespace == workload_namespace || self.namespace == root_namespace)
            && selector_matches(selector, labels)
    }
}

/// Translate one AuthorizationPolicy for ztunnel.
///
/// `Err` for what Istio's validation rejects; `Ok` with `policy: None` (and `skipped`) for a
/// policy that is valid but not for ztunnel.
pub fn authorization_policy<'a>(
    input: impl Into<Input<'a>>,
    root_namespace: &str,
    opts: &TranslateOptions,
) -> Result<Translated, TranslateError> {
    let (obj, ctx) = parse_object::<Spec>(input.into(), KIND, ISTIO_SECURITY)?;
    let spec = &obj.spec;
    let mut warnings = Vec::new();

    let head = header(&ctx, spec, &obj.metadata, &mut warnings)?;
    let (selector, has_target_refs, dry_run) = (head.selector, head.has_target_refs, head.dry_run);
    let action_name = head.action.as_str();
    let action = match head.action {
        ActionName::Allow => Some(Action::Allow),
        ActionName::Deny => Some(Action::Deny),
        ActionName::Audit | ActionName::Custom => None,
    };

    // Validate and convert every rule even when the result is not sent.
    let conv_action = action.unwrap_or(Action::Allow);
    let mut converted = Vec::new();
    let mut l7 = BTreeSet::new();
    if action == Some(Action::Deny) && spec.rules.is_none() {
        warnings.push("DENY policy without rules never matches and has no effect".into());
    }
    for (path, rule) in rules(&ctx, spec)? {
        if let Some(r) = convert_rule(&ctx, rule, &path, &obj.namespace, conv_action, &mut l7)? {
            converted.push(r);
        }
    }

    let skip = |reason: SkipReason, warnings: Vec<String>| Translated {
        name: obj.name.clone(),
        namespace: obj.namespace.clone(),
        policy: None,
        selector: selector.clone(),
        skipped: Some(reason),
        warnings,
    };
    if dry_run && !opts.enable_dry_run {
        warnings.push(format!(
            "{DRY_RUN_ANNOTATION} is set but dry-run policies are not enabled for ztunnel; not applied"
        ));
        return Ok(skip(SkipReason::DryRunNotEnabled, warnings));
    }
    if has_target_refs {
        return Ok(skip(SkipReason::TargetRefs, warnings));
    }
    let Some(action) = action else {
        warnings.push(format!("ztunnel does not support action {action_name}"));
        return Ok(skip(
            SkipReason::UnsupportedAction(action_name.to_string()),
            warnings,
        ));
    };

    let scope = match (&selector, obj.namespace == root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };
    let policy = Policy {
        name: obj.name.clone(),
        namespace: obj.namespace.clone(),
        scope,
        action,
        dry_run,
        rules: converted,
    };
    if !l7.is_empty() {
        let found = l7.into_iter().collect::<Vec<_>>().join(", ");
        let effect = match action {
            Action::Allow => {
                "ALLOW rules using them are dropped, so this policy allows less than written"
            }
            Action::Deny if policy.rules.iter().any(rule_can_match) => {
                "only the remaining L4 conditions of DENY rules are enforced, so this policy denies more than written"
            }
            Action::Deny => {
                "no DENY rule has an enforceable part left, so this policy has no effect at ztunnel"
            }
        };
        warnings.push(format!(
            "HTTP attributes need a waypoint and are not enforced by ztunnel (found: {found}); {effect}"
        ));
    }
    Ok(Translated {
        name: obj.name,
        namespace: obj.namespace,
        policy: Some(policy),
        selector,
        skipped: None,
        warnings,
    })
}

/// False when some clause holds only empty matches (skipped by ztunnel, so never matching).
fn rule_can_match(rule: &Rule) -> bool {
    rule.clauses
        .iter()
        .all(|c| c.matches.is_empty() || c.matches.iter().any(|m| !m.is_empty()))
}

/// One AuthorizationPolicy rule → one Rule: a clause of all `to` matches, a clause of all
/// `from` matches, and a clause per `when`. `None` for an ALLOW rule using L7 attributes.
fn convert_rule(
    ctx: &Ctx,
    rule: &RuleSpec,
    path: &str,
    namespace: &str,
    action: Action,
    l7_found: &mut BTreeSet<String>,
) -> Result<Option<Rule>, TranslateError> {
    let mut has_l7 = false;
    let mut note_l7 = |name: &str| {
        has_l7 = true;
        l7_found.insert(name.to_string());
    };
    let mut clauses = Vec::new();

    if let Some(ops) = operations(ctx, rule, path)? {
        let mut matches = Vec::with_capacity(ops.len());
        for (at, op) in ops {
            for (name, list) in op.l7_lists() {
                if !list.is_empty() {
                    note_l7(name);
                }
            }
            matches.push(Match {
                destination_ports: ports(ctx, &format!("{at}.ports"), &op.ports)?,
                not_destination_ports: ports(ctx, &format!("{at}.notPorts"), &op.not_ports)?,
                ..Default::default()
            });
        }
        clauses.push(Clause { matches });
    }

    if let Some(srcs) = sources(ctx, rule, path)? {
        let mut matches = Vec::with_capacity(srcs.len());
        for (at, src) in srcs {
            nets(ctx, &format!("{at}.remoteIpBlocks"), &src.remote_ip_blocks)?;
            nets(
                ctx,
                &format!("{at}.notRemoteIpBlocks"),
                &src.not_remote_ip_blocks,
            )?;
            for (name, list) in src.l7_lists() {
                if !list.is_empty() {
                    note_l7(name);
                }
            }
            matches.push(Match {
                source_ips: nets(ctx, &format!("{at}.ipBlocks"), &src.ip_blocks)?,
                not_source_ips: nets(ctx, &format!("{at}.notIpBlocks"), &src.not_ip_blocks)?,
                namespaces: string_matches(&src.namespaces),
                not_namespaces: string_matches(&src.not_namespaces),
                principals: string_matches(&src.principals),
                not_principals: string_matches(&src.not_principals),
                service_accounts: accounts(
                    ctx,
                    &format!("{at}.serviceAccounts"),
                    &src.service_accounts,
                    namespace,
                )?,
                not_service_accounts: accounts(
                    ctx,
                    &format!("{at}.notServiceAccounts"),
                    &src.not_service_accounts,
                    namespace,
                )?,
                ..Default::default()
            });
        }
        clauses.push(Clause { matches });
    }

    for cond in conditions(ctx, rule, path)? {
        let (values, not_values) = (&cond.values, &cond.not_values);
        let (vp, np) = (
            format!("{}.values", cond.at),
            format!("{}.notValues", cond.at),
        );
        let mut m = Match::default();
        match cond.key {
            "source.ip" => {
                m.source_ips = nets(ctx, &vp, values)?;
                m.not_source_ips = nets(ctx, &np, not_values)?;
            }
            "destination.ip" => {
                m.destination_ips = nets(ctx, &vp, values)?;
                m.not_destination_ips = nets(ctx, &np, not_values)?;
            }
            "destination.port" => {
                m.destination_ports = port_strings(ctx, &vp, values)?;
                m.not_destination_ports = port_strings(ctx, &np, not_values)?;
            }
            "source.namespace" => {
                m.namespaces = string_matches(values);
                m.not_namespaces = string_matches(not_values);
            }
            "source.principal" => {
                m.principals = string_matches(values);
                m.not_principals = string_matches(not_values);
            }
            // Any other key is L7: its match stays empty, so the clause never matches.
            other => note_l7(other),
        }
        clauses.push(Clause { matches: vec![m] });
    }

    if has_l7 && action == Action::Allow {
        return Ok(None);
    }
    Ok(Some(Rule { clauses }))
}
