//! The xDS resources meshd serves, each with a name, aliases and a content-derived version.
//!
//! Translation produces a whole [`Resources`] set; the server diffs it against what each
//! client holds, so a change sends only the resources whose version moved.
//!
//! ztunnel's types (Address, Authorization) are one set each, the same for every client. The
//! waypoint's types (Target, HttpPolicy) are one set per waypoint Gateway
//! ([`WaypointResources`]): a waypoint is sent only its own targets and the policies they
//! name, chosen by who it is ([`WaypointResources::waypoint_of`]). The waypoint's Tracing is
//! the mesh's (one set like ztunnel's), except for the waypoints a Telemetry of their
//! namespace or for them gives one of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// One xDS resource, encoded once and shared by every client it is sent to. Every field is
/// shared, so a clone is a few reference counts: the translator, each published snapshot and
/// every client's session hold the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Workload: its uid; Service: `namespace/hostname`; Authorization: `namespace/name`.
    pub name: Arc<str>,
    /// Other names a client may subscribe by: `<network>/<IP>` per address.
    pub aliases: Arc<[String]>,
    /// Hex of a hash of the encoded body: equal bodies, equal versions, across restarts.
    pub version: Arc<str>,
    pub body: Arc<prost_types::Any>,
}

impl Resource {
    /// Encodes `message` as an `Any` of its type URL and versions it by content.
    pub fn new<M: prost::Name>(name: String, aliases: Vec<String>, message: &M) -> Resource {
        let value = prost::Message::encode_to_vec(message);
        Resource::encoded(name, aliases, M::type_url(), value)
    }

    /// A resource of `type_url` whose body is already encoded (`value`), versioned by it.
    pub fn encoded(name: String, aliases: Vec<String>, type_url: String, value: Vec<u8>) -> Self {
        Resource {
            name: name.into(),
            aliases: aliases.into(),
            version: content_version(&value).into(),
            body: Arc::new(prost_types::Any { type_url, value }),
        }
    }

    /// Same name, version and aliases: what a client holding one needs no update for.
    pub fn same_as(&self, other: &Resource) -> bool {
        self.name == other.name && self.version == other.version && self.aliases == other.aliases
    }
}

/// First 16 hex digits of the SHA-256 of `bytes`.
pub fn content_version(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every resource of one type URL, by name (the resource's own shared name).
pub type ResourceSet = BTreeMap<Arc<str>, Resource>;

/// The set a client of a per-waypoint type gets when it is no waypoint (or one with nothing).
static EMPTY: ResourceSet = BTreeMap::new();

/// The type URLs served per waypoint.
pub const WAYPOINT_TYPE_URLS: [&str; 2] = [
    proto::WAYPOINT_TARGET_TYPE_URL,
    proto::WAYPOINT_POLICY_TYPE_URL,
];

/// Everything meshd serves, by type URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// `type.googleapis.com/istio.workload.Address`: workloads and services.
    pub addresses: ResourceSet,
    /// `type.googleapis.com/istio.security.Authorization`.
    pub authorizations: ResourceSet,
    /// `type.googleapis.com/mesh.waypoint.v1.Tracing`: none, or the one named `mesh`.
    pub tracing: ResourceSet,
    /// The waypoints a Telemetry gives tracing of their own: their Tracing set, served instead
    /// of [`Resources::tracing`].
    pub waypoint_tracing: BTreeMap<WaypointKey, ResourceSet>,
    /// The waypoints' Targets and HttpPolicies, per waypoint. Shared, so cloning a snapshot's
    /// resources does not copy them.
    pub waypoints: Arc<WaypointResources>,
}

impl Resources {
    /// The set of one of the types that are the same for every client (ztunnel's, and the
    /// waypoints' Tracing), if `type_url` is one.
    pub fn by_type(&self, type_url: &str) -> Option<&ResourceSet> {
        match type_url {
            proto::ADDRESS_TYPE_URL => Some(&self.addresses),
            proto::AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            proto::WAYPOINT_TRACING_TYPE_URL => Some(&self.tracing),
            _ => None,
        }
    }

    /// The set a client sees under `type_url`, if meshd serves that type: for the waypoint's
    /// types, the set of the client's waypoint (`waypoint`), empty when it has none.
    pub fn served(&self, type_url: &str, waypoint: Option<&WaypointKey>) -> Option<&ResourceSet> {
        let sets = || waypoint.and_then(|w| self.waypoints.by_waypoint.get(w));
        match type_url {
            proto::WAYPOINT_TRACING_TYPE_URL => Some(
                waypoint
                    .and_then(|w| self.waypoint_tracing.get(w))
                    .unwrap_or(&self.tracing),
            ),
            proto::WAYPOINT_TARGET_TYPE_URL => Some(sets().map_or(&EMPTY, |s| &s.targets)),
            proto::WAYPOINT_POLICY_TYPE_URL => Some(sets().map_or(&EMPTY, |s| &s.policies)),
            other => self.by_type(other),
        }
    }

    pub fn insert_address(&mut self, r: Resource) {
        self.addresses.insert(r.name.clone(), r);
    }

    pub fn insert_authorization(&mut self, r: Resource) {
        self.authorizations.insert(r.name.clone(), r);
    }
}

/// A waypoint: its Gateway's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaypointKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WaypointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What one waypoint is sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaypointSets {
    /// `type.googleapis.com/mesh.waypoint.v1.Target`: the services and workloads bound to it.
    pub targets: ResourceSet,
    /// `type.googleapis.com/mesh.waypoint.v1.HttpPolicy`: the policies its targets name (those
    /// that translated; a target may name one that did not, and the waypoint denies for it).
    pub policies: ResourceSet,
}

