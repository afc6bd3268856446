//! The waypoint's configuration as meshd sends it (`mesh.waypoint.v1`), converted at this one
//! boundary into [`Target`]s and [`HttpPolicy`]s, and kept between updates; and the mesh's
//! Tracing into a tracer's [`trace::Settings`] (applied by [`trace::TracingControl`]).
//!
//! Rules:
//! 1. Each resource converts on its own; a bad one is rejected whole (naming the resource and
//!    the field, for the NACK) and its last good version stays.
//! 2. A resource's name must be its key: `<namespace>/<name>`.
//! 3. A target that names a policy the waypoint has not received denies every request until
//!    the policy arrives: a missing ALLOW would otherwise turn into "no ALLOW policy, allow
//!    all". Fail closed.
//! 4. A target's JWT rules must be usable as they are: an issuer, an inline `jwks` with a
//!    usable key or an `http(s)` `jwks_uri`, valid header names. A bad rule rejects the target
//!    (its last good version stays): dropping the rule would let that issuer's tokens through
//!    as "issuer not configured" only while another rule exists, and silently otherwise.
//!    Neither `jwks` nor `jwks_uri` means OpenID discovery from the issuer, as with Istio; an
//!    issuer that makes no discovery URL is accepted too (Istio's validation accepts it) and
//!    refuses its tokens, with a warning here.
//! 5. A CUSTOM policy's `ext_authz` provider must be whole (an address `host:port`, a valid
//!    status, header patterns Istio accepts, `max_request_bytes` above 0 when the body is
//!    included) and name the policy's provider; a CUSTOM policy without one is accepted and
//!    denies what it matches.
//! 6. Tracing is named `mesh`; its exporter is NONE (tracing off), or ZIPKIN, OTLP_GRPC or
//!    OTLP_HTTP with an `ip:port` address (OTLP_HTTP: a valid path, default `/v1/traces`, and
//!    valid headers other than those the export sets itself); sampling is a percentage,
//!    0-100.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use authz::http::{
    Condition, ConditionKey, ConditionValues, HttpAction, HttpPolicies, HttpPolicy, HttpRule,
    HttpStringMatch, Operation, RateLimit, RateLimitPer, Source,
};
use authz::{ServiceAccountMatch, StringMatch};
use hbone::SpiffeId;
use http::{HeaderName, Uri};
use ipnet::IpNet;
use proto::waypoint as wire;

use crate::ext_authz::{self, HeaderPattern, HttpSettings, Provider};
use crate::jwt::{self, JwtRule, KeySet, KeySource, Location};
use crate::targets::{Endpoint, Target, Targets};
use crate::trace;

/// Why a resource was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: field {field}: {reason}")]
pub struct ConfigError {
    pub resource: String,
    pub field: String,
    pub reason: String,
}

/// A target as received: its policies by key (resolved at [`Store::snapshot`]).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    target: Target,
    policies: Vec<String>,
}

/// What the waypoint has accepted so far.
#[derive(Debug, Default)]
pub struct Store {
    targets: BTreeMap<String, TargetSpec>,
    /// Each with its external authorizer (CUSTOM only, rule 4).
    policies: BTreeMap<String, (HttpPolicy, Option<Arc<Provider>>)>,
}

impl Store {
    /// Rule 1: applies `target` named `name`, or keeps the last good one.
    pub fn apply_target(&mut self, name: &str, target: &wire::Target) -> Result<(), ConfigError> {
        let spec = convert_target(name, target)?;
        self.targets.insert(name.to_string(), spec);
        Ok(())
    }

    pub fn apply_policy(
        &mut self,
        name: &str,
        policy: &wire::HttpPolicy,
    ) -> Result<(), ConfigError> {
        let policy = convert_policy(name, policy)?;
        self.policies.insert(name.to_string(), policy);
        Ok(())
    }

    pub fn remove_target(&mut self, name: &str) {
        self.targets.remove(name);
    }

    pub fn remove_policy(&mut self, name: &str) {
        self.policies.remove(name);
    }

