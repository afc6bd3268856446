//! What the waypoint serves: the services and workloads bound to it, their endpoints, and the
//! L7 policies of each. A snapshot, replaced whole when config changes (readers hold an `Arc`).
//!
//! Rules for a CONNECT's `:authority` (protocol.md 10.2, 10.3):
//! 1. `<VIP>:<port>` of a served service: the service, at that service port; its endpoints
//!    are chosen here, each at its target port (the service's port map; the same port when
//!    the map has none).
//! 2. `<pod IP>:<port>` of a served workload: that workload only, at that port.
//! 3. Anything else is not ours: refused (the client ztunnel routed it here by mistake, or
//!    someone is probing). A waypoint is not an open proxy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use authz::http::{HttpPolicies, RateLimit};
use hbone::SpiffeId;

use crate::ext_authz::Provider;

/// One pod behind a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub identity: SpiffeId,
    pub healthy: bool,
}

/// A service (or a single workload) whose traffic goes through this waypoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// `namespace/hostname` for a service, `namespace/name` for a workload.
    pub key: String,
    pub namespace: String,
    pub vips: Vec<IpAddr>,
    /// Service port -> target port.
    pub ports: BTreeMap<u16, u16>,
    /// Service ports whose endpoints speak HTTP/2 (declared `http2`/`grpc`): requests go
    /// upstream as HTTP/2 there, and as HTTP/1.1 elsewhere, whatever the client spoke (as
    /// Istio's waypoint does with a port's declared protocol).
    pub h2_ports: BTreeSet<u16>,
    pub endpoints: Vec<Endpoint>,
    pub policies: HttpPolicies,
    /// Its local rate limits, in order (`ratelimit.rs`).
    pub rate_limits: Vec<RateLimit>,
    /// RequestAuthentication: checked before policy ([`crate::jwt`]); empty: none.
    pub jwt: Vec<crate::jwt::JwtRule>,
    /// The external authorizer of each CUSTOM policy, by the policy's key; a CUSTOM policy
    /// missing here denies what it matches.
    pub ext_authz: BTreeMap<String, Arc<Provider>>,
}

impl Target {
    /// The target port for `port` (rule 1).
    pub fn target_port(&self, port: u16) -> u16 {
        self.ports.get(&port).copied().unwrap_or(port)
    }
}

/// Where one CONNECT goes.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub target: Arc<Target>,
    /// The address the client asked for (`:authority`).
    pub addressed: SocketAddr,
    /// Rule 2: only this endpoint.
    pub pinned: Option<Endpoint>,
}

impl Resolved {
    /// The Envoy cluster Istio's waypoint sends this to, as its spans and logs name it:
    /// `inbound-vip|<port>|http|<hostname>` for a service, `inbound-pod|<port>||<ip>` for a pod
    /// addressed directly.
    pub fn upstream_cluster(&self) -> String {
        let port = self.addressed.port();
        match &self.pinned {
            Some(e) => format!("inbound-pod|{port}||{}", e.ip),
            None => {
                let key = &self.target.key;
                let host = key.split_once('/').map_or(key.as_str(), |(_, h)| h);
                format!("inbound-vip|{port}|http|{host}")
            }
        }
    }
}

/// Every target, indexed by the addresses clients use.
#[derive(Debug, Default)]
pub struct Targets {
    by_vip: HashMap<IpAddr, Arc<Target>>,
    by_endpoint: HashMap<IpAddr, (Arc<Target>, Endpoint)>,
    all: Vec<Arc<Target>>,
}

impl Targets {
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Targets {
        let mut t = Targets::default();
        for target in targets {
            let target = Arc::new(target);
            for vip in &target.vips {
                t.by_vip.insert(*vip, target.clone());
            }
            for e in &target.endpoints {
                t.by_endpoint
                    .entry(e.ip)
                    .or_insert_with(|| (target.clone(), e.clone()));
            }
            t.all.push(target);
        }
        t
    }

    /// Rules 1-3.
    pub fn resolve(&self, addressed: SocketAddr) -> Option<Resolved> {
        if let Some(target) = self.by_vip.get(&addressed.ip()) {
            return Some(Resolved {
                target: target.clone(),
                addressed,
                pinned: None,
            });
        }
        let (target, endpoint) = self.by_endpoint.get(&addressed.ip())?;
        Some(Resolved {
            target: target.clone(),
            addressed,
            pinned: Some(endpoint.clone()),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.all.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_cluster_is_named_as_istio_names_it() {
        let endpoint = Endpoint {
            ip: "10.244.1.21".parse().unwrap(),
            identity: "spiffe://cluster.local/ns/shop/sa/api".parse().unwrap(),
            healthy: true,
        };
        let api = Target {
            key: "shop/api.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            vips: vec!["10.96.0.20".parse().unwrap()],
            ports: [(80, 8080)].into(),
            h2_ports: BTreeSet::new(),
            endpoints: vec![endpoint],
            policies: HttpPolicies::new(),
            rate_limits: Vec::new(),
            jwt: Vec::new(),
            ext_authz: BTreeMap::new(),
        };
        let targets = Targets::new([api]);
        let cluster = |addr: &str| {
            targets
                .resolve(addr.parse().unwrap())
                .map(|r| r.upstream_cluster())
        };
        assert_eq!(
            cluster("10.96.0.20:80").as_deref(),
            Some("inbound-vip|80|http|api.shop.svc.cluster.local")
        );
        assert_eq!(
            cluster("10.244.1.21:8080").as_deref(),
            Some("inbound-pod|8080||10.244.1.21")
        );
        assert_eq!(cluster("10.0.0.1:80"), None);
    }
}
