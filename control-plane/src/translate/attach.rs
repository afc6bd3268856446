//! Where policies that attach by `targetRefs` land on waypoint targets, with what they carry:
//! AuthorizationPolicy keys, RequestAuthentication JWT rules, LocalRateLimit limits; each
//! policy's items by its key, and where each key attaches.
//!
//! Rules:
//! 1. A key attaches to a waypoint Gateway (every target of that waypoint), to a Service (that
//!    service's target, whichever waypoint it is bound to), or everywhere (the
//!    `istio-waypoint` GatewayClass: every target of every waypoint).
//! 2. A target's items: those of every key attached to it, keys ordered (`namespace/name`),
//!    each key once however many ways it attaches, items in their order within it.

use std::collections::{BTreeMap, BTreeSet};

use authz::translate::Target;

use super::waypoint::{WAYPOINT_CLASS, Waypoints};
use crate::resources::WaypointKey;

/// Where one reference attaches (rule 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Gateway(WaypointKey),
    /// `(namespace, service name)`.
    Service(String, String),
    Everywhere,
}

/// Rule 1 for one translated reference; `Err` is the warning for one that attaches nowhere
/// (a Gateway that is no waypoint, a ServiceEntry).
pub fn place(target: &Target, waypoints: &Waypoints<'_>) -> Result<Place, String> {
    match target {
        Target::Gateway { namespace, name } if waypoints.is_waypoint(namespace, name) => {
            Ok(Place::Gateway(WaypointKey {
                namespace: namespace.clone(),
                name: name.clone(),
            }))
        }
        Target::Gateway { namespace, name } => Err(format!(
            "targetRefs: Gateway {namespace}/{name} is not a waypoint (no Gateway of class \
             {WAYPOINT_CLASS} by that name): this reference applies nowhere"
        )),
        Target::Service { namespace, name } => Ok(Place::Service(namespace.clone(), name.clone())),
        Target::GatewayClass => Ok(Place::Everywhere),
        Target::ServiceEntry { namespace, name } => Err(format!(
            "targetRefs: ServiceEntry {namespace}/{name} is not supported yet: this reference \
             applies nowhere"
        )),
    }
}

/// Items by policy key, and where the keys attach.
#[derive(Debug, PartialEq)]
pub struct Attached<T> {
    items: BTreeMap<String, Vec<T>>,
    by_gateway: BTreeMap<WaypointKey, BTreeSet<String>>,
    by_service: BTreeMap<(String, String), BTreeSet<String>>,
    everywhere: BTreeSet<String>,
}

impl<T> Default for Attached<T> {
    fn default() -> Self {
        Attached {
            items: BTreeMap::new(),
            by_gateway: BTreeMap::new(),
            by_service: BTreeMap::new(),
            everywhere: BTreeSet::new(),
        }
    }
}

impl<T: Clone> Attached<T> {
    /// The items of policy `key`, attached at `places`.
    pub fn insert(&mut self, key: &str, items: Vec<T>, places: impl IntoIterator<Item = Place>) {
        self.items.insert(key.to_string(), items);
        for place in places {
            let keys = match place {
                Place::Gateway(w) => self.by_gateway.entry(w).or_default(),
                Place::Service(ns, name) => self.by_service.entry((ns, name)).or_default(),
                Place::Everywhere => &mut self.everywhere,
            };
            keys.insert(key.to_string());
        }
    }

    /// The items of Service `namespace/name`'s target at `waypoint`.
    pub fn service(&self, waypoint: &WaypointKey, namespace: &str, name: &str) -> Vec<T> {
        let own = self
            .by_service
            .get(&(namespace.to_string(), name.to_string()));
        self.merged(waypoint, own)
    }

    /// The items of a workload target at `waypoint`.
    pub fn workload(&self, waypoint: &WaypointKey) -> Vec<T> {
        self.merged(waypoint, None)
    }

    /// Rule 2.
    fn merged(&self, waypoint: &WaypointKey, own: Option<&BTreeSet<String>>) -> Vec<T> {
        let keys: BTreeSet<&String> = self
            .everywhere
            .iter()
            .chain(self.by_gateway.get(waypoint).into_iter().flatten())
            .chain(own.into_iter().flatten())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.items.get(k))
            .flatten()
            .cloned()
            .collect()
    }
}
