//! Waypoint bindings (protocol.md 10.1): which waypoint a Service or a Pod goes through.
//!
//! Rules, in order, as istiod's `fetchWaypointForService` / `fetchWaypointForWorkload`:
//! 1. A waypoint's own pods and Service (`gateway.istio.io/managed: istio.io-mesh-controller`)
//!    have no waypoint.
//! 2. The object's own `istio.io/use-waypoint` label decides; without it, its namespace's.
//!    `none` opts out (on the object it also overrides the namespace). The waypoint lives in
//!    the labelled object's namespace unless `istio.io/use-waypoint-namespace` names another.
//!    An explicit binding that cannot be honoured does not fall back to the namespace's.
//! 3. The named Gateway must exist with `gatewayClassName: istio-waypoint`; otherwise there is
//!    no waypoint, and a warning on the object carrying the label.
//! 4. The Gateway's `istio.io/waypoint-for` (default `service`) must admit the kind: `service`
//!    or `all` for Services, `workload` or `all` for Pods. Otherwise no waypoint; a warning on
//!    the Service, or on the Pod when the pod itself asked (a namespace-wide service waypoint
//!    that skips pods is the normal case, not worth 10,000 warnings).
//! 5. The address: a `Hostname` in the Gateway's `status.addresses`, else an `IPAddress` there,
//!    else the Service istiod deploys for it, `<gw>.<gw ns>.svc.<domain_suffix>`; always with
//!    `hbone_mtls_port: 15008`.

use std::collections::HashMap;
use std::net::IpAddr;

use kube_source::{Gateway, Kind, Meta, Namespace, ObjectKey};
use proto::workload::{GatewayAddress, NamespacedHostname, NetworkAddress, gateway_address};

use super::Options;
use super::labels::{
    USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, USE_WAYPOINT_NONE, WAYPOINT_FOR, is_waypoint_itself,
};
use crate::index::Index;
use crate::resources::WaypointKey;

pub const WAYPOINT_CLASS: &str = "istio-waypoint";
pub const HBONE_MTLS_PORT: u32 = 15008;

/// What is asking for a waypoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Service,
    Workload,
}

impl Client {
    fn admitted_by(self, waypoint_for: &str) -> bool {
        match self {
            Client::Service => matches!(waypoint_for, "service" | "all"),
            Client::Workload => matches!(waypoint_for, "workload" | "all"),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Client::Service => "services",
            Client::Workload => "workloads",
        }
    }
}

/// The result of resolving one object's binding.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub address: Option<GatewayAddress>,
    /// The waypoint Gateway itself, when there is one (whose targets the object joins).
    pub gateway: Option<WaypointKey>,
    /// A binding that could not be honoured, on the object that carries it.
    pub warning: Option<(ObjectKey, String)>,
}

/// Every Gateway by `(namespace, name)`, for binding lookups.
#[derive(Debug)]
pub struct Waypoints<'a> {
    gateways: HashMap<(&'a str, &'a str), &'a Gateway>,
    opts: &'a Options,
}

enum Binding<'a> {
    OptOut,
    Named { namespace: &'a str, name: &'a str },
}

/// Rule 2 for one object: `None` when it has no `istio.io/use-waypoint` label.
fn binding<'a>(meta: &'a Meta, own_namespace: &'a str) -> Option<Binding<'a>> {
    let name = meta.labels.get(USE_WAYPOINT)?;
    if name == USE_WAYPOINT_NONE {
        return Some(Binding::OptOut);
    }
    let namespace = meta
        .labels
        .get(USE_WAYPOINT_NAMESPACE)
        .map_or(own_namespace, String::as_str);
    Some(Binding::Named { namespace, name })
}

impl<'a> Waypoints<'a> {
    pub fn new(index: &'a Index, opts: &'a Options) -> Self {
        let gateways = index
            .gateways()
            .map(|g| ((g.metadata.namespace.as_str(), g.metadata.name.as_str()), g))
            .collect();
        Waypoints { gateways, opts }
    }

