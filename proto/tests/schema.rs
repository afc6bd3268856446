//! Schema pins: the compiled descriptors must match, field for field, the
//! tables transcribed below (Istio packages from docs/protocol.md sections
//! 3.2, 4.2, 4.3 and 5; Envoy and google.rpc from the upstream .proto files).
//! Any renumbered, retyped, renamed, added or removed field fails here.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn file(name: &str) -> FileDescriptorProto {
    let fds = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    fds.file
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} not compiled"))
}

/// Renders a file's messages and enums as one line per field / value,
/// sorted by number, messages and enums sorted by name.
fn render(file: &FileDescriptorProto) -> String {
    let mut out = Vec::new();
    let prefix = file.package().to_string();
    for m in &file.message_type {
        render_message(&prefix, m, &mut out);
    }
    for e in &file.enum_type {
        render_enum(&prefix, e, &mut out);
    }
    out.sort();
    out.join("\n")
}

fn render_enum(prefix: &str, e: &EnumDescriptorProto, out: &mut Vec<String>) {
    let name = format!("{prefix}.{}", e.name());
    for v in &e.value {
        out.push(format!("{name} = {} {}", v.number(), v.name()));
    }
}

fn render_message(prefix: &str, m: &DescriptorProto, out: &mut Vec<String>) {
    let name = format!("{prefix}.{}", m.name());
    if m.field.is_empty() {
        out.push(format!("{name} (empty)"));
    }
    for f in &m.field {
        let mut ty = match f.r#type() {
            Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_string(),
            Type::String => "string".into(),
            Type::Bytes => "bytes".into(),
            Type::Bool => "bool".into(),
            Type::Uint32 => "uint32".into(),
            Type::Int32 => "int32".into(),
            Type::Int64 => "int64".into(),
            other => format!("{other:?}"),
        };
        if let Some(entry) = m.nested_type.iter().find(|n| {
            n.options.as_ref().is_some_and(|o| o.map_entry())
                && ty.ends_with(&format!(".{}", n.name()))
        }) {
            let kv: Vec<String> = entry
                .field
                .iter()
                .map(|f| match f.r#type() {
                    Type::String => "string".to_string(),
                    _ => f.type_name().trim_start_matches('.').to_string(),
                })
                .collect();
            ty = format!("map<{}>", kv.join(", "));
        } else if f.label() == Label::Repeated {
            ty = format!("repeated {ty}");
        }
        if f.proto3_optional() {
            ty = format!("optional {ty}");
        } else if let Some(i) = f.oneof_index {
            let oneof = m.oneof_decl[usize::try_from(i).expect("index")].name();
            ty = format!("oneof {oneof}: {ty}");
        }
        out.push(format!("{name} {:>2} {}: {ty}", f.number(), f.name()));
    }
    for r in &m.reserved_range {
        // Ranges are half-open: [start, end).
        out.push(format!("{name} reserved {}..{}", r.start(), r.end()));
    }
    for r in &m.reserved_name {
        out.push(format!("{name} reserved \"{r}\""));
    }
    for n in m
        .nested_type
        .iter()
        .filter(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()))
    {
        render_message(&name, n, out);
    }
    for e in &m.enum_type {
        render_enum(&name, e, out);
    }
}

/// Compares line sets and reports the differing lines.
fn assert_schema(file_name: &str, expected: &str) {
    let actual = render(&file(file_name));
    let mut want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    want.sort();
    let got: Vec<&str> = actual.lines().collect();
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{file_name} differs from the pinned schema\n  expected but missing: {missing:#?}\n  present but unexpected: {extra:#?}"
    );
}

