//! The L7 policy a waypoint enforces: Istio's AuthorizationPolicy with its HTTP attributes
//! (protocol.md 8.4).
//!
//! Rules, in order:
//! 1. A policy with no rules never matches; a rule with no `from`, `to` or `when` matches every
//!    request (Istio's `rules: [{}]`). Rules are OR-ed.
//! 2. A rule matches when (`from` is empty or any source matches) and (`to` is empty or any
//!    operation matches) and every condition matches.
//! 3. In a source, operation or condition, fields are AND-ed, the values of one field OR-ed,
//!    and no value of a `not_*` field may match. A source or operation with no field set
//!    matches every request (the translation never makes one: Istio rejects it).
//! 4. An attribute the request lacks (peer identity, JWT, SNI, a header, a claim) matches no
//!    value: a positive field fails and a `not_*` field passes (protocol.md 8.2).
//! 5. Strings compare as [`HttpStringMatch`] says; hosts ignore ASCII case, every other
//!    attribute is case-sensitive.

use std::fmt;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::model::{ServiceAccountMatch, StringMatch, nets_as_strings};

/// What a matching policy does at the waypoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum HttpAction {
    Allow,
    Deny,
    /// Reported, never enforced.
    Audit,
    /// Ask the external authorizer `provider` (a MeshConfig extension provider).
    Custom {
        provider: String,
    },
}

/// One AuthorizationPolicy as the waypoint evaluates it. `rules` are OR-ed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPolicy {
    pub name: String,
    pub namespace: String,
    pub action: HttpAction,
    /// Evaluated and reported, never enforced (ALLOW and DENY only, as in Istio).
    pub dry_run: bool,
    pub rules: Vec<HttpRule>,
}

impl HttpPolicy {
    /// The resource key, `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Sources OR-ed, operations OR-ed, conditions AND-ed (rule 2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Source>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Operation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// Who sent the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The peer's SPIFFE identity without `spiffe://`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<HttpStringMatch>,
    /// The JWT's `iss/sub`; `*` matches any request that has one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<HttpStringMatch>,
    /// The peer identity's namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<HttpStringMatch>,
    /// The peer identity's namespace and service account, compared exactly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    /// The peer identity's trust domain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<HttpStringMatch>,
    /// The direct peer's address.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub ip_blocks: Vec<IpNet>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub not_ip_blocks: Vec<IpNet>,
    /// The original client's address ([`Request::remote_ip`](super::Request::remote_ip)).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub remote_ip_blocks: Vec<IpNet>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub not_remote_ip_blocks: Vec<IpNet>,
}

/// What the request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The request's host, ignoring ASCII case, with or without its `:port`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<HttpStringMatch>,
    /// The destination port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<HttpStringMatch>,
    /// The path without its query; presence (`*`) matches every path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpStringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<HttpStringMatch>,
}

/// A `when` entry: `values` OR-ed, and none of `not_values` may match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub key: ConditionKey,
    #[serde(skip_serializing_if = "ConditionValues::is_empty")]
    pub values: ConditionValues,
    #[serde(skip_serializing_if = "ConditionValues::is_empty")]
    pub not_values: ConditionValues,
}

/// The attribute a condition reads, by its Istio name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConditionKey {
    /// `request.headers[<name>]`, name lowercased. A header with several values matches when
    /// any value does; `*` matches a header that is present, even empty (Envoy's
    /// `present_match`). `:authority`, `:method` and `:path` read the request's host, method
    /// and full path.
    RequestHeader(String),
    /// `source.ip`: the direct peer's address.
    SourceIp,
    /// `remote.ip`: the original client's address.
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    /// `request.auth.principal`: the JWT's `iss/sub`.
    RequestPrincipal,
    /// `request.auth.audiences`: matches when any audience matches.
    RequestAudiences,
    /// `request.auth.presenter`: the JWT's `azp`.
    RequestPresenter,
    /// `request.auth.claims[a][b]…`, the path into nested objects. A string claim is compared
    /// as is, a list claim matches when any string element matches; numbers, booleans, null
    /// and objects never match (Envoy's string matchers do not read them either).
    RequestClaim(Vec<String>),
    /// `connection.sni`: the TLS server name the client sent, if any.
    ConnectionSni,
}

/// What the values of a condition are: the key decides (IPs for `*.ip`, ports for
/// `destination.port`, strings otherwise). Values of another kind than the key's never match;
/// the translation always produces the key's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionValues {
    Strings(Vec<HttpStringMatch>),
    Nets(Vec<IpNet>),
    Ports(Vec<u16>),
}

