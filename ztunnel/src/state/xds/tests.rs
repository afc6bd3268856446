use std::path::Path;

use proto::workload::gateway_address::Destination;

use super::*;
use crate::state::local::LocalConfig;

const CART: &str = "demo//Pod/shop/cart-0";
const CART_SVC: &str = "shop/cart.shop.svc.cluster.local";

fn v4(a: [u8; 4]) -> Vec<u8> {
    a.to_vec()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ip_bytes(s: &str) -> Vec<u8> {
    match ip(s) {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn port(service_port: u32, target_port: u32) -> xwl::Port {
    xwl::Port {
        service_port,
        target_port,
        ..Default::default()
    }
}

fn gateway_host(ns: &str, host: &str) -> xwl::GatewayAddress {
    xwl::GatewayAddress {
        destination: Some(Destination::Hostname(xwl::NamespacedHostname {
            namespace: ns.into(),
            hostname: host.into(),
        })),
        hbone_mtls_port: 15008,
    }
}

fn gateway_ip(addr: &str) -> xwl::GatewayAddress {
    xwl::GatewayAddress {
        destination: Some(Destination::Address(xwl::NetworkAddress {
            network: "net".into(),
            address: ip_bytes(addr),
            length: None,
        })),
        hbone_mtls_port: 15008,
    }
}

/// A workload with every field set to a valid, non-default value.
fn full_workload() -> xwl::Workload {
    xwl::Workload {
        uid: CART.into(),
        name: "cart-0".into(),
        namespace: "shop".into(),
        addresses: vec![v4([10, 1, 0, 11]), ip_bytes("fd00::11")],
        hostname: String::new(),
        network: "net".into(),
        tunnel_protocol: xwl::TunnelProtocol::Hbone as i32,
        trust_domain: "td.example".into(),
        service_account: "cart".into(),
        waypoint: Some(gateway_host("shop", "waypoint.shop.svc.cluster.local")),
        network_gateway: Some(gateway_ip("192.0.2.1")),
        node: "node-a".into(),
        canonical_name: "cart".into(),
        canonical_revision: "v1".into(),
        workload_type: xwl::WorkloadType::Pod as i32,
        workload_name: "cart".into(),
        native_tunnel: true,
        application_tunnel: Some(xwl::ApplicationTunnel {
            protocol: xwl::application_tunnel::Protocol::Proxy as i32,
            port: 15088,
        }),
        services: [(
            CART_SVC.to_string(),
            xwl::PortList {
                ports: vec![port(8080, 9090), port(80, 0)],
            },
        )]
        .into(),
        authorization_policies: vec!["shop/allow-frontend".into()],
        status: xwl::WorkloadStatus::Unhealthy as i32,
        cluster_id: "Kubernetes".into(),
        locality: Some(xwl::Locality {
            region: "r".into(),
            zone: "z".into(),
            subzone: "s".into(),
        }),
        network_mode: xwl::NetworkMode::Standard as i32,
        extensions: vec![],
        capacity: Some(2),
    }
}

fn full_service() -> xwl::Service {
    xwl::Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        addresses: vec![
            xwl::NetworkAddress {
                network: String::new(),
                address: v4([10, 96, 0, 20]),
                length: None,
            },
            xwl::NetworkAddress {
                network: "west".into(),
                address: ip_bytes("fd00::20"),
                length: Some(128),
            },
            // A CIDR VIP: accepted, not indexed.
            xwl::NetworkAddress {
                network: String::new(),
                address: v4([10, 97, 0, 0]),
                length: Some(16),
            },
        ],
        ports: vec![port(8080, 9090), port(443, 0)],
        subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/cart".into()],
        waypoint: Some(gateway_ip("10.96.0.99")),
        load_balancing: Some(xwl::LoadBalancing {
            routing_preference: vec![
                xwl::load_balancing::Scope::Network as i32,
                xwl::load_balancing::Scope::Zone as i32,
            ],
            mode: xwl::load_balancing::Mode::Failover as i32,
            health_policy: xwl::load_balancing::HealthPolicy::AllowAll as i32,
        }),
        ip_families: xwl::IpFamilies::Dual as i32,
        extensions: vec![],
        canonical: true,
        ingress_use_waypoint: false,
        weighted_waypoints: vec![xwl::WeightedWaypoint {
            destination: Some(gateway_host("shop", "wp2.shop.svc.cluster.local")),
            weight: 3,
        }],
        visibility: xwl::service::Visibility::Namespace as i32,
    }
}

fn exact(s: &str) -> xsec::StringMatch {
    xsec::StringMatch {
        match_type: Some(xsec::string_match::MatchType::Exact(s.into())),
    }
}

fn net(addr: &str, length: u32) -> xsec::Address {
    xsec::Address {
        address: ip_bytes(addr),
        length,
    }
}

fn sa(ns: &str, name: &str) -> xsec::ServiceAccountMatch {
    xsec::ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    }
}

/// A policy whose one match sets every field.
fn full_policy() -> xsec::Authorization {
    use xsec::string_match::MatchType;
    let m = xsec::Match {
        namespaces: vec![exact("shop")],
        not_namespaces: vec![xsec::StringMatch {
            match_type: Some(MatchType::Prefix("kube-".into())),
        }],
        principals: vec![xsec::StringMatch {
            match_type: Some(MatchType::Suffix("/sa/frontend".into())),
        }],
        not_principals: vec![xsec::StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        source_ips: vec![net("10.1.0.0", 16), net("fd00::", 64)],
        not_source_ips: vec![net("10.1.2.3", 32)],
        destination_ips: vec![net("10.96.0.20", 32)],
        not_destination_ips: vec![net("::", 0)],
        destination_ports: vec![9090, 65535],
        not_destination_ports: vec![0],
        service_accounts: vec![sa("shop", "frontend")],
        not_service_accounts: vec![sa("shop", "batch")],
        extensions: vec![],
    };
    xsec::Authorization {
        name: "allow-frontend".into(),
        namespace: "shop".into(),
        scope: xsec::Scope::WorkloadSelector as i32,
        action: xsec::Action::Deny as i32,
        rules: vec![xsec::Rule {
            clauses: vec![xsec::Clause { matches: vec![m] }],
        }],
        dry_run: true,
        extensions: vec![],
    }
}

fn wl(w: xwl::Workload) -> xwl::Address {
    xwl::Address {
        r#type: Some(xwl::address::Type::Workload(w)),
    }
}

fn svc(s: xwl::Service) -> xwl::Address {
    xwl::Address {
        r#type: Some(xwl::address::Type::Service(s)),
    }
}

/// The field an error names.
fn field_of(e: &XdsError) -> &str {
    match e {
        XdsError::Field { field, .. }
        | XdsError::UnknownEnum { field, .. }
        | XdsError::Identity { field, .. } => field,
        XdsError::Name { .. } => "<name>",
        XdsError::Decode { .. } => "<decode>",
    }
}

#[test]
fn workload_fields_map() {
    let w = Workload::try_from(&full_workload()).unwrap();
    let want = Workload {
        uid: CART.into(),
        name: "cart-0".into(),
        namespace: "shop".into(),
        service_account: "cart".into(),
        trust_domain: "td.example".into(),
        ips: vec![ip("10.1.0.11"), ip("fd00::11")],
        protocol: Protocol::Hbone,
        healthy: false,
        node: "node-a".into(),
        workload_name: "cart".into(),
        canonical_name: "cart".into(),
        canonical_revision: "v1".into(),
        cluster_id: "Kubernetes".into(),
        locality: Locality {
            region: "r".into(),
            zone: "z".into(),
            subzone: "s".into(),
        },
        services: [(CART_SVC.to_string(), [(8080, 9090), (80, 0)].into())].into(),
        authorization_policies: vec!["shop/allow-frontend".into()],
        waypoint: Some(GatewayRef {
            destination: GatewayDestination::Hostname {
                namespace: "shop".into(),
                hostname: "waypoint.shop.svc.cluster.local".into(),
            },
            hbone_mtls_port: 15008,
        }),
    };
    assert_eq!(w, want);
    assert_eq!(
        w.identity().unwrap().to_string(),
        "spiffe://td.example/ns/shop/sa/cart"
    );
}

#[test]
fn workload_defaults_follow_local_config() {
    let w = Workload::try_from(&xwl::Workload {
        uid: "u".into(),
        namespace: "ns".into(),
        addresses: vec![v4([10, 0, 0, 1])],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.service_account, "default");
    assert_eq!(w.protocol, Protocol::Tcp);
    assert!(w.healthy);
    assert_eq!(w.locality, Locality::default());
    // A hostname stands in for addresses (DNS-resolved ServiceEntry endpoints).
    let w = Workload::try_from(&xwl::Workload {
        uid: "u".into(),
        namespace: "ns".into(),
        hostname: "db.example.com".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(w.ips.is_empty());
}

type WorkloadEdit = fn(&mut xwl::Workload);

#[test]
fn workload_rejections_name_their_field() {
    let cases: Vec<(WorkloadEdit, &str)> = vec![
        (|w| w.uid.clear(), "uid"),
        (|w| w.namespace.clear(), "namespace"),
        (|w| w.addresses[1] = vec![1, 2, 3, 4, 5], "addresses[1]"),
        (|w| w.addresses[0].clear(), "addresses[0]"),
        (|w| w.addresses.clear(), "addresses"),
        (|w| w.tunnel_protocol = 2, "tunnel_protocol"),
        (|w| w.tunnel_protocol = 9, "tunnel_protocol"),
        (|w| w.tunnel_protocol = -1, "tunnel_protocol"),
        (|w| w.service_account = "a b".into(), "service_account"),
        (|w| w.trust_domain = "td/x".into(), "trust_domain"),
        (|w| w.namespace = "a:b".into(), "namespace"),
        (|w| w.status = 2, "status"),
        (|w| w.network_mode = 2, "network_mode"),
        (|w| w.workload_type = 4, "workload_type"),
        (
            |w| w.application_tunnel.as_mut().unwrap().protocol = 2,
            "application_tunnel.protocol",
        ),
        (
            |w| w.application_tunnel.as_mut().unwrap().port = 65536,
            "application_tunnel.port",
        ),
        (
            |w| w.waypoint.as_mut().unwrap().destination = None,
            "waypoint.destination",
        ),
        (
            |w| w.waypoint.as_mut().unwrap().hbone_mtls_port = 70000,
            "waypoint.hbone_mtls_port",
        ),
        (
            |w| w.waypoint = Some(gateway_host("", "wp")),
            "waypoint.destination.hostname.namespace",
        ),
        (
            |w| w.waypoint = Some(gateway_host("ns", "")),
            "waypoint.destination.hostname.hostname",
        ),
        (
            |w| {
                if let Some(Destination::Address(a)) =
                    &mut w.network_gateway.as_mut().unwrap().destination
                {
                    a.address = vec![1, 2, 3];
                }
            },
            "network_gateway.destination.address.address",
        ),
        (
            |w| {
                w.services
                    .insert("no-slash".into(), xwl::PortList::default());
            },
            "services[\"no-slash\"]",
        ),
        (
            |w| {
                w.services.insert("/host".into(), xwl::PortList::default());
            },
            "services[\"/host\"]",
        ),
        (
            |w| w.services.get_mut(CART_SVC).unwrap().ports[0].service_port = 65536,
            "services[\"shop/cart.shop.svc.cluster.local\"].ports[0].service_port",
        ),
        (
            |w| w.services.get_mut(CART_SVC).unwrap().ports[0].target_port = u32::MAX,
            "services[\"shop/cart.shop.svc.cluster.local\"].ports[0].target_port",
        ),
        (
            |w| w.services.get_mut(CART_SVC).unwrap().ports[0].app_protocol = 6,
            "services[\"shop/cart.shop.svc.cluster.local\"].ports[0].app_protocol",
        ),
    ];
    for (edit, field) in cases {
        let mut w = full_workload();
        edit(&mut w);
        let err = Workload::try_from(&w).unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
        let shown = err.to_string();
        assert!(
            shown.contains(field) && shown.starts_with("workload "),
            "{shown}"
        );
    }
}

#[test]
fn service_fields_map() {
    let s = Service::try_from(&full_service()).unwrap();
    let want = Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        vips: vec![
            (String::new(), ip("10.96.0.20")),
            ("west".into(), ip("fd00::20")),
        ],
        ports: [(8080, 9090), (443, 0)].into(),
        subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap()],
        waypoint: Some(GatewayRef {
            destination: GatewayDestination::Address {
                network: "net".into(),
                ip: ip("10.96.0.99"),
            },
            hbone_mtls_port: 15008,
        }),
    };
    assert_eq!(s, want);
    assert_eq!(s.key(), CART_SVC);
}

type ServiceEdit = fn(&mut xwl::Service);

#[test]
fn service_rejections_name_their_field() {
    let cases: Vec<(ServiceEdit, &str)> = vec![
        (|s| s.namespace.clear(), "namespace"),
        (|s| s.hostname.clear(), "hostname"),
        (
            |s| s.addresses[0].address = vec![0; 5],
            "addresses[0].address",
        ),
        (|s| s.addresses[0].length = Some(33), "addresses[0].length"),
        (|s| s.addresses[1].length = Some(129), "addresses[1].length"),
        (|s| s.ports[1].service_port = 65536, "ports[1].service_port"),
        (|s| s.ports[0].target_port = 1 << 20, "ports[0].target_port"),
        (|s| s.ports[0].app_protocol = -3, "ports[0].app_protocol"),
        (
            |s| s.subject_alt_names.push("cart.shop".into()),
            "subject_alt_names[1]",
        ),
        (
            |s| s.waypoint.as_mut().unwrap().destination = None,
            "waypoint.destination",
        ),
        (
            |s| s.weighted_waypoints[0].destination = None,
            "weighted_waypoints[0].destination",
        ),
        (
            |s| s.weighted_waypoints[0].destination = Some(gateway_host("", "x")),
            "weighted_waypoints[0].destination.destination.hostname.namespace",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().routing_preference[1] = 42,
            "load_balancing.routing_preference[1]",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().mode = 4,
            "load_balancing.mode",
        ),
        (
            |s| s.load_balancing.as_mut().unwrap().health_policy = 2,
            "load_balancing.health_policy",
        ),
        (|s| s.ip_families = 4, "ip_families"),
        (|s| s.visibility = 2, "visibility"),
    ];
    for (edit, field) in cases {
        let mut s = full_service();
        edit(&mut s);
        let err = Service::try_from(&s).unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
        assert!(err.to_string().starts_with("service "), "{err}");
    }
}

#[test]
fn policy_fields_map() {
    let p = policy_from_proto(&full_policy()).unwrap();
    let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>();
    let account = |ns: &str, name: &str| authz::ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    };
    let want = authz::Policy {
        name: "allow-frontend".into(),
        namespace: "shop".into(),
        scope: authz::Scope::WorkloadSelector,
        action: authz::Action::Deny,
        dry_run: true,
        rules: vec![authz::Rule {
            clauses: vec![authz::Clause {
                matches: vec![authz::Match {
                    namespaces: vec![authz::StringMatch::Exact("shop".into())],
                    not_namespaces: vec![authz::StringMatch::Prefix("kube-".into())],
                    principals: vec![authz::StringMatch::Suffix("/sa/frontend".into())],
                    not_principals: vec![authz::StringMatch::Presence],
                    source_ips: nets(&["10.1.0.0/16", "fd00::/64"]),
                    not_source_ips: nets(&["10.1.2.3/32"]),
                    destination_ips: nets(&["10.96.0.20/32"]),
                    not_destination_ips: nets(&["::/0"]),
                    destination_ports: vec![9090, 65535],
                    not_destination_ports: vec![0],
                    service_accounts: vec![account("shop", "frontend")],
                    not_service_accounts: vec![account("shop", "batch")],
                }],
            }],
        }],
    };
    assert_eq!(p, want);
    let cases = [
        (0, 0, authz::Scope::Global, authz::Action::Allow),
        (1, 1, authz::Scope::Namespace, authz::Action::Deny),
        (2, 0, authz::Scope::WorkloadSelector, authz::Action::Allow),
    ];
    for (scope, action, want_scope, want_action) in cases {
        let p = policy_from_proto(&xsec::Authorization {
            scope,
            action,
            ..full_policy()
        })
        .unwrap();
        assert_eq!((p.scope, p.action), (want_scope, want_action));
    }
}

type PolicyEdit = fn(&mut xsec::Authorization);

fn first_match(p: &mut xsec::Authorization) -> &mut xsec::Match {
    &mut p.rules[0].clauses[0].matches[0]
}

#[test]
fn policy_rejections_name_their_field() {
    let at = "rules[0].clauses[0].matches[0]";
    let cases: Vec<(PolicyEdit, String)> = vec![
        (|p| p.name.clear(), "name".into()),
        (|p| p.namespace.clear(), "namespace".into()),
        (|p| p.scope = 3, "scope".into()),
        (|p| p.action = 2, "action".into()),
        (
            |p| first_match(p).principals[0].match_type = None,
            format!("{at}.principals[0]"),
        ),
        (
            |p| {
                first_match(p)
                    .not_namespaces
                    .push(xsec::StringMatch::default())
            },
            format!("{at}.not_namespaces[1]"),
        ),
        (
            |p| first_match(p).source_ips[1].address = vec![1, 2, 3],
            format!("{at}.source_ips[1].address"),
        ),
        (
            |p| first_match(p).not_source_ips[0].length = 33,
            format!("{at}.not_source_ips[0].length"),
        ),
        (
            |p| first_match(p).destination_ips.push(net("fd00::", 129)),
            format!("{at}.destination_ips[1].length"),
        ),
        (
            |p| first_match(p).not_destination_ips[0].address.clear(),
            format!("{at}.not_destination_ips[0].address"),
        ),
        (
            |p| first_match(p).destination_ports[1] = 65536,
            format!("{at}.destination_ports[1]"),
        ),
        (
            |p| first_match(p).not_destination_ports[0] = u32::MAX,
            format!("{at}.not_destination_ports[0]"),
        ),
        (
            |p| first_match(p).service_accounts[0].namespace.clear(),
            format!("{at}.service_accounts[0].namespace"),
        ),
        (
            |p| {
                first_match(p).not_service_accounts[0]
                    .service_account
                    .clear()
            },
            format!("{at}.not_service_accounts[0].serviceAccount"),
        ),
        (
            |p| {
                p.rules.push(xsec::Rule {
                    clauses: vec![
                        xsec::Clause::default(),
                        xsec::Clause {
                            matches: vec![xsec::Match {
                                namespaces: vec![xsec::StringMatch::default()],
                                ..Default::default()
                            }],
                        },
                    ],
                })
            },
            "rules[1].clauses[1].matches[0].namespaces[0]".into(),
        ),
    ];
    for (edit, field) in cases {
        let mut p = full_policy();
        edit(&mut p);
        let err = policy_from_proto(&p).unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
        assert!(
            err.to_string().starts_with("policy shop/allow-frontend")
                || field == "name"
                || field == "namespace",
            "{err}"
        );
    }
}

#[test]
fn boundary_values() {
    for len in 0..=20 {
        let mut w = full_workload();
        w.addresses = vec![vec![1; len]];
        assert_eq!(
            Workload::try_from(&w).is_ok(),
            len == 4 || len == 16,
            "{len}"
        );
    }
    for (addr, width) in [("10.0.0.0", 32), ("fd00::", 128)] {
        for length in 0..=width + 2 {
            let mut p = full_policy();
            first_match(&mut p).source_ips = vec![net(addr, length)];
            assert_eq!(
                policy_from_proto(&p).is_ok(),
                length <= width,
                "{addr}/{length}"
            );
        }
    }
    for (value, ok) in [(0, true), (65535, true), (65536, false), (u32::MAX, false)] {
        let mut s = full_service();
        s.ports = vec![port(value, value)];
        assert_eq!(Service::try_from(&s).is_ok(), ok, "{value}");
    }
    // Every enum value of every enum field: known values pass, the rest are rejected.
    for v in -2..=8 {
        let mut w = full_workload();
        w.status = v;
        assert_eq!(Workload::try_from(&w).is_ok(), (0..=1).contains(&v));
        let mut w = full_workload();
        w.workload_type = v;
        assert_eq!(Workload::try_from(&w).is_ok(), (0..=3).contains(&v));
        let mut s = full_service();
        s.load_balancing.as_mut().unwrap().routing_preference = vec![v];
        assert_eq!(Service::try_from(&s).is_ok(), (0..=6).contains(&v));
        let mut s = full_service();
        s.ip_families = v;
        assert_eq!(Service::try_from(&s).is_ok(), (0..=3).contains(&v));
    }
}

#[test]
fn resource_names_must_match_content_keys() {
    let mut state = XdsState::new();
    let rejected = state.apply_addresses(
        &[
            ("other-uid".into(), wl(full_workload())),
            ("shop/cart".into(), svc(full_service())),
            ("empty".into(), xwl::Address { r#type: None }),
        ],
        &[],
    );
    let fields: Vec<(&str, &str)> = rejected
        .iter()
        .map(|(n, e)| (n.as_str(), field_of(e)))
        .collect();
    assert_eq!(
        fields,
        [
            ("other-uid", "<name>"),
            ("shop/cart", "<name>"),
            ("empty", "type")
        ]
    );
    assert_eq!(state.counts(), (0, 0, 0));
    let rejected = state.apply_authorizations(&[("shop/other".into(), full_policy())], &[]);
    assert!(matches!(rejected[0].1, XdsError::Name { .. }));
    assert!(state.policy("shop/other").is_none());
}

#[test]
fn a_bad_resource_leaves_its_previous_version() {
    let mut state = XdsState::new();
    let good = [
        (CART.to_string(), wl(full_workload())),
        (CART_SVC.to_string(), svc(full_service())),
    ];
    assert!(state.apply_addresses(&good, &[]).is_empty());
    assert!(
        state
            .apply_authorizations(&[("shop/allow-frontend".into(), full_policy())], &[])
            .is_empty()
    );

    let mut bad_w = full_workload();
    bad_w.tunnel_protocol = 2;
    let mut bad_s = full_service();
    bad_s.ports[0].service_port = 1 << 17;
    let other = xwl::Workload {
        uid: "other".into(),
        namespace: "shop".into(),
        addresses: vec![v4([10, 1, 0, 99])],
        ..Default::default()
    };
    let rejected = state.apply_addresses(
        &[
            (CART.to_string(), wl(bad_w)),
            ("other".into(), wl(other)),
            (CART_SVC.to_string(), svc(bad_s)),
        ],
        &[],
    );
    let names: Vec<&str> = rejected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [CART, CART_SVC]);
    assert_eq!(
        state.workload(CART).unwrap(),
        &Workload::try_from(&full_workload()).unwrap()
    );
    assert_eq!(
        state.service(CART_SVC).unwrap(),
        &Service::try_from(&full_service()).unwrap()
    );
    assert!(state.workload("other").is_some());

    let mut bad_p = full_policy();
    bad_p.action = 5;
    let rejected = state.apply_authorizations(&[("shop/allow-frontend".into(), bad_p)], &[]);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        state.policy("shop/allow-frontend").unwrap(),
        &policy_from_proto(&full_policy()).unwrap()
    );
}

#[test]
fn removal() {
    let mut state = XdsState::new();
    state.apply_addresses(
        &[
            (CART.to_string(), wl(full_workload())),
            (CART_SVC.to_string(), svc(full_service())),
        ],
        &[],
    );
    state.apply_authorizations(&[("shop/allow-frontend".into(), full_policy())], &[]);
    assert_eq!(state.counts(), (1, 1, 1));
    // Unknown names are fine; a name is removed whichever kind it was.
    assert!(
        state
            .apply_addresses(&[], &[CART_SVC.into(), "unknown".into()])
            .is_empty()
    );
    assert_eq!(state.counts(), (1, 0, 1));
    state.apply_addresses(&[], &[CART.into()]);
    assert_eq!(state.counts(), (0, 0, 1));
    assert!(
        state
            .apply_authorizations(&[], &["shop/allow-frontend".into(), "x/y".into()])
            .is_empty()
    );
    assert_eq!(state.counts(), (0, 0, 0));
    // Removed and re-added in one delta: removals apply first, so it stays.
    state.apply_addresses(&[(CART.to_string(), wl(full_workload()))], &[CART.into()]);
    assert!(state.workload(CART).is_some());
}

#[test]
fn to_state_indexes_workloads_services_and_policies() {
    let build = |reverse: bool| {
        let mut resources = vec![
            (CART.to_string(), wl(full_workload())),
            (
                "w2".to_string(),
                wl(xwl::Workload {
                    uid: "w2".into(),
                    namespace: "shop".into(),
                    // Shares an address with the cart: the index must not depend on order.
                    addresses: vec![v4([10, 1, 0, 11])],
                    ..Default::default()
                }),
            ),
            (CART_SVC.to_string(), svc(full_service())),
        ];
        if reverse {
            resources.reverse();
        }
        let mut state = XdsState::new();
        assert!(state.apply_addresses(&resources, &[]).is_empty());
        state.apply_authorizations(&[("shop/allow-frontend".into(), full_policy())], &[]);
        state.to_state()
    };
    let (a, b) = (build(false), build(true));
    let uids = |s: &State| {
        s.workloads()
            .iter()
            .map(|w| w.uid.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(uids(&a), uids(&b));
    assert_eq!(
        a.workload_by_ip(ip("10.1.0.11")).map(|w| &w.uid),
        b.workload_by_ip(ip("10.1.0.11")).map(|w| &w.uid)
    );
    assert_eq!(a.workload_by_ip(ip("fd00::11")).unwrap().uid, CART);
    let s = a.service_by_vip(ip("10.96.0.20")).unwrap();
    assert_eq!(s.key(), CART_SVC);
    assert_eq!(a.service_by_vip(ip("fd00::20")).unwrap().key(), CART_SVC);
    assert!(a.service_by_vip(ip("10.97.0.0")).is_none());
    assert_eq!(a.endpoints(s).len(), 1);
    assert!(a.policies().get("shop/allow-frontend").is_some());
}

/// protocol.md section 6's example, as YAML and as the resources istiod would send for it.
const EXAMPLE_YAML: &str = r#"
workloads:
- uid: demo//Pod/shop/cart-0
  name: cart-0
  namespace: shop
  serviceAccount: cart
  workloadIps: ["10.1.0.11"]
  protocol: HBONE
  node: node-a
  canonicalName: cart
  canonicalRevision: v1
  services:
    "shop/cart.shop.svc.cluster.local":
      8080: 9090
- uid: demo//Pod/shop/legacy-0
  name: legacy-0
  namespace: shop
  workloadIps: ["10.1.0.12"]
  protocol: TCP
  node: node-b
services:
- name: cart
  namespace: shop
  hostname: cart.shop.svc.cluster.local
  vips: ["/10.96.0.20"]
  ports:
    8080: 9090
policies:
- name: cart-from-frontend
  namespace: shop
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/shop/sa/frontend
"#;

#[test]
fn example_config_gives_the_same_state_as_local_yaml() {
    let local = LocalConfig::parse(Path::new("example.yaml"), EXAMPLE_YAML).unwrap();

    let cart = xwl::Workload {
        uid: CART.into(),
        name: "cart-0".into(),
        namespace: "shop".into(),
        service_account: "cart".into(),
        addresses: vec![v4([10, 1, 0, 11])],
        tunnel_protocol: xwl::TunnelProtocol::Hbone as i32,
        node: "node-a".into(),
        canonical_name: "cart".into(),
        canonical_revision: "v1".into(),
        services: [(
            CART_SVC.to_string(),
            xwl::PortList {
                ports: vec![port(8080, 9090)],
            },
        )]
        .into(),
        ..Default::default()
    };
    let legacy = xwl::Workload {
        uid: "demo//Pod/shop/legacy-0".into(),
        name: "legacy-0".into(),
        namespace: "shop".into(),
        addresses: vec![v4([10, 1, 0, 12])],
        node: "node-b".into(),
        ..Default::default()
    };
    let service = xwl::Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        addresses: vec![xwl::NetworkAddress {
            network: String::new(),
            address: v4([10, 96, 0, 20]),
            length: None,
        }],
        ports: vec![port(8080, 9090)],
        ..Default::default()
    };
    let policy = xsec::Authorization {
        name: "cart-from-frontend".into(),
        namespace: "shop".into(),
        scope: xsec::Scope::Namespace as i32,
        action: xsec::Action::Allow as i32,
        rules: vec![xsec::Rule {
            clauses: vec![xsec::Clause {
                matches: vec![xsec::Match {
                    principals: vec![exact("cluster.local/ns/shop/sa/frontend")],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    };
    let mut xds = XdsState::new();
    assert!(
        xds.apply_addresses(
            &[
                (legacy.uid.clone(), wl(legacy)),
                (CART.into(), wl(cart)),
                (CART_SVC.into(), svc(service)),
            ],
            &[],
        )
        .is_empty()
    );
    assert!(
        xds.apply_authorizations(&[("shop/cart-from-frontend".into(), policy)], &[])
            .is_empty()
    );
    let from_xds = xds.to_state();

    let workloads = |s: &State| {
        let mut v: Vec<Workload> = s.workloads().iter().map(|w| (**w).clone()).collect();
        v.sort_by(|a, b| a.uid.cmp(&b.uid));
        v
    };
    let services = |s: &State| {
        let mut v: Vec<Service> = s.services().map(|s| (**s).clone()).collect();
        v.sort_by_key(|s| s.key());
        v
    };
    let policies = |s: &State| {
        let mut v: Vec<authz::Policy> = s.policies().iter().cloned().collect();
        v.sort_by_key(|p| p.key());
        v
    };
    assert_eq!(workloads(&from_xds), workloads(&local));
    assert_eq!(services(&from_xds), services(&local));
    assert_eq!(policies(&from_xds), policies(&local));
    assert_eq!(workloads(&local).len(), 2);
    assert_eq!(policies(&local).len(), 1);
    for addr in ["10.1.0.11", "10.1.0.12"] {
        assert_eq!(
            from_xds.workload_by_ip(ip(addr)),
            local.workload_by_ip(ip(addr)),
            "{addr}"
        );
    }
}

/// Both `GatewayAddress` forms, through xDS and through the local config's YAML shape.
#[test]
fn waypoints_read_the_same_from_xds_and_local_yaml() {
    let yaml = r#"
workloads:
- uid: demo//Pod/shop/cart-0
  name: cart-0
  namespace: shop
  workloadIps: ["10.1.0.11"]
  waypoint:
    destination: shop/waypoint.shop.svc.cluster.local
    hboneMtlsPort: 15008
- uid: demo//Pod/shop/reviews-0
  name: reviews-0
  namespace: shop
  workloadIps: ["10.1.0.12"]
  waypoint: {destination: "west/fd00::10"}
services:
- name: cart
  namespace: shop
  hostname: cart.shop.svc.cluster.local
  vips: ["/10.96.0.20"]
  waypoint: {destination: "/10.1.0.10", hboneMtlsPort: 15018}
"#;
    let local = LocalConfig::parse(Path::new("waypoints.yaml"), yaml).unwrap();
    let address = |network: &str, addr: &str| xwl::NetworkAddress {
        network: network.into(),
        address: ip_bytes(addr),
        length: None,
    };
    let gateway = |network: &str, addr: &str, hbone_mtls_port| xwl::GatewayAddress {
        destination: Some(Destination::Address(address(network, addr))),
        hbone_mtls_port,
    };
    let cart = Workload::try_from(&xwl::Workload {
        uid: CART.into(),
        name: "cart-0".into(),
        namespace: "shop".into(),
        addresses: vec![v4([10, 1, 0, 11])],
        waypoint: Some(gateway_host("shop", "waypoint.shop.svc.cluster.local")),
        ..Default::default()
    })
    .unwrap();
    // hbone_mtls_port 0 (unset) is 15008, as a local config that leaves it out.
    let reviews = Workload::try_from(&xwl::Workload {
        uid: "demo//Pod/shop/reviews-0".into(),
        name: "reviews-0".into(),
        namespace: "shop".into(),
        addresses: vec![v4([10, 1, 0, 12])],
        waypoint: Some(gateway("west", "fd00::10", 0)),
        ..Default::default()
    })
    .unwrap();
    let service = Service::try_from(&xwl::Service {
        name: "cart".into(),
        namespace: "shop".into(),
        hostname: "cart.shop.svc.cluster.local".into(),
        addresses: vec![address("", "10.96.0.20")],
        waypoint: Some(gateway("", "10.1.0.10", 15018)),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        reviews.waypoint,
        Some(GatewayRef {
            destination: GatewayDestination::Address {
                network: "west".into(),
                ip: ip("fd00::10"),
            },
            hbone_mtls_port: 15008,
        })
    );
    assert_eq!(
        service.waypoint.as_ref().map(|w| w.to_string()).as_deref(),
        Some("/10.1.0.10")
    );
    assert_eq!(**local.workload_by_ip(ip("10.1.0.11")).unwrap(), cart);
    assert_eq!(**local.workload_by_ip(ip("10.1.0.12")).unwrap(), reviews);
    assert_eq!(**local.service_by_vip(ip("10.96.0.20")).unwrap(), service);
}