    /// The targets with their policies (rule 3 for those not received).
    pub fn snapshot(&self) -> Targets {
        Targets::new(self.targets.values().map(|spec| {
            let mut target = spec.target.clone();
            let mut policies = HttpPolicies::new();
            for key in &spec.policies {
                match self.policies.get(key) {
                    Some((p, provider)) => {
                        policies.insert(p.clone());
                        if let Some(provider) = provider {
                            target.ext_authz.insert(key.clone(), provider.clone());
                        }
                    }
                    None => {
                        policies.insert(not_received(&target.namespace, key));
                    }
                }
            }
            target.policies = policies;
            target
        }))
    }
}

/// Rule 3: a DENY of everything, named for the policy it stands in for.
fn not_received(namespace: &str, key: &str) -> HttpPolicy {
    HttpPolicy {
        name: format!("{key} (not received yet)"),
        namespace: namespace.to_string(),
        action: HttpAction::Deny,
        dry_run: false,
        rules: vec![HttpRule::default()],
    }
}

struct Cx<'a> {
    resource: &'a str,
}

impl Cx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            resource: self.resource.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn key(&self, namespace: &str, name: &str) -> Result<(), ConfigError> {
        if self.resource != format!("{namespace}/{name}") {
            return Err(self.err("name", format!("resource name must be {namespace}/{name}")));
        }
        Ok(())
    }

    fn port(&self, field: &str, p: u32) -> Result<u16, ConfigError> {
        u16::try_from(p).map_err(|_| self.err(field, format!("port {p} is past 65535")))
    }

    fn ports(&self, field: &str, ps: &[u32]) -> Result<Vec<u16>, ConfigError> {
        ps.iter().map(|p| self.port(field, *p)).collect()
    }

    fn nets(&self, field: &str, nets: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        nets.iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|_| self.err(field, format!("{n:?} is not a CIDR")))
            })
            .collect()
    }

    fn strings(
        &self,
        field: &str,
        ms: &[wire::StringMatch],
    ) -> Result<Vec<HttpStringMatch>, ConfigError> {
        use wire::string_match::Kind;
        ms.iter()
            .map(|m| match &m.kind {
                Some(Kind::Exact(s)) => Ok(HttpStringMatch::Istio(StringMatch::Exact(s.clone()))),
                Some(Kind::Prefix(s)) => Ok(HttpStringMatch::Istio(StringMatch::Prefix(s.clone()))),
                Some(Kind::Suffix(s)) => Ok(HttpStringMatch::Istio(StringMatch::Suffix(s.clone()))),
                Some(Kind::Presence(_)) => Ok(HttpStringMatch::Istio(StringMatch::Presence)),
                Some(Kind::Contains(s)) => Ok(HttpStringMatch::contains(s.as_str())),
                None => Err(self.err(field, "a string match with no kind")),
            })
            .collect()
    }

    fn accounts(&self, sas: &[wire::ServiceAccount]) -> Vec<ServiceAccountMatch> {
        sas.iter()
            .map(|a| ServiceAccountMatch {
                namespace: a.namespace.clone(),
                service_account: a.name.clone(),
            })
            .collect()
    }
}

