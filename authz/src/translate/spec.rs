//! The AuthorizationPolicy spec as written, and the checks both translations share (for
//! ztunnel in `authorization`, for waypoints in `waypoint`).
//!
//! Rules, in order:
//! 1. Serde checks the shape: camelCase keys, unknown keys rejected.
//! 2. [`header`]: `selector` excludes `targetRef`/`targetRefs`, which exclude each other; the
//!    action is ALLOW (default), DENY, AUDIT or CUSTOM; `provider` only with CUSTOM; the
//!    dry-run annotation is a Go boolean (otherwise false, with a warning).
//! 3. [`rules`], [`operations`], [`sources`], [`conditions`]: what Istio's validation rejects
//!    in a rule (null entries, empty `to`/`from` lists, empty operations and sources, empty
//!    strings, serviceAccounts with principals or namespaces, a `when` without a key or
//!    without values). Each translation then converts the values it enforces.

use serde::Deserialize;
use serde_yaml::Value;

use super::values::{annotation_bool, no_empty_values, strings};
use super::{Ctx, Labels, Metadata, TranslateError};

pub(super) const KIND: &str = "AuthorizationPolicy";
pub(super) const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Spec {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub target_ref: Option<Value>,
    #[serde(default)]
    pub target_refs: Option<Vec<Value>>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub provider: Option<Value>,
    #[serde(default)]
    pub rules: Option<Vec<Option<RuleSpec>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Selector {
    #[serde(default)]
    pub match_labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RuleSpec {
    #[serde(default)]
    pub from: Option<Vec<Option<FromSpec>>>,
    #[serde(default)]
    pub to: Option<Vec<Option<ToSpec>>>,
    #[serde(default)]
    pub when: Option<Vec<Option<ConditionSpec>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct FromSpec {
    #[serde(default)]
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SourceSpec {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
}

impl SourceSpec {
    /// The fields ztunnel can enforce, by their YAML names.
    pub fn l4_lists(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
        ]
    }

    /// The fields only a waypoint can enforce.
    pub fn l7_lists(&self) -> [(&'static str, &Vec<String>); 6] {
        [
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ToSpec {
    #[serde(default)]
    pub operation: Option<OperationSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct OperationSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Value>,
    #[serde(default)]
    pub not_ports: Vec<Value>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

impl OperationSpec {
    /// The string fields (all HTTP-only), by their YAML names.
    pub fn l7_lists(&self) -> [(&'static str, &Vec<String>); 6] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ConditionSpec {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<Value>,
    #[serde(default)]
    pub not_values: Vec<Value>,
}

/// `spec.action`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActionName {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl ActionName {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::Allow => "ALLOW",
            ActionName::Deny => "DENY",
            ActionName::Audit => "AUDIT",
            ActionName::Custom => "CUSTOM",
        }
    }
}

/// What the checks of rule 2 found.
pub(super) struct Header {
    /// `spec.selector.matchLabels` when a selector is set.
    pub selector: Option<Labels>,
    pub has_target_refs: bool,
    pub action: ActionName,
    pub dry_run: bool,
}

/// Rule 2, before any rule is looked at.
pub(super) fn header(
    ctx: &Ctx,
    spec: &Spec,
    metadata: &Metadata,
    warnings: &mut Vec<String>,
) -> Result<Header, TranslateError> {
    let has_target_list = spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
    let has_target_refs = spec.target_ref.is_some() || has_target_list;
    if spec.selector.is_some() && has_target_refs {
        return Err(ctx.err(
            "spec.selector",
            "cannot be set together with targetRef/targetRefs",
        ));
    }
    if spec.target_ref.is_some() && has_target_list {
        return Err(ctx.err("spec.targetRef", "cannot be set together with targetRefs"));
    }
    let selector = spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone().unwrap_or_default());
    if selector.as_ref().is_some_and(|s| s.is_empty()) {
        warnings.push("spec.selector has no labels: it selects every workload in scope".into());
    }

    let action = match spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => ActionName::Allow,
        "DENY" => ActionName::Deny,
        "AUDIT" => ActionName::Audit,
        "CUSTOM" => ActionName::Custom,
        other => {
            return Err(ctx.err(
                "spec.action",
                format!("unknown action {other:?} (expected ALLOW, DENY, AUDIT or CUSTOM)"),
            ));
        }
    };
    if spec.provider.is_some() && action != ActionName::Custom {
        return Err(ctx.err("spec.provider", "only allowed with action CUSTOM"));
    }

    let dry_run = match metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
    {
        None => false,
        Some(v) => annotation_bool(v).unwrap_or_else(|| {
            warnings.push(format!(
                "annotation {DRY_RUN_ANNOTATION}: {v:?} is not a boolean; treated as false"
            ));
            false
        }),
    };
    Ok(Header {
        selector,
        has_target_refs,
        action,
        dry_run,
    })
}

/// Each rule with its field path (`spec.rules[i]`); a null rule is an error.
pub(super) fn rules<'s>(
    ctx: &Ctx,
    spec: &'s Spec,
) -> Result<Vec<(String, &'s RuleSpec)>, TranslateError> {
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let path = format!("spec.rules[{i}]");
        let rule = rule
            .as_ref()
            .ok_or_else(|| ctx.err(&path, "must not be null"))?;
        out.push((path, rule));
    }
    Ok(out)
}

/// The operations of `rule.to` with their paths (`…to[j].operation`); `None` without `to`.
pub(super) fn operations<'s>(
    ctx: &Ctx,
    rule: &'s RuleSpec,
    path: &str,
) -> Result<Option<Vec<(String, &'s OperationSpec)>>, TranslateError> {
    let Some(to) = &rule.to else {
        return Ok(None);
    };
    if to.is_empty() {
        return Err(ctx.err(format!("{path}.to"), "must not be empty"));
    }
    let mut out = Vec::with_capacity(to.len());
    for (j, t) in to.iter().enumerate() {
        let at = format!("{path}.to[{j}].operation");
        let op = t
            .as_ref()
            .and_then(|t| t.operation.as_ref())
            .ok_or_else(|| ctx.err(&at, "required"))?;
        let lists = op.l7_lists();
        if op.ports.is_empty() && op.not_ports.is_empty() && lists.iter().all(|(_, l)| l.is_empty())
        {
            return Err(ctx.err(&at, "must not be empty"));
        }
        for (name, list) in lists {
            no_empty_values(ctx, &at, name, list)?;
        }
        out.push((at, op));
    }
    Ok(Some(out))
}

/// The sources of `rule.from` with their paths (`…from[j].source`); `None` without `from`.
pub(super) fn sources<'s>(
    ctx: &Ctx,
    rule: &'s RuleSpec,
    path: &str,
) -> Result<Option<Vec<(String, &'s SourceSpec)>>, TranslateError> {
    let Some(from) = &rule.from else {
        return Ok(None);
    };
    if from.is_empty() {
        return Err(ctx.err(format!("{path}.from"), "must not be empty"));
    }
    let mut out = Vec::with_capacity(from.len());
    for (j, f) in from.iter().enumerate() {
        let at = format!("{path}.from[{j}].source");
        let src = f
            .as_ref()
            .and_then(|f| f.source.as_ref())
            .ok_or_else(|| ctx.err(&at, "required"))?;
        let (l4, l7) = (src.l4_lists(), src.l7_lists());
        if l4.iter().chain(l7.iter()).all(|(_, l)| l.is_empty()) {
            return Err(ctx.err(&at, "must not be empty"));
        }
        for (name, list) in l4.iter().chain(l7.iter()) {
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
        if identity_set && !(src.service_accounts.is_empty() && src.not_service_accounts.is_empty())
        {
            return Err(ctx.err(
                format!("{at}.serviceAccounts"),
                "cannot be combined with principals or namespaces",
            ));
        }
        out.push((at, src));
    }
    Ok(Some(out))
}

/// One `when` entry with its values as strings.
pub(super) struct CheckedCondition<'s> {
    /// `…when[j]`.
    pub at: String,
    pub key: &'s str,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// The `when` entries of `rule`: not null, a key, and `values` or `notValues`.
pub(super) fn conditions<'s>(
    ctx: &Ctx,
    rule: &'s RuleSpec,
    path: &str,
) -> Result<Vec<CheckedCondition<'s>>, TranslateError> {
    let mut out = Vec::new();
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
        out.push(CheckedCondition {
            at,
            key: &cond.key,
            values,
            not_values,
        });
    }
    Ok(out)
}