/// How an L7 string attribute is compared.
///
/// Istio's four kinds (`*` presence, `*foo` suffix, `foo*` prefix, else exact) plus one
/// deliberate extension: a value starting *and* ending with `*` (longer than 2, e.g.
/// `*sqlmap*`) means **contains**. Istio would read it as the suffix `sqlmap*` taken
/// literally, which matches almost nothing; our users write it to mean contains (a mesh-wide
/// DENY of user agents `*sqlmap*`, `*nikto*`). The translation warns where it applies.
/// Contains is case-sensitive like the other kinds (hosts excepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HttpStringMatch {
    Istio(StringMatch),
    Contains(Needle),
}

/// The text a contains match looks for, with its searcher built once, when the policy is
/// read: a search is linear in the value, and a request does not pay for setting one up
/// (std's `str::contains` does, per call: most of a user-agent DENY's cost).
#[derive(Clone)]
pub struct Needle {
    text: String,
    /// Boxed: a searcher is ten times the size of the other matches.
    finder: Box<memchr::memmem::Finder<'static>>,
}

impl Needle {
    pub fn new(text: impl Into<String>) -> Needle {
        let text = text.into();
        let finder = Box::new(memchr::memmem::Finder::new(text.as_bytes()).into_owned());
        Needle { text, finder }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the text occurs in `haystack` (the empty text occurs everywhere).
    pub fn is_in(&self, haystack: &str) -> bool {
        self.finder.find(haystack.as_bytes()).is_some()
    }
}

impl PartialEq for Needle {
    fn eq(&self, other: &Needle) -> bool {
        self.text == other.text
    }
}

impl Eq for Needle {}

impl std::hash::Hash for Needle {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.text.hash(h)
    }
}

impl fmt::Debug for Needle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text.fmt(f)
    }
}

impl HttpStringMatch {
    /// A contains match for `text`.
    pub fn contains(text: impl Into<String>) -> HttpStringMatch {
        HttpStringMatch::Contains(Needle::new(text))
    }
}

impl ConditionValues {
    pub fn is_empty(&self) -> bool {
        match self {
            ConditionValues::Strings(v) => v.is_empty(),
            ConditionValues::Nets(v) => v.is_empty(),
            ConditionValues::Ports(v) => v.is_empty(),
        }
    }
}

impl HttpStringMatch {
    /// Compare one value (presence: non-empty).
    pub fn matches(&self, value: &str) -> bool {
        match self {
            HttpStringMatch::Istio(m) => m.matches(value),
            HttpStringMatch::Contains(s) => s.is_in(value),
        }
    }

    /// Compare against the concatenation of `parts` without building it (principals).
    pub(crate) fn matches_parts(&self, parts: &[&str]) -> bool {
        match self {
            HttpStringMatch::Istio(m) => m.matches_parts(parts),
            HttpStringMatch::Contains(s) => contains_parts(parts, s.as_str().as_bytes()),
        }
    }

    /// Compare one value ignoring ASCII case (hosts).
    pub(crate) fn matches_ignore_ascii_case(&self, value: &str) -> bool {
        match self {
            HttpStringMatch::Istio(m) => m.matches_ignore_ascii_case(value),
            HttpStringMatch::Contains(s) => {
                let (v, s) = (value.as_bytes(), s.as_str().as_bytes());
                s.is_empty() || v.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s))
            }
        }
    }
}

/// Whether `needle` occurs in the concatenation of `parts`.
fn contains_parts(parts: &[&str], needle: &[u8]) -> bool {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let Some(last_start) = total.checked_sub(needle.len()) else {
        return false;
    };
    let bytes = || parts.iter().flat_map(|p| p.bytes());
    (0..=last_start).any(|start| {
        bytes()
            .skip(start)
            .take(needle.len())
            .eq(needle.iter().copied())
    })
}

impl From<StringMatch> for HttpStringMatch {
    fn from(m: StringMatch) -> Self {
        HttpStringMatch::Istio(m)
    }
}

/// As [`StringMatch`] serializes (`{"Exact": "x"}`, `"Presence"`), plus `{"Contains": "x"}`.
impl Serialize for HttpStringMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HttpStringMatch::Istio(m) => m.serialize(s),
            HttpStringMatch::Contains(v) => {
                s.serialize_newtype_variant("HttpStringMatch", 4, "Contains", v.as_str())
            }
        }
    }
}

impl Serialize for ConditionValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ConditionValues::Strings(v) => v.serialize(s),
            ConditionValues::Nets(v) => nets_as_strings(v, s),
            ConditionValues::Ports(v) => v.serialize(s),
        }
    }
}

