//! What ztunnel knows about the mesh: workloads and services, indexed for the data path.
//!
//! A [`State`] is an immutable snapshot; [`StateHandle`] swaps in a new one when config
//! changes, so connections read a consistent view without holding a lock.

pub mod local;
pub mod xds;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use hbone::{HBONE_PORT, SpiffeId};

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
    /// The waypoint traffic addressed to this workload goes through (protocol.md 10.2).
    pub waypoint: Option<GatewayRef>,
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
    /// The waypoint traffic to this service's VIPs goes through (protocol.md 10.2).
    pub waypoint: Option<GatewayRef>,
}

impl Service {
    /// `namespace/hostname`, how workloads refer to services.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

/// A gateway a workload or service refers to (Istio's `GatewayAddress`): its waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRef {
    pub destination: GatewayDestination,
    /// The gateway's HBONE (mTLS) port.
    pub hbone_mtls_port: u16,
}

impl GatewayRef {
    /// A port of 0 (unset: istiod always sends 15008) means [`HBONE_PORT`].
    pub fn new(destination: GatewayDestination, hbone_mtls_port: u16) -> Self {
        GatewayRef {
            destination,
            hbone_mtls_port: if hbone_mtls_port == 0 {
                HBONE_PORT
            } else {
                hbone_mtls_port
            },
        }
    }
}

/// How a gateway is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayDestination {
    /// A service (`namespace/hostname`): traffic goes to one of its endpoints.
    Hostname { namespace: String, hostname: String },
    /// An address on a network: a workload's IP, or a service VIP.
    Address { network: String, ip: IpAddr },
}

/// `namespace/hostname` or `network/IP`, as the local config writes it.
impl fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            GatewayDestination::Hostname {
                namespace,
                hostname,
            } => write!(f, "{namespace}/{hostname}"),
            GatewayDestination::Address { network, ip } => write!(f, "{network}/{ip}"),
        }
    }
}

/// What a [`GatewayRef`] names in the current state.
#[derive(Debug, Clone, Copy)]
pub enum Gateway<'a> {
    Workload(&'a Arc<Workload>),
    Service(&'a Arc<Service>),
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

    /// What `gateway` names: for a hostname, the service of that namespace and hostname; for
    /// an address, the workload with that IP, else the service with that VIP. Networks are not
    /// told apart (this state keeps one network's addresses).
    pub fn gateway(&self, gateway: &GatewayRef) -> Option<Gateway<'_>> {
        match &gateway.destination {
            GatewayDestination::Hostname {
                namespace,
                hostname,
            } => self
                .service_by_hostname(hostname)
                .filter(|s| s.namespace == *namespace)
                .map(Gateway::Service),
            GatewayDestination::Address { ip, .. } => self
                .workload_by_ip(*ip)
                .map(Gateway::Workload)
                .or_else(|| self.service_by_vip(*ip).map(Gateway::Service)),
        }
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
