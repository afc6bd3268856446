//! Round-trip tests: every message type is encoded with a non-default value in
//! every field (every oneof variant, every map), decoded again and compared.
//!
//! Proto3 does not put default scalars on the wire, so each package's test
//! also checks, against the compiled descriptors, that the samples put every
//! declared field number of every message of that package on the wire. A new
//! field or message without a sample, or a sample left at a default, fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;

use prost::Message;
use prost_types::{Any, Duration, FileDescriptorSet, Struct, Value, value::Kind};

use proto::{citadel, core, discovery, ext_authz, rpc, security, types, waypoint, workload, zds};

/// Collects, per message type, which top-level field numbers the samples put
/// on the wire.
struct Samples {
    package: &'static str,
    seen: BTreeMap<String, BTreeSet<i32>>,
}

impl Samples {
    fn new(package: &'static str) -> Self {
        Self {
            package,
            seen: BTreeMap::new(),
        }
    }

    /// Encodes `msg`, decodes it back, asserts equality and records the
    /// top-level field numbers present in the encoding.
    fn check<M: Message + Default + PartialEq + Debug>(&mut self, name: &str, msg: &M) {
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes.len(), msg.encoded_len(), "{name}: encoded_len");
        let decoded = M::decode(bytes.as_slice()).expect("decode");
        assert_eq!(&decoded, msg, "{name}: round trip changed the value");
        // Bytes are not compared after re-encoding: maps are HashMaps, so
        // the order of map entries on the wire is not deterministic.
        self.seen
            .entry(format!("{}.{name}", self.package))
            .or_default()
            .extend(top_level_fields(&bytes));
    }

    /// Every message declared in the package (nested ones included, map
    /// entries excluded) had samples covering every declared field number.
    fn assert_complete(&self) {
        let declared = declared_fields(self.package);
        assert!(!declared.is_empty(), "no messages in {}", self.package);
        let missing: Vec<_> = declared
            .keys()
            .filter(|m| !self.seen.contains_key(*m))
            .collect();
        assert!(missing.is_empty(), "messages without a sample: {missing:?}");
        for (name, fields) in &declared {
            assert_eq!(
                &self.seen[name], fields,
                "{name}: fields on the wire differ from declared fields"
            );
        }
        let unknown: Vec<_> = self
            .seen
            .keys()
            .filter(|m| !declared.contains_key(*m))
            .collect();
        assert!(
            unknown.is_empty(),
            "samples for undeclared messages: {unknown:?}"
        );
    }
}

/// Field numbers of the top-level fields in an encoded message.
fn top_level_fields(mut buf: &[u8]) -> BTreeSet<i32> {
    let mut fields = BTreeSet::new();
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf).expect("key");
        fields.insert(i32::try_from(key >> 3).expect("field number"));
        let skip = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut buf).expect("varint");
                0
            }
            1 => 8,
            2 => usize::try_from(prost::encoding::decode_varint(&mut buf).expect("len"))
                .expect("len"),
            5 => 4,
            other => panic!("unexpected wire type {other}"),
        };
        buf = &buf[skip..];
    }
    fields
}

/// Message full name -> declared field numbers, for one package.
fn declared_fields(package: &str) -> BTreeMap<String, BTreeSet<i32>> {
    fn walk(
        prefix: &str,
        msgs: &[prost_types::DescriptorProto],
        out: &mut BTreeMap<String, BTreeSet<i32>>,
    ) {
        for m in msgs {
            if m.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, out);
            out.insert(name, m.field.iter().map(|f| f.number()).collect());
        }
    }
    let fds = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = BTreeMap::new();
    for file in fds.file.iter().filter(|f| f.package() == package) {
        walk(package, &file.message_type, &mut out);
    }
    out
}

// ---------------------------------------------------------------- helpers

fn s(v: &str) -> String {
    v.to_string()
}

fn any(n: u8) -> Any {
    Any {
        type_url: s("type.googleapis.com/test.Opaque"),
        value: vec![0x08, n],
    }
}

