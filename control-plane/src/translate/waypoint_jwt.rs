//! RequestAuthentications -> the `jwt_rules` of the waypoint Targets they attach to.
//!
//! Rules, in order (Istio's `ShouldAttachPolicy` for a waypoint):
//! 1. Only `targetRef`/`targetRefs` attach a RequestAuthentication to waypoints: a Gateway of
//!    class `istio-waypoint` -> every target of that waypoint; a Service -> that service's
//!    target at whichever waypoint it is bound to; the `istio-waypoint` GatewayClass (root
//!    namespace only) -> every target of every waypoint. References name objects of the
//!    policy's own namespace. Selector and namespace-wide policies are for sidecars and
//!    gateways, which this mesh does not have: they apply nowhere, with a warning.
//! 2. A reference that cannot attach (another namespace, a ServiceEntry, a Gateway that is not
//!    a waypoint, a wrong group or kind) is skipped with a warning; the others still attach.
//! 3. Each `jwtRules` entry is checked as Istio's validation would: an issuer; `jwks` (JSON
//!    with a `keys` list), an `http(s)` `jwksUri`, or neither: the waypoint then finds the
//!    keys by OpenID discovery from the issuer (a warning when the issuer is not an `http(s)`
//!    URL to discover from: Istio accepts the rule and its tokens fail); header names that
//!    are header names; a claim for each claim header; a timeout that reads as a duration. A
//!    bad rule is skipped with a warning naming the field; the policy's other rules stay.
//!    Nothing here fails the translation.
//! 4. A target lists the rules of every policy attached to it, policies ordered by key
//!    (`namespace/name`), each once, rules in their order within it.

use kube_source::{Kind, Object, RawPolicy};
use proto::waypoint::{ClaimToHeader, JwtHeader, JwtRule};
use serde::Deserialize;
use serde_yaml::Value;

use super::attach::{Attached, Place};
use super::policy::key_of;
use super::waypoint::{WAYPOINT_CLASS, Waypoints};
use super::{Options, Translation};
use crate::index::Index;
use crate::resources::WaypointKey;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Which policies' rules attach where (rules 1 and 4).
pub type JwtAttachments = Attached<JwtRule>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    selector: Option<Value>,
    #[serde(default)]
    target_ref: Option<Value>,
    #[serde(default)]
    target_refs: Option<Vec<Value>>,
    #[serde(default)]
    jwt_rules: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefSpec {
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
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    from_headers: Option<Vec<HeaderSpec>>,
    #[serde(default)]
    from_params: Option<Vec<String>>,
    #[serde(default)]
    from_cookies: Option<Vec<String>>,
    #[serde(default)]
    output_payload_to_header: Option<String>,
    #[serde(default)]
    forward_original_token: Option<bool>,
    #[serde(default)]
    output_claim_to_headers: Option<Vec<ClaimSpec>>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSpec {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    claim: Option<String>,
}

/// Rules 1-4 over every RequestAuthentication; warnings go into `out`.
pub fn parse(
    index: &Index,
    opts: &Options,
    waypoints: &Waypoints<'_>,
    out: &mut Translation,
) -> JwtAttachments {
    let mut att = JwtAttachments::default();
    let policies = index
        .of_kind(Kind::RequestAuthentication)
        .filter_map(|o| match o {
            Object::RequestAuthentication(p) => Some(p),
            _ => None,
        });
    for raw in policies {
        let object = key_of(raw, Kind::RequestAuthentication);
        let mut warnings = Vec::new();
        let key = format!("{}/{}", object.namespace, object.name);
        policy(raw, opts, waypoints, &key, &mut att, &mut warnings);
        out.warnings
            .extend(warnings.into_iter().map(|w| (object.clone(), w)));
    }
    att
}

/// One policy: its references and rules, into `att` when it attaches anywhere.
fn policy(
    raw: &RawPolicy,
    opts: &Options,
    waypoints: &Waypoints<'_>,
    key: &str,
    att: &mut JwtAttachments,
    warnings: &mut Vec<String>,
) {
    let spec: Spec = match raw.value.get("spec") {
        None | Some(Value::Null) => Spec::default(),
        Some(v) => match serde_yaml::from_value(v.clone()) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("spec: {e}: the policy applies nowhere"));
                return;
            }
        },
    };
    let namespace = raw.metadata.namespace.as_str();
    let refs: Vec<(String, &Value)> = match (&spec.target_ref, &spec.target_refs) {
        (Some(one), _) => vec![("spec.targetRef".to_string(), one)],
        (None, Some(many)) => many
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("spec.targetRefs[{i}]"), v))
            .collect(),
        (None, None) => Vec::new(),
    };
    if refs.is_empty() {
        let what = match spec.selector {
            Some(_) => "a selector policy",
            None => "a policy without targetRefs",
        };
        warnings.push(format!(
            "{what} applies to sidecars and gateways, not to waypoints (none here): it has no \
             effect; use targetRefs (a waypoint Gateway, a Service, or the {WAYPOINT_CLASS} \
             GatewayClass in the root namespace)"
        ));
        return;
    }
    let in_root = namespace == opts.root_namespace;
    let targets: Vec<Place> = refs
        .iter()
        .filter_map(
            |(at, v)| match reference(v, namespace, in_root, waypoints) {
                Ok(t) => Some(t),
                Err(reason) => {
                    warnings.push(format!("{at}: {reason}: this reference applies nowhere"));
                    None
                }
            },
        )
        .collect();
    if targets.is_empty() {
        return;
    }
    let mut rules = Vec::new();
    for (i, v) in spec.jwt_rules.iter().flatten().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        match rule(v, key) {
            Ok(r) => {
                if r.jwks.is_empty() && r.jwks_uri.is_empty() && !discoverable(&r.issuer) {
                    warnings.push(format!(
                        "{at}.issuer: {:?} is not a URL to discover keys from (http(s), no \
                         query or fragment): with neither jwks nor jwksUri, the waypoint \
                         refuses this issuer's tokens",
                        r.issuer
                    ));
                }
                rules.push(r);
            }
            Err((field, reason)) => {
                warnings.push(format!("{at}{field}: {reason}: this rule is skipped"));
            }
        }
    }
    if rules.is_empty() {
        return;
    }
    att.insert(key, rules, targets);
}

