//! The mesh's workloads by address, from Istio's `Address` resources (the type ztunnel
//! receives; Istio's own waypoint subscribes to it for the same reason): they name a request's
//! source and destination workloads in the waypoint's metrics.
//!
//! Rules:
//! 1. Only workloads are kept; an `Address` that holds a service is accepted and ignored. A
//!    workload's resource name is its uid, as ztunnel requires, and a removal names the uid.
//! 2. Each resource converts on its own: a bad one (a name that is not its uid, an address that
//!    is neither 4 nor 16 bytes, an identity that cannot be a SPIFFE ID) is rejected for the
//!    NACK, and its last good version stays.
//! 3. A peer is named only by a workload that has both its address and the identity its
//!    certificate proved. An address that now belongs to another pod, or a workload under
//!    another service account, names nobody: metrics never give a connection the name of a
//!    workload it could not prove to be.
//! 4. Two workloads may hold one address for a while (a pod replaced, its IP reused): both are
//!    kept under it and rule 3 picks; the one applied last wins a tie.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use hbone::SpiffeId;
use proto::workload as wire;

/// Istio's defaults for a workload that names no trust domain or service account.
const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// What the metrics say of one workload. Empty strings are not known (the labels say
/// `unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub uid: String,
    /// The workload's name (its Deployment's, say), not the pod's.
    pub name: String,
    pub namespace: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub cluster: String,
    pub identity: SpiffeId,
    pub addresses: Vec<IpAddr>,
}

/// An endpoint a request or stream went to, as metrics name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub identity: SpiffeId,
    /// Its workload (rule 3), when known.
    pub workload: Option<Arc<Workload>>,
}

/// Why an `Address` resource was rejected (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {resource}: {reason}")]
pub struct PeerError {
    pub resource: String,
    pub reason: String,
}

#[derive(Debug, Default)]
struct Index {
    by_uid: HashMap<String, Arc<Workload>>,
    /// Usually one workload per address (rule 4), in the order applied.
    by_ip: HashMap<IpAddr, Vec<Arc<Workload>>>,
}

impl Index {
    fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else {
            return;
        };
        for ip in &old.addresses {
            if let Some(held) = self.by_ip.get_mut(ip) {
                held.retain(|w| !Arc::ptr_eq(w, &old));
                if held.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    fn insert(&mut self, workload: Workload) {
        self.remove(&workload.uid);
        let workload = Arc::new(workload);
        for ip in &workload.addresses {
            self.by_ip.entry(*ip).or_default().push(workload.clone());
        }
        self.by_uid.insert(workload.uid.clone(), workload);
    }
}

/// The workloads the waypoint knows of (module rules); read per connection, written per push.
#[derive(Debug, Default)]
pub struct Peers {
    index: RwLock<Index>,
}

impl Peers {
    /// Applies one push: removals, then each upsert on its own (rule 2). Returns the rejected.
    pub fn apply(&self, upserts: &[(String, wire::Address)], removed: &[String]) -> Vec<PeerError> {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for uid in removed {
            index.remove(uid);
        }
        let mut rejected = Vec::new();
        for (name, address) in upserts {
            match convert(name, address) {
                Ok(Some(w)) => index.insert(w),
                // A service under this name now: no workload by it any more.
                Ok(None) => index.remove(name),
                Err(e) => rejected.push(e),
            }
        }
        rejected
    }

    /// Rule 3: the workload at `ip` whose identity is `identity`.
    pub fn lookup(&self, ip: IpAddr, identity: &SpiffeId) -> Option<Arc<Workload>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .by_ip
            .get(&ip)?
            .iter()
            .rev()
            .find(|w| w.identity == *identity)
            .cloned()
    }

    /// Every workload held, in no order.
    pub fn workloads(&self) -> Vec<Arc<Workload>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.by_uid.values().cloned().collect()
    }