fn strukt() -> Struct {
    let fields = [
        (s("NAME"), Kind::StringValue(s("ztunnel-abc"))),
        (s("COUNT"), Kind::NumberValue(2.0)),
        (s("ON"), Kind::BoolValue(true)),
    ]
    .into_iter()
    .map(|(k, kind)| (k, Value { kind: Some(kind) }))
    .collect();
    Struct { fields }
}

// ---------------------------------------------------------------- istio.workload

fn w_extension() -> workload::Extension {
    workload::Extension {
        name: s("example.io/ext"),
        config: Some(any(7)),
    }
}

fn network_address() -> workload::NetworkAddress {
    workload::NetworkAddress {
        network: s("net-a"),
        address: vec![10, 0, 0, 0],
        length: Some(24),
    }
}

fn namespaced_hostname() -> workload::NamespacedHostname {
    workload::NamespacedHostname {
        namespace: s("ns1"),
        hostname: s("waypoint.ns1.svc.cluster.local"),
    }
}

fn gateway_by_hostname() -> workload::GatewayAddress {
    workload::GatewayAddress {
        destination: Some(workload::gateway_address::Destination::Hostname(
            namespaced_hostname(),
        )),
        hbone_mtls_port: 15008,
    }
}

fn gateway_by_address() -> workload::GatewayAddress {
    workload::GatewayAddress {
        destination: Some(workload::gateway_address::Destination::Address(
            network_address(),
        )),
        hbone_mtls_port: 15009,
    }
}

fn port() -> workload::Port {
    workload::Port {
        service_port: 80,
        target_port: 8080,
        app_protocol: workload::AppProtocol::Http2 as i32,
    }
}

fn port_list() -> workload::PortList {
    workload::PortList {
        ports: vec![
            port(),
            workload::Port {
                service_port: 443,
                target_port: 8443,
                app_protocol: workload::AppProtocol::Tls as i32,
            },
        ],
    }
}

fn w_locality() -> workload::Locality {
    workload::Locality {
        region: s("eu-west1"),
        zone: s("eu-west1-b"),
        subzone: s("rack-7"),
    }
}

fn application_tunnel() -> workload::ApplicationTunnel {
    workload::ApplicationTunnel {
        protocol: workload::application_tunnel::Protocol::Proxy as i32,
        port: 15088,
    }
}

fn weighted_waypoint() -> workload::WeightedWaypoint {
    workload::WeightedWaypoint {
        destination: Some(gateway_by_address()),
        weight: 3,
    }
}

fn load_balancing() -> workload::LoadBalancing {
    use workload::load_balancing::{HealthPolicy, Mode, Scope};
    workload::LoadBalancing {
        routing_preference: vec![
            Scope::Network as i32,
            Scope::Region as i32,
            Scope::Node as i32,
        ],
        mode: Mode::Failover as i32,
        health_policy: HealthPolicy::AllowAll as i32,
    }
}

fn service() -> workload::Service {
    workload::Service {
        name: s("reviews"),
        namespace: s("bookinfo"),
        hostname: s("reviews.bookinfo.svc.cluster.local"),
        addresses: vec![network_address()],
        ports: vec![port()],
        subject_alt_names: vec![s("spiffe://cluster.local/ns/bookinfo/sa/reviews")],
        waypoint: Some(gateway_by_hostname()),
        load_balancing: Some(load_balancing()),
        ip_families: workload::IpFamilies::Dual as i32,
        extensions: vec![w_extension()],
        canonical: true,
        ingress_use_waypoint: true,
        weighted_waypoints: vec![weighted_waypoint()],
        visibility: workload::service::Visibility::Namespace as i32,
    }
}

