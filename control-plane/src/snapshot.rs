//! What meshd currently serves, published whole after each (debounced) change: the xDS
//! resources and the identities each node may hold. Readers take an `Arc` and never block
//! the publisher.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::resources::Resources;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publish; sent as `system_version_info`.
    pub version: u64,
    pub resources: Resources,
    /// Node name -> `(namespace, service account)` of the pods scheduled there.
    pub identities_by_node: HashMap<String, BTreeSet<(String, String)>>,
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
    pub names: HashMap<String, Vec<String>>,
}

impl Delta {
    /// The names that differ between `old` and `new`, per type.
    pub fn between(from: u64, old: &Resources, new: &Resources) -> Delta {
        let mut names = HashMap::new();
        for type_url in [proto::ADDRESS_TYPE_URL, proto::AUTHORIZATION_TYPE_URL] {
            let (Some(a), Some(b)) = (old.by_type(type_url), new.by_type(type_url)) else {
                continue;
            };
            let mut changed: Vec<String> = b
                .values()
                .filter(|r| {
                    a.get(&*r.name)
                        .is_none_or(|o| o.version != r.version || o.aliases != r.aliases)
                })
                .map(|r| r.name.to_string())
                .collect();
            changed.extend(a.keys().filter(|n| !b.contains_key(*n)).cloned());
            names.insert(type_url.to_string(), changed);
        }
        Delta { from, names }
    }
}

impl Snapshot {
    /// Whether a pod with this namespace and service account runs on `node`.
    pub fn node_holds(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.identities_by_node
            .get(node)
            .is_some_and(|ids| ids.contains(&(namespace.to_string(), service_account.to_string())))
    }
}

pub type SnapshotTx = watch::Sender<Arc<Snapshot>>;
pub type SnapshotRx = watch::Receiver<Arc<Snapshot>>;

pub fn channel() -> (SnapshotTx, SnapshotRx) {
    watch::channel(Arc::new(Snapshot::default()))
}