/// Label istiod puts on a waypoint's pods, naming their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The per-waypoint resources, and what maps a client to its waypoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaypointResources {
    /// Every waypoint Gateway with at least one target.
    pub by_waypoint: BTreeMap<WaypointKey, WaypointSets>,
    /// `(namespace, pod name)` -> the [`GATEWAY_NAME_LABEL`] of the pods that carry it.
    pub pods: BTreeMap<(String, String), String>,
}

impl WaypointResources {
    /// The waypoint a client authenticated as `namespace`/`service_account` (and, with a
    /// pod-bound token, `pod`) is. Rules, as istiod deploys waypoints:
    /// 1. The Gateway is in the client's namespace: a token cannot reach across namespaces.
    /// 2. It is named by the client pod's [`GATEWAY_NAME_LABEL`], when the token names a pod
    ///    that carries it;
    /// 3. else by the service account (istiod names a waypoint's service account after its
    ///    Gateway).
    ///
    /// A client that is no waypoint maps to a Gateway with no targets: it is sent nothing.
    pub fn waypoint_of(
        &self,
        namespace: &str,
        service_account: &str,
        pod: Option<&str>,
    ) -> WaypointKey {
        let labelled = pod.and_then(|p| self.pods.get(&(namespace.to_string(), p.to_string())));
        WaypointKey {
            namespace: namespace.to_string(),
            name: labelled.map_or(service_account, String::as_str).to_string(),
        }
    }

    /// Names of `type_url` (one of [`WAYPOINT_TYPE_URLS`]) added, changed or removed in any
    /// waypoint between `old` and `new`, each once.
    pub fn changed(old: &Self, new: &Self, type_url: &str) -> Vec<Arc<str>> {
        fn pick<'a>(sets: Option<&'a WaypointSets>, type_url: &str) -> &'a ResourceSet {
            match sets {
                None => &EMPTY,
                Some(s) if type_url == proto::WAYPOINT_TARGET_TYPE_URL => &s.targets,
                Some(s) => &s.policies,
            }
        }
        let keys: BTreeSet<&WaypointKey> = old
            .by_waypoint
            .keys()
            .chain(new.by_waypoint.keys())
            .collect();
        let names: BTreeSet<Arc<str>> = keys
            .into_iter()
            .flat_map(|k| {
                let (a, b) = (old.by_waypoint.get(k), new.by_waypoint.get(k));
                diff(pick(a, type_url), pick(b, type_url))
            })
            .collect();
        names.into_iter().collect()
    }
}

/// The names that differ between `old` and `new`: added, changed or removed.
pub fn diff<'a>(old: &'a ResourceSet, new: &'a ResourceSet) -> impl Iterator<Item = Arc<str>> + 'a {
    let changed = new
        .values()
        .filter(|r| old.get(&*r.name).is_none_or(|o| !o.same_as(r)))
        .map(|r| r.name.clone());
    let removed = old.keys().filter(|n| !new.contains_key(*n)).cloned();
    changed.chain(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_content() {
        let a = proto::security::Authorization {
            name: "a".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        let r1 = Resource::new("ns/a".into(), vec![], &a);
        let r2 = Resource::new("ns/a".into(), vec![], &a.clone());
        assert_eq!(r1.version, r2.version);
        assert_eq!(r1.version.len(), 16);
        assert_eq!(r1.body.type_url, proto::AUTHORIZATION_TYPE_URL);
        let b = proto::security::Authorization { dry_run: true, ..a };
        assert_ne!(Resource::new("ns/a".into(), vec![], &b).version, r1.version);
    }
}