fn workload_full() -> workload::Workload {
    workload::Workload {
        uid: s("Kubernetes//Pod/bookinfo/reviews-v1-abc"),
        name: s("reviews-v1-abc"),
        namespace: s("bookinfo"),
        addresses: vec![
            vec![10, 1, 2, 3],
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ],
        hostname: s("vm.example.com"),
        network: s("net-a"),
        tunnel_protocol: workload::TunnelProtocol::Hbone as i32,
        trust_domain: s("example.org"),
        service_account: s("reviews"),
        waypoint: Some(gateway_by_hostname()),
        network_gateway: Some(gateway_by_address()),
        node: s("node-1"),
        canonical_name: s("reviews"),
        canonical_revision: s("v1"),
        workload_type: workload::WorkloadType::Pod as i32,
        workload_name: s("reviews-v1"),
        native_tunnel: true,
        application_tunnel: Some(application_tunnel()),
        services: HashMap::from([
            (
                s("bookinfo/reviews.bookinfo.svc.cluster.local"),
                port_list(),
            ),
            (
                s("bookinfo/other.bookinfo.svc.cluster.local"),
                workload::PortList {
                    ports: vec![port()],
                },
            ),
        ]),
        authorization_policies: vec![s("bookinfo/allow-productpage")],
        status: workload::WorkloadStatus::Unhealthy as i32,
        cluster_id: s("Kubernetes"),
        locality: Some(w_locality()),
        network_mode: workload::NetworkMode::HostNetwork as i32,
        extensions: vec![w_extension()],
        capacity: Some(5),
    }
}

#[test]
fn workload_messages_round_trip() {
    let mut t = Samples::new("istio.workload");
    t.check(
        "Address",
        &workload::Address {
            r#type: Some(workload::address::Type::Workload(workload_full())),
        },
    );
    t.check(
        "Address",
        &workload::Address {
            r#type: Some(workload::address::Type::Service(service())),
        },
    );
    t.check("Service", &service());
    t.check("LoadBalancing", &load_balancing());
    t.check("Workload", &workload_full());
    t.check("Locality", &w_locality());
    t.check("PortList", &port_list());
    t.check("Port", &port());
    t.check("ApplicationTunnel", &application_tunnel());
    t.check("GatewayAddress", &gateway_by_hostname());
    t.check("GatewayAddress", &gateway_by_address());
    t.check("WeightedWaypoint", &weighted_waypoint());
    t.check("NetworkAddress", &network_address());
    t.check("NamespacedHostname", &namespaced_hostname());
    t.check("Extension", &w_extension());
    t.assert_complete();
}

// ---------------------------------------------------------------- istio.security

fn string_matches() -> Vec<security::StringMatch> {
    use security::string_match::MatchType;
    [
        MatchType::Exact(s("bookinfo")),
        MatchType::Prefix(s("book")),
        MatchType::Suffix(s("info")),
        MatchType::Presence(()),
    ]
    .into_iter()
    .map(|m| security::StringMatch {
        match_type: Some(m),
    })
    .collect()
}

fn sec_address() -> security::Address {
    security::Address {
        address: vec![192, 168, 0, 0],
        length: 16,
    }
}

fn sa_match() -> security::ServiceAccountMatch {
    security::ServiceAccountMatch {
        namespace: s("bookinfo"),
        service_account: s("productpage"),
    }
}

fn a_match() -> security::Match {
    security::Match {
        namespaces: string_matches(),
        not_namespaces: vec![string_matches()[0].clone()],
        principals: vec![string_matches()[1].clone()],
        not_principals: vec![string_matches()[2].clone()],
        source_ips: vec![sec_address()],
        not_source_ips: vec![security::Address {
            address: vec![10, 0, 0, 1],
            length: 32,
        }],
        destination_ips: vec![security::Address {
            address: vec![0xfd; 16],
            length: 128,
        }],
        not_destination_ips: vec![sec_address()],
        destination_ports: vec![80, 8080],
        not_destination_ports: vec![9090],
        service_accounts: vec![sa_match()],
        not_service_accounts: vec![security::ServiceAccountMatch {
            namespace: s("other"),
            service_account: s("default"),
        }],
        extensions: vec![w_extension()],
    }
}

fn clause() -> security::Clause {
    security::Clause {
        matches: vec![a_match(), security::Match::default()],
    }
}

fn rule() -> security::Rule {
    security::Rule {
        clauses: vec![clause()],
    }
}

fn authorization() -> security::Authorization {
    security::Authorization {
        name: s("allow-productpage"),
        namespace: s("bookinfo"),
        scope: security::Scope::WorkloadSelector as i32,
        action: security::Action::Deny as i32,
        rules: vec![rule(), security::Rule::default()],
        dry_run: true,
        extensions: vec![w_extension()],
    }
}

