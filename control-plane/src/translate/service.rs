//! Kubernetes Services -> `istio.workload.Service`, and the services that select each pod.
//!
//! Rules, as istiod's ambient index builds them:
//! 1. Every Service except `type: ExternalName` is published under `<ns>/<hostname>`, hostname
//!    `<name>.<ns>.svc.<domain_suffix>`, aliases `<network>/<VIP>`.
//! 2. `addresses` are the VIPs (`clusterIPs`, else `clusterIP`; none when headless) on the
//!    mesh network; a VIP that is not an IP address makes the whole Service an error.
//!    `ip_families` follows them: IPV4_ONLY, IPV6_ONLY, DUAL, or AUTOMATIC when headless.
//! 3. Each port carries `service_port` and `target_port`: a numeric targetPort as written, the
//!    service port when absent, 0 when named (resolved per pod, rule 6).
//! 4. `waypoint`: see `waypoint.rs`.
//! 5. `networking.istio.io/traffic-distribution: PreferClose` (any case) on the Service, else
//!    on its namespace, gives locality-preferring FAILOVER load balancing over
//!    [NETWORK, REGION, ZONE, SUBZONE].
//! 6. A pod's `services` lists every Service of its namespace whose non-empty selector matches
//!    its labels. A named targetPort is looked up among the pod's TCP container ports; a port
//!    the pod does not have is left out of that pod's list (istiod's `constructServices`).

use std::collections::HashMap;
use std::net::IpAddr;

use kube_source::{IntOrString, Kind, Namespace, ObjectKey, Pod, Service};
use proto::workload::{
    IpFamilies, LoadBalancing, NetworkAddress, Port, PortList, Service as PbService, load_balancing,
};

use super::labels::{SelectorIndex, TRAFFIC_DISTRIBUTION};
use super::waypoint::{Client, Waypoints};
use super::{ObjectError, Options, ip_bytes};
use crate::index::Index;
use crate::resources::WaypointKey;

const EXTERNAL_NAME: &str = "ExternalName";
const PREFER_CLOSE: &str = "preferclose";

/// `<name>.<ns>.svc.<domain_suffix>`.
pub fn hostname(name: &str, namespace: &str, opts: &Options) -> String {
    format!("{name}.{namespace}.svc.{}", opts.domain_suffix)
}

/// Rule 1: whether the Service is published at all.
pub fn published(svc: &Service) -> bool {
    svc.spec.kind != EXTERNAL_NAME
}

/// A translated Service and the aliases it is published under.
#[derive(Debug)]
pub struct Translated {
    pub service: PbService,
    pub aliases: Vec<String>,
    /// The waypoint Gateway it is bound to (its `waypoint` is that Gateway's address).
    pub gateway: Option<WaypointKey>,
    pub warning: Option<(ObjectKey, String)>,
}

