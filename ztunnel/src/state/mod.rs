//! What ztunnel knows about the mesh: workloads and services, indexed for the data path.
//!
//! A [`State`] is an immutable snapshot; [`StateHandle`] swaps in a new one when config
//! changes, so connections read a consistent view without holding a lock.

pub mod local;
pub mod xds;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use hbone::SpiffeId;

/// How peers reach a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain TCP: not in the mesh.
    Tcp,
    /// HBONE on port 15008.
    Hbone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub trust_domain: String,
    pub ips: Vec<IpAddr>,
    pub protocol: Protocol,
    pub healthy: bool,
    pub node: String,
    pub workload_name: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub cluster_id: String,
    pub locality: Locality,
    /// Service key (`ns/hostname`) -> service port -> this workload's target port.
    pub services: HashMap<String, HashMap<u16, u16>>,
    pub authorization_policies: Vec<String>,
}

impl Workload {
    /// The identity this workload's certificate carries.
    pub fn identity(&self) -> Result<SpiffeId, hbone::IdentityError> {
        SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)
    }
}

/// Where a workload runs (topology labels).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// (network, VIP).
    pub vips: Vec<(String, IpAddr)>,
    /// Service port -> target port (0 = resolve per endpoint).
    pub ports: HashMap<u16, u16>,
    /// Extra identities a server behind this service may present.
    pub subject_alt_names: Vec<SpiffeId>,
}

impl Service {
    /// `namespace/hostname`, how workloads refer to services.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

/// One consistent view of the mesh.
#[derive(Debug, Default)]
pub struct State {
    workloads: Vec<Arc<Workload>>,
    by_ip: HashMap<IpAddr, Arc<Workload>>,
    by_vip: HashMap<IpAddr, Arc<Service>>,
    by_hostname: HashMap<String, Arc<Service>>,
    /// Service key -> the workloads behind it.
    endpoints: HashMap<String, Vec<Arc<Workload>>>,
    policies: authz::PolicyStore,
}

impl State {
    pub fn new(
        workloads: Vec<Workload>,
        services: Vec<Service>,
        policies: authz::PolicyStore,
    ) -> State {
        let workloads: Vec<Arc<Workload>> = workloads.into_iter().map(Arc::new).collect();
        let mut state = State::default();
        for w in &workloads {
            for ip in &w.ips {
                state.by_ip.insert(*ip, w.clone());
            }
            for key in w.services.keys() {
                state
                    .endpoints
                    .entry(key.clone())
                    .or_default()
                    .push(w.clone());
            }
        }
        for s in services {
            let s = Arc::new(s);
            for (_, vip) in &s.vips {
                state.by_vip.insert(*vip, s.clone());
            }
            state.by_hostname.insert(s.hostname.clone(), s.clone());
        }
        state.workloads = workloads;
        state.policies = policies;
        state
    }

    pub fn policies(&self) -> &authz::PolicyStore {
        &self.policies
    }

    /// The authorization verdict for a connection to workload `dst`.
    pub fn authorize(&self, dst: &Workload, conn: &authz::Connection) -> authz::Verdict {
        self.policies
            .evaluate(&dst.namespace, &dst.authorization_policies, conn)
    }

    pub fn workloads(&self) -> &[Arc<Workload>] {
        &self.workloads
    }

    pub fn services_len(&self) -> usize {
        self.by_hostname.len()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_hostname.values()
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.by_ip.get(&ip)
    }

    pub fn workload_by_name(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&ip)
    }

    pub fn service_by_hostname(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.by_hostname.get(hostname)
    }

    /// The workloads behind a service (healthy or not).
    pub fn endpoints(&self, service: &Service) -> &[Arc<Workload>] {
        self.endpoints
            .get(&service.key())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The current snapshot, replaceable as a whole; subscribers learn of each replacement.
#[derive(Clone, Debug)]
pub struct StateHandle {
    current: Arc<RwLock<Arc<State>>>,
    /// Bumped on every store, so open connections can be re-checked against new policy.
    version: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for StateHandle {
    fn default() -> Self {
        StateHandle::new(State::default())
    }
}

impl StateHandle {
    pub fn new(state: State) -> Self {
        StateHandle {
            current: Arc::new(RwLock::new(Arc::new(state))),
            version: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub fn load(&self) -> Arc<State> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn store(&self, state: State) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        self.version.send_modify(|v| *v += 1);
    }

    /// Changes whenever a new snapshot is stored.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}