#[test]
fn security_messages_round_trip() {
    let mut t = Samples::new("istio.security");
    t.check("Authorization", &authorization());
    t.check("Rule", &rule());
    t.check("Clause", &clause());
    t.check("Match", &a_match());
    t.check("Address", &sec_address());
    t.check("ServiceAccountMatch", &sa_match());
    for m in string_matches() {
        t.check("StringMatch", &m);
    }
    t.assert_complete();
}

// ---------------------------------------------------------------- istio.workload.zds

fn workload_info() -> zds::WorkloadInfo {
    zds::WorkloadInfo {
        name: s("reviews-v1-abc"),
        namespace: s("bookinfo"),
        service_account: s("reviews"),
    }
}

fn add_workload() -> zds::AddWorkload {
    zds::AddWorkload {
        uid: s("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
        workload_info: Some(workload_info()),
    }
}

fn keep_workload() -> zds::KeepWorkload {
    zds::KeepWorkload { uid: s("keep-uid") }
}

fn del_workload() -> zds::DelWorkload {
    zds::DelWorkload { uid: s("del-uid") }
}

fn ack() -> zds::Ack {
    zds::Ack {
        error: s("netns not ready"),
    }
}

#[test]
fn zds_messages_round_trip() {
    use zds::workload_request::Payload;
    let mut t = Samples::new("istio.workload.zds");
    t.check(
        "ZdsHello",
        &zds::ZdsHello {
            version: zds::Version::V1 as i32,
        },
    );
    t.check("WorkloadInfo", &workload_info());
    t.check("AddWorkload", &add_workload());
    t.check("KeepWorkload", &keep_workload());
    t.check("DelWorkload", &del_workload());
    t.check("SnapshotSent", &zds::SnapshotSent {});
    t.check("Ack", &ack());
    for payload in [
        Payload::Add(add_workload()),
        Payload::Keep(keep_workload()),
        Payload::Del(del_workload()),
        Payload::SnapshotSent(zds::SnapshotSent {}),
    ] {
        t.check(
            "WorkloadRequest",
            &zds::WorkloadRequest {
                payload: Some(payload),
            },
        );
    }
    t.check(
        "WorkloadResponse",
        &zds::WorkloadResponse {
            payload: Some(zds::workload_response::Payload::Ack(ack())),
        },
    );
    t.assert_complete();
}

// ---------------------------------------------------------------- istio.v1.auth

#[test]
fn citadel_messages_round_trip() {
    let mut t = Samples::new("istio.v1.auth");
    t.check(
        "IstioCertificateRequest",
        &citadel::IstioCertificateRequest {
            csr: s(
                "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            ),
            validity_duration: 86_400,
            metadata: Some(Struct {
                fields: [(
                    s("ImpersonatedIdentity"),
                    Value {
                        kind: Some(Kind::StringValue(s("spiffe://cluster.local/ns/a/sa/b"))),
                    },
                )]
                .into_iter()
                .collect(),
            }),
        },
    );
    t.check(
        "IstioCertificateResponse",
        &citadel::IstioCertificateResponse {
            cert_chain: vec![s("leaf-pem\n"), s("intermediate-pem\n"), s("root-pem\n")],
        },
    );
    t.assert_complete();
}

// ---------------------------------------------------------------- google.rpc

fn status() -> rpc::Status {
    rpc::Status {
        code: 3,
        message: s("ns/a: bad address; ns/b: unknown field"),
        details: vec![any(1), any(2)],
    }
}

#[test]
fn rpc_messages_round_trip() {
    let mut t = Samples::new("google.rpc");
    t.check("Status", &status());
    t.assert_complete();
}

// ---------------------------------------------------------------- envoy.type.v3

fn semver() -> types::SemanticVersion {
    types::SemanticVersion {
        major_number: 1,
        minor_number: 31,
        patch: 2,
    }
}

fn http_status() -> types::HttpStatus {
    types::HttpStatus {
        code: types::StatusCode::Unauthorized as i32,
    }
}

#[test]
fn envoy_type_messages_round_trip() {
    let mut t = Samples::new("envoy.type.v3");
    t.check("SemanticVersion", &semver());
    t.check("HttpStatus", &http_status());
    t.assert_complete();
}

// ---------------------------------------------------------------- envoy.config.core.v3

fn build_version() -> core::BuildVersion {
    core::BuildVersion {
        version: Some(semver()),
        metadata: Some(strukt()),
    }
}

fn c_extension() -> core::Extension {
    core::Extension {
        name: s("envoy.filters.http.router"),
        category: s("envoy.filters.http"),
        type_descriptor: s("envoy.extensions.filters.http.router.v3.Router"),
        version: Some(build_version()),
        disabled: true,
    }
}

fn c_locality() -> core::Locality {
    core::Locality {
        region: s("us-east1"),
        zone: s("us-east1-c"),
        sub_zone: s("rack-2"),
    }
}

fn node(version: core::node::UserAgentVersionType) -> core::Node {
    core::Node {
        id: s("ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local"),
        cluster: s("Kubernetes"),
        metadata: Some(strukt()),
        locality: Some(c_locality()),
        user_agent_name: s("ztunnel"),
        user_agent_version_type: Some(version),
        extensions: vec![c_extension()],
        client_features: vec![s("envoy.lb.does_not_support_overprovisioning")],
    }
}

fn node_full() -> core::Node {
    node(core::node::UserAgentVersionType::UserAgentVersion(s(
        "1.31.0",
    )))
}

fn c_metadata() -> core::Metadata {
    core::Metadata {
        filter_metadata: HashMap::from([
            (s("istio"), strukt()),
            (s("envoy.lb"), Struct::default()),
        ]),
    }
}

fn control_plane() -> core::ControlPlane {
    core::ControlPlane {
        identifier: s("istiod-5f4d8c7b9-x2x7q"),
    }
}

fn header_option(key: &str, value: &str) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: s(key),
            value: s(value),
            raw_value: value.as_bytes().to_vec(),
        }),
        append: Some(true),
        append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
    }
}

