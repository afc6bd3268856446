//! The outbound decision: where a captured connection goes, and how. Pure; sockets live in
//! `proxy::outbound`.
//!
//! Rules, in order:
//! 1. A loopback destination on one of ztunnel's own ports is refused (it would loop).
//! 2. A Service VIP: pick a healthy endpoint (service port -> target port from the
//!    endpoint's port map, else the service's), then treat it as addressed directly.
//! 3. A workload that speaks HBONE: tunnel to `<its IP>:15008`, `:authority` = `<IP>:<port>`,
//!    expecting the workload's identity (plus the service's SANs when service-addressed).
//! 4. A workload marked TCP, or an address we do not know: pass through in plaintext.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::{HBONE_PORT, SpiffeId};

use crate::state::{Protocol, Service, State, Workload};

/// ztunnel's own ports: traffic may never be forwarded to them.
pub const ILLEGAL_PORTS: [u16; 3] = [15001, 15006, HBONE_PORT];

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Hbone {
        /// Where the HBONE connection goes: `<pod IP>:15008`.
        hbone_addr: SocketAddr,
        /// The CONNECT `:authority`: `<pod IP>:<target port>`.
        target: SocketAddr,
        /// Identities the server may present.
        expected: Vec<SpiffeId>,
        destination: Arc<Workload>,
        service: Option<Arc<Service>>,
    },
    Passthrough {
        target: SocketAddr,
        destination: Option<Arc<Workload>>,
        service: Option<Arc<Service>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("destination {0} is one of ztunnel's own ports")]
    IllegalPort(SocketAddr),
    #[error("service {service} has no healthy endpoint")]
    NoHealthyEndpoint { service: String },
    #[error("endpoint {workload} of service {service} has no address in the family of {original}")]
    NoAddress {
        service: String,
        workload: String,
        original: SocketAddr,
    },
    #[error("destination workload {workload} has a bad identity: {reason}")]
    BadIdentity { workload: String, reason: String },
}

/// Decides where `original` (the address the application dialled) goes. `pick(n)` chooses
/// an index below `n` among a service's healthy endpoints.
pub fn route(
    state: &State,
    original: SocketAddr,
    pick: impl FnOnce(usize) -> usize,
) -> Result<Route, RouteError> {
    if original.ip().is_loopback() && ILLEGAL_PORTS.contains(&original.port()) {
        return Err(RouteError::IllegalPort(original));
    }
    if let Some(service) = state.service_by_vip(original.ip()) {
        return via_service(state, service, original, pick);
    }
    match state.workload_by_ip(original.ip()) {
        Some(w) => to_workload(w, original, None),
        None => Ok(Route::Passthrough {
            target: original,
            destination: None,
            service: None,
        }),
    }
}

fn via_service(
    state: &State,
    service: &Arc<Service>,
    original: SocketAddr,
    pick: impl FnOnce(usize) -> usize,
) -> Result<Route, RouteError> {
    let healthy: Vec<&Arc<Workload>> = state
        .endpoints(service)
        .iter()
        .filter(|w| w.healthy)
        .collect();
    if healthy.is_empty() {
        return Err(RouteError::NoHealthyEndpoint {
            service: service.hostname.clone(),
        });
    }
    let endpoint = healthy[pick(healthy.len()).min(healthy.len() - 1)];
    let ip = same_family(&endpoint.ips, original.ip()).ok_or_else(|| RouteError::NoAddress {
        service: service.hostname.clone(),
        workload: endpoint.uid.clone(),
        original,
    })?;
    let port = original.port();
    let target_port = endpoint
        .services
        .get(&service.key())
        .and_then(|ports| ports.get(&port))
        .or_else(|| service.ports.get(&port))
        .copied()
        .filter(|p| *p != 0)
        .unwrap_or(port);
    to_workload(endpoint, SocketAddr::new(ip, target_port), Some(service))
}

fn to_workload(
    w: &Arc<Workload>,
    target: SocketAddr,
    service: Option<&Arc<Service>>,
) -> Result<Route, RouteError> {
    match w.protocol {
        Protocol::Tcp => Ok(Route::Passthrough {
            target,
            destination: Some(w.clone()),
            service: service.cloned(),
        }),
        Protocol::Hbone => {
            let identity = w.identity().map_err(|e| RouteError::BadIdentity {
                workload: w.uid.clone(),
                reason: e.to_string(),
            })?;
            let mut expected = vec![identity];
            if let Some(s) = service {
                expected.extend(s.subject_alt_names.iter().cloned());
            }
            Ok(Route::Hbone {
                hbone_addr: SocketAddr::new(target.ip(), HBONE_PORT),
                target,
                expected,
                destination: w.clone(),
                service: service.cloned(),
            })
        }
    }
}