impl ConditionKey {
    /// Parse an Istio condition key; `Err` is the reason it is not one this waypoint reads.
    pub fn parse(key: &str) -> Result<ConditionKey, &'static str> {
        if let Some(rest) = key.strip_prefix("request.headers[") {
            let name = rest
                .strip_suffix(']')
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
                .ok_or("expected request.headers[<name>]")?;
            return Ok(ConditionKey::RequestHeader(name.to_ascii_lowercase()));
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims[") {
            let path: Option<Vec<String>> = rest.strip_suffix(']').and_then(|inner| {
                inner
                    .split("][")
                    .map(|c| (!c.is_empty() && !c.contains(['[', ']'])).then(|| c.to_string()))
                    .collect()
            });
            return path
                .map(ConditionKey::RequestClaim)
                .ok_or("expected request.auth.claims[<name>] or request.auth.claims[<a>][<b>]…");
        }
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "request.auth.principal" => ConditionKey::RequestPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAudiences,
            "request.auth.presenter" => ConditionKey::RequestPresenter,
            "connection.sni" => ConditionKey::ConnectionSni,
            k if k.starts_with("experimental.envoy.filters.") => {
                return Err("Envoy filter metadata is not available at this waypoint");
            }
            _ => return Err("unknown condition key"),
        })
    }
}

/// The Istio name, e.g. `request.headers[user-agent]`, `request.auth.claims[a][b]`.
impl fmt::Display for ConditionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ConditionKey::RequestHeader(h) => return write!(f, "request.headers[{h}]"),
            ConditionKey::RequestClaim(path) => {
                f.write_str("request.auth.claims")?;
                return path.iter().try_for_each(|c| write!(f, "[{c}]"));
            }
            ConditionKey::SourceIp => "source.ip",
            ConditionKey::RemoteIp => "remote.ip",
            ConditionKey::SourceNamespace => "source.namespace",
            ConditionKey::SourcePrincipal => "source.principal",
            ConditionKey::DestinationIp => "destination.ip",
            ConditionKey::DestinationPort => "destination.port",
            ConditionKey::RequestPrincipal => "request.auth.principal",
            ConditionKey::RequestAudiences => "request.auth.audiences",
            ConditionKey::RequestPresenter => "request.auth.presenter",
            ConditionKey::ConnectionSni => "connection.sni",
        };
        f.write_str(name)
    }
}

impl Serialize for ConditionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_contains_agrees_with_plain_strings() {
        let parts = ["cluster.local", "/ns/", "shop", "/sa/", "cart"];
        let whole = parts.concat();
        for i in 0..whole.len() {
            for j in i..=whole.len() {
                let m = HttpStringMatch::contains(&whole[i..j]);
                assert!(m.matches_parts(&parts), "{:?}", &whole[i..j]);
            }
        }
        for absent in ["shopx", "local//", "cart/", "xcluster"] {
            let m = HttpStringMatch::contains(absent);
            assert_eq!(m.matches_parts(&parts), m.matches(&whole), "{absent}");
        }
    }

    #[test]
    fn contains_agrees_with_str_contains() {
        let values = [
            "",
            "sqlmap/1.5",
            "Mozilla (sqlmap)",
            "SQLMAP",
            "sqlma",
            "xx sqlmapsqlmap",
        ];
        for needle in ["sqlmap", "", "map/", "S"] {
            let m = HttpStringMatch::contains(needle);
            for v in values {
                assert_eq!(m.matches(v), v.contains(needle), "{needle:?} in {v:?}");
            }
        }
        assert_eq!(
            HttpStringMatch::contains("a"),
            HttpStringMatch::contains("a")
        );
        assert_ne!(
            HttpStringMatch::contains("a"),
            HttpStringMatch::contains("b")
        );
    }

    #[test]
    fn keys_round_trip_through_display() {
        for k in [
            "request.headers[x-user]",
            "request.auth.claims[groups]",
            "request.auth.claims[realm_access][roles]",
            "source.ip",
            "connection.sni",
        ] {
            assert_eq!(ConditionKey::parse(k).map(|k| k.to_string()), Ok(k.into()));
        }
        for bad in [
            "request.headers[]",
            "request.headers[a",
            "request.auth.claims[]",
            "request.auth.claims[a][]",
            "request.auth.claims[a]b]",
            "request.auth.claim[a]",
            "source.user",
        ] {
            assert!(ConditionKey::parse(bad).is_err(), "{bad}");
        }
    }
}