fn socket_address(port: core::socket_address::PortSpecifier) -> core::SocketAddress {
    core::SocketAddress {
        protocol: core::socket_address::Protocol::Udp as i32,
        address: s("10.0.0.7"),
        port_specifier: Some(port),
    }
}

fn c_address() -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(socket_address(
            core::socket_address::PortSpecifier::PortValue(8080),
        ))),
    }
}

#[test]
fn envoy_core_messages_round_trip() {
    let mut t = Samples::new("envoy.config.core.v3");
    t.check("Locality", &c_locality());
    t.check("BuildVersion", &build_version());
    t.check("Extension", &c_extension());
    t.check("Node", &node_full());
    t.check(
        "Node",
        &node(core::node::UserAgentVersionType::UserAgentBuildVersion(
            build_version(),
        )),
    );
    t.check("Metadata", &c_metadata());
    t.check("ControlPlane", &control_plane());
    t.check("HeaderValueOption", &header_option("x-user", "alice"));
    t.check(
        "HeaderValue",
        &header_option("x-user", "alice").header.expect("header"),
    );
    t.check("Address", &c_address());
    t.check(
        "SocketAddress",
        &socket_address(core::socket_address::PortSpecifier::PortValue(80)),
    );
    t.check(
        "SocketAddress",
        &socket_address(core::socket_address::PortSpecifier::NamedPort(s("http"))),
    );
    t.assert_complete();
}

// ---------------------------------------------------------------- envoy.service.auth.v3

fn peer(principal: &str) -> ext_authz::attribute_context::Peer {
    ext_authz::attribute_context::Peer {
        address: Some(c_address()),
        service: s("web"),
        principal: s(principal),
    }
}

fn http_request() -> ext_authz::attribute_context::HttpRequest {
    ext_authz::attribute_context::HttpRequest {
        id: s("b1946ac9"),
        method: s("POST"),
        headers: HashMap::from([(s("x-mode"), s("allow")), (s(":path"), s("/api"))]),
        path: s("/api?x=1"),
        host: s("api.shop.svc.cluster.local"),
        scheme: s("http"),
        query: s("x=1"),
        fragment: s("top"),
        size: 12,
        protocol: s("HTTP/1.1"),
        body: s("{\"amount\":1}"),
        raw_body: b"\x00\xff".to_vec(),
    }
}

