//! Table tests of `translate` over whole indexes: each case builds objects, translates, and
//! reads the resources back as ztunnel would (decoded protos). Fixtures here, cases by concern
//! in the submodules.

mod account_waypoints;
mod ext_authz;
mod incremental;
mod policies;
mod rate_limits;
mod services;
mod tracing;
mod waypoint_config;
mod waypoint_jwt;
mod waypoints;
mod workloads;

use std::collections::{BTreeMap, HashMap};

use kube_source::{
    ContainerPort, Gateway, IntOrString, Kind, Meta, Namespace, Object, ObjectKey, Pod,
    PodContainer, PodIp, RawPolicy, Service, ServicePort,
};
use prost::Message;
use proto::security::Authorization;
use proto::workload::{
    Address, GatewayAddress, IpFamilies, NamespacedHostname, NetworkMode, Port, PortList,
    Service as PbService, TunnelProtocol, Workload, WorkloadStatus, WorkloadType, address,
    gateway_address,
};

use super::{Options, Translation, translate};
use crate::index::Index;

const STRICT_KEY: &str = "istio-system/istio_converted_static_strict";

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(ns: &str, name: &str, l: &[(&str, &str)]) -> Meta {
    Meta {
        name: name.into(),
        namespace: ns.into(),
        labels: labels(l),
        ..Default::default()
    }
}

fn namespace(name: &str, l: &[(&str, &str)]) -> Object {
    Object::Namespace(Namespace {
        metadata: meta("", name, l),
        ..Default::default()
    })
}

fn pod(ns: &str, name: &str, ip: &str, l: &[(&str, &str)]) -> Pod {
    let mut p = Pod {
        metadata: meta(ns, name, l),
        ..Default::default()
    };
    p.status.pod_ip = ip.into();
    p.status.phase = "Running".into();
    p.spec.node_name = "node-1".into();
    p
}

/// `status.conditions` with one `Ready` condition (the element type is not exported).
fn conditions<T: serde::de::DeserializeOwned>(ready: &str) -> T {
    serde_yaml::from_str(&format!("[{{type: Ready, status: '{ready}'}}]")).expect("conditions")
}

fn service(ns: &str, name: &str, vip: &str, selector: &[(&str, &str)]) -> Service {
    let mut s = Service {
        metadata: meta(ns, name, &[]),
        ..Default::default()
    };
    s.spec.cluster_ip = vip.into();
    s.spec.selector = (!selector.is_empty()).then(|| labels(selector));
    s.spec.ports = vec![ServicePort {
        name: "http".into(),
        port: 80,
        target_port: Some(IntOrString::Int(8080)),
        protocol: "TCP".into(),
        app_protocol: String::new(),
    }];
    s
}

fn gateway(ns: &str, name: &str, waypoint_for: Option<&str>) -> Object {
    let l: Vec<(&str, &str)> = waypoint_for
        .map(|w| ("istio.io/waypoint-for", w))
        .into_iter()
        .collect();
    let mut g = Gateway {
        metadata: meta(ns, name, &l),
        ..Default::default()
    };
    g.spec.gateway_class_name = "istio-waypoint".into();
    Object::Gateway(g)
}

fn raw(yaml: &str) -> RawPolicy {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let field = |k: &str| {
        value["metadata"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    RawPolicy {
        metadata: meta(&field("namespace"), &field("name"), &[]),
        value: value.clone(),
    }
}

fn authz_policy(yaml: &str) -> Object {
    Object::AuthorizationPolicy(raw(&format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n{yaml}"
    )))
}

fn peer_auth(yaml: &str) -> Object {
    Object::PeerAuthentication(raw(&format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n{yaml}"
    )))
}

fn index(objects: impl IntoIterator<Item = Object>) -> Index {
    let mut idx = Index::new();
    for o in objects {
        idx.apply(o);
    }
    idx
}

fn run(objects: impl IntoIterator<Item = Object>) -> Translation {
    translate(&index(objects), &Options::default())
}

fn address(t: &Translation, name: &str) -> Option<address::Type> {
    let r = t.resources.addresses.get(name)?;
    Address::decode(r.body.value.as_slice())
        .expect("decodes")
        .r#type
}

fn workload(t: &Translation, ns: &str, name: &str) -> Option<Workload> {
    match address(t, &format!("Kubernetes//Pod/{ns}/{name}"))? {
        address::Type::Workload(w) => Some(w),
        address::Type::Service(_) => None,
    }
}

fn svc(t: &Translation, ns: &str, name: &str) -> Option<PbService> {
    match address(t, &format!("{ns}/{name}.{ns}.svc.cluster.local"))? {
        address::Type::Service(s) => Some(s),
        address::Type::Workload(_) => None,
    }
}

fn authorization(t: &Translation, key: &str) -> Option<Authorization> {
    let r = t.resources.authorizations.get(key)?;
    Some(Authorization::decode(r.body.value.as_slice()).expect("decodes"))
}

/// Waypoint `ns/name`'s resources of `type_url`, decoded, by name.
fn waypoint_set<M: Message + Default>(
    t: &Translation,
    ns: &str,
    name: &str,
    type_url: &str,
) -> BTreeMap<String, M> {
    let key = crate::resources::WaypointKey {
        namespace: ns.into(),
        name: name.into(),
    };
    t.resources
        .served(type_url, Some(&key))
        .expect("a served type")
        .values()
        .map(|r| {
            let m = M::decode(r.body.value.as_slice()).expect("decodes");
            (r.name.to_string(), m)
        })
        .collect()
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }
}

fn waypoint_at(ns: &str, name: &str) -> Option<GatewayAddress> {
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.into(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
        })),
        hbone_mtls_port: 15008,
    })
}