#[test]
fn zds_schema() {
    assert_schema(
        "istio/workload/zds/zds.proto",
        r#"
        istio.workload.zds.Version = 0 NOT_USED
        istio.workload.zds.Version = 1 V1
        istio.workload.zds.ZdsHello  1 version: istio.workload.zds.Version
        istio.workload.zds.WorkloadInfo  1 name: string
        istio.workload.zds.WorkloadInfo  2 namespace: string
        istio.workload.zds.WorkloadInfo  3 service_account: string
        istio.workload.zds.WorkloadInfo reserved 4..5
        istio.workload.zds.WorkloadInfo reserved "trust_domain"
        istio.workload.zds.AddWorkload  1 uid: string
        istio.workload.zds.AddWorkload  2 workload_info: istio.workload.zds.WorkloadInfo
        istio.workload.zds.KeepWorkload  1 uid: string
        istio.workload.zds.DelWorkload  2 uid: string
        istio.workload.zds.SnapshotSent (empty)
        istio.workload.zds.Ack  1 error: string
        istio.workload.zds.WorkloadRequest  1 add: oneof payload: istio.workload.zds.AddWorkload
        istio.workload.zds.WorkloadRequest  5 keep: oneof payload: istio.workload.zds.KeepWorkload
        istio.workload.zds.WorkloadRequest  2 del: oneof payload: istio.workload.zds.DelWorkload
        istio.workload.zds.WorkloadRequest  3 snapshot_sent: oneof payload: istio.workload.zds.SnapshotSent
        istio.workload.zds.WorkloadResponse  1 ack: oneof payload: istio.workload.zds.Ack
        "#,
    );
}