/// Rules 1 and 2 for one reference.
fn reference(
    v: &Value,
    namespace: &str,
    in_root: bool,
    waypoints: &Waypoints<'_>,
) -> Result<Place, String> {
    let r: RefSpec = serde_yaml::from_value(v.clone()).map_err(|e| e.to_string())?;
    let (group, kind, name) = (
        r.group.unwrap_or_default(),
        r.kind.unwrap_or_default(),
        r.name.unwrap_or_default(),
    );
    if name.is_empty() {
        return Err("name is required".into());
    }
    if let Some(ns) = r.namespace.filter(|ns| !ns.is_empty() && ns != namespace) {
        return Err(format!(
            "namespace {ns:?} is not the policy's ({namespace:?}); cross-namespace references are not allowed"
        ));
    }
    match (kind.as_str(), group.as_str()) {
        ("Gateway", GATEWAY_GROUP) if waypoints.is_waypoint(namespace, &name) => {
            Ok(Place::Gateway(WaypointKey {
                namespace: namespace.to_string(),
                name,
            }))
        }
        ("Gateway", GATEWAY_GROUP) => Err(format!(
            "Gateway {namespace}/{name} is not a waypoint (no Gateway of class {WAYPOINT_CLASS} by that name)"
        )),
        ("Service", "" | "core") => Ok(Place::Service(namespace.to_string(), name)),
        ("GatewayClass", GATEWAY_GROUP) if name == WAYPOINT_CLASS && in_root => {
            Ok(Place::Everywhere)
        }
        ("GatewayClass", GATEWAY_GROUP) if name == WAYPOINT_CLASS => {
            Err("a GatewayClass reference is only allowed in the root namespace".into())
        }
        ("ServiceEntry", _) => Err(format!("ServiceEntry {name} is not supported yet")),
        (kind, group) => Err(format!(
            "kind {kind:?} of group {group:?} ({name}) is not a waypoint, a Service or the \
             {WAYPOINT_CLASS} GatewayClass"
        )),
    }
}

