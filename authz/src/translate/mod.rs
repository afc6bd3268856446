//! istiod's translation of `security.istio.io` resources into Authorization policies for
//! ztunnel: AuthorizationPolicy (protocol.md 8.3) and PeerAuthentication (protocol.md 9); and
//! of AuthorizationPolicy into L7 policies for waypoints (protocol.md 8.4).
//!
//! Inputs are Kubernetes objects as YAML text or a [`serde_yaml::Value`]. Values that Istio's
//! admission validation would reject (a bad port or CIDR, an empty `from.source`, ...) are
//! errors naming the field; what istiod accepts but ztunnel cannot enforce becomes a warning.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

mod authorization;
mod peer;
mod rate_limit;
mod spec;
mod values;
mod waypoint;

pub use authorization::{SkipReason, TranslateOptions, Translated, authorization_policy};
pub use peer::{
    CONVERTED_PEER_AUTHENTICATION_PREFIX, MtlsMode, PeerAuthentication, STATIC_STRICT_POLICY_NAME,
    WorkloadMtls, converted_peer_authentication, effective_mtls, peer_authentication,
    peer_authentication_policies, static_strict_policy,
};
pub use rate_limit::{LocalRateLimit, local_rate_limit, parse_duration};
pub use waypoint::{Attachment, HttpTranslated, Target, http_authorization_policy};

/// Kubernetes labels (`matchLabels` of a selector, or a workload's labels).
pub type Labels = BTreeMap<String, String>;

/// A resource to translate: YAML text or an already parsed YAML value.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Yaml(&'a str),
    Value(&'a Value),
}

impl<'a> From<&'a str> for Input<'a> {
    fn from(s: &'a str) -> Self {
        Input::Yaml(s)
    }
}

impl<'a> From<&'a String> for Input<'a> {
    fn from(s: &'a String) -> Self {
        Input::Yaml(s)
    }
}

impl<'a> From<&'a Value> for Input<'a> {
    fn from(v: &'a Value) -> Self {
        Input::Value(v)
    }
}

/// A resource that cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// Not the expected object shape (serde_yaml's message, with its path when known).
    #[error("{kind}: {message}")]
    Syntax { kind: &'static str, message: String },
    /// A field holds a value Istio would reject. `resource` is `namespace/name`.
    #[error("{kind} {resource}: {field}: {reason}")]
    Invalid {
        kind: &'static str,
        resource: String,
        field: String,
        reason: String,
    },
}

/// True when every label of `selector` is present with the same value in `labels`
/// (an empty selector selects everything).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Kubernetes object envelope; fields other than these (status, managedFields...) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object<S> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

/// The parsed envelope with its checked identity.
struct Parsed<S> {
    name: String,
    namespace: String,
    metadata: Metadata,
    spec: S,
}

/// Field errors for one resource.
struct Ctx {
    kind: &'static str,
    resource: String,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
        TranslateError::Invalid {
            kind: self.kind,
            resource: self.resource.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The API group of Istio's security resources.
const ISTIO_SECURITY: &str = "security.istio.io";

fn parse_object<S: DeserializeOwned + Default>(
    input: Input<'_>,
    kind: &'static str,
    group: &'static str,
) -> Result<(Parsed<S>, Ctx), TranslateError> {
    let syntax = |e: serde_yaml::Error| TranslateError::Syntax {
        kind,
        message: e.to_string(),
    };
    // Parse from text so serde_yaml's messages carry field paths.
    let owned;
    let text = match input {
        Input::Yaml(s) => s,
        Input::Value(v) => {
            owned = serde_yaml::to_string(v).map_err(syntax)?;
            owned.as_str()
        }
    };
    // The envelope first, so a wrong kind or a missing name is reported before spec details.
    let head: Object<serde::de::IgnoredAny> = serde_yaml::from_str(text).map_err(syntax)?;
    let name = head.metadata.name.clone().unwrap_or_default();
    let namespace = head.metadata.namespace.clone().unwrap_or_default();
    let ctx = Ctx {
        kind,
        resource: format!(
            "{}/{}",
            if namespace.is_empty() {
                "<no namespace>"
            } else {
                &namespace
            },
            if name.is_empty() { "<no name>" } else { &name },
        ),
    };
    match &head.kind {
        Some(k) if k != kind => {
            return Err(ctx.err("kind", format!("expected {kind}, found {k:?}")));
        }
        _ => {}
    }
    match &head.api_version {
        Some(v) if v.split_once('/').is_none_or(|(g, _)| g != group) => {
            return Err(ctx.err(
                "apiVersion",
                format!("expected {group}/<version>, found {v:?}"),
            ));
        }
        _ => {}
    }
    if name.is_empty() {
        return Err(ctx.err("metadata.name", "required"));
    }
    if namespace.is_empty() {
        return Err(ctx.err("metadata.namespace", "required"));
    }
    match head.metadata.creation_timestamp.as_deref() {
        Some(ts) if !ts.is_empty() && !is_rfc3339_utc(ts) => {
            return Err(ctx.err(
                "metadata.creationTimestamp",
                format!("{ts:?} is not an RFC 3339 UTC time like 2024-01-02T03:04:05Z"),
            ));
        }
        _ => {}
    }
    let obj: Object<S> = serde_yaml::from_str(text).map_err(syntax)?;
    Ok((
        Parsed {
            name,
            namespace,
            metadata: obj.metadata,
            spec: obj.spec.unwrap_or_default(),
        },
        ctx,
    ))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`, the form Kubernetes writes; such strings sort by time.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return false;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    if !digits(11..13) || !digits(14..16) || !digits(17..19) {
        return false;
    }
    match &b[19..] {
        [b'Z'] => true,
        [b'.', frac @ .., b'Z'] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A scalar written as a string or a number (`ports: ["80"]` or `ports: [80]`).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert!(is_rfc3339_utc("2024-01-02T03:04:05Z"));
        assert!(is_rfc3339_utc("2024-01-02T03:04:05.123Z"));
        assert!(!is_rfc3339_utc("2024-01-02T03:04:05+01:00"));
        assert!(!is_rfc3339_utc("2024-1-02T03:04:05Z"));
        assert!(!is_rfc3339_utc("2024-01-02T03:04:05.Z"));
        assert!(!is_rfc3339_utc(""));
    }

    #[test]
    fn selectors() {
        let l = |kv: &[(&str, &str)]| -> Labels {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(&l(&[]), &l(&[("app", "a")])));
        assert!(selector_matches(
            &l(&[("app", "a")]),
            &l(&[("app", "a"), ("v", "1")])
        ));
        assert!(!selector_matches(&l(&[("app", "a")]), &l(&[("app", "b")])));
        assert!(!selector_matches(&l(&[("app", "a")]), &l(&[])));
    }
}
