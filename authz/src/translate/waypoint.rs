//! `security.istio.io/v1` AuthorizationPolicy → [`HttpPolicy`] for waypoints, with where it
//! attaches (protocol.md 8.4).
//!
//! Rules, in order:
//! 1. The checks shared with the ztunnel translation (`spec.rs`); CUSTOM also needs
//!    `provider.name`.
//! 2. Attachment: each `targetRef`/`targetRefs` entry is a Gateway, Service, ServiceEntry or
//!    the `istio-waypoint` GatewayClass (root namespace only), in the policy's own namespace.
//!    Without target references: `Selector` when a selector is set, else `Global` in the root
//!    namespace and `Namespace` elsewhere; the control plane decides whether a waypoint
//!    enforces those (Istio: selector policies are for ztunnel, unless they select the
//!    waypoint's own pods).
//! 3. Every field converts: at L7 nothing is dropped. Values Istio rejects (bad CIDR or port,
//!    unknown `when` key) are errors naming the field.
//! 4. Strings as Istio reads them, plus contains for `*foo*` (warned, see `HttpStringMatch`).
//! 5. Warnings: dry-run on CUSTOM or AUDIT (neither enforced nor reported), a non-ALLOW policy
//!    without rules (never matches), a selector without labels.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::spec::{
    ActionName, CheckedCondition, DRY_RUN_ANNOTATION, KIND, RuleSpec, Spec, conditions, header,
    operations, rules, sources,
};
use super::values::{accounts, http_string_matches, nets, port_strings, ports};
use super::{Ctx, ISTIO_SECURITY, Input, Labels, TranslateError, parse_object};
use crate::http::{
    Condition, ConditionKey, ConditionValues, HttpAction, HttpPolicy, HttpRule, Operation, Source,
};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const WAYPOINT_CLASS: &str = "istio-waypoint";

/// One AuthorizationPolicy for waypoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpTranslated {
    pub policy: HttpPolicy,
    pub attachment: Attachment,
    /// Accepted-with-warning conditions (for the resource status / logs).
    pub warnings: Vec<String>,
}

impl HttpTranslated {
    /// Key `namespace/name`.
    pub fn key(&self) -> String {
        self.policy.key()
    }
}

/// Where a policy applies (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Attachment {
    /// `targetRef`/`targetRefs`, in order.
    Targets(Vec<Target>),
    /// `spec.selector.matchLabels`: workloads of the policy's namespace (of every namespace
    /// from the root namespace); a waypoint enforces it only if it selects the waypoint's pods.
    Selector(Labels),
    /// No selector or targets, outside the root namespace: every workload of the namespace.
    Namespace,
    /// No selector or targets, in the root namespace: every workload of the mesh.
    Global,
}

/// A `targetRefs` entry; the namespace is always the policy's (Istio rejects others).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Target {
    /// `gateway.networking.k8s.io` Gateway: the waypoint itself.
    Gateway { namespace: String, name: String },
    /// Core Service: at the waypoint the service is bound to.
    Service { namespace: String, name: String },
    /// `networking.istio.io` ServiceEntry: at the waypoint it is bound to.
    ServiceEntry { namespace: String, name: String },
    /// The `istio-waypoint` GatewayClass: every waypoint (root namespace only).
    GatewayClass,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetRefSpec {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProviderSpec {
    #[serde(default)]
    name: Option<String>,
}

/// Translate one AuthorizationPolicy for waypoints; `Err` for what Istio's validation rejects.
pub fn http_authorization_policy<'a>(
    input: impl Into<Input<'a>>,
    root_namespace: &str,
) -> Result<HttpTranslated, TranslateError> {
    let (obj, ctx) = parse_object::<Spec>(input.into(), KIND, ISTIO_SECURITY)?;
    let spec = &obj.spec;
    let mut warnings = Vec::new();
    let head = header(&ctx, spec, &obj.metadata, &mut warnings)?;

    let action = match head.action {
        ActionName::Allow => HttpAction::Allow,
        ActionName::Deny => HttpAction::Deny,
        ActionName::Audit => HttpAction::Audit,
        ActionName::Custom => HttpAction::Custom {
            provider: provider_name(&ctx, spec.provider.as_ref())?,
        },
    };
    let in_root = obj.namespace == root_namespace;
    let attachment = match (head.has_target_refs, head.selector) {
        (true, _) => Attachment::Targets(targets(&ctx, spec, &obj.namespace, in_root)?),
        (false, Some(labels)) => Attachment::Selector(labels),
        (false, None) if in_root => Attachment::Global,
        (false, None) => Attachment::Namespace,
    };

    let mut converted = Vec::new();
    for (path, rule) in rules(&ctx, spec)? {
        converted.push(convert_rule(
            &ctx,
            rule,
            &path,
            &obj.namespace,
            &mut warnings,
        )?);
    }
    let action_name = head.action.as_str();
    if head.dry_run && matches!(head.action, ActionName::Custom | ActionName::Audit) {
        warnings.push(format!(
            "{DRY_RUN_ANNOTATION} applies to ALLOW and DENY only; this {action_name} policy is \
             neither enforced nor reported"
        ));
    }
    if converted.is_empty() && head.action != ActionName::Allow {
        warnings.push(format!(
            "{action_name} policy without rules never matches and has no effect"
        ));
    }
    Ok(HttpTranslated {
        policy: HttpPolicy {
            name: obj.name,
            namespace: obj.namespace,
            action,
            dry_run: head.dry_run,
            rules: converted,
        },
        attachment,
        warnings,
    })
}

