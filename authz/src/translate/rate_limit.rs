//! `policy.mesh.dev/v1alpha1` LocalRateLimit (ours) -> [`RateLimit`]s, with where they
//! attach. The shape follows what Istio users know: `targetRefs` as on a waypoint
//! AuthorizationPolicy, and `match` entries shaped as an AuthorizationPolicy's
//! `to[].operation`.
//!
//! ```yaml
//! apiVersion: policy.mesh.dev/v1alpha1
//! kind: LocalRateLimit
//! metadata: { name: payments-per-client, namespace: shop }
//! spec:
//!   targetRefs: [{ kind: Service, group: "", name: payments }]
//!   limits:
//!   - per: sourcePrincipal      # or route (the default): one bucket for all callers
//!     maxTokens: 20             # the burst
//!     tokensPerFill: 10         # default: maxTokens
//!     fillInterval: 1s          # default 1s; at least 50ms
//!     match: [{ methods: [POST], paths: ["/api/*"] }]   # default: every request
//! ```
//!
//! Rules: `targetRefs` (or `targetRef`) are required (a limit applies at a waypoint, never
//! mesh-wide by accident); `limits` must not be empty; numbers and durations out of range
//! are errors naming the field, as the AuthorizationPolicy translation reports them.

use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::spec::OperationSpec;
use super::values::{http_string_matches, ports};
use super::waypoint::target_refs;
use super::{Ctx, Input, Target, TranslateError, parse_object};
use crate::http::{Operation, RateLimit, RateLimitPer};

const KIND: &str = "LocalRateLimit";
/// Our own API group: the resource is ours, not Istio's.
pub const GROUP: &str = "policy.mesh.dev";
/// Envoy's lower bound for a token bucket's fill interval.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// One LocalRateLimit, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRateLimit {
    pub name: String,
    pub namespace: String,
    pub targets: Vec<Target>,
    pub limits: Vec<RateLimit>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    target_ref: Option<Value>,
    #[serde(default)]
    target_refs: Option<Vec<Value>>,
    #[serde(default)]
    limits: Vec<LimitSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitSpec {
    #[serde(default)]
    per: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    tokens_per_fill: Option<u32>,
    #[serde(default)]
    fill_interval: Option<String>,
    #[serde(default, rename = "match")]
    matches: Vec<OperationSpec>,
}

/// Translates one LocalRateLimit; `root_namespace` allows the `istio-waypoint` GatewayClass
/// target there, as for policies.
pub fn local_rate_limit<'a>(
    input: impl Into<Input<'a>>,
    root_namespace: &str,
) -> Result<LocalRateLimit, TranslateError> {
    let (obj, ctx) = parse_object::<Spec>(input.into(), KIND, GROUP)?;
    let spec = &obj.spec;
    let targets = target_refs(
        &ctx,
        spec.target_ref.as_ref(),
        spec.target_refs.as_ref(),
        &obj.namespace,
        obj.namespace == root_namespace,
    )?;
    if targets.is_empty() {
        return Err(ctx.err("spec.targetRefs", "required"));
    }
    if spec.limits.is_empty() {
        return Err(ctx.err("spec.limits", "must not be empty"));
    }
    let source = format!("{}/{}", obj.namespace, obj.name);
    let mut warnings = Vec::new();
    let mut limits = Vec::with_capacity(spec.limits.len());
    for (i, l) in spec.limits.iter().enumerate() {
        limits.push(limit(
            &ctx,
            &format!("spec.limits[{i}]"),
            l,
            &source,
            &mut warnings,
        )?);
    }
    Ok(LocalRateLimit {
        name: obj.name,
        namespace: obj.namespace,
        targets,
        limits,
        warnings,
    })
}

fn limit(
    ctx: &Ctx,
    at: &str,
    l: &LimitSpec,
    source: &str,
    warnings: &mut Vec<String>,
) -> Result<RateLimit, TranslateError> {
    let per = match l.per.as_deref() {
        None | Some("route") => RateLimitPer::Route,
        Some("sourcePrincipal") => RateLimitPer::SourcePrincipal,
        Some(other) => {
            return Err(ctx.err(
                format!("{at}.per"),
                format!("{other:?} is not route or sourcePrincipal"),
            ));
        }
    };
    let max_tokens = l
        .max_tokens
        .ok_or_else(|| ctx.err(format!("{at}.maxTokens"), "required"))?;
    if max_tokens == 0 {
        return Err(ctx.err(format!("{at}.maxTokens"), "must be at least 1"));
    }
    let tokens_per_fill = l.tokens_per_fill.unwrap_or(max_tokens);
    if tokens_per_fill == 0 {
        return Err(ctx.err(format!("{at}.tokensPerFill"), "must be at least 1"));
    }
    let fill_interval = match &l.fill_interval {
        None => Duration::from_secs(1),
        Some(s) => parse_duration(s).ok_or_else(|| {
            ctx.err(
                format!("{at}.fillInterval"),
                format!("{s:?} is not a duration (e.g. 500ms, 1s, 1m)"),
            )
        })?,
    };
    if fill_interval < MIN_FILL_INTERVAL {
        return Err(ctx.err(format!("{at}.fillInterval"), "must be at least 50ms"));
    }
    let mut matches = Vec::with_capacity(l.matches.len());
    for (j, op) in l.matches.iter().enumerate() {
        let at = format!("{at}.match[{j}]");
        let mut s = |name, list| http_string_matches(&at, name, list, warnings);
        matches.push(Operation {
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
    Ok(RateLimit {
        source: source.to_string(),
        matches,
        per,
        max_tokens,
        tokens_per_fill,
        fill_interval,
    })
}

/// `500ms`, `1s`, `1.5s`, `2m`, `1h` (a subset of Go's durations, as Kubernetes writes them,
/// and protobuf JSON's seconds); `None` when it does not read.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests;