#[test]
fn workload_schema() {
    assert_schema(
        "istio/workload/workload.proto",
        r#"
        istio.workload.Address  1 workload: oneof type: istio.workload.Workload
        istio.workload.Address  2 service: oneof type: istio.workload.Service

        istio.workload.Service  1 name: string
        istio.workload.Service  2 namespace: string
        istio.workload.Service  3 hostname: string
        istio.workload.Service  4 addresses: repeated istio.workload.NetworkAddress
        istio.workload.Service  5 ports: repeated istio.workload.Port
        istio.workload.Service  6 subject_alt_names: repeated string
        istio.workload.Service  7 waypoint: istio.workload.GatewayAddress
        istio.workload.Service  8 load_balancing: istio.workload.LoadBalancing
        istio.workload.Service  9 ip_families: istio.workload.IPFamilies
        istio.workload.Service 10 extensions: repeated istio.workload.Extension
        istio.workload.Service 11 canonical: bool
        istio.workload.Service 12 ingress_use_waypoint: bool
        istio.workload.Service 13 weighted_waypoints: repeated istio.workload.WeightedWaypoint
        istio.workload.Service 14 visibility: istio.workload.Service.Visibility
        istio.workload.Service.Visibility = 0 PUBLIC
        istio.workload.Service.Visibility = 1 NAMESPACE

        istio.workload.IPFamilies = 0 AUTOMATIC
        istio.workload.IPFamilies = 1 IPV4_ONLY
        istio.workload.IPFamilies = 2 IPV6_ONLY
        istio.workload.IPFamilies = 3 DUAL
        istio.workload.NetworkMode = 0 STANDARD
        istio.workload.NetworkMode = 1 HOST_NETWORK

        istio.workload.LoadBalancing  1 routing_preference: repeated istio.workload.LoadBalancing.Scope
        istio.workload.LoadBalancing  2 mode: istio.workload.LoadBalancing.Mode
        istio.workload.LoadBalancing  3 health_policy: istio.workload.LoadBalancing.HealthPolicy
        istio.workload.LoadBalancing.Scope = 0 UNSPECIFIED_SCOPE
        istio.workload.LoadBalancing.Scope = 1 REGION
        istio.workload.LoadBalancing.Scope = 2 ZONE
        istio.workload.LoadBalancing.Scope = 3 SUBZONE
        istio.workload.LoadBalancing.Scope = 4 NODE
        istio.workload.LoadBalancing.Scope = 5 CLUSTER
        istio.workload.LoadBalancing.Scope = 6 NETWORK
        istio.workload.LoadBalancing.Mode = 0 UNSPECIFIED_MODE
        istio.workload.LoadBalancing.Mode = 1 STRICT
        istio.workload.LoadBalancing.Mode = 2 FAILOVER
        istio.workload.LoadBalancing.Mode = 3 PASSTHROUGH
        istio.workload.LoadBalancing.HealthPolicy = 0 ONLY_HEALTHY
        istio.workload.LoadBalancing.HealthPolicy = 1 ALLOW_ALL

        istio.workload.Workload 20 uid: string
        istio.workload.Workload  1 name: string
        istio.workload.Workload  2 namespace: string
        istio.workload.Workload  3 addresses: repeated bytes
        istio.workload.Workload 21 hostname: string
        istio.workload.Workload  4 network: string
        istio.workload.Workload  5 tunnel_protocol: istio.workload.TunnelProtocol
        istio.workload.Workload  6 trust_domain: string
        istio.workload.Workload  7 service_account: string
        istio.workload.Workload  8 waypoint: istio.workload.GatewayAddress
        istio.workload.Workload 19 network_gateway: istio.workload.GatewayAddress
        istio.workload.Workload  9 node: string
        istio.workload.Workload 10 canonical_name: string
        istio.workload.Workload 11 canonical_revision: string
        istio.workload.Workload 12 workload_type: istio.workload.WorkloadType
        istio.workload.Workload 13 workload_name: string
        istio.workload.Workload 14 native_tunnel: bool
        istio.workload.Workload 23 application_tunnel: istio.workload.ApplicationTunnel
        istio.workload.Workload 22 services: map<string, istio.workload.PortList>
        istio.workload.Workload 16 authorization_policies: repeated string
        istio.workload.Workload 17 status: istio.workload.WorkloadStatus
        istio.workload.Workload 18 cluster_id: string
        istio.workload.Workload 24 locality: istio.workload.Locality
        istio.workload.Workload 25 network_mode: istio.workload.NetworkMode
        istio.workload.Workload 26 extensions: repeated istio.workload.Extension
        istio.workload.Workload 27 capacity: google.protobuf.UInt32Value
        istio.workload.Workload reserved 15..16

        istio.workload.Locality  1 region: string
        istio.workload.Locality  2 zone: string
        istio.workload.Locality  3 subzone: string

        istio.workload.WorkloadStatus = 0 HEALTHY
        istio.workload.WorkloadStatus = 1 UNHEALTHY
        istio.workload.WorkloadType = 0 DEPLOYMENT
        istio.workload.WorkloadType = 1 CRONJOB
        istio.workload.WorkloadType = 2 POD
        istio.workload.WorkloadType = 3 JOB

        istio.workload.PortList  1 ports: repeated istio.workload.Port
        istio.workload.Port  1 service_port: uint32
        istio.workload.Port  2 target_port: uint32
        istio.workload.Port  3 app_protocol: istio.workload.AppProtocol

        istio.workload.AppProtocol = 0 UNKNOWN
        istio.workload.AppProtocol = 1 HTTP11
        istio.workload.AppProtocol = 2 HTTP2
        istio.workload.AppProtocol = 3 GRPC
        istio.workload.AppProtocol = 4 TCP
        istio.workload.AppProtocol = 5 TLS
        istio.workload.TunnelProtocol = 0 NONE
        istio.workload.TunnelProtocol = 1 HBONE
        istio.workload.TunnelProtocol = 2 LEGACY_ISTIO_MTLS

        istio.workload.ApplicationTunnel  1 protocol: istio.workload.ApplicationTunnel.Protocol
        istio.workload.ApplicationTunnel  2 port: uint32
        istio.workload.ApplicationTunnel.Protocol = 0 NONE
        istio.workload.ApplicationTunnel.Protocol = 1 PROXY

        istio.workload.GatewayAddress  1 hostname: oneof destination: istio.workload.NamespacedHostname
        istio.workload.GatewayAddress  2 address: oneof destination: istio.workload.NetworkAddress
        istio.workload.GatewayAddress  3 hbone_mtls_port: uint32
        istio.workload.GatewayAddress reserved 4..5
        istio.workload.GatewayAddress reserved "hbone_single_tls_port"

        istio.workload.WeightedWaypoint  1 destination: istio.workload.GatewayAddress
        istio.workload.WeightedWaypoint  2 weight: uint32

        istio.workload.NetworkAddress  1 network: string
        istio.workload.NetworkAddress  2 address: bytes
        istio.workload.NetworkAddress  3 length: optional uint32

        istio.workload.NamespacedHostname  1 namespace: string
        istio.workload.NamespacedHostname  2 hostname: string

        istio.workload.Extension  1 name: string
        istio.workload.Extension  2 config: google.protobuf.Any
        "#,
    );
}