fn attribute_context() -> ext_authz::AttributeContext {
    ext_authz::AttributeContext {
        source: Some(peer("spiffe://cluster.local/ns/shop/sa/web")),
        destination: Some(peer("spiffe://cluster.local/ns/shop/sa/waypoint")),
        request: Some(ext_authz::attribute_context::Request {
            time: Some(prost_types::Timestamp {
                seconds: 1_796_000_000,
                nanos: 5,
            }),
            http: Some(http_request()),
        }),
    }
}

fn denied_response() -> ext_authz::DeniedHttpResponse {
    ext_authz::DeniedHttpResponse {
        status: Some(http_status()),
        headers: vec![header_option("x-reason", "bad token")],
        body: s("denied"),
    }
}

fn ok_response() -> ext_authz::OkHttpResponse {
    ext_authz::OkHttpResponse {
        headers: vec![header_option("x-user", "alice")],
        headers_to_remove: vec![s("authorization")],
        response_headers_to_add: vec![header_option("x-trace", "t-1")],
    }
}

#[test]
fn ext_authz_messages_round_trip() {
    use ext_authz::check_response::HttpResponse;
    let mut t = Samples::new("envoy.service.auth.v3");
    t.check(
        "CheckRequest",
        &ext_authz::CheckRequest {
            attributes: Some(attribute_context()),
        },
    );
    t.check("AttributeContext", &attribute_context());
    t.check("AttributeContext.Peer", &peer("spiffe://a"));
    t.check(
        "AttributeContext.Request",
        &attribute_context().request.expect("request"),
    );
    t.check("AttributeContext.HttpRequest", &http_request());
    t.check("DeniedHttpResponse", &denied_response());
    t.check("OkHttpResponse", &ok_response());
    for response in [
        HttpResponse::DeniedResponse(denied_response()),
        HttpResponse::OkResponse(ok_response()),
    ] {
        t.check(
            "CheckResponse",
            &ext_authz::CheckResponse {
                status: Some(status()),
                http_response: Some(response),
            },
        );
    }
    t.assert_complete();
}

// ---------------------------------------------------------------- envoy.service.discovery.v3

fn cache_control() -> discovery::resource::CacheControl {
    discovery::resource::CacheControl { do_not_cache: true }
}

fn resource() -> discovery::Resource {
    discovery::Resource {
        name: s("Kubernetes//Pod/bookinfo/reviews-v1-abc"),
        aliases: vec![s("net-a/10.1.2.3")],
        version: s("2026-08-01T00:00:00Z/42"),
        resource: Some(Any {
            type_url: s(proto::ADDRESS_TYPE_URL),
            value: workload::Address {
                r#type: Some(workload::address::Type::Workload(workload_full())),
            }
            .encode_to_vec(),
        }),
        ttl: Some(Duration {
            seconds: 30,
            nanos: 500,
        }),
        cache_control: Some(cache_control()),
        metadata: Some(c_metadata()),
    }
}

#[test]
fn discovery_messages_round_trip() {
    let mut t = Samples::new("envoy.service.discovery.v3");
    t.check(
        "DiscoveryRequest",
        &discovery::DiscoveryRequest {
            version_info: s("v1"),
            node: Some(node_full()),
            resource_names: vec![s("a"), s("b")],
            type_url: s(proto::AUTHORIZATION_TYPE_URL),
            response_nonce: s("nonce-1"),
            error_detail: Some(status()),
        },
    );
    t.check(
        "DiscoveryResponse",
        &discovery::DiscoveryResponse {
            version_info: s("v2"),
            resources: vec![any(3)],
            canary: true,
            type_url: s(proto::AUTHORIZATION_TYPE_URL),
            nonce: s("nonce-2"),
            control_plane: Some(control_plane()),
        },
    );
    t.check(
        "DeltaDiscoveryRequest",
        &discovery::DeltaDiscoveryRequest {
            node: Some(node_full()),
            type_url: s(proto::ADDRESS_TYPE_URL),
            resource_names_subscribe: vec![s("*")],
            resource_names_unsubscribe: vec![s("*")],
            initial_resource_versions: HashMap::from([(s("ns/a"), s("1")), (s("ns/b"), s("2"))]),
            response_nonce: s("nonce-3"),
            error_detail: Some(status()),
        },
    );
    t.check(
        "DeltaDiscoveryResponse",
        &discovery::DeltaDiscoveryResponse {
            system_version_info: s("2026-08-01"),
            resources: vec![resource()],
            type_url: s(proto::ADDRESS_TYPE_URL),
            removed_resources: vec![s("Kubernetes//Pod/bookinfo/gone")],
            nonce: s("nonce-4"),
            control_plane: Some(control_plane()),
        },
    );
    t.check("Resource", &resource());
    t.check("Resource.CacheControl", &cache_control());
    t.assert_complete();
}

