//! Wire-level pins: hand-computed bytes for fields whose numbers matter for
//! interoperability. A renumbered field changes these bytes and fails here.

use prost::{Message, Name};

use proto::{citadel, core, discovery, rpc, security, workload, zds};

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn workload_uid_is_field_20() {
    let w = workload::Workload {
        uid: s("u"),
        ..Default::default()
    };
    // Key (20 << 3 | 2) = 162 = varint 0xA2 0x01, then length 1, then "u".
    assert_eq!(w.encode_to_vec(), [0xA2, 0x01, 0x01, b'u']);
    let decoded = workload::Workload::decode(&[0xA2, 0x01, 0x01, b'u'][..]).expect("decode");
    assert_eq!(decoded.uid, "u");
}

#[test]
fn workload_field_numbers() {
    let w = workload::Workload {
        hostname: s("h"),
        services: [(
            s("k"),
            workload::PortList {
                ports: vec![workload::Port {
                    service_port: 1,
                    ..Default::default()
                }],
            },
        )]
        .into(),
        application_tunnel: Some(workload::ApplicationTunnel::default()),
        capacity: Some(2),
        network_gateway: Some(workload::GatewayAddress::default()),
        ..Default::default()
    };
    // prost writes fields in ascending field-number order.
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x9A, 0x01, 0x00, // 19: empty GatewayAddress
        0xAA, 0x01, 0x01, b'h', // 21: "h"
        // 22: map entry {1: "k", 2: PortList {1: Port {1: 1}}}
        0xB2, 0x01, 0x09, 0x0A, 0x01, b'k', 0x12, 0x04, 0x0A, 0x02, 0x08, 0x01,
        0xBA, 0x01, 0x00, // 23: empty ApplicationTunnel
        0xDA, 0x01, 0x02, 0x08, 0x02, // 27: UInt32Value { value: 2 }
    ];
    assert_eq!(w.encode_to_vec(), expected);
}

#[test]
fn address_oneof_numbers() {
    let a = workload::Address {
        r#type: Some(workload::address::Type::Service(
            workload::Service::default(),
        )),
    };
    assert_eq!(a.encode_to_vec(), [0x12, 0x00]);
    let a = workload::Address {
        r#type: Some(workload::address::Type::Workload(
            workload::Workload::default(),
        )),
    };
    assert_eq!(a.encode_to_vec(), [0x0A, 0x00]);
}

#[test]
fn network_address_length_has_presence() {
    let host = workload::NetworkAddress {
        address: vec![10, 0, 0, 1],
        ..Default::default()
    };
    assert_eq!(host.encode_to_vec(), [0x12, 0x04, 10, 0, 0, 1]);
    // An explicit zero prefix length is still sent (proto3 `optional`).
    let cidr = workload::NetworkAddress {
        length: Some(0),
        ..host
    };
    assert_eq!(cidr.encode_to_vec(), [0x12, 0x04, 10, 0, 0, 1, 0x18, 0x00]);
}

#[test]
fn gateway_address_numbers() {
    let g = workload::GatewayAddress {
        destination: Some(workload::gateway_address::Destination::Hostname(
            workload::NamespacedHostname {
                namespace: s("n"),
                hostname: s("h"),
            },
        )),
        hbone_mtls_port: 15008,
    };
    // Oneof `hostname` (1) with NamespacedHostname {1: "n", 2: "h"}, then
    // hbone_mtls_port (3) = 15008 = varint 0xA0 0x75.
    assert_eq!(
        g.encode_to_vec(),
        [
            0x0A, 0x06, 0x0A, 0x01, b'n', 0x12, 0x01, b'h', 0x18, 0xA0, 0x75
        ]
    );
}

#[test]
fn service_visibility_and_weighted_waypoints_numbers() {
    let svc = workload::Service {
        weighted_waypoints: vec![workload::WeightedWaypoint {
            destination: None,
            weight: 1,
        }],
        visibility: workload::service::Visibility::Namespace as i32,
        ..Default::default()
    };
    // 13 -> key 0x6A, 14 -> key 0x70.
    assert_eq!(svc.encode_to_vec(), [0x6A, 0x02, 0x10, 0x01, 0x70, 0x01]);
}