#[test]
fn authorization_schema() {
    assert_schema(
        "istio/security/authorization.proto",
        r#"
        istio.security.Authorization  1 name: string
        istio.security.Authorization  2 namespace: string
        istio.security.Authorization  3 scope: istio.security.Scope
        istio.security.Authorization  4 action: istio.security.Action
        istio.security.Authorization  5 rules: repeated istio.security.Rule
        istio.security.Authorization  6 dry_run: bool
        istio.security.Authorization  7 extensions: repeated istio.workload.Extension

        istio.security.Rule  1 clauses: repeated istio.security.Clause
        istio.security.Clause  2 matches: repeated istio.security.Match

        istio.security.Match  1 namespaces: repeated istio.security.StringMatch
        istio.security.Match  2 not_namespaces: repeated istio.security.StringMatch
        istio.security.Match  3 principals: repeated istio.security.StringMatch
        istio.security.Match  4 not_principals: repeated istio.security.StringMatch
        istio.security.Match  5 source_ips: repeated istio.security.Address
        istio.security.Match  6 not_source_ips: repeated istio.security.Address
        istio.security.Match  7 destination_ips: repeated istio.security.Address
        istio.security.Match  8 not_destination_ips: repeated istio.security.Address
        istio.security.Match  9 destination_ports: repeated uint32
        istio.security.Match 10 not_destination_ports: repeated uint32
        istio.security.Match 11 service_accounts: repeated istio.security.ServiceAccountMatch
        istio.security.Match 12 not_service_accounts: repeated istio.security.ServiceAccountMatch
        istio.security.Match 13 extensions: repeated istio.workload.Extension

        istio.security.Address  1 address: bytes
        istio.security.Address  2 length: uint32

        istio.security.ServiceAccountMatch  1 namespace: string
        istio.security.ServiceAccountMatch  2 serviceAccount: string

        istio.security.StringMatch  1 exact: oneof match_type: string
        istio.security.StringMatch  2 prefix: oneof match_type: string
        istio.security.StringMatch  3 suffix: oneof match_type: string
        istio.security.StringMatch  4 presence: oneof match_type: google.protobuf.Empty

        istio.security.Scope = 0 GLOBAL
        istio.security.Scope = 1 NAMESPACE
        istio.security.Scope = 2 WORKLOAD_SELECTOR
        istio.security.Action = 0 ALLOW
        istio.security.Action = 1 DENY
        "#,
    );
}

#[test]
fn citadel_schema() {
    assert_schema(
        "istio/v1/auth/ca.proto",
        r#"
        istio.v1.auth.IstioCertificateRequest  1 csr: string
        istio.v1.auth.IstioCertificateRequest  3 validity_duration: int64
        istio.v1.auth.IstioCertificateRequest  4 metadata: google.protobuf.Struct
        istio.v1.auth.IstioCertificateResponse  1 cert_chain: repeated string
        "#,
    );
    let f = file("istio/v1/auth/ca.proto");
    let svc = &f.service[0];
    assert_eq!(svc.name(), "IstioCertificateService");
    let m = &svc.method[0];
    assert_eq!(m.name(), "CreateCertificate");
    assert_eq!(m.input_type(), ".istio.v1.auth.IstioCertificateRequest");
    assert_eq!(m.output_type(), ".istio.v1.auth.IstioCertificateResponse");
    assert!(!m.client_streaming() && !m.server_streaming());
}

#[test]
fn rpc_status_schema() {
    assert_schema(
        "google/rpc/status.proto",
        r#"
        google.rpc.Status  1 code: int32
        google.rpc.Status  2 message: string
        google.rpc.Status  3 details: repeated google.protobuf.Any
        "#,
    );
}