#[test]
fn field_coverage_check_rejects_a_default_field() {
    // The coverage check must be able to fail: a sample that leaves a field
    // at its default does not put that field on the wire.
    let mut t = Samples::new("google.rpc");
    t.check(
        "Status",
        &rpc::Status {
            code: 0,
            ..status()
        },
    );
    let result = std::panic::catch_unwind(|| t.assert_complete());
    assert!(result.is_err(), "coverage check accepted a missing field");
}

fn wp_matches() -> Vec<waypoint::StringMatch> {
    use waypoint::string_match::Kind;
    [
        Kind::Exact(s("GET")),
        Kind::Prefix(s("/api/")),
        Kind::Suffix(s(".json")),
        Kind::Presence(waypoint::Presence {}),
        Kind::Contains(s("sqlmap")),
    ]
    .into_iter()
    .map(|k| waypoint::StringMatch { kind: Some(k) })
    .collect()
}

fn wp_account() -> waypoint::ServiceAccount {
    waypoint::ServiceAccount {
        namespace: s("shop"),
        name: s("order-service"),
    }
}

fn wp_source() -> waypoint::Source {
    let m = wp_matches;
    waypoint::Source {
        principals: m(),
        not_principals: m(),
        request_principals: m(),
        not_request_principals: m(),
        namespaces: m(),
        not_namespaces: m(),
        ip_blocks: vec![s("10.0.0.0/8")],
        not_ip_blocks: vec![s("10.1.0.0/16")],
        remote_ip_blocks: vec![s("192.0.2.0/24")],
        not_remote_ip_blocks: vec![s("192.0.2.7/32")],
        service_accounts: vec![wp_account()],
        not_service_accounts: vec![wp_account()],
        trust_domains: m(),
        not_trust_domains: m(),
    }
}

fn wp_operation() -> waypoint::Operation {
    let m = wp_matches;
    waypoint::Operation {
        hosts: m(),
        not_hosts: m(),
        ports: vec![8080],
        not_ports: vec![9090],
        methods: m(),
        not_methods: m(),
        paths: m(),
        not_paths: m(),
    }
}

fn wp_condition() -> waypoint::Condition {
    waypoint::Condition {
        key: s("request.headers[user-agent]"),
        values: wp_matches(),
        not_values: wp_matches(),
        nets: vec![s("10.0.0.0/8")],
        not_nets: vec![s("10.2.0.0/16")],
        ports: vec![80],
        not_ports: vec![81],
    }
}

fn wp_rule() -> waypoint::Rule {
    waypoint::Rule {
        from: vec![wp_source()],
        to: vec![wp_operation()],
        when: vec![wp_condition()],
    }
}

fn wp_endpoint() -> waypoint::Endpoint {
    waypoint::Endpoint {
        address: s("10.244.1.21"),
        identity: s("spiffe://cluster.local/ns/shop/sa/api"),
        healthy: true,
        workload: s("shop/api-0"),
    }
}

fn wp_jwt_header() -> waypoint::JwtHeader {
    waypoint::JwtHeader {
        name: s("x-jwt"),
        prefix: s("Bearer "),
    }
}

fn wp_claim_to_header() -> waypoint::ClaimToHeader {
    waypoint::ClaimToHeader {
        header: s("x-user"),
        claim: s("sub"),
    }
}