fn provider_name(ctx: &Ctx, provider: Option<&Value>) -> Result<String, TranslateError> {
    let spec: ProviderSpec = match provider {
        Some(v) => serde_yaml::from_value(v.clone())
            .map_err(|e| ctx.err("spec.provider", e.to_string()))?,
        None => ProviderSpec::default(),
    };
    spec.name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ctx.err("spec.provider.name", "required with action CUSTOM"))
}

/// Rule 2 for `targetRef` or `targetRefs`.
fn targets(
    ctx: &Ctx,
    spec: &Spec,
    namespace: &str,
    in_root: bool,
) -> Result<Vec<Target>, TranslateError> {
    target_refs(
        ctx,
        spec.target_ref.as_ref(),
        spec.target_refs.as_ref(),
        namespace,
        in_root,
    )
}

/// Rule 2 for any resource with `targetRef` or `targetRefs` (at most one of them set).
pub(super) fn target_refs(
    ctx: &Ctx,
    target_ref: Option<&Value>,
    target_refs: Option<&Vec<Value>>,
    namespace: &str,
    in_root: bool,
) -> Result<Vec<Target>, TranslateError> {
    if target_ref.is_some() && target_refs.is_some_and(|t| !t.is_empty()) {
        return Err(ctx.err("spec.targetRef", "cannot be set together with targetRefs"));
    }
    let refs: Vec<(String, &Value)> = match target_ref {
        Some(one) => vec![("spec.targetRef".to_string(), one)],
        None => target_refs
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, v)| (format!("spec.targetRefs[{i}]"), v))
            .collect(),
    };
    refs.into_iter()
        .map(|(at, v)| target(ctx, &at, v, namespace, in_root))
        .collect()
}

fn target(
    ctx: &Ctx,
    at: &str,
    v: &Value,
    namespace: &str,
    in_root: bool,
) -> Result<Target, TranslateError> {
    let r: TargetRefSpec =
        serde_yaml::from_value(v.clone()).map_err(|e| ctx.err(at, e.to_string()))?;
    let kind = r.kind.unwrap_or_default();
    let name = r.name.unwrap_or_default();
    let group = r.group.unwrap_or_default();
    if kind.is_empty() {
        return Err(ctx.err(format!("{at}.kind"), "required"));
    }
    if name.is_empty() {
        return Err(ctx.err(format!("{at}.name"), "required"));
    }
    if let Some(ns) = r.namespace.filter(|ns| !ns.is_empty() && ns != namespace) {
        return Err(ctx.err(
            format!("{at}.namespace"),
            format!("{ns:?} is not the policy's namespace {namespace:?} (cross-namespace references are not allowed)"),
        ));
    }
    let (group_ok, want_group, found) = match kind.as_str() {
        "Gateway" => (
            group == GATEWAY_GROUP,
            GATEWAY_GROUP,
            Target::Gateway {
                namespace: namespace.into(),
                name,
            },
        ),
        "Service" => (
            group.is_empty() || group == "core",
            "\"\" (core)",
            Target::Service {
                namespace: namespace.into(),
                name,
            },
        ),
        "ServiceEntry" => (
            group == "networking.istio.io",
            "networking.istio.io",
            Target::ServiceEntry {
                namespace: namespace.into(),
                name,
            },
        ),
        "GatewayClass" => {
            if name != WAYPOINT_CLASS {
                return Err(ctx.err(
                    format!("{at}.name"),
                    format!("GatewayClass {name:?} is not supported (only {WAYPOINT_CLASS})"),
                ));
            }
            if !in_root {
                return Err(ctx.err(
                    at,
                    "a GatewayClass target is only allowed in the root namespace",
                ));
            }
            (group == GATEWAY_GROUP, GATEWAY_GROUP, Target::GatewayClass)
        }
        other => {
            return Err(ctx.err(
                format!("{at}.kind"),
                format!(
                    "unsupported kind {other:?} (expected Gateway, Service, ServiceEntry or GatewayClass)"
                ),
            ));
        }
    };
    if !group_ok {
        return Err(ctx.err(
            format!("{at}.group"),
            format!("{group:?} is not the group of {kind} (expected {want_group})"),
        ));
    }
    Ok(found)
}