/// Rules 1-5 for one published Service.
pub fn translate(
    svc: &Service,
    namespace: Option<&Namespace>,
    waypoints: &Waypoints<'_>,
    opts: &Options,
) -> Result<Translated, ObjectError> {
    let m = &svc.metadata;
    let vips = svc
        .vips()
        .into_iter()
        .map(|v| {
            v.parse::<IpAddr>().map_err(|source| ObjectError::BadIp {
                field: "spec.clusterIPs",
                value: v.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<IpAddr>, _>>()?;
    let hostname = hostname(&m.name, &m.namespace, opts);
    let aliases = vips
        .iter()
        .map(|ip| format!("{}/{ip}", opts.network))
        .collect();
    let ip_families = match (
        vips.iter().any(IpAddr::is_ipv4),
        vips.iter().any(IpAddr::is_ipv6),
    ) {
        (true, true) => IpFamilies::Dual,
        (true, false) => IpFamilies::Ipv4Only,
        (false, true) => IpFamilies::Ipv6Only,
        (false, false) => IpFamilies::Automatic,
    };
    let ports = svc
        .spec
        .ports
        .iter()
        .map(|p| Port {
            service_port: u32::from(p.port),
            target_port: match &p.target_port {
                None => u32::from(p.port),
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(_)) => 0,
            },
            app_protocol: 0,
        })
        .collect();
    let wp = waypoints.resolve(Client::Service, Kind::Service, m, namespace);
    let service = PbService {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        hostname,
        addresses: vips
            .into_iter()
            .map(|ip| NetworkAddress {
                network: opts.network.clone(),
                address: ip_bytes(ip),
                length: None,
            })
            .collect(),
        ports,
        waypoint: wp.address,
        load_balancing: load_balancing(svc, namespace),
        ip_families: ip_families as i32,
        ..Default::default()
    };
    Ok(Translated {
        service,
        aliases,
        gateway: wp.gateway,
        warning: wp.warning,
    })
}

/// Rule 5.
fn load_balancing(svc: &Service, namespace: Option<&Namespace>) -> Option<LoadBalancing> {
    let value = svc
        .metadata
        .annotations
        .get(TRAFFIC_DISTRIBUTION)
        .or_else(|| namespace.and_then(|ns| ns.metadata.annotations.get(TRAFFIC_DISTRIBUTION)))?;
    if !value.eq_ignore_ascii_case(PREFER_CLOSE) {
        return None;
    }
    use load_balancing::{Mode, Scope};
    Some(LoadBalancing {
        routing_preference: [Scope::Network, Scope::Region, Scope::Zone, Scope::Subzone]
            .into_iter()
            .map(|s| s as i32)
            .collect(),
        mode: Mode::Failover as i32,
        health_policy: 0,
    })
}

/// Where a service port leads on a pod.
#[derive(Debug)]
enum Target<'a> {
    Number(u32),
    Named(&'a str),
}

/// One pod-selecting Service, prepared once per translation.
#[derive(Debug)]
struct Selecting<'a> {
    /// `<ns>/<hostname>`, the key in `Workload.services`.
    key: String,
    ports: Vec<(u32, Target<'a>)>,
}

/// Rule 6: the selecting Services of each namespace, indexed by selector.
#[derive(Debug, Default)]
pub struct SelectingServices<'a> {
    entries: Vec<Selecting<'a>>,
    by_namespace: HashMap<&'a str, SelectorIndex<'a, usize>>,
}

impl<'a> SelectingServices<'a> {
    pub fn new(index: &'a Index, opts: &Options) -> Self {
        let mut out = SelectingServices::default();
        // A Service left out for a bad VIP is not listed on pods either.
        let valid = |s: &Service| s.vips().iter().all(|v| v.parse::<IpAddr>().is_ok());
        for svc in index.services().filter(|s| published(s) && valid(s)) {
            let Some(selector) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let m = &svc.metadata;
            let ports = svc
                .spec
                .ports
                .iter()
                .map(|p| {
                    let target = match &p.target_port {
                        None => Target::Number(u32::from(p.port)),
                        Some(IntOrString::Int(n)) => Target::Number(*n),
                        Some(IntOrString::String(name)) => Target::Named(name),
                    };
                    (u32::from(p.port), target)
                })
                .collect();
            out.by_namespace
                .entry(m.namespace.as_str())
                .or_default()
                .insert(selector, out.entries.len());
            out.entries.push(Selecting {
                key: format!("{}/{}", m.namespace, hostname(&m.name, &m.namespace, opts)),
                ports,
            });
        }
        out
    }

    /// `Workload.services` of `pod`.
    pub fn port_lists(&self, pod: &Pod) -> HashMap<String, PortList> {
        let Some(idx) = self.by_namespace.get(pod.metadata.namespace.as_str()) else {
            return HashMap::new();
        };
        idx.matching(&pod.metadata.labels)
            .filter_map(|i| self.entries.get(i))
            .map(|s| {
                let ports = s
                    .ports
                    .iter()
                    .filter_map(|(service_port, target)| {
                        let target_port = match target {
                            Target::Number(n) => *n,
                            Target::Named(name) => named_port(pod, name)?,
                        };
                        Some(Port {
                            service_port: *service_port,
                            target_port,
                            app_protocol: 0,
                        })
                    })
                    .collect();
                (s.key.clone(), PortList { ports })
            })
            .collect()
    }
}

/// istiod's `FindPortName`: the first TCP container port with that name (an unset protocol
/// is TCP, the API default).
fn named_port(pod: &Pod, name: &str) -> Option<u32> {
    pod.spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| p.name == name && (p.protocol.is_empty() || p.protocol == "TCP"))
        .map(|p| u32::from(p.container_port))
}
