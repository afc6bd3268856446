//! The Authorization resource (protocol.md 4.3) and how one policy matches a connection
//! (protocol.md 8.2, "Match semantics per policy").

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// Which workloads a policy applies to (protocol.md 8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    /// Every workload in the mesh (policies from the root namespace).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only workloads that list the policy's key in `authorization_policies`.
    WorkloadSelector,
}

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    Allow,
    Deny,
}

/// One Authorization resource. `rules` are OR-ed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    /// Evaluated and reported, never enforced.
    pub dry_run: bool,
    pub rules: Vec<Rule>,
}

/// A rule matches when every clause matches (AND). No clauses: matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub clauses: Vec<Clause>,
}

/// A clause matches when any non-empty match matches (OR). No matches: matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Clause {
    pub matches: Vec<Match>,
}

/// Connection predicates. Values of one field are OR-ed, fields are AND-ed, and no value of
/// a `not_*` field may match. A match with no field set is skipped (counts as no match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub source_ips: Vec<IpNet>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub not_source_ips: Vec<IpNet>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub destination_ips: Vec<IpNet>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "nets_as_strings"
    )]
    pub not_destination_ips: Vec<IpNet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
}

/// CIDRs as `10.0.0.0/8` strings (ipnet's serde support is not enabled here).
pub(crate) fn nets_as_strings<S: serde::Serializer>(
    nets: &[IpNet],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(|n| n.to_string()))
}

/// How a string attribute (namespace, principal) is compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

/// A peer identity's namespace and service account, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

/// What the policies see of an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub src_ip: IpAddr,
    /// The destination pod IP actually connected to.
    pub dst_ip: IpAddr,
    /// The target (pod) port.
    pub dst_port: u16,
    /// The peer's verified SPIFFE identity; `None` for plaintext.
    pub peer: Option<Peer>,
}

/// A SPIFFE identity `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Peer {
    /// The principal as policies compare it: the SPIFFE ID without `spiffe://`.
    pub fn principal(&self) -> String {
        self.principal_parts().concat()
    }

    pub(crate) fn principal_parts(&self) -> [&str; 5] {
        [
            &self.trust_domain,
            "/ns/",
            &self.namespace,
            "/sa/",
            &self.service_account,
        ]
    }
}

impl Policy {
    /// The resource key, `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Index of the first rule matching `conn`, or `None` (always `None` with no rules).
    pub fn matching_rule(&self, conn: &Connection) -> Option<usize> {
        let attrs = Attrs::new(conn);
        self.rules.iter().position(|r| r.matches_attrs(&attrs))
    }

    pub fn matches(&self, conn: &Connection) -> bool {
        self.matching_rule(conn).is_some()
    }
}

impl Rule {
    pub fn matches(&self, conn: &Connection) -> bool {
        self.matches_attrs(&Attrs::new(conn))
    }

    fn matches_attrs(&self, a: &Attrs<'_>) -> bool {
        self.clauses.iter().all(|c| c.matches_attrs(a))
    }
}

impl Clause {
    pub fn matches(&self, conn: &Connection) -> bool {
        self.matches_attrs(&Attrs::new(conn))
    }

    fn matches_attrs(&self, a: &Attrs<'_>) -> bool {
        self.matches.is_empty()
            || self
                .matches
                .iter()
                .any(|m| !m.is_empty() && m.matches_attrs(a))
    }
}

impl Match {
    /// True when no field is set; such a match is skipped inside a clause.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
    }

    /// Field-wise evaluation. Note an empty match evaluates to true here; [`Clause`] skips it.
    pub fn matches(&self, conn: &Connection) -> bool {
        self.matches_attrs(&Attrs::new(conn))
    }

    fn matches_attrs(&self, a: &Attrs<'_>) -> bool {
        field(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == a.dst_port
        }) && field(&self.destination_ips, &self.not_destination_ips, |n| {
            n.contains(&a.dst_ip)
        }) && field(&self.source_ips, &self.not_source_ips, |n| {
            n.contains(&a.src_ip)
        }) && field(&self.namespaces, &self.not_namespaces, |m| {
            a.peer.is_some_and(|p| m.matches(&p.namespace))
        }) && field(&self.service_accounts, &self.not_service_accounts, |m| {
            a.peer.is_some_and(|p| {
                p.namespace == m.namespace && p.service_account == m.service_account
            })
        }) && field(&self.principals, &self.not_principals, |m| {
            a.peer
                .is_some_and(|p| m.matches_parts(&p.principal_parts()))
        })
    }
}

