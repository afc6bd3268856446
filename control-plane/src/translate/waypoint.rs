//! Waypoint bindings (protocol.md 10.1): which waypoint a Service or a Pod goes through.
//!
//! Rules, in order, as istiod's `fetchWaypointForService` / `fetchWaypointForWorkload`:
//! 1. A waypoint's own pods and Service (`gateway.istio.io/managed: istio.io-mesh-controller`)
//!    have no waypoint.
//! 2. The object's own `istio.io/use-waypoint` label decides; without it, for a pod, the
//!    waypoint of its service account (below); without that, its namespace's label. `none`
//!    opts out (on the object it also overrides the account and the namespace). The waypoint
//!    lives in the labelled object's namespace unless `istio.io/use-waypoint-namespace` names
//!    another. An explicit binding that cannot be honoured does not fall back to the
//!    namespace's.
//!
//!    A service account's waypoint: a waypoint Gateway annotated `istio.io/for-service-account:
//!    <sa>` serves the pods of its own namespace running as `<sa>` (`spec.serviceAccountName`,
//!    default `default`), as if each carried `istio.io/use-waypoint: <gateway>`; a waypoint's
//!    own pods (`gateway.networking.k8s.io/gateway-name`) are left out. Istio dropped the
//!    annotation in 1.22; we keep it. A claim counts only when the Gateway admits workloads
//!    (`istio.io/waypoint-for` `workload` or `all`); otherwise it is ignored with one warning
//!    on the Gateway. When several Gateways claim one account, the oldest
//!    (`metadata.creationTimestamp`; none, as in a manifest, counts as oldest), then the first
//!    by name, serves it, and each other claimant gets one warning.
//! 3. The named Gateway must exist with `gatewayClassName: istio-waypoint`; otherwise there is
//!    no waypoint, and a warning on the object carrying the label.
//! 4. The Gateway's `istio.io/waypoint-for` (default `service`) must admit the kind: `service`
//!    or `all` for Services, `workload` or `all` for Pods. Otherwise no waypoint; a warning on
//!    the Service, or on the Pod when the pod itself asked (a namespace-wide service waypoint
//!    that skips pods is the normal case, not worth 10,000 warnings).
//! 5. The address: a `Hostname` in the Gateway's `status.addresses`, else an `IPAddress` there,
//!    else the Service istiod deploys for it, `<gw>.<gw ns>.svc.<domain_suffix>`; always with
//!    `hbone_mtls_port: 15008`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use kube_source::{Gateway, Kind, Meta, Namespace, ObjectKey, Pod};
use proto::workload::{GatewayAddress, NamespacedHostname, NetworkAddress, gateway_address};

use super::Options;
use super::labels::{
    FOR_SERVICE_ACCOUNT, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, USE_WAYPOINT_NONE, WAYPOINT_FOR,
    is_waypoint_itself,
};
use crate::index::Index;
use crate::resources::{GATEWAY_NAME_LABEL, WaypointKey};

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

/// `(namespace, service account)` -> the waypoint serving that account's pods.
type Accounts<'a> = HashMap<(&'a str, &'a str), &'a Gateway>;

