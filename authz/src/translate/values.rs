//! Value conversions shared by the AuthorizationPolicy translation, with Istio's validation.

use ipnet::IpNet;
use serde_yaml::Value;

use super::{Ctx, TranslateError, scalar_string};
use crate::http::HttpStringMatch;
use crate::local::parse_net;
use crate::model::{ServiceAccountMatch, StringMatch};

/// Go's `strconv.ParseBool`, as istiod reads the dry-run annotation.
pub(super) fn annotation_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
            "" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn no_empty_values(
    ctx: &Ctx,
    at: &str,
    name: &str,
    list: &[String],
) -> Result<(), TranslateError> {
    match list.iter().position(String::is_empty) {
        Some(k) => Err(ctx.err(format!("{at}.{name}[{k}]"), "must not be empty")),
        None => Ok(()),
    }
}

/// `*` → presence, `*foo` → suffix, `foo*` → prefix, else exact.
pub(super) fn string_match(v: &str) -> StringMatch {
    if v == "*" {
        StringMatch::Presence
    } else if let Some(rest) = v.strip_prefix('*') {
        StringMatch::Suffix(rest.to_string())
    } else if let Some(rest) = v.strip_suffix('*') {
        StringMatch::Prefix(rest.to_string())
    } else {
        StringMatch::Exact(v.to_string())
    }
}

pub(super) fn string_matches(vals: &[String]) -> Vec<StringMatch> {
    vals.iter().map(|v| string_match(v)).collect()
}

/// For the waypoint: as [`string_match`], except that `*foo*` (longer than 2) is contains
/// `foo`, our one extension of Istio's syntax (see [`HttpStringMatch`]). Each such value at
/// `{at}.{name}[k]` gets a warning, since Istio would read it as the suffix `foo*`.
pub(super) fn http_string_matches(
    at: &str,
    name: &str,
    vals: &[String],
    warnings: &mut Vec<String>,
) -> Vec<HttpStringMatch> {
    vals.iter()
        .enumerate()
        .map(
            |(k, v)| match v.strip_prefix('*').and_then(|r| r.strip_suffix('*')) {
                Some(inner) if !inner.is_empty() => {
                    warnings.push(format!(
                    "{at}.{name}[{k}]: {v:?} is read as contains {inner:?} (an extension: Istio \
                     reads it as the suffix \"{inner}*\")"
                ));
                    HttpStringMatch::contains(inner)
                }
                _ => HttpStringMatch::Istio(string_match(v)),
            },
        )
        .collect()
}

pub(super) fn strings(ctx: &Ctx, at: &str, vals: &[Value]) -> Result<Vec<String>, TranslateError> {
    vals.iter()
        .enumerate()
        .map(|(k, v)| {
            scalar_string(v).ok_or_else(|| ctx.err(format!("{at}[{k}]"), "must be a string"))
        })
        .collect()
}

pub(super) fn ports(ctx: &Ctx, at: &str, vals: &[Value]) -> Result<Vec<u16>, TranslateError> {
    port_strings(ctx, at, &strings(ctx, at, vals)?)
}

/// Decimal 0-65535 (Istio validation: `ParseUint` and ≤ 65535).
pub(super) fn port_strings(
    ctx: &Ctx,
    at: &str,
    vals: &[String],
) -> Result<Vec<u16>, TranslateError> {
    vals.iter()
        .enumerate()
        .map(|(k, v)| {
            let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| v.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| ctx.err(format!("{at}[{k}]"), format!("{v:?} is not a port")))
        })
        .collect()
}

/// IPs without a prefix length become /32 or /128.
pub(super) fn nets(ctx: &Ctx, at: &str, vals: &[String]) -> Result<Vec<IpNet>, TranslateError> {
    vals.iter()
        .enumerate()
        .map(|(k, v)| parse_net(v).map_err(|reason| ctx.err(format!("{at}[{k}]"), reason)))
        .collect()
}

/// `ns/sa`, or a bare `sa` in the policy's namespace.
pub(super) fn accounts(
    ctx: &Ctx,
    at: &str,
    vals: &[String],
    namespace: &str,
) -> Result<Vec<ServiceAccountMatch>, TranslateError> {
    vals.iter()
        .enumerate()
        .map(|(k, v)| {
            let (ns, sa) = v.split_once('/').unwrap_or((namespace, v.as_str()));
            if ns.is_empty() || sa.is_empty() || sa.contains('/') {
                return Err(ctx.err(
                    format!("{at}[{k}]"),
                    format!("{v:?} is not <namespace>/<serviceaccount> or <serviceaccount>"),
                ));
            }
            Ok(ServiceAccountMatch {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            })
        })
        .collect()
}
