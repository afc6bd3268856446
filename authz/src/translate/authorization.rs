//! `security.istio.io/v1` AuthorizationPolicy → Authorization for ztunnel (protocol.md 8.3).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_yaml::Value;

use super::values::{
    accounts, annotation_bool, nets, no_empty_values, port_strings, ports, string_matches, strings,
};
use super::{Ctx, Input, Labels, TranslateError, parse_object, selector_matches};
use crate::model::{Action, Clause, Match, Policy, Rule, Scope};

const KIND: &str = "AuthorizationPolicy";
const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    target_ref: Option<Value>,
    #[serde(default)]
    target_refs: Option<Vec<Value>>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    provider: Option<Value>,
    #[serde(default)]
    rules: Option<Vec<Option<RuleSpec>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    match_labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSpec {
    #[serde(default)]
    from: Option<Vec<Option<FromSpec>>>,
    #[serde(default)]
    to: Option<Vec<Option<ToSpec>>>,
    #[serde(default)]
    when: Option<Vec<Option<Condition>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FromSpec {
    #[serde(default)]
    source: Option<SourceSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceSpec {
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    not_principals: Vec<String>,
    #[serde(default)]
    request_principals: Vec<String>,
    #[serde(default)]
    not_request_principals: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    not_namespaces: Vec<String>,
    #[serde(default)]
    service_accounts: Vec<String>,
    #[serde(default)]
    not_service_accounts: Vec<String>,
    #[serde(default)]
    ip_blocks: Vec<String>,
    #[serde(default)]
    not_ip_blocks: Vec<String>,
    #[serde(default)]
    remote_ip_blocks: Vec<String>,
    #[serde(default)]
    not_remote_ip_blocks: Vec<String>,
    #[serde(default)]
    trust_domains: Vec<String>,
    #[serde(default)]
    not_trust_domains: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ToSpec {
    #[serde(default)]
    operation: Option<OperationSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OperationSpec {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    not_hosts: Vec<String>,
    #[serde(default)]
    ports: Vec<Value>,
    #[serde(default)]
    not_ports: Vec<Value>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    not_methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    not_paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Condition {
    #[serde(default)]
    key: String,
    #[serde(default)]
    values: Vec<Value>,
    #[serde(default)]
    not_values: Vec<Value>,
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
    let (obj, ctx) = parse_object::<Spec>(input.into(), KIND)?;
    let spec = &obj.spec;
    let mut warnings = Vec::new();

    let has_target_refs =
        spec.target_ref.is_some() || spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
    if spec.selector.is_some() && has_target_refs {
        return Err(ctx.err(
            "spec.selector",
            "cannot be set together with targetRef/targetRefs",
        ));
    }
    if spec.target_ref.is_some() && spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ctx.err("spec.targetRef", "cannot be set together with targetRefs"));
    }
    let selector = spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone().unwrap_or_default());
    if selector.as_ref().is_some_and(|s| s.is_empty()) {
        warnings.push("spec.selector has no labels: it selects every workload in scope".into());
    }

    let action_name = spec.action.as_deref().unwrap_or("ALLOW");
    let action = match action_name {
        "ALLOW" => Some(Action::Allow),
        "DENY" => Some(Action::Deny),
        "AUDIT" | "CUSTOM" => None,
        other => {
            return Err(ctx.err(
                "spec.action",
                format!("unknown action {other:?} (expected ALLOW, DENY, AUDIT or CUSTOM)"),
            ));
        }
    };
    if spec.provider.is_some() && action_name != "CUSTOM" {
        return Err(ctx.err("spec.provider", "only allowed with action CUSTOM"));
    }

    let dry_run = match obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
    {
        None => false,
        Some(v) => match annotation_bool(v) {
            Some(b) => b,
            None => {
                warnings.push(format!(
                    "annotation {DRY_RUN_ANNOTATION}: {v:?} is not a boolean; treated as false"
                ));
                false
            }
        },
    };

    // Validate and convert every rule even when the result is not sent.
    let conv_action = action.unwrap_or(Action::Allow);
    let mut rules = Vec::new();
    let mut l7 = BTreeSet::new();
    if action == Some(Action::Deny) && spec.rules.is_none() {
        warnings.push("DENY policy without rules never matches and has no effect".into());
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let path = format!("spec.rules[{i}]");
        let rule = rule
            .as_ref()
            .ok_or_else(|| ctx.err(&path, "must not be null"))?;
        if let Some(r) = convert_rule(&ctx, rule, &path, &obj.namespace, conv_action, &mut l7)? {
            rules.push(r);
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
        rules,
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

    if let Some(to) = &rule.to {
        if to.is_empty() {
            return Err(ctx.err(format!("{path}.to"), "must not be empty"));
        }
        let mut matches = Vec::with_capacity(to.len());
        for (j, t) in to.iter().enumerate() {
            let at = format!("{path}.to[{j}].operation");
            let op = t
                .as_ref()
                .and_then(|t| t.operation.as_ref())
                .ok_or_else(|| ctx.err(&at, "required"))?;
            let l7_lists = [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ];
            if op.ports.is_empty()
                && op.not_ports.is_empty()
                && l7_lists.iter().all(|(_, l)| l.is_empty())
            {
                return Err(ctx.err(&at, "must not be empty"));
            }
            for (name, list) in l7_lists {
                no_empty_values(ctx, &at, name, list)?;
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

    if let Some(from) = &rule.from {
        if from.is_empty() {
            return Err(ctx.err(format!("{path}.from"), "must not be empty"));
        }
        let mut matches = Vec::with_capacity(from.len());
        for (j, f) in from.iter().enumerate() {
            let at = format!("{path}.from[{j}].source");
            let src = f
                .as_ref()
                .and_then(|f| f.source.as_ref())
                .ok_or_else(|| ctx.err(&at, "required"))?;
            let l4_lists = [
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
                ("serviceAccounts", &src.service_accounts),
                ("notServiceAccounts", &src.not_service_accounts),
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
            ];
            let l7_lists = [
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
                ("trustDomains", &src.trust_domains),
                ("notTrustDomains", &src.not_trust_domains),
            ];
            if l4_lists
                .iter()
                .chain(l7_lists.iter())
                .all(|(_, l)| l.is_empty())
            {
                return Err(ctx.err(&at, "must not be empty"));
            }
            for (name, list) in l4_lists.iter().chain(l7_lists.iter()) {
                no_empty_values(ctx, &at, name, list)?;
            }
            let identity_set = [
                &src.principals,
                &src.not_principals,
                &src.namespaces,
                &src.not_namespaces,
            ]
            .iter()
            .any(|l| !l.is_empty());
            if identity_set
                && !(src.service_accounts.is_empty() && src.not_service_accounts.is_empty())
            {
                return Err(ctx.err(
                    format!("{at}.serviceAccounts"),
                    "cannot be combined with principals or namespaces",
                ));
            }
            nets(ctx, &format!("{at}.remoteIpBlocks"), &src.remote_ip_blocks)?;
            nets(
                ctx,
                &format!("{at}.notRemoteIpBlocks"),
                &src.not_remote_ip_blocks,
            )?;
            for (name, list) in l7_lists {
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

    for (j, cond) in rule.when.iter().flatten().enumerate() {
        let at = format!("{path}.when[{j}]");
        let cond = cond
            .as_ref()
            .ok_or_else(|| ctx.err(&at, "must not be null"))?;
        if cond.key.is_empty() {
            return Err(ctx.err(format!("{at}.key"), "must not be empty"));
        }
        if cond.values.is_empty() && cond.not_values.is_empty() {
            return Err(ctx.err(&at, "at least one of values or notValues must be set"));
        }
        let values = strings(ctx, &format!("{at}.values"), &cond.values)?;
        let not_values = strings(ctx, &format!("{at}.notValues"), &cond.not_values)?;
        let (vp, np) = (format!("{at}.values"), format!("{at}.notValues"));
        let mut m = Match::default();
        match cond.key.as_str() {
            "source.ip" => {
                m.source_ips = nets(ctx, &vp, &values)?;
                m.not_source_ips = nets(ctx, &np, &not_values)?;
            }
            "destination.ip" => {
                m.destination_ips = nets(ctx, &vp, &values)?;
                m.not_destination_ips = nets(ctx, &np, &not_values)?;
            }
            "destination.port" => {
                m.destination_ports = port_strings(ctx, &vp, &values)?;
                m.not_destination_ports = port_strings(ctx, &np, &not_values)?;
            }
            "source.namespace" => {
                m.namespaces = string_matches(&values);
                m.not_namespaces = string_matches(&not_values);
            }
            "source.principal" => {
                m.principals = string_matches(&values);
                m.not_principals = string_matches(&not_values);
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