#[test]
fn authorization_nesting_numbers() {
    let auth = security::Authorization {
        rules: vec![security::Rule {
            clauses: vec![security::Clause {
                matches: vec![security::Match {
                    destination_ports: vec![80],
                    service_accounts: vec![security::ServiceAccountMatch::default()],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    };
    assert_eq!(
        auth.encode_to_vec(),
        [
            0x2A, 0x09, // Authorization.rules = 5
            0x0A, 0x07, // Rule.clauses = 1
            0x12, 0x05, // Clause.matches = 2
            0x4A, 0x01, 0x50, // Match.destination_ports = 9, packed
            0x5A, 0x00, // Match.service_accounts = 11
        ]
    );
}

#[test]
fn clause_matches_is_field_2() {
    let c = security::Clause {
        matches: vec![security::Match::default()],
    };
    assert_eq!(c.encode_to_vec(), [0x12, 0x00]);
    // Field 1 is not part of Clause: it is skipped as unknown.
    let c = security::Clause::decode(&[0x0A, 0x00][..]).expect("decode");
    assert!(c.matches.is_empty());
}

#[test]
fn string_match_numbers() {
    use security::string_match::MatchType;
    let cases = [
        (MatchType::Exact(s("x")), vec![0x0A, 0x01, b'x']),
        (MatchType::Prefix(s("x")), vec![0x12, 0x01, b'x']),
        (MatchType::Suffix(s("x")), vec![0x1A, 0x01, b'x']),
        (MatchType::Presence(()), vec![0x22, 0x00]),
    ];
    for (m, bytes) in cases {
        let sm = security::StringMatch {
            match_type: Some(m),
        };
        assert_eq!(sm.encode_to_vec(), bytes, "{sm:?}");
    }
}

#[test]
fn service_account_match_numbers() {
    let m = security::ServiceAccountMatch {
        namespace: s("n"),
        service_account: s("s"),
    };
    assert_eq!(m.encode_to_vec(), [0x0A, 0x01, b'n', 0x12, 0x01, b's']);
}

#[test]
fn zds_numbers() {
    use zds::workload_request::Payload;

    let del = zds::DelWorkload { uid: s("x") };
    assert_eq!(del.encode_to_vec(), [0x12, 0x01, b'x']);

    let add = zds::AddWorkload {
        uid: s("x"),
        workload_info: Some(zds::WorkloadInfo::default()),
    };
    assert_eq!(add.encode_to_vec(), [0x0A, 0x01, b'x', 0x12, 0x00]);

    let request = |p: Payload| zds::WorkloadRequest { payload: Some(p) }.encode_to_vec();
    assert_eq!(request(Payload::Add(Default::default())), [0x0A, 0x00]);
    assert_eq!(request(Payload::Del(Default::default())), [0x12, 0x00]);
    assert_eq!(
        request(Payload::SnapshotSent(zds::SnapshotSent {})),
        [0x1A, 0x00]
    );
    assert_eq!(request(Payload::Keep(Default::default())), [0x2A, 0x00]);

    let hello = zds::ZdsHello {
        version: zds::Version::V1 as i32,
    };
    assert_eq!(hello.encode_to_vec(), [0x08, 0x01]);

    let response = zds::WorkloadResponse {
        payload: Some(zds::workload_response::Payload::Ack(zds::Ack {
            error: s("e"),
        })),
    };
    assert_eq!(response.encode_to_vec(), [0x0A, 0x03, 0x0A, 0x01, b'e']);
}

#[test]
fn citadel_numbers() {
    let req = citadel::IstioCertificateRequest {
        csr: s("c"),
        validity_duration: 1,
        metadata: Some(prost_types::Struct::default()),
    };
    assert_eq!(
        req.encode_to_vec(),
        [0x0A, 0x01, b'c', 0x18, 0x01, 0x22, 0x00]
    );
}

#[test]
fn delta_discovery_numbers() {
    let req = discovery::DeltaDiscoveryRequest {
        node: Some(core::Node {
            id: s("i"),
            ..Default::default()
        }),
        type_url: s("t"),
        resource_names_subscribe: vec![s("a")],
        resource_names_unsubscribe: vec![s("b")],
        initial_resource_versions: [(s("k"), s("v"))].into(),
        response_nonce: s("n"),
        error_detail: Some(rpc::Status {
            code: 0,
            message: s("m"),
            details: vec![],
        }),
    };
    assert_eq!(
        req.encode_to_vec(),
        [
            0x0A, 0x03, 0x0A, 0x01, b'i', // node = 1 { id = 1 }
            0x12, 0x01, b't', // type_url = 2
            0x1A, 0x01, b'a', // resource_names_subscribe = 3
            0x22, 0x01, b'b', // resource_names_unsubscribe = 4
            0x2A, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v', // initial_resource_versions = 5
            0x32, 0x01, b'n', // response_nonce = 6
            0x3A, 0x03, 0x12, 0x01, b'm', // error_detail = 7 { message = 2 }
        ]
    );

    let resp = discovery::DeltaDiscoveryResponse {
        system_version_info: s("v"),
        resources: vec![discovery::Resource {
            name: s("r"),
            ..Default::default()
        }],
        type_url: s("t"),
        removed_resources: vec![s("x")],
        nonce: s("n"),
        control_plane: None,
    };
    assert_eq!(
        resp.encode_to_vec(),
        [
            0x0A, 0x01, b'v', // system_version_info = 1
            0x12, 0x03, 0x1A, 0x01, b'r', // resources = 2 { name = 3 }
            0x22, 0x01, b't', // type_url = 4
            0x2A, 0x01, b'n', // nonce = 5
            0x32, 0x01, b'x', // removed_resources = 6
        ]
    );
}

#[test]
fn node_numbers() {
    let node = core::Node {
        user_agent_name: s("z"),
        user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(s("1"))),
        client_features: vec![s("f")],
        ..Default::default()
    };
    assert_eq!(
        node.encode_to_vec(),
        // user_agent_name (6), oneof user_agent_version (7), client_features (10).
        [0x32, 0x01, b'z', 0x3A, 0x01, b'1', 0x52, 0x01, b'f']
    );
}

#[test]
fn type_urls() {
    assert_eq!(proto::ADDRESS_TYPE_URL, workload::Address::type_url());
    assert_eq!(
        proto::AUTHORIZATION_TYPE_URL,
        security::Authorization::type_url()
    );
    assert_eq!(
        discovery::DeltaDiscoveryRequest::full_name(),
        "envoy.service.discovery.v3.DeltaDiscoveryRequest"
    );
    assert_eq!(
        zds::WorkloadRequest::full_name(),
        "istio.workload.zds.WorkloadRequest"
    );
    assert_eq!(
        citadel::IstioCertificateRequest::full_name(),
        "istio.v1.auth.IstioCertificateRequest"
    );
}

#[test]
fn address_packs_into_any() {
    let addr = workload::Address {
        r#type: Some(workload::address::Type::Workload(workload::Workload {
            uid: s("u"),
            ..Default::default()
        })),
    };
    let any = prost_types::Any::from_msg(&addr).expect("pack");
    assert_eq!(any.type_url, proto::ADDRESS_TYPE_URL);
    assert_eq!(any.to_msg::<workload::Address>().expect("unpack"), addr);
    assert!(any.to_msg::<security::Authorization>().is_err());
}