#[test]
fn envoy_core_schema() {
    assert_schema(
        "envoy/type/v3/semantic_version.proto",
        r#"
        envoy.type.v3.SemanticVersion  1 major_number: uint32
        envoy.type.v3.SemanticVersion  2 minor_number: uint32
        envoy.type.v3.SemanticVersion  3 patch: uint32
        "#,
    );
    assert_schema(
        "envoy/config/core/v3/base.proto",
        r#"
        envoy.config.core.v3.Locality  1 region: string
        envoy.config.core.v3.Locality  2 zone: string
        envoy.config.core.v3.Locality  3 sub_zone: string
        envoy.config.core.v3.BuildVersion  1 version: envoy.type.v3.SemanticVersion
        envoy.config.core.v3.BuildVersion  2 metadata: google.protobuf.Struct
        envoy.config.core.v3.Extension  1 name: string
        envoy.config.core.v3.Extension  2 category: string
        envoy.config.core.v3.Extension  3 type_descriptor: string
        envoy.config.core.v3.Extension  4 version: envoy.config.core.v3.BuildVersion
        envoy.config.core.v3.Extension  5 disabled: bool
        envoy.config.core.v3.Node  1 id: string
        envoy.config.core.v3.Node  2 cluster: string
        envoy.config.core.v3.Node  3 metadata: google.protobuf.Struct
        envoy.config.core.v3.Node  4 locality: envoy.config.core.v3.Locality
        envoy.config.core.v3.Node  6 user_agent_name: string
        envoy.config.core.v3.Node  7 user_agent_version: oneof user_agent_version_type: string
        envoy.config.core.v3.Node  8 user_agent_build_version: oneof user_agent_version_type: envoy.config.core.v3.BuildVersion
        envoy.config.core.v3.Node  9 extensions: repeated envoy.config.core.v3.Extension
        envoy.config.core.v3.Node 10 client_features: repeated string
        envoy.config.core.v3.Node reserved 5..6
        envoy.config.core.v3.Node reserved "build_version"
        envoy.config.core.v3.Metadata  1 filter_metadata: map<string, google.protobuf.Struct>
        envoy.config.core.v3.ControlPlane  1 identifier: string
        envoy.config.core.v3.HeaderValue  1 key: string
        envoy.config.core.v3.HeaderValue  2 value: string
        envoy.config.core.v3.HeaderValue  3 raw_value: bytes
        envoy.config.core.v3.HeaderValueOption  1 header: envoy.config.core.v3.HeaderValue
        envoy.config.core.v3.HeaderValueOption  2 append: google.protobuf.BoolValue
        envoy.config.core.v3.HeaderValueOption  3 append_action: envoy.config.core.v3.HeaderValueOption.HeaderAppendAction
        envoy.config.core.v3.HeaderValueOption.HeaderAppendAction = 0 APPEND_IF_EXISTS_OR_ADD
        envoy.config.core.v3.HeaderValueOption.HeaderAppendAction = 1 ADD_IF_ABSENT
        envoy.config.core.v3.HeaderValueOption.HeaderAppendAction = 2 OVERWRITE_IF_EXISTS_OR_ADD
        envoy.config.core.v3.HeaderValueOption.HeaderAppendAction = 3 OVERWRITE_IF_EXISTS
        "#,
    );
    assert_schema(
        "envoy/config/core/v3/address.proto",
        r#"
        envoy.config.core.v3.Address  1 socket_address: oneof address: envoy.config.core.v3.SocketAddress
        envoy.config.core.v3.SocketAddress  1 protocol: envoy.config.core.v3.SocketAddress.Protocol
        envoy.config.core.v3.SocketAddress  2 address: string
        envoy.config.core.v3.SocketAddress  3 port_value: oneof port_specifier: uint32
        envoy.config.core.v3.SocketAddress  4 named_port: oneof port_specifier: string
        envoy.config.core.v3.SocketAddress.Protocol = 0 TCP
        envoy.config.core.v3.SocketAddress.Protocol = 1 UDP
        "#,
    );
    assert_schema(
        "envoy/type/v3/http_status.proto",
        r#"
        envoy.type.v3.HttpStatus  1 code: envoy.type.v3.StatusCode
        envoy.type.v3.StatusCode = 0 Empty
        envoy.type.v3.StatusCode = 100 Continue
        envoy.type.v3.StatusCode = 200 OK
        envoy.type.v3.StatusCode = 301 MovedPermanently
        envoy.type.v3.StatusCode = 302 Found
        envoy.type.v3.StatusCode = 400 BadRequest
        envoy.type.v3.StatusCode = 401 Unauthorized
        envoy.type.v3.StatusCode = 403 Forbidden
        envoy.type.v3.StatusCode = 404 NotFound
        envoy.type.v3.StatusCode = 429 TooManyRequests
        envoy.type.v3.StatusCode = 500 InternalServerError
        envoy.type.v3.StatusCode = 502 BadGateway
        envoy.type.v3.StatusCode = 503 ServiceUnavailable
        envoy.type.v3.StatusCode = 504 GatewayTimeout
        "#,
    );
}