fn wp_jwt_rule() -> waypoint::JwtRule {
    waypoint::JwtRule {
        source: s("shop/company-jwt"),
        issuer: s("https://issuer.example.com"),
        audiences: vec![s("payments")],
        jwks_uri: s("https://issuer.example.com/jwks.json"),
        jwks: s(r#"{"keys":[]}"#),
        from_headers: vec![wp_jwt_header()],
        from_params: vec![s("token")],
        from_cookies: vec![s("session")],
        output_payload_to_header: s("x-jwt-payload"),
        forward_original_token: true,
        output_claim_to_headers: vec![wp_claim_to_header()],
        timeout_ms: 3000,
    }
}

fn wp_rate_limit() -> waypoint::RateLimit {
    waypoint::RateLimit {
        source: s("shop/payments-burst"),
        r#match: vec![wp_operation()],
        per: waypoint::rate_limit::Per::SourcePrincipal as i32,
        max_tokens: 10,
        tokens_per_fill: 5,
        fill_interval_ms: 1000,
    }
}

fn wp_ext_authz() -> waypoint::ExtAuthz {
    waypoint::ExtAuthz {
        name: s("ext-authz"),
        protocol: waypoint::ext_authz::Protocol::Grpc as i32,
        address: s("10.96.0.50:9000"),
        timeout_ms: 500,
        path_prefix: s("/check"),
        fail_open: true,
        status_on_error: 503,
        include_request_headers_in_check: vec![s("x-ext-authz")],
        include_additional_headers_in_check: HashMap::from([(s("x-from"), s("waypoint"))]),
        headers_to_upstream_on_allow: vec![s("x-user")],
        headers_to_downstream_on_deny: vec![s("x-reason")],
        headers_to_downstream_on_allow: vec![s("x-trace")],
        include_request_body_in_check: Some(waypoint::ext_authz::RequestBody {
            max_request_bytes: 4096,
            allow_partial_message: true,
            pack_as_bytes: true,
        }),
    }
}

#[test]
fn waypoint_messages_round_trip() {
    let mut t = Samples::new("mesh.waypoint.v1");
    t.check(
        "Target",
        &waypoint::Target {
            name: s("shop/api.shop.svc.cluster.local"),
            namespace: s("shop"),
            vips: vec![s("10.96.0.20")],
            ports: [(80, 8080)].into_iter().collect(),
            h2_ports: vec![9090],
            endpoints: vec![wp_endpoint()],
            policies: vec![s("shop/payments")],
            jwt_rules: vec![wp_jwt_rule()],
            rate_limits: vec![wp_rate_limit()],
        },
    );
    t.check("Endpoint", &wp_endpoint());
    t.check("JwtRule", &wp_jwt_rule());
    t.check("JwtHeader", &wp_jwt_header());
    t.check("ClaimToHeader", &wp_claim_to_header());
    t.check("RateLimit", &wp_rate_limit());
    t.check(
        "HttpPolicy",
        &waypoint::HttpPolicy {
            name: s("payments"),
            namespace: s("shop"),
            action: waypoint::Action::Custom as i32,
            provider: s("ext-authz"),
            dry_run: true,
            rules: vec![wp_rule()],
            ext_authz: Some(wp_ext_authz()),
        },
    );
    t.check("ExtAuthz", &wp_ext_authz());
    if let Some(body) = wp_ext_authz().include_request_body_in_check {
        t.check("ExtAuthz.RequestBody", &body);
    }
    t.check("Rule", &wp_rule());
    t.check("Source", &wp_source());
    t.check("ServiceAccount", &wp_account());
    t.check("Operation", &wp_operation());
    t.check("Condition", &wp_condition());
    for m in wp_matches() {
        t.check("StringMatch", &m);
    }
    t.check("Presence", &waypoint::Presence {});
    let header = waypoint::tracing::Header {
        name: s("x-api-key"),
        value: s("k1"),
    };
    let http = waypoint::tracing::OtlpHttp {
        path: s("/v1/traces"),
        timeout_ms: 5000,
        headers: vec![header.clone()],
    };
    t.check("Tracing.Header", &header);
    t.check("Tracing.OtlpHttp", &http);
    t.check(
        "Tracing",
        &waypoint::Tracing {
            exporter: waypoint::tracing::Exporter::OtlpHttp as i32,
            address: s("10.96.0.50:4318"),
            sampling: 12.5,
            max_tag_length: 256,
            provider: s("otel"),
            otlp_http: Some(http),
        },
    );
    t.assert_complete();
}
