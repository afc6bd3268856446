//! The outbound decision: where a captured connection goes, and how. Pure; sockets live in
//! `proxy::outbound`.
//!
//! Rules, in order (protocol.md 10.2 for waypoints):
//! 1. A loopback destination on one of ztunnel's own ports is refused (it would loop).
//! 2. A Service VIP whose service has a waypoint: tunnel to the waypoint, `:authority` = the
//!    VIP and port as dialled. No endpoint of the service is chosen; the waypoint does that.
//! 3. Any other Service VIP: pick a healthy endpoint (service port -> target port from the
//!    endpoint's port map, else the service's); the connection is service-addressed, so the
//!    endpoint's own waypoint is not used (Istio's rule: workload waypoints are for traffic
//!    addressed to the workload).
//! 4. A workload addressed by its IP that has a waypoint: tunnel to the waypoint, `:authority` =
//!    the IP and port as dialled; unless the source is one of that waypoint's own workloads (a
//!    waypoint captured by ztunnel, "sandwich"), whose traffic must not be sent back to it.
//! 5. A workload that speaks HBONE: tunnel to `<its IP>:15008`, `:authority` = `<IP>:<port>`,
//!    expecting the workload's identity (plus the service's SANs when service-addressed).
//! 6. A workload marked TCP, or an address we do not know: pass through in plaintext.
//!
//! A waypoint reference resolves through [`State::gateway`]: a service (by hostname, or by an
//! address that is a VIP) gives one of its healthy endpoints, chosen by the same `pick`; an
//! address that is a workload's gives that workload. The tunnel goes to
//! `<its IP of the dialled family>:<hbone_mtls_port>`, always HBONE, expecting the waypoint
//! workload's identity plus the waypoint service's SANs. A waypoint that does not resolve
//! refuses the connection: passing it by would skip the waypoint's policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::{HBONE_PORT, SpiffeId};

use crate::state::{Gateway, GatewayRef, Protocol, Service, State, Workload};

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
    /// Through the destination's waypoint (rules 2 and 4).
    Waypoint {
        /// Where the HBONE connection goes: `<waypoint IP>:<hbone_mtls_port>`.
        hbone_addr: SocketAddr,
        /// The CONNECT `:authority`: the address the application dialled.
        target: SocketAddr,
        /// Identities the waypoint may present.
        expected: Vec<SpiffeId>,
        /// The waypoint workload the connection goes to.
        waypoint: Arc<Workload>,
        /// The workload addressed (rule 4); `None` when a service was (rule 2).
        destination: Option<Arc<Workload>>,
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
    #[error(
        "waypoint {waypoint}: {problem} (refused: going around the waypoint would skip its policy)"
    )]
    Waypoint {
        /// The reference, `namespace/hostname` or `network/IP`.
        waypoint: String,
        problem: WaypointProblem,
    },
}

/// Why a waypoint reference gave no waypoint to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaypointProblem {
    #[error("no known service or workload has that name or address")]
    Unknown,
    #[error("its service {service} has no healthy endpoint")]
    NoHealthyEndpoint { service: String },
    #[error("its workload {workload} has no address in the family of {original}")]
    NoAddress {
        workload: String,
        original: SocketAddr,
    },
}