/// Every Gateway by `(namespace, name)`, and the service accounts waypoints serve, for
/// binding lookups.
#[derive(Debug)]
pub struct Waypoints<'a> {
    gateways: HashMap<(&'a str, &'a str), &'a Gateway>,
    accounts: Accounts<'a>,
    /// Account claims not honoured, once each, on the Gateway that made them.
    warnings: Vec<(ObjectKey, String)>,
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
        let (accounts, warnings) = account_claims(index.gateways());
        Waypoints {
            gateways,
            accounts,
            warnings,
            opts,
        }
    }

    /// Service-account claims that were not honoured: one warning per Gateway at fault.
    pub fn warnings(&self) -> &[(ObjectKey, String)] {
        &self.warnings
    }

    /// The waypoint of a Pod in `namespace` (its Namespace object, if any): rule 2 with its
    /// service account's waypoint between its own label and its namespace's.
    pub fn resolve_pod(&self, pod: &Pod, namespace: Option<&Namespace>) -> Outcome {
        let m = &pod.metadata;
        let account = if m.labels.contains_key(GATEWAY_NAME_LABEL) {
            None
        } else {
            self.accounts
                .get(&(m.namespace.as_str(), pod.service_account()))
                .copied()
        };
        self.resolve_with(Client::Workload, Kind::Pod, m, namespace, account)
    }

    /// The waypoint of the `kind` object `meta` in `namespace` (its Namespace object, if any).
    pub fn resolve(
        &self,
        client: Client,
        kind: Kind,
        meta: &Meta,
        namespace: Option<&Namespace>,
    ) -> Outcome {
        self.resolve_with(client, kind, meta, namespace, None)
    }

    /// Rules 1-5; `account` is the waypoint serving the object's service account, if any.
    fn resolve_with(
        &self,
        client: Client,
        kind: Kind,
        meta: &Meta,
        namespace: Option<&Namespace>,
        account: Option<&Gateway>,
    ) -> Outcome {
        if is_waypoint_itself(meta) {
            return Outcome::default();
        }
        let own_key = || ObjectKey {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        };
        let by_account = account.map(|gw| Binding::Named {
            namespace: gw.metadata.namespace.as_str(),
            name: gw.metadata.name.as_str(),
        });
        let (bound, labelled, explicit) = match binding(meta, &meta.namespace).or(by_account) {
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
        let waypoint_for = waypoint_for(gw);
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

/// The `istio.io/waypoint-for` of a Gateway (default `service`).
fn waypoint_for(gw: &Gateway) -> &str {
    gw.metadata
        .labels
        .get(WAYPOINT_FOR)
        .map_or("service", String::as_str)
}

/// Rule 2's service-account claims: which waypoint serves each `(namespace, account)`, and a
/// warning for each claim that is not honoured.
fn account_claims<'a>(
    gateways: impl Iterator<Item = &'a Gateway>,
) -> (Accounts<'a>, Vec<(ObjectKey, String)>) {
    let mut warnings = Vec::new();
    let mut claims: BTreeMap<(&str, &str), Vec<&Gateway>> = BTreeMap::new();
    let on = |gw: &Gateway| ObjectKey {
        kind: Kind::Gateway,
        namespace: gw.metadata.namespace.clone(),
        name: gw.metadata.name.clone(),
    };
    for gw in gateways.filter(|g| g.spec.gateway_class_name == WAYPOINT_CLASS) {
        let Some(account) = gw.metadata.annotations.get(FOR_SERVICE_ACCOUNT) else {
            continue;
        };
        let waypoint_for = waypoint_for(gw);
        if account.is_empty() {
            warnings.push((on(gw), format!("{FOR_SERVICE_ACCOUNT} is empty: ignored")));
        } else if !Client::Workload.admitted_by(waypoint_for) {
            warnings.push((
                on(gw),
                format!(
                    "{FOR_SERVICE_ACCOUNT} {account:?} is ignored: the waypoint's \
                     {WAYPOINT_FOR} is {waypoint_for:?}, which does not admit workloads \
                     (use \"workload\" or \"all\")"
                ),
            ));
        } else {
            claims
                .entry((gw.metadata.namespace.as_str(), account.as_str()))
                .or_default()
                .push(gw);
        }
    }
    let mut accounts = HashMap::with_capacity(claims.len());
    for ((namespace, account), mut claimants) in claims {
        // RFC 3339 timestamps from the API server sort as text.
        claimants.sort_by(|a, b| {
            let (a, b) = (&a.metadata, &b.metadata);
            (&a.creation_timestamp, &a.name).cmp(&(&b.creation_timestamp, &b.name))
        });
        let Some((winner, others)) = claimants.split_first() else {
            continue;
        };
        for other in others {
            warnings.push((
                on(other),
                format!(
                    "{FOR_SERVICE_ACCOUNT} {account:?} is ignored: waypoint \
                     {namespace}/{} serves that service account (the oldest claim, then \
                     the first by name)",
                    winner.metadata.name
                ),
            ));
        }
        accounts.insert((namespace, account), *winner);
    }
    (accounts, warnings)
}

fn hostname_destination(namespace: &str, hostname: String) -> gateway_address::Destination {
    gateway_address::Destination::Hostname(NamespacedHostname {
        namespace: namespace.to_string(),
        hostname,
    })
}