fn same_family(ips: &[IpAddr], like: IpAddr) -> Option<IpAddr> {
    ips.iter()
        .copied()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::local::LocalConfig;
    use std::path::Path;

    const CONFIG: &str = r#"
workloads:
- name: server-0
  namespace: shop
  serviceAccount: server
  workloadIps: ["10.0.0.2"]
  protocol: HBONE
  services:
    "shop/server.shop.svc.cluster.local": {80: 8080}
- name: server-1
  namespace: shop
  serviceAccount: server
  workloadIps: ["10.0.0.3"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/server.shop.svc.cluster.local": {80: 8080}
- name: legacy
  namespace: shop
  workloadIps: ["10.0.0.4"]
  protocol: TCP
  services:
    "shop/legacy.shop.svc.cluster.local": {}
- name: gone
  namespace: shop
  workloadIps: ["10.0.0.5"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/dead.shop.svc.cluster.local": {}
services:
- name: server
  namespace: shop
  hostname: server.shop.svc.cluster.local
  vips: ["/10.96.0.1"]
  ports: {80: 0}
  subjectAltNames: ["spiffe://cluster.local/ns/shop/sa/alt"]
- name: legacy
  namespace: shop
  hostname: legacy.shop.svc.cluster.local
  vips: ["/10.96.0.2"]
  ports: {80: 9000}
- name: dead
  namespace: shop
  hostname: dead.shop.svc.cluster.local
  vips: ["/10.96.0.3"]
  ports: {80: 80}
"#;

    /// What a route boils down to, for table comparison.
    fn summary(r: Result<Route, RouteError>) -> String {
        match r {
            Ok(Route::Hbone {
                hbone_addr,
                target,
                expected,
                ..
            }) => {
                let ids: Vec<String> = expected.iter().map(|i| i.to_string()).collect();
                format!("hbone {hbone_addr} {target} {}", ids.join(","))
            }
            Ok(Route::Passthrough { target, .. }) => format!("pass {target}"),
            Err(e) => format!("refuse {e}"),
        }
    }

    #[test]
    fn outbound_decisions() {
        let state = LocalConfig::parse(Path::new("t.yaml"), CONFIG).unwrap();
        let cases = [
            // Direct to an HBONE workload: port unchanged, its identity expected.
            (
                "10.0.0.2:8080",
                "hbone 10.0.0.2:15008 10.0.0.2:8080 spiffe://cluster.local/ns/shop/sa/server",
            ),
            // Via VIP: healthy endpoint only, endpoint port map wins over service's 0, service SANs added.
            (
                "10.96.0.1:80",
                "hbone 10.0.0.2:15008 10.0.0.2:8080 spiffe://cluster.local/ns/shop/sa/server,spiffe://cluster.local/ns/shop/sa/alt",
            ),
            // A VIP port the service does not list keeps its number.
            (
                "10.96.0.1:81",
                "hbone 10.0.0.2:15008 10.0.0.2:81 spiffe://cluster.local/ns/shop/sa/server,spiffe://cluster.local/ns/shop/sa/alt",
            ),
            // TCP workload: plaintext passthrough, via VIP the service's target port applies.
            ("10.0.0.4:5000", "pass 10.0.0.4:5000"),
            ("10.96.0.2:80", "pass 10.0.0.4:9000"),
            // Unknown address: passthrough unchanged.
            ("192.0.2.7:443", "pass 192.0.2.7:443"),
            // No healthy endpoint: refused.
            (
                "10.96.0.3:80",
                "refuse service dead.shop.svc.cluster.local has no healthy endpoint",
            ),
            // Loopback to our own ports: refused; other loopback ports pass.
            (
                "127.0.0.1:15008",
                "refuse destination 127.0.0.1:15008 is one of ztunnel's own ports",
            ),
            (
                "127.0.0.1:15001",
                "refuse destination 127.0.0.1:15001 is one of ztunnel's own ports",
            ),
            ("127.0.0.1:8080", "pass 127.0.0.1:8080"),
        ];
        for (dst, want) in cases {
            let got = summary(route(&state, dst.parse().unwrap(), |_| 0));
            assert_eq!(got, want, "for {dst}");
        }
    }

    #[test]
    fn picks_among_healthy_endpoints_only() {
        let state = LocalConfig::parse(Path::new("t.yaml"), CONFIG).unwrap();
        let mut offered = 0;
        let r = route(&state, "10.96.0.1:80".parse().unwrap(), |n| {
            offered = n;
            n + 5 // out of range picks are clamped, never panic
        });
        assert_eq!(offered, 1);
        assert!(summary(r).contains("10.0.0.2:8080"));
    }
}