/// Positive values: empty or any matches. Negative values: none matches.
pub(crate) fn field<T>(positive: &[T], negative: &[T], pred: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&pred)) && !negative.iter().any(&pred)
}

/// Connection attributes normalised once per policy (IPv4-mapped IPv6 compared as IPv4).
struct Attrs<'a> {
    src_ip: IpAddr,
    dst_ip: IpAddr,
    dst_port: u16,
    peer: Option<&'a Peer>,
}

impl<'a> Attrs<'a> {
    fn new(conn: &'a Connection) -> Self {
        Attrs {
            src_ip: conn.src_ip.to_canonical(),
            dst_ip: conn.dst_ip.to_canonical(),
            dst_port: conn.dst_port,
            peer: conn.peer.as_ref(),
        }
    }
}

impl StringMatch {
    /// Compare one value. `Presence` needs a non-empty value.
    pub fn matches(&self, value: &str) -> bool {
        self.matches_parts(&[value])
    }

    /// Compare against the concatenation of `parts` without building it.
    pub(crate) fn matches_parts(&self, parts: &[&str]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match self {
            StringMatch::Exact(s) => s.len() == total && starts_with(parts, s.as_bytes()),
            StringMatch::Prefix(s) => starts_with(parts, s.as_bytes()),
            StringMatch::Suffix(s) => ends_with(parts, s.as_bytes()),
            StringMatch::Presence => total > 0,
        }
    }

    /// Compare one value ignoring ASCII case (HTTP hosts).
    pub(crate) fn matches_ignore_ascii_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StringMatch::Exact(s) => v.eq_ignore_ascii_case(s.as_bytes()),
            StringMatch::Prefix(s) => v
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s.as_bytes())),
            StringMatch::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| v[at..].eq_ignore_ascii_case(s.as_bytes())),
            StringMatch::Presence => !v.is_empty(),
        }
    }
}

fn starts_with(parts: &[&str], mut want: &[u8]) -> bool {
    for part in parts {
        let part = part.as_bytes();
        let n = part.len().min(want.len());
        if part[..n] != want[..n] {
            return false;
        }
        want = &want[n..];
        if want.is_empty() {
            return true;
        }
    }
    want.is_empty()
}

fn ends_with(parts: &[&str], mut want: &[u8]) -> bool {
    for part in parts.iter().rev() {
        let part = part.as_bytes();
        let n = part.len().min(want.len());
        if part[part.len() - n..] != want[want.len() - n..] {
            return false;
        }
        want = &want[..want.len() - n];
        if want.is_empty() {
            return true;
        }
    }
    want.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            trust_domain: "cluster.local".into(),
            namespace: "shop".into(),
            service_account: "cart".into(),
        }
    }

    #[test]
    fn principal_string() {
        assert_eq!(peer().principal(), "cluster.local/ns/shop/sa/cart");
    }

    #[test]
    fn segmented_principal_matching_agrees_with_plain_strings() {
        let p = peer();
        let whole = p.principal();
        let mut candidates: Vec<String> = Vec::new();
        for i in 0..=whole.len() {
            candidates.push(whole[..i].to_string());
            candidates.push(whole[i..].to_string());
        }
        candidates.extend(["x".into(), format!("{whole}x"), format!("x{whole}")]);
        for c in &candidates {
            for m in [
                StringMatch::Exact(c.clone()),
                StringMatch::Prefix(c.clone()),
                StringMatch::Suffix(c.clone()),
            ] {
                assert_eq!(
                    m.matches_parts(&p.principal_parts()),
                    m.matches(&whole),
                    "{m:?}"
                );
            }
        }
        assert!(StringMatch::Presence.matches_parts(&p.principal_parts()));
        assert!(!StringMatch::Presence.matches(""));
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let m = Match {
            source_ips: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let conn = Connection {
            src_ip: "::ffff:10.1.2.3".parse().unwrap(),
            dst_ip: "10.0.0.1".parse().unwrap(),
            dst_port: 80,
            peer: None,
        };
        assert!(m.matches(&conn));
    }
}