fn convert_target(name: &str, t: &wire::Target) -> Result<TargetSpec, ConfigError> {
    let cx = Cx { resource: name };
    cx.key(&t.namespace, &t.name)?;
    let vips = t
        .vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<IpAddr>()
                .map_err(|_| cx.err(format!("vips[{i}]"), format!("{v:?} is not an IP")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = BTreeMap::new();
    for (p, target) in &t.ports {
        ports.insert(cx.port("ports", *p)?, cx.port("ports", *target)?);
    }
    let h2_ports = cx.ports("h2_ports", &t.h2_ports)?.into_iter().collect();
    let endpoints = t
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ip = e.address.parse::<IpAddr>().map_err(|_| {
                cx.err(
                    format!("endpoints[{i}].address"),
                    format!("{:?} is not an IP", e.address),
                )
            })?;
            let identity = e
                .identity
                .parse::<SpiffeId>()
                .map_err(|err| cx.err(format!("endpoints[{i}].identity"), err.to_string()))?;
            Ok(Endpoint {
                ip,
                identity,
                healthy: e.healthy,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let rate_limits = t
        .rate_limits
        .iter()
        .enumerate()
        .map(|(i, l)| convert_rate_limit(&cx, &format!("rate_limits[{i}]"), l))
        .collect::<Result<Vec<_>, _>>()?;
    let jwt = t
        .jwt_rules
        .iter()
        .enumerate()
        .map(|(i, r)| convert_jwt_rule(&cx, &format!("jwt_rules[{i}]"), r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TargetSpec {
        target: Target {
            key: name.to_string(),
            namespace: t.namespace.clone(),
            vips,
            ports,
            h2_ports,
            endpoints,
            policies: HttpPolicies::new(),
            rate_limits,
            jwt,
            ext_authz: BTreeMap::new(),
        },
        policies: t.policies.clone(),
    })
}

/// Rule 6: meshd's Tracing as a tracer's settings; `None`: tracing off.
pub fn convert_tracing(
    name: &str,
    t: &wire::Tracing,
) -> Result<Option<trace::Settings>, ConfigError> {
    let cx = Cx { resource: name };
    if name != proto::WAYPOINT_TRACING_NAME {
        return Err(cx.err(
            "name",
            format!("the Tracing resource is {:?}", proto::WAYPOINT_TRACING_NAME),
        ));
    }
    let address = || {
        t.address
            .parse::<std::net::SocketAddr>()
            .map_err(|_| cx.err("address", format!("{:?} is not ip:port", t.address)))
    };
    let exporter = match wire::tracing::Exporter::try_from(t.exporter) {
        Ok(wire::tracing::Exporter::None) => return Ok(None),
        Ok(wire::tracing::Exporter::Zipkin) => trace::Exporter::Zipkin(address()?),
        Ok(wire::tracing::Exporter::OtlpGrpc) => trace::Exporter::OtlpGrpc(address()?),
        Ok(wire::tracing::Exporter::OtlpHttp) => {
            let h = t.otlp_http.clone().unwrap_or_default();
            let path = match h.path.as_str() {
                "" => "/v1/traces".to_string(),
                p if p.starts_with('/') && http::uri::PathAndQuery::try_from(p).is_ok() => {
                    p.to_string()
                }
                p => return Err(cx.err("otlp_http.path", format!("{p:?} is not a path"))),
            };
            let headers = h
                .headers
                .iter()
                .map(|hd| {
                    let name = http::HeaderName::from_bytes(hd.name.as_bytes());
                    let value = http::HeaderValue::from_str(&hd.value);
                    match (name, value) {
                        // Not what the export itself sets (its framing, host and type).
                        (Ok(n), Ok(v))
                            if !crate::ext_authz::is_framing(&n)
                                && n != http::header::HOST
                                && n != http::header::CONTENT_TYPE =>
                        {
                            Ok((n, v))
                        }
                        _ => Err(cx.err(
                            "otlp_http.headers",
                            format!("{:?}: not a header name and value", hd.name),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let timeout = match h.timeout_ms {
                0 => trace::DEFAULT_OTLP_HTTP_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)),
            };
            trace::Exporter::OtlpHttp(trace::OtlpHttp {
                collector: address()?,
                path,
                timeout,
                headers,
            })
        }
        Err(_) => return Err(cx.err("exporter", format!("unknown exporter {}", t.exporter))),
    };
    if !(0.0..=100.0).contains(&t.sampling) {
        return Err(cx.err(
            "sampling",
            format!("{} is not a percentage (0-100)", t.sampling),
        ));
    }
    let max_tag_length = match t.max_tag_length {
        0 => trace::DEFAULT_MAX_TAG_LENGTH,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    Ok(Some(trace::Settings {
        exporter,
        sampling: t.sampling,
        max_tag_length,
    }))
}

type Converted = (HttpPolicy, Option<Arc<Provider>>);

fn convert_policy(name: &str, p: &wire::HttpPolicy) -> Result<Converted, ConfigError> {
    let cx = Cx { resource: name };
    cx.key(&p.namespace, &p.name)?;
    let action = match wire::Action::try_from(p.action) {
        Ok(wire::Action::Allow) => HttpAction::Allow,
        Ok(wire::Action::Deny) => HttpAction::Deny,
        Ok(wire::Action::Audit) => HttpAction::Audit,
        Ok(wire::Action::Custom) if !p.provider.is_empty() => HttpAction::Custom {
            provider: p.provider.clone(),
        },
        Ok(wire::Action::Custom) => return Err(cx.err("provider", "CUSTOM needs a provider")),
        Err(_) => return Err(cx.err("action", format!("unknown action {}", p.action))),
    };
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| convert_rule(&cx, &format!("rules[{i}]"), r))
        .collect::<Result<Vec<_>, _>>()?;
    let provider = match (&action, &p.ext_authz) {
        (HttpAction::Custom { provider }, Some(e)) => {
            Some(Arc::new(convert_ext_authz(&cx, provider, e)?))
        }
        (_, Some(_)) => return Err(cx.err("ext_authz", "only a CUSTOM policy has a provider")),
        (_, None) => None,
    };
    let policy = HttpPolicy {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        action,
        dry_run: p.dry_run,
        rules,
    };
    Ok((policy, provider))
}

/// Rule 4.
fn convert_ext_authz(
    cx: &Cx<'_>,
    provider: &str,
    e: &wire::ExtAuthz,
) -> Result<Provider, ConfigError> {
    if e.name != provider {
        return Err(cx.err(
            "ext_authz.name",
            format!("{:?} is not the policy's provider {provider:?}", e.name),
        ));
    }
    let port_ok = e
        .address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(cx.err(
            "ext_authz.address",
            format!("{:?} is not host:port", e.address),
        ));
    }
    let timeout = match e.timeout_ms {
        0 => ext_authz::DEFAULT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let status_on_error = match e.status_on_error {
        0 => http::StatusCode::FORBIDDEN,
        s => u16::try_from(s)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| http::StatusCode::from_u16(s).ok())
            .ok_or_else(|| {
                cx.err(
                    "ext_authz.status_on_error",
                    format!("{s} is not an HTTP status"),
                )
            })?,
    };
    let patterns = |field: &str, list: &[String]| {
        list.iter()
            .map(|s| {
                HeaderPattern::parse(s)
                    .map_err(|r| cx.err(format!("ext_authz.{field}"), format!("{s:?}: {r}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let protocol = match wire::ext_authz::Protocol::try_from(e.protocol) {
        Ok(wire::ext_authz::Protocol::Grpc) => ext_authz::Protocol::Grpc,
        Ok(wire::ext_authz::Protocol::Http) => {
            if !e.path_prefix.is_empty() && !e.path_prefix.starts_with('/') {
                return Err(cx.err(
                    "ext_authz.path_prefix",
                    format!("{:?} does not start with /", e.path_prefix),
                ));
            }
            let mut additional_headers = Vec::new();
            for (name, value) in &e.include_additional_headers_in_check {
                let bad = |what: &str| {
                    cx.err(
                        "ext_authz.include_additional_headers_in_check",
                        format!("{name:?}: not a valid header {what}"),
                    )
                };
                let name =
                    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
                let value = http::HeaderValue::from_str(value).map_err(|_| bad("value"))?;
                additional_headers.push((name, value));
            }
            // A map arrives in no order: sorted, so a check's headers are the same every time.
            additional_headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            ext_authz::Protocol::Http(HttpSettings {
                path_prefix: e.path_prefix.clone(),
                include_request_headers: patterns(
                    "include_request_headers_in_check",
                    &e.include_request_headers_in_check,
                )?,
                additional_headers,
                to_upstream_on_allow: patterns(
                    "headers_to_upstream_on_allow",
                    &e.headers_to_upstream_on_allow,
                )?,
                to_downstream_on_deny: patterns(
                    "headers_to_downstream_on_deny",
                    &e.headers_to_downstream_on_deny,
                )?,
                to_downstream_on_allow: patterns(
                    "headers_to_downstream_on_allow",
                    &e.headers_to_downstream_on_allow,
                )?,
            })
        }
        Err(_) => {
            return Err(cx.err(
                "ext_authz.protocol",
                format!("unknown protocol {}", e.protocol),
            ));
        }
    };
    let body = match &e.include_request_body_in_check {
        None => None,
        Some(b) if b.max_request_bytes == 0 => {
            return Err(cx.err(
                "ext_authz.include_request_body_in_check.max_request_bytes",
                "must be above 0",
            ));
        }
        Some(b) => Some(ext_authz::BodyInCheck {
            max_bytes: usize::try_from(b.max_request_bytes).unwrap_or(usize::MAX),
            allow_partial: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        }),
    };
    Ok(Provider::new(
        e.name.clone(),
        protocol,
        e.address.clone(),
        timeout,
        e.fail_open,
        status_on_error,
    )
    .with_body(body))
}

fn convert_rule(cx: &Cx<'_>, at: &str, r: &wire::Rule) -> Result<HttpRule, ConfigError> {
    let from = r
        .from
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = |name: &str| format!("{at}.from[{i}].{name}");
            Ok(Source {
                principals: cx.strings(&f("principals"), &s.principals)?,
                not_principals: cx.strings(&f("not_principals"), &s.not_principals)?,
                request_principals: cx.strings(&f("request_principals"), &s.request_principals)?,
                not_request_principals: cx
                    .strings(&f("not_request_principals"), &s.not_request_principals)?,
                namespaces: cx.strings(&f("namespaces"), &s.namespaces)?,
                not_namespaces: cx.strings(&f("not_namespaces"), &s.not_namespaces)?,
                service_accounts: cx.accounts(&s.service_accounts),
                not_service_accounts: cx.accounts(&s.not_service_accounts),
                trust_domains: cx.strings(&f("trust_domains"), &s.trust_domains)?,
                not_trust_domains: cx.strings(&f("not_trust_domains"), &s.not_trust_domains)?,
                ip_blocks: cx.nets(&f("ip_blocks"), &s.ip_blocks)?,
                not_ip_blocks: cx.nets(&f("not_ip_blocks"), &s.not_ip_blocks)?,
                remote_ip_blocks: cx.nets(&f("remote_ip_blocks"), &s.remote_ip_blocks)?,
                not_remote_ip_blocks: cx
                    .nets(&f("not_remote_ip_blocks"), &s.not_remote_ip_blocks)?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let to =
        r.to.iter()
            .enumerate()
            .map(|(i, o)| convert_operation(cx, &format!("{at}.to[{i}]"), o))
            .collect::<Result<Vec<_>, ConfigError>>()?;
    let when = r
        .when
        .iter()
        .enumerate()
        .map(|(i, c)| convert_condition(cx, &format!("{at}.when[{i}]"), c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpRule { from, to, when })
}

fn convert_operation(cx: &Cx<'_>, at: &str, o: &wire::Operation) -> Result<Operation, ConfigError> {
    let f = |name: &str| format!("{at}.{name}");
    Ok(Operation {
        hosts: cx.strings(&f("hosts"), &o.hosts)?,
        not_hosts: cx.strings(&f("not_hosts"), &o.not_hosts)?,
        ports: cx.ports(&f("ports"), &o.ports)?,
        not_ports: cx.ports(&f("not_ports"), &o.not_ports)?,
        methods: cx.strings(&f("methods"), &o.methods)?,
        not_methods: cx.strings(&f("not_methods"), &o.not_methods)?,
        paths: cx.strings(&f("paths"), &o.paths)?,
        not_paths: cx.strings(&f("not_paths"), &o.not_paths)?,
    })
}

/// A limit meshd sent: the same bounds as its translation checks (a bucket that can hold or
/// gain no token would refuse everything).
fn convert_rate_limit(
    cx: &Cx<'_>,
    at: &str,
    l: &wire::RateLimit,
) -> Result<RateLimit, ConfigError> {
    let f = |name: &str| format!("{at}.{name}");
    let per = match wire::rate_limit::Per::try_from(l.per) {
        Ok(wire::rate_limit::Per::Route) => RateLimitPer::Route,
        Ok(wire::rate_limit::Per::SourcePrincipal) => RateLimitPer::SourcePrincipal,
        Err(_) => return Err(cx.err(f("per"), format!("unknown value {}", l.per))),
    };
    if l.max_tokens == 0 {
        return Err(cx.err(f("max_tokens"), "must be at least 1"));
    }
    if l.tokens_per_fill == 0 {
        return Err(cx.err(f("tokens_per_fill"), "must be at least 1"));
    }
    if l.fill_interval_ms == 0 {
        return Err(cx.err(f("fill_interval_ms"), "must be at least 1"));
    }
    let matches = l
        .r#match
        .iter()
        .enumerate()
        .map(|(i, o)| convert_operation(cx, &format!("{at}.match[{i}]"), o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RateLimit {
        source: l.source.clone(),
        matches,
        per,
        max_tokens: l.max_tokens,
        tokens_per_fill: l.tokens_per_fill,
        fill_interval: Duration::from_millis(u64::from(l.fill_interval_ms)),
    })
}

/// The values' kind follows the key, as the translation made them.
fn convert_condition(cx: &Cx<'_>, at: &str, c: &wire::Condition) -> Result<Condition, ConfigError> {
    let key = ConditionKey::parse(&c.key).map_err(|r| cx.err(format!("{at}.key"), r))?;
    let f = |name: &str| format!("{at}.{name}");
    let (values, not_values) = match key {
        ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => (
            ConditionValues::Nets(cx.nets(&f("nets"), &c.nets)?),
            ConditionValues::Nets(cx.nets(&f("not_nets"), &c.not_nets)?),
        ),
        ConditionKey::DestinationPort => (
            ConditionValues::Ports(cx.ports(&f("ports"), &c.ports)?),
            ConditionValues::Ports(cx.ports(&f("not_ports"), &c.not_ports)?),
        ),
        _ => (
            ConditionValues::Strings(cx.strings(&f("values"), &c.values)?),
            ConditionValues::Strings(cx.strings(&f("not_values"), &c.not_values)?),
        ),
    };
    if values.is_empty() && not_values.is_empty() {
        return Err(cx.err(
            at,
            "a condition needs values or not_values of its key's kind",
        ));
    }
    Ok(Condition {
        key,
        values,
        not_values,
    })
}

/// Rule 4.
fn convert_jwt_rule(cx: &Cx<'_>, at: &str, r: &wire::JwtRule) -> Result<JwtRule, ConfigError> {
    let f = |name: &str| format!("{at}.{name}");
    if r.issuer.is_empty() {
        return Err(cx.err(f("issuer"), "required"));
    }
    let timeout = match r.timeout_ms {
        0 => Duration::from_secs(5),
        ms => Duration::from_millis(u64::from(ms)),
    };
    let keys = if !r.jwks.is_empty() {
        let set = KeySet::parse(&r.jwks).map_err(|e| cx.err(f("jwks"), e.to_string()))?;
        KeySource::Inline(Arc::new(set))
    } else if !r.jwks_uri.is_empty() {
        let uri = r
            .jwks_uri
            .parse::<Uri>()
            .map_err(|e| cx.err(f("jwks_uri"), format!("{:?}: {e}", r.jwks_uri)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(cx.err(
                f("jwks_uri"),
                format!("{:?} is not an http(s) URL", r.jwks_uri),
            ));
        }
        KeySource::Remote { uri, timeout }
    } else {
        let document = jwt::document_uri(&r.issuer);
        if document.is_none() {
            tracing::warn!(
                resource = cx.resource, rule = at, issuer = %r.issuer,
                "no jwks, no jwks_uri, and the issuer is not an http(s) URL to discover keys \
                 from: tokens of this issuer are refused"
            );
        }
        KeySource::Discovered { document, timeout }
    };
    let header = |field: String, name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| cx.err(field, format!("{name:?} is not a header name")))
    };
    let mut locations = Vec::new();
    for (i, h) in r.from_headers.iter().enumerate() {
        locations.push(Location::Header {
            name: header(f(&format!("from_headers[{i}].name")), &h.name)?,
            prefix: h.prefix.clone(),
        });
    }
    for (i, p) in r.from_params.iter().enumerate() {
        if p.is_empty() {
            return Err(cx.err(f(&format!("from_params[{i}]")), "empty"));
        }
        locations.push(Location::Param(p.clone()));
    }
    for (i, c) in r.from_cookies.iter().enumerate() {
        if c.is_empty() {
            return Err(cx.err(f(&format!("from_cookies[{i}]")), "empty"));
        }
        locations.push(Location::Cookie(c.clone()));
    }
    if locations.is_empty() {
        locations = Location::defaults();
    }
    let output_payload_to_header = match r.output_payload_to_header.as_str() {
        "" => None,
        h => Some(header(f("output_payload_to_header"), h)?),
    };
    let claim_to_headers = r
        .output_claim_to_headers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.claim.is_empty() {
                return Err(cx.err(
                    f(&format!("output_claim_to_headers[{i}].claim")),
                    "required",
                ));
            }
            let h = header(
                f(&format!("output_claim_to_headers[{i}].header")),
                &c.header,
            )?;
            Ok((h, c.claim.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JwtRule {
        source: r.source.clone(),
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        keys,
        locations,
        output_payload_to_header,
        forward_original_token: r.forward_original_token,
        claim_to_headers,
    })
}