#[test]
fn envoy_ext_authz_schema() {
    assert_schema(
        "envoy/service/auth/v3/attribute_context.proto",
        r#"
        envoy.service.auth.v3.AttributeContext  1 source: envoy.service.auth.v3.AttributeContext.Peer
        envoy.service.auth.v3.AttributeContext  2 destination: envoy.service.auth.v3.AttributeContext.Peer
        envoy.service.auth.v3.AttributeContext  4 request: envoy.service.auth.v3.AttributeContext.Request
        envoy.service.auth.v3.AttributeContext.HttpRequest  1 id: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  2 method: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  3 headers: map<string, string>
        envoy.service.auth.v3.AttributeContext.HttpRequest  4 path: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  5 host: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  6 scheme: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  7 query: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  8 fragment: string
        envoy.service.auth.v3.AttributeContext.HttpRequest  9 size: int64
        envoy.service.auth.v3.AttributeContext.HttpRequest 10 protocol: string
        envoy.service.auth.v3.AttributeContext.HttpRequest 11 body: string
        envoy.service.auth.v3.AttributeContext.HttpRequest 12 raw_body: bytes
        envoy.service.auth.v3.AttributeContext.Peer  1 address: envoy.config.core.v3.Address
        envoy.service.auth.v3.AttributeContext.Peer  2 service: string
        envoy.service.auth.v3.AttributeContext.Peer  4 principal: string
        envoy.service.auth.v3.AttributeContext.Request  1 time: google.protobuf.Timestamp
        envoy.service.auth.v3.AttributeContext.Request  2 http: envoy.service.auth.v3.AttributeContext.HttpRequest
        "#,
    );
    assert_schema(
        "envoy/service/auth/v3/external_auth.proto",
        r#"
        envoy.service.auth.v3.CheckRequest  1 attributes: envoy.service.auth.v3.AttributeContext
        envoy.service.auth.v3.CheckResponse  1 status: google.rpc.Status
        envoy.service.auth.v3.CheckResponse  2 denied_response: oneof http_response: envoy.service.auth.v3.DeniedHttpResponse
        envoy.service.auth.v3.CheckResponse  3 ok_response: oneof http_response: envoy.service.auth.v3.OkHttpResponse
        envoy.service.auth.v3.DeniedHttpResponse  1 status: envoy.type.v3.HttpStatus
        envoy.service.auth.v3.DeniedHttpResponse  2 headers: repeated envoy.config.core.v3.HeaderValueOption
        envoy.service.auth.v3.DeniedHttpResponse  3 body: string
        envoy.service.auth.v3.OkHttpResponse  2 headers: repeated envoy.config.core.v3.HeaderValueOption
        envoy.service.auth.v3.OkHttpResponse  5 headers_to_remove: repeated string
        envoy.service.auth.v3.OkHttpResponse  6 response_headers_to_add: repeated envoy.config.core.v3.HeaderValueOption
        "#,
    );
}