/// Rule 3 for one `jwtRules` entry; `Err((field suffix, reason))`.
fn rule(v: &Value, source: &str) -> Result<JwtRule, (String, String)> {
    let bad = |field: &str, reason: String| (field.to_string(), reason);
    let r: RuleSpec = serde_yaml::from_value(v.clone()).map_err(|e| bad("", e.to_string()))?;
    let issuer = r.issuer.unwrap_or_default();
    if issuer.is_empty() {
        return Err(bad(".issuer", "required".into()));
    }
    let jwks = r.jwks.unwrap_or_default();
    let jwks_uri = r.jwks_uri.unwrap_or_default();
    if !jwks.is_empty() {
        let keys = serde_json::from_str::<serde_json::Value>(&jwks)
            .ok()
            .and_then(|v| v.get("keys")?.as_array().map(Vec::len));
        if keys.is_none_or(|n| n == 0) {
            return Err(bad(".jwks", "not a JSON Web Key Set with keys".into()));
        }
    } else if !jwks_uri.is_empty() {
        let uri = jwks_uri
            .parse::<http::Uri>()
            .map_err(|e| bad(".jwksUri", format!("{jwks_uri:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad(
                ".jwksUri",
                format!("{jwks_uri:?} is not an http(s) URL"),
            ));
        }
    }
    let header = |field: String, name: &str| -> Result<String, (String, String)> {
        http::HeaderName::from_bytes(name.as_bytes())
            .map(|h| h.as_str().to_string())
            .map_err(|_| (field, format!("{name:?} is not a header name")))
    };
    let from_headers = r
        .from_headers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            Ok(JwtHeader {
                name: header(
                    format!(".fromHeaders[{i}].name"),
                    &h.name.unwrap_or_default(),
                )?,
                prefix: h.prefix.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, (String, String)>>()?;
    let nonempty = |field: &str, list: Option<Vec<String>>| {
        let list = list.unwrap_or_default();
        match list.iter().position(String::is_empty) {
            Some(i) => Err(bad(&format!("{field}[{i}]"), "empty".into())),
            None => Ok(list),
        }
    };
    let from_params = nonempty(".fromParams", r.from_params)?;
    let from_cookies = nonempty(".fromCookies", r.from_cookies)?;
    let output_payload_to_header = match r.output_payload_to_header.unwrap_or_default() {
        h if h.is_empty() => String::new(),
        h => header(".outputPayloadToHeader".into(), &h)?,
    };
    let output_claim_to_headers = r
        .output_claim_to_headers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let claim = c.claim.unwrap_or_default();
            if claim.is_empty() {
                return Err(bad(
                    &format!(".outputClaimToHeaders[{i}].claim"),
                    "required".into(),
                ));
            }
            Ok(ClaimToHeader {
                header: header(
                    format!(".outputClaimToHeaders[{i}].header"),
                    &c.header.unwrap_or_default(),
                )?,
                claim,
            })
        })
        .collect::<Result<Vec<_>, (String, String)>>()?;
    let timeout_ms = match r.timeout {
        None => 0,
        Some(t) => duration_ms(&t)
            .ok_or_else(|| bad(".timeout", format!("{t:?} is not a duration (e.g. 5s)")))?,
    };
    Ok(JwtRule {
        source: source.to_string(),
        issuer,
        audiences: r.audiences.unwrap_or_default(),
        jwks_uri,
        jwks,
        from_headers,
        from_params,
        from_cookies,
        output_payload_to_header,
        forward_original_token: r.forward_original_token.unwrap_or(false),
        output_claim_to_headers,
        timeout_ms,
    })
}

/// Whether an issuer is a URL to find an OpenID discovery document under (rule 3): `http(s)`,
/// a host, no query or fragment (the waypoint's test, which makes the document's URL).
fn discoverable(issuer: &str) -> bool {
    !issuer.contains('#')
        && issuer.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some()
                && u.query().is_none()
        })
}

/// A protobuf JSON duration (`5s`, `0.5s`), or milliseconds (`500ms`), as whole milliseconds
/// (at least 1); `None` if it does not read or does not fit.
fn duration_ms(s: &str) -> Option<u32> {
    let s = s.trim();
    let (number, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1.0),
        None => (s.strip_suffix('s')?, 1000.0),
    };
    let value: f64 = number.parse().ok()?;
    let ms = (value * scale).ceil();
    (value.is_finite() && value > 0.0 && ms <= f64::from(u32::MAX)).then_some(ms as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_protobuf_json_writes_them() {
        for (s, want) in [
            ("5s", Some(5000)),
            ("0.5s", Some(500)),
            ("1.0001s", Some(1001)),
            ("250ms", Some(250)),
            (" 2s ", Some(2000)),
            ("0s", None),
            ("-1s", None),
            ("5", None),
            ("5m", None),
            ("NaNs", None),
            ("9999999999s", None),
        ] {
            assert_eq!(duration_ms(s), want, "{s}");
        }
    }
}