/// Decides where `original` (the address the application dialled) goes, for a connection from
/// `source` (the local workload). `pick(n)` chooses an index below `n` among a service's
/// healthy endpoints; it is called once per service whose endpoint is chosen.
pub fn route(
    state: &State,
    source: &Workload,
    original: SocketAddr,
    mut pick: impl FnMut(usize) -> usize,
) -> Result<Route, RouteError> {
    if original.ip().is_loopback() && ILLEGAL_PORTS.contains(&original.port()) {
        return Err(RouteError::IllegalPort(original));
    }
    if let Some(service) = state.service_by_vip(original.ip()) {
        if let Some(waypoint) = &service.waypoint {
            return to_waypoint(state, waypoint, original, None, Some(service), &mut pick);
        }
        return via_service(state, service, original, &mut pick);
    }
    match state.workload_by_ip(original.ip()) {
        Some(w) => match &w.waypoint {
            Some(waypoint) if !is_part_of(state, waypoint, source) => {
                to_waypoint(state, waypoint, original, Some(w), None, &mut pick)
            }
            _ => to_workload(w, original, None),
        },
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
    pick: &mut impl FnMut(usize) -> usize,
) -> Result<Route, RouteError> {
    let endpoint =
        pick_healthy(state, service, pick).ok_or_else(|| RouteError::NoHealthyEndpoint {
            service: service.hostname.clone(),
        })?;
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

/// One of the service's healthy endpoints, as `pick` chooses (clamped), without collecting them.
fn pick_healthy<'a>(
    state: &'a State,
    service: &Service,
    pick: &mut impl FnMut(usize) -> usize,
) -> Option<&'a Arc<Workload>> {
    let endpoints = state.endpoints(service);
    let healthy = endpoints.iter().filter(|w| w.healthy).count();
    if healthy == 0 {
        return None;
    }
    let i = pick(healthy).min(healthy - 1);
    endpoints.iter().filter(|w| w.healthy).nth(i)
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
            let expected = expected(w, service)?;
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

/// Rules 2 and 4: HBONE to the waypoint, whatever the destination's protocol.
fn to_waypoint(
    state: &State,
    gateway: &GatewayRef,
    original: SocketAddr,
    destination: Option<&Arc<Workload>>,
    service: Option<&Arc<Service>>,
    pick: &mut impl FnMut(usize) -> usize,
) -> Result<Route, RouteError> {
    let refuse = |problem| RouteError::Waypoint {
        waypoint: gateway.to_string(),
        problem,
    };
    let (waypoint, waypoint_service) = match state.gateway(gateway) {
        None => return Err(refuse(WaypointProblem::Unknown)),
        Some(Gateway::Workload(w)) => (w, None),
        Some(Gateway::Service(s)) => {
            let w = pick_healthy(state, s, pick).ok_or_else(|| {
                refuse(WaypointProblem::NoHealthyEndpoint {
                    service: s.hostname.clone(),
                })
            })?;
            (w, Some(s))
        }
    };
    let ip = same_family(&waypoint.ips, original.ip()).ok_or_else(|| {
        refuse(WaypointProblem::NoAddress {
            workload: waypoint.uid.clone(),
            original,
        })
    })?;
    Ok(Route::Waypoint {
        hbone_addr: SocketAddr::new(ip, gateway.hbone_mtls_port),
        target: original,
        expected: expected(waypoint, waypoint_service)?,
        waypoint: waypoint.clone(),
        destination: destination.cloned(),
        service: service.cloned(),
    })
}

/// The workload's identity, plus the SANs of the service it was reached through.
fn expected(w: &Workload, service: Option<&Arc<Service>>) -> Result<Vec<SpiffeId>, RouteError> {
    let identity = w.identity().map_err(|e| RouteError::BadIdentity {
        workload: w.uid.clone(),
        reason: e.to_string(),
    })?;
    let mut expected = vec![identity];
    if let Some(s) = service {
        expected.extend(s.subject_alt_names.iter().cloned());
    }
    Ok(expected)
}

/// Whether `w` is one of the workloads the gateway reference names (any of a service's
/// endpoints, healthy or not): the sandwich check of rule 4.
fn is_part_of(state: &State, gateway: &GatewayRef, w: &Workload) -> bool {
    match state.gateway(gateway) {
        None => false,
        Some(Gateway::Workload(g)) => g.uid == w.uid,
        Some(Gateway::Service(s)) => state.endpoints(s).iter().any(|e| e.uid == w.uid),
    }
}

fn same_family(ips: &[IpAddr], like: IpAddr) -> Option<IpAddr> {
    ips.iter()
        .copied()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
}

#[cfg(test)]
mod tests;