    /// The waypoint of the `kind` object `meta` in `namespace` (its Namespace object, if any).
    pub fn resolve(
        &self,
        client: Client,
        kind: Kind,
        meta: &Meta,
        namespace: Option<&Namespace>,
    ) -> Outcome {
        if is_waypoint_itself(meta) {
            return Outcome::default();
        }
        let own_key = || ObjectKey {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        };
        let (bound, labelled, explicit) = match binding(meta, &meta.namespace) {
            Some(b) => (b, own_key(), true),
            None => {
                let Some(ns) = namespace else {
                    return Outcome::default();
                };
                let Some(b) = binding(&ns.metadata, &ns.metadata.name) else {
                    return Outcome::default();
                };
                let key = ObjectKey {
                    kind: Kind::Namespace,
                    namespace: String::new(),
                    name: ns.metadata.name.clone(),
                };
                (b, key, false)
            }
        };
        let (gw_ns, gw_name) = match bound {
            Binding::OptOut => return Outcome::default(),
            Binding::Named { namespace, name } => (namespace, name),
        };
        let warn = |on: ObjectKey, message: String| Outcome {
            warning: Some((on, message)),
            ..Outcome::default()
        };
        let gw = match self.gateways.get(&(gw_ns, gw_name)) {
            None => {
                return warn(
                    labelled,
                    format!("{USE_WAYPOINT}: waypoint Gateway {gw_ns}/{gw_name} does not exist"),
                );
            }
            Some(gw) if gw.spec.gateway_class_name != WAYPOINT_CLASS => {
                return warn(
                    labelled,
                    format!(
                        "{USE_WAYPOINT}: Gateway {gw_ns}/{gw_name} is not a waypoint \
                         (gatewayClassName {:?}, expected {WAYPOINT_CLASS:?})",
                        gw.spec.gateway_class_name
                    ),
                );
            }
            Some(gw) => *gw,
        };
        let waypoint_for = gw
            .metadata
            .labels
            .get(WAYPOINT_FOR)
            .map_or("service", String::as_str);
        if !client.admitted_by(waypoint_for) {
            if explicit || client == Client::Service {
                return warn(
                    own_key(),
                    format!(
                        "waypoint {gw_ns}/{gw_name} is not used: its {WAYPOINT_FOR} is \
                         {waypoint_for:?}, which does not admit {}",
                        client.noun()
                    ),
                );
            }
            return Outcome::default();
        }
        Outcome {
            address: Some(self.address(gw)),
            gateway: Some(WaypointKey {
                namespace: gw_ns.to_string(),
                name: gw_name.to_string(),
            }),
            warning: None,
        }
    }

    /// Whether `namespace/name` is a Gateway of the waypoint class.
    pub fn is_waypoint(&self, namespace: &str, name: &str) -> bool {
        self.gateways
            .get(&(namespace, name))
            .is_some_and(|gw| gw.spec.gateway_class_name == WAYPOINT_CLASS)
    }

    /// Rule 5.
    fn address(&self, gw: &Gateway) -> GatewayAddress {
        let namespace = &gw.metadata.namespace;
        let status = &gw.status.addresses;
        let hostname = status
            .iter()
            .find(|a| a.kind == "Hostname" && !a.value.is_empty())
            .map(|a| a.value.clone());
        let ip = || {
            status
                .iter()
                .filter(|a| a.kind.is_empty() || a.kind == "IPAddress")
                .find_map(|a| a.value.parse::<IpAddr>().ok())
        };
        let destination = match (hostname, ip()) {
            (Some(h), _) => hostname_destination(namespace, h),
            (None, Some(ip)) => gateway_address::Destination::Address(NetworkAddress {
                network: self.opts.network.clone(),
                address: super::ip_bytes(ip),
                length: None,
            }),
            (None, None) => hostname_destination(
                namespace,
                format!(
                    "{}.{namespace}.svc.{}",
                    gw.metadata.name, self.opts.domain_suffix
                ),
            ),
        };
        GatewayAddress {
            destination: Some(destination),
            hbone_mtls_port: HBONE_MTLS_PORT,
        }
    }
}

fn hostname_destination(namespace: &str, hostname: String) -> gateway_address::Destination {
    gateway_address::Destination::Hostname(NamespacedHostname {
        namespace: namespace.to_string(),
        hostname,
    })
}