/// One AuthorizationPolicy rule, every field kept (rule 3).
fn convert_rule(
    ctx: &Ctx,
    rule: &RuleSpec,
    path: &str,
    namespace: &str,
    warnings: &mut Vec<String>,
) -> Result<HttpRule, TranslateError> {
    let mut out = HttpRule::default();
    for (at, op) in operations(ctx, rule, path)?.into_iter().flatten() {
        let mut s = |name, list| http_string_matches(&at, name, list, warnings);
        out.to.push(Operation {
            hosts: s("hosts", &op.hosts),
            not_hosts: s("notHosts", &op.not_hosts),
            methods: s("methods", &op.methods),
            not_methods: s("notMethods", &op.not_methods),
            paths: s("paths", &op.paths),
            not_paths: s("notPaths", &op.not_paths),
            ports: ports(ctx, &format!("{at}.ports"), &op.ports)?,
            not_ports: ports(ctx, &format!("{at}.notPorts"), &op.not_ports)?,
        });
    }
    for (at, src) in sources(ctx, rule, path)?.into_iter().flatten() {
        let net = |name: &str, list| nets(ctx, &format!("{at}.{name}"), list);
        let sa = |name: &str, list| accounts(ctx, &format!("{at}.{name}"), list, namespace);
        let ip_blocks = net("ipBlocks", &src.ip_blocks)?;
        let not_ip_blocks = net("notIpBlocks", &src.not_ip_blocks)?;
        let remote_ip_blocks = net("remoteIpBlocks", &src.remote_ip_blocks)?;
        let not_remote_ip_blocks = net("notRemoteIpBlocks", &src.not_remote_ip_blocks)?;
        let service_accounts = sa("serviceAccounts", &src.service_accounts)?;
        let not_service_accounts = sa("notServiceAccounts", &src.not_service_accounts)?;
        let mut s = |name, list| http_string_matches(&at, name, list, warnings);
        out.from.push(Source {
            principals: s("principals", &src.principals),
            not_principals: s("notPrincipals", &src.not_principals),
            request_principals: s("requestPrincipals", &src.request_principals),
            not_request_principals: s("notRequestPrincipals", &src.not_request_principals),
            namespaces: s("namespaces", &src.namespaces),
            not_namespaces: s("notNamespaces", &src.not_namespaces),
            trust_domains: s("trustDomains", &src.trust_domains),
            not_trust_domains: s("notTrustDomains", &src.not_trust_domains),
            service_accounts,
            not_service_accounts,
            ip_blocks,
            not_ip_blocks,
            remote_ip_blocks,
            not_remote_ip_blocks,
        });
    }
    for cond in conditions(ctx, rule, path)? {
        out.when.push(condition(ctx, &cond, warnings)?);
    }
    Ok(out)
}

/// A `when` entry: the key decides how its values read.
fn condition(
    ctx: &Ctx,
    cond: &CheckedCondition<'_>,
    warnings: &mut Vec<String>,
) -> Result<Condition, TranslateError> {
    let at = &cond.at;
    let key = ConditionKey::parse(cond.key)
        .map_err(|reason| ctx.err(format!("{at}.key"), format!("{:?}: {reason}", cond.key)))?;
    let (vp, np) = (format!("{at}.values"), format!("{at}.notValues"));
    let (values, not_values) = match key {
        ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => (
            ConditionValues::Nets(nets(ctx, &vp, &cond.values)?),
            ConditionValues::Nets(nets(ctx, &np, &cond.not_values)?),
        ),
        ConditionKey::DestinationPort => (
            ConditionValues::Ports(port_strings(ctx, &vp, &cond.values)?),
            ConditionValues::Ports(port_strings(ctx, &np, &cond.not_values)?),
        ),
        _ => (
            ConditionValues::Strings(http_string_matches(at, "values", &cond.values, warnings)),
            ConditionValues::Strings(http_string_matches(
                at,
                "notValues",
                &cond.not_values,
                warnings,
            )),
        ),
    };
    Ok(Condition {
        key,
        values,
        not_values,
    })
}
