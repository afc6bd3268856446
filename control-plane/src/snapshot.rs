//! What meshd currently serves, published whole after each (debounced) change: the xDS
//! resources and the identities each node may hold. Readers take an `Arc` and never block
//! the publisher.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::resources::{Resources, WAYPOINT_TYPE_URLS, WaypointResources, diff};

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publish; sent as `system_version_info`.
    pub version: u64,
    pub resources: Resources,
    /// The identities each node's proxy may hold certificates for.
    pub identities: NodeIdentities,
    /// When the first change folded into this snapshot arrived (for convergence time).
    pub changed_at: Option<Instant>,
    /// What changed since the previous snapshot, so each client's update costs O(changes)
    /// rather than a walk over every resource.
    pub delta: Option<Delta>,
}

/// The resource names (added, changed or removed) between version `from` and this one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub from: u64,
    /// Type URL -> names.
    pub names: HashMap<String, Vec<Arc<str>>>,
}

impl Delta {
    /// The names that differ between `old` and `new`, per type, by walking both. The
    /// pipeline gets the same from the translator without the walk (`Translation::changed`).
    pub fn between(from: u64, old: &Resources, new: &Resources) -> Delta {
        let mut names = HashMap::new();
        for type_url in [
            proto::ADDRESS_TYPE_URL,
            proto::AUTHORIZATION_TYPE_URL,
            proto::WAYPOINT_TRACING_TYPE_URL,
        ] {
            let (Some(a), Some(b)) = (old.by_type(type_url), new.by_type(type_url)) else {
                continue;
            };
            names.insert(type_url.to_string(), diff(a, b).collect());
        }
        // A waypoint's own Tracing (same name as the mesh's) changed: the name, compared again
        // per client.
        let tracing: &mut Vec<Arc<str>> = names
            .entry(proto::WAYPOINT_TRACING_TYPE_URL.to_string())
            .or_default();
        if old.waypoint_tracing != new.waypoint_tracing && tracing.is_empty() {
            tracing.push(proto::WAYPOINT_TRACING_NAME.into());
        }
        for type_url in WAYPOINT_TYPE_URLS {
            let changed = WaypointResources::changed(&old.waypoints, &new.waypoints, type_url);
            names.insert(type_url.to_string(), changed);
        }
        Delta { from, names }
    }
}

impl Snapshot {
    /// Whether a pod with this namespace and service account runs on `node`.
    pub fn node_holds(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.identities.holds(node, namespace, service_account)
    }
}

/// Node name -> the `(namespace, service account)` of the pods scheduled there, each counted
/// by its pods. Kept up to date pod by pod; a snapshot's copy shares every node's table (a
/// copy is one reference count per node) and a change copies only its node's.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentities {
    nodes: HashMap<String, Arc<IdentityCounts>>,
}

/// `(namespace, service account)` -> pods with that identity, on one node.
type IdentityCounts = BTreeMap<(String, String), usize>;

impl NodeIdentities {
    /// Counts a pod; true when its identity is new on that node.
    pub fn add(&mut self, node: &str, namespace: &str, service_account: &str) -> bool {
        let ids = Arc::make_mut(self.nodes.entry(node.to_string()).or_default());
        let count = ids
            .entry((namespace.to_string(), service_account.to_string()))
            .or_default();
        *count += 1;
        *count == 1
    }

    /// Uncounts a pod; true when it was the last of its identity on that node.
    pub fn remove(&mut self, node: &str, namespace: &str, service_account: &str) -> bool {
        let Some(ids) = self.nodes.get_mut(node) else {
            return false;
        };
        let key = (namespace.to_string(), service_account.to_string());
        let ids = Arc::make_mut(ids);
        let gone = match ids.get_mut(&key) {
            Some(1) => ids.remove(&key).is_some(),
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        };
        if ids.is_empty() {
            self.nodes.remove(node);
        }
        gone
    }

    pub fn holds(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.nodes.get(node).is_some_and(|ids| {
            ids.contains_key(&(namespace.to_string(), service_account.to_string()))
        })
    }

    /// The nodes with at least one pod.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }
}

pub type SnapshotTx = watch::Sender<Arc<Snapshot>>;
pub type SnapshotRx = watch::Receiver<Arc<Snapshot>>;

pub fn channel() -> (SnapshotTx, SnapshotRx) {
    watch::channel(Arc::new(Snapshot::default()))
}