    /// Workloads held.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rule 2: a workload, `None` for a service, or why not.
fn convert(name: &str, address: &wire::Address) -> Result<Option<Workload>, PeerError> {
    let err = |reason: String| PeerError {
        resource: name.to_string(),
        reason,
    };
    let w = match &address.r#type {
        Some(wire::address::Type::Workload(w)) => w,
        Some(wire::address::Type::Service(_)) => return Ok(None),
        None => return Err(err("neither a workload nor a service".into())),
    };
    if w.uid != name {
        return Err(err(format!(
            "the resource name must be the workload's uid {:?}",
            w.uid
        )));
    }
    let addresses = w
        .addresses
        .iter()
        .map(|a| {
            if let Ok(v4) = <[u8; 4]>::try_from(&a[..]) {
                Ok(IpAddr::from(v4))
            } else if let Ok(v6) = <[u8; 16]>::try_from(&a[..]) {
                Ok(IpAddr::from(v6))
            } else {
                Err(err(format!(
                    "field addresses: an address of {} bytes",
                    a.len()
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let or = |s: &str, default: &'static str| if s.is_empty() { default } else { s }.to_string();
    let identity = SpiffeId::new(
        or(&w.trust_domain, DEFAULT_TRUST_DOMAIN),
        w.namespace.clone(),
        or(&w.service_account, DEFAULT_SERVICE_ACCOUNT),
    )
    .map_err(|e| err(format!("its identity: {e}")))?;
    Ok(Some(Workload {
        uid: w.uid.clone(),
        name: w.workload_name.clone(),
        namespace: w.namespace.clone(),
        canonical_name: w.canonical_name.clone(),
        canonical_revision: w.canonical_revision.clone(),
        cluster: w.cluster_id.clone(),
        identity,
        addresses,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).unwrap()
    }

    fn workload(uid: &str, ip: [u8; 4], ns: &str, sa: &str, name: &str) -> (String, wire::Address) {
        let w = wire::Workload {
            uid: uid.into(),
            name: format!("{name}-pod"),
            namespace: ns.into(),
            addresses: vec![ip.to_vec()],
            service_account: sa.into(),
            workload_name: name.into(),
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            cluster_id: "c1".into(),
            ..Default::default()
        };
        (
            uid.into(),
            wire::Address {
                r#type: Some(wire::address::Type::Workload(w)),
            },
        )
    }

    const IP: [u8; 4] = [10, 0, 0, 5];

    fn ip() -> IpAddr {
        IpAddr::from(IP)
    }

    #[test]
    fn a_peer_is_named_by_its_address_and_proven_identity() {
        let peers = Peers::default();
        let rejected = peers.apply(&[workload("u1", IP, "shop", "order", "order-v1")], &[]);
        assert!(rejected.is_empty(), "{rejected:?}");
        let w = peers.lookup(ip(), &id("shop", "order")).expect("named");
        assert_eq!(
            (
                w.name.as_str(),
                w.namespace.as_str(),
                w.canonical_revision.as_str()
            ),
            ("order-v1", "shop", "v1")
        );
        // Rule 3: the same address under another identity, or another address, names nobody.
        assert_eq!(peers.lookup(ip(), &id("shop", "checkout")), None);
        assert_eq!(
            peers.lookup([10, 0, 0, 6].into(), &id("shop", "order")),
            None
        );
    }

    #[test]
    fn a_reused_address_names_the_workload_the_certificate_proves() {
        let peers = Peers::default();
        peers.apply(
            &[
                workload("old", IP, "shop", "order", "order"),
                workload("new", IP, "shop", "checkout", "checkout"),
            ],
            &[],
        );
        let named = |sa: &str| peers.lookup(ip(), &id("shop", sa)).map(|w| w.uid.clone());
        assert_eq!(named("order").as_deref(), Some("old"));
        assert_eq!(named("checkout").as_deref(), Some("new"));
        peers.apply(&[], &["old".to_string()]);
        assert_eq!(named("order"), None);
        assert_eq!(named("checkout").as_deref(), Some("new"));
        assert_eq!(peers.len(), 1);
    }

    #[test]
    fn an_updated_workload_leaves_its_old_address() {
        let peers = Peers::default();
        peers.apply(&[workload("u1", IP, "shop", "order", "order")], &[]);
        peers.apply(
            &[workload("u1", [10, 0, 0, 9], "shop", "order", "order")],
            &[],
        );
        assert_eq!(peers.lookup(ip(), &id("shop", "order")), None);
        assert!(
            peers
                .lookup([10, 0, 0, 9].into(), &id("shop", "order"))
                .is_some()
        );
    }

    #[test]
    fn defaults_fill_a_missing_trust_domain_and_service_account() {
        let peers = Peers::default();
        peers.apply(&[workload("u1", IP, "shop", "", "order")], &[]);
        assert!(peers.lookup(ip(), &id("shop", "default")).is_some());
    }

    #[test]
    fn bad_resources_are_rejected_and_the_last_good_version_stays() {
        let peers = Peers::default();
        peers.apply(&[workload("u1", IP, "shop", "order", "order")], &[]);
        let (_, mut short) = workload("u1", IP, "shop", "order", "order");
        if let Some(wire::address::Type::Workload(w)) = &mut short.r#type {
            w.addresses = vec![vec![10, 0, 0]];
        }
        let (_, bad_sa) = workload("u1", IP, "shop", "no/slash", "order");
        let cases: Vec<(String, wire::Address, &str)> = vec![
            ("u1".into(), short, "an address of 3 bytes"),
            ("u1".into(), bad_sa, "its identity"),
            (
                "other".into(),
                workload("u1", IP, "shop", "order", "order").1,
                "must be the workload's uid",
            ),
            ("u1".into(), wire::Address { r#type: None }, "neither"),
        ];
        for (name, address, why) in cases {
            let rejected = peers.apply(&[(name.clone(), address)], &[]);
            assert_eq!(rejected.len(), 1, "{name}: {why}");
            assert!(rejected[0].to_string().contains(why), "{}", rejected[0]);
            assert!(
                peers.lookup(ip(), &id("shop", "order")).is_some(),
                "{why}: the last good version stays"
            );
        }
    }

    #[test]
    fn a_service_under_a_workloads_name_replaces_it() {
        let peers = Peers::default();
        peers.apply(&[workload("u1", IP, "shop", "order", "order")], &[]);
        let service = wire::Address {
            r#type: Some(wire::address::Type::Service(wire::Service::default())),
        };
        assert!(peers.apply(&[("u1".into(), service)], &[]).is_empty());
        assert!(peers.is_empty());
    }
}