#[test]
fn envoy_discovery_schema() {
    assert_schema(
        "envoy/service/discovery/v3/discovery.proto",
        r#"
        envoy.service.discovery.v3.DiscoveryRequest  1 version_info: string
        envoy.service.discovery.v3.DiscoveryRequest  2 node: envoy.config.core.v3.Node
        envoy.service.discovery.v3.DiscoveryRequest  3 resource_names: repeated string
        envoy.service.discovery.v3.DiscoveryRequest  4 type_url: string
        envoy.service.discovery.v3.DiscoveryRequest  5 response_nonce: string
        envoy.service.discovery.v3.DiscoveryRequest  6 error_detail: google.rpc.Status

        envoy.service.discovery.v3.DiscoveryResponse  1 version_info: string
        envoy.service.discovery.v3.DiscoveryResponse  2 resources: repeated google.protobuf.Any
        envoy.service.discovery.v3.DiscoveryResponse  3 canary: bool
        envoy.service.discovery.v3.DiscoveryResponse  4 type_url: string
        envoy.service.discovery.v3.DiscoveryResponse  5 nonce: string
        envoy.service.discovery.v3.DiscoveryResponse  6 control_plane: envoy.config.core.v3.ControlPlane

        envoy.service.discovery.v3.DeltaDiscoveryRequest  1 node: envoy.config.core.v3.Node
        envoy.service.discovery.v3.DeltaDiscoveryRequest  2 type_url: string
        envoy.service.discovery.v3.DeltaDiscoveryRequest  3 resource_names_subscribe: repeated string
        envoy.service.discovery.v3.DeltaDiscoveryRequest  4 resource_names_unsubscribe: repeated string
        envoy.service.discovery.v3.DeltaDiscoveryRequest  5 initial_resource_versions: map<string, string>
        envoy.service.discovery.v3.DeltaDiscoveryRequest  6 response_nonce: string
        envoy.service.discovery.v3.DeltaDiscoveryRequest  7 error_detail: google.rpc.Status

        envoy.service.discovery.v3.DeltaDiscoveryResponse  1 system_version_info: string
        envoy.service.discovery.v3.DeltaDiscoveryResponse  2 resources: repeated envoy.service.discovery.v3.Resource
        envoy.service.discovery.v3.DeltaDiscoveryResponse  4 type_url: string
        envoy.service.discovery.v3.DeltaDiscoveryResponse  5 nonce: string
        envoy.service.discovery.v3.DeltaDiscoveryResponse  6 removed_resources: repeated string
        envoy.service.discovery.v3.DeltaDiscoveryResponse  7 control_plane: envoy.config.core.v3.ControlPlane

        envoy.service.discovery.v3.Resource  1 version: string
        envoy.service.discovery.v3.Resource  2 resource: google.protobuf.Any
        envoy.service.discovery.v3.Resource  3 name: string
        envoy.service.discovery.v3.Resource  4 aliases: repeated string
        envoy.service.discovery.v3.Resource  6 ttl: google.protobuf.Duration
        envoy.service.discovery.v3.Resource  7 cache_control: envoy.service.discovery.v3.Resource.CacheControl
        envoy.service.discovery.v3.Resource  9 metadata: envoy.config.core.v3.Metadata
        envoy.service.discovery.v3.Resource.CacheControl  1 do_not_cache: bool
        "#,
    );
    let f = file("envoy/service/discovery/v3/discovery.proto");
    let svc = &f.service[0];
    assert_eq!(svc.name(), "AggregatedDiscoveryService");
    let methods: Vec<_> = svc
        .method
        .iter()
        .map(|m| {
            (
                m.name(),
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            (
                "StreamAggregatedResources",
                ".envoy.service.discovery.v3.DiscoveryRequest",
                ".envoy.service.discovery.v3.DiscoveryResponse",
                true,
                true
            ),
            (
                "DeltaAggregatedResources",
                ".envoy.service.discovery.v3.DeltaDiscoveryRequest",
                ".envoy.service.discovery.v3.DeltaDiscoveryResponse",
                true,
                true
            ),
        ]
    );
}

#[test]
fn grpc_paths() {
    // The generated services route by these paths (docs/protocol.md 4.1, 5).
    assert_eq!(
        proto::discovery::aggregated_discovery_service_server::SERVICE_NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    assert_eq!(
        proto::citadel::istio_certificate_service_server::SERVICE_NAME,
        "istio.v1.auth.IstioCertificateService"
    );
}

#[test]
fn schema_check_detects_a_renumbered_field() {
    // The checker itself must be able to fail.
    let result = std::panic::catch_unwind(|| {
        assert_schema(
            "google/rpc/status.proto",
            r#"
            google.rpc.Status  1 code: int32
            google.rpc.Status  3 message: string
            google.rpc.Status  3 details: repeated google.protobuf.Any
            "#,
        );
    });
    assert!(result.is_err());
}
