//! Address and waypoint Target resources encoded byte-for-byte the same every time their
//! content is the same.
//!
//! Why: a resource's version is a hash of its encoding, and clients are only sent what moved.
//! prost encodes `Workload.services` and `Target.ports` (proto `map`s) from a `HashMap`, whose
//! iteration order differs between instances, so two equal workloads could encode differently
//! and look changed on every translation. Rules:
//! 1. A workload is encoded without its `services`, then one single-entry `services` map per
//!    entry is appended in key order. Protobuf merges concatenated messages and map entries
//!    accumulate, so decoders read exactly the original workload. A Target likewise, with its
//!    `ports`.
//! 2. The workload bytes are wrapped as field 1 (`workload`) of `Address`, as prost would.
//! 3. Services have no map fields and go through [`Resource::new`] unchanged.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use proto::waypoint::Target;
use proto::workload::{Address, Service, Workload, address};

use crate::resources::Resource;

/// `Address` field number of the `workload` case.
const ADDRESS_WORKLOAD_FIELD: u32 = 1;

/// The Address resource of a workload, named by its uid.
pub fn workload_resource(mut workload: Workload, aliases: Vec<String>) -> Resource {
    let services: BTreeMap<String, _> =
        std::mem::take(&mut workload.services).into_iter().collect();
    let name = workload.uid.clone();
    let body = with_entries(
        &workload,
        services.into_iter().map(|(key, ports)| Workload {
            services: HashMap::from([(key, ports)]),
            ..Default::default()
        }),
    );
    let mut value = Vec::with_capacity(body.len() + 6);
    encode_key(
        ADDRESS_WORKLOAD_FIELD,
        WireType::LengthDelimited,
        &mut value,
    );
    encode_varint(body.len() as u64, &mut value);
    value.extend_from_slice(&body);
    Resource::encoded(name, aliases, proto::ADDRESS_TYPE_URL.to_string(), value)
}

/// The waypoint Target resource of `target`, named `namespace/name` (rule 1 for `ports`).
pub fn target_resource(mut target: Target) -> Resource {
    let ports: BTreeMap<u32, u32> = std::mem::take(&mut target.ports).into_iter().collect();
    let name = format!("{}/{}", target.namespace, target.name);
    let value = with_entries(
        &target,
        ports.into_iter().map(|(port, to)| Target {
            ports: HashMap::from([(port, to)]),
            ..Default::default()
        }),
    );
    Resource::encoded(
        name,
        Vec::new(),
        proto::WAYPOINT_TARGET_TYPE_URL.to_string(),
        value,
    )
}

/// Rule 1: `message` (its map field emptied) followed by `entries`, single-entry messages in
/// key order.
fn with_entries<M: Message>(message: &M, entries: impl Iterator<Item = M>) -> Vec<u8> {
    let mut body = message.encode_to_vec();
    for entry in entries {
        body.extend_from_slice(&entry.encode_to_vec());
    }
    body
}

/// The Address resource of a service, named `namespace/hostname`.
pub fn service_resource(service: Service, aliases: Vec<String>) -> Resource {
    let name = format!("{}/{}", service.namespace, service.hostname);
    Resource::new(
        name,
        aliases,
        &Address {
            r#type: Some(address::Type::Service(service)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::workload::{Port, PortList};

    fn workload(keys: &[&str]) -> Workload {
        Workload {
            uid: "Kubernetes//Pod/ns/p".into(),
            name: "p".into(),
            namespace: "ns".into(),
            addresses: vec![vec![10, 0, 0, 1]],
            authorization_policies: vec!["ns/a".into()],
            services: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        k.to_string(),
                        PortList {
                            ports: vec![Port {
                                service_port: 80 + i as u32,
                                target_port: 8080,
                                app_protocol: 0,
                            }],
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_to_the_same_workload_and_ignores_map_order() {
        let keys = [
            "ns/a.ns.svc",
            "ns/b.ns.svc",
            "ns/c.ns.svc",
            "ns/d.ns.svc",
            "ns/e.ns.svc",
        ];
        let w = workload(&keys);
        let r = workload_resource(w.clone(), vec!["/10.0.0.1".into()]);
        assert_eq!(&*r.name, w.uid);
        assert_eq!(r.body.type_url, proto::ADDRESS_TYPE_URL);
        let back = Address::decode(r.body.value.as_slice()).expect("decodes");
        assert_eq!(
            back,
            Address {
                r#type: Some(address::Type::Workload(w))
            }
        );
        // Every rebuild has fresh HashMaps (new random iteration order): same bytes.
        for _ in 0..16 {
            let again = workload_resource(workload(&keys), vec![]);
            assert_eq!(again.body.value, r.body.value);
            assert_eq!(again.version, r.version);
        }
    }

    #[test]
    fn targets_decode_the_same_and_ignore_map_order() {
        let target = || Target {
            name: "api.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            ports: (1..=8).map(|p| (p * 10, p * 1000)).collect(),
            ..Default::default()
        };
        let r = target_resource(target());
        assert_eq!(&*r.name, "shop/api.shop.svc.cluster.local");
        assert_eq!(r.body.type_url, proto::WAYPOINT_TARGET_TYPE_URL);
        assert_eq!(
            Target::decode(r.body.value.as_slice()).expect("decodes"),
            target()
        );
        for _ in 0..16 {
            assert_eq!(target_resource(target()).version, r.version);
        }
    }

    #[test]
    fn service_resource_is_named_by_namespace_and_hostname() {
        let s = Service {
            name: "web".into(),
            namespace: "ns".into(),
            hostname: "web.ns.svc.cluster.local".into(),
            ..Default::default()
        };
        let r = service_resource(s, vec![]);
        assert_eq!(&*r.name, "ns/web.ns.svc.cluster.local");
    }
}
