//! meshd's resources into what the waypoint serves: conversion at one boundary, the last good
//! version kept on a bad one, and a policy not yet received denying rather than allowing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use authz::http::{HttpVerdict, Request};
use proto::waypoint as wire;
use waypoint::config::Store;

fn exact(s: &str) -> wire::StringMatch {
    wire::StringMatch {
        kind: Some(wire::string_match::Kind::Exact(s.into())),
    }
}

fn target(policies: &[&str]) -> wire::Target {
    wire::Target {
        name: "api.shop.svc.cluster.local".into(),
        namespace: "shop".into(),
        vips: vec!["10.96.0.20".into()],
        ports: [(80, 8080)].into_iter().collect(),
        h2_ports: vec![],
        endpoints: vec![wire::Endpoint {
            address: "10.244.1.21".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/api".into(),
            healthy: true,
            workload: "shop/api-0".into(),
        }],
        policies: policies.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// ALLOW GET only.
fn get_only() -> wire::HttpPolicy {
    wire::HttpPolicy {
        name: "get-only".into(),
        namespace: "shop".into(),
        action: wire::Action::Allow as i32,
        provider: String::new(),
        dry_run: false,
        rules: vec![wire::Rule {
            from: vec![],
            to: vec![wire::Operation {
                methods: vec![exact("GET")],
                ..Default::default()
            }],
            when: vec![],
        }],
        ext_authz: None,
    }
}

/// CUSTOM for everything, asking an HTTP authorizer.
fn custom() -> wire::HttpPolicy {
    wire::HttpPolicy {
        name: "ext".into(),
        namespace: "shop".into(),
        action: wire::Action::Custom as i32,
        provider: "sample".into(),
        rules: vec![wire::Rule::default()],
        ext_authz: Some(ext_authz()),
        ..Default::default()
    }
}

fn ext_authz() -> wire::ExtAuthz {
    wire::ExtAuthz {
        name: "sample".into(),
        protocol: wire::ext_authz::Protocol::Http as i32,
        address: "10.96.0.50:8000".into(),
        timeout_ms: 500,
        path_prefix: "/check".into(),
        fail_open: true,
        status_on_error: 503,
        include_request_headers_in_check: vec!["x-ext-authz".into(), "x-user-*".into()],
        include_additional_headers_in_check: [("x-from".into(), "waypoint".into())].into(),
        headers_to_upstream_on_allow: vec!["*-id".into()],
        headers_to_downstream_on_deny: vec![],
        headers_to_downstream_on_allow: vec![],
        include_request_body_in_check: Some(wire::ext_authz::RequestBody {
            max_request_bytes: 1024,
            allow_partial_message: true,
            pack_as_bytes: false,
        }),
    }
}

const NAME: &str = "shop/api.shop.svc.cluster.local";

fn verdict(store: &Store, method: &str) -> HttpVerdict {
    let targets = store.snapshot();
    let vip = "10.96.0.20:80".parse().unwrap();
    let resolved = targets.resolve(vip).expect("the VIP is served");
    let req = Request::new("10.244.0.11".parse().unwrap(), vip, method, "api", "/");
    resolved.target.policies.decide(&req).verdict
}

#[test]
fn a_target_and_its_policy() {
    let mut store = Store::default();
    store
        .apply_target(NAME, &target(&["shop/get-only"]))
        .unwrap();
    store.apply_policy("shop/get-only", &get_only()).unwrap();
    assert!(matches!(
        verdict(&store, "GET"),
        HttpVerdict::Allowed { .. }
    ));
    assert!(matches!(
        verdict(&store, "POST"),
        HttpVerdict::Denied { .. }
    ));
    let targets = store.snapshot();
    let t = targets
        .resolve("10.96.0.20:80".parse().unwrap())
        .unwrap()
        .target;
    assert_eq!(t.target_port(80), 8080);
    assert_eq!(
        t.endpoints[0].identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/api"
    );
}

#[test]
fn a_policy_not_received_yet_denies_everything() {
    let mut store = Store::default();
    store
        .apply_target(NAME, &target(&["shop/get-only"]))
        .unwrap();
    let HttpVerdict::Denied { by, .. } = verdict(&store, "GET") else {
        panic!("a missing ALLOW must not allow");
    };
    assert!(by.unwrap().to_string().contains("not received yet"));
    store.apply_policy("shop/get-only", &get_only()).unwrap();
    assert!(matches!(
        verdict(&store, "GET"),
        HttpVerdict::Allowed { .. }
    ));
    store.remove_policy("shop/get-only");
    assert!(matches!(verdict(&store, "GET"), HttpVerdict::Denied { .. }));
}

#[test]
fn a_bad_resource_is_rejected_naming_the_field_and_the_last_good_one_stays() {
    let mut store = Store::default();
    store.apply_target(NAME, &target(&[])).unwrap();
    store.apply_policy("shop/get-only", &get_only()).unwrap();
    type Case = (&'static str, fn(&mut wire::HttpPolicy), &'static str);
    let cases: &[Case] = &[
        ("name", |p| p.name = "other".into(), "field name"),
        ("action", |p| p.action = 9, "unknown action 9"),
        (
            "custom",
            |p| p.action = wire::Action::Custom as i32,
            "CUSTOM needs a provider",
        ),
        (
            "string match",
            |p| p.rules[0].to[0].methods = vec![wire::StringMatch { kind: None }],
            "rules[0].to[0].methods",
        ),
        (
            "port",
            |p| p.rules[0].to[0].ports = vec![70_000],
            "past 65535",
        ),
        (
            "cidr",
            |p| {
                p.rules[0].from = vec![wire::Source {
                    ip_blocks: vec!["10.0.0/8".into()],
                    ..Default::default()
                }]
            },
            "rules[0].from[0].ip_blocks",
        ),
        (
            "key",
            |p| {
                p.rules[0].when = vec![wire::Condition {
                    key: "request.bogus".into(),
                    values: vec![exact("x")],
                    ..Default::default()
                }]
            },
            "rules[0].when[0].key",
        ),
        (
            "kind",
            |p| {
                p.rules[0].when = vec![wire::Condition {
                    key: "source.ip".into(),
                    values: vec![exact("x")],
                    ..Default::default()
                }]
            },
            "needs values or not_values",
        ),
    ];
    for (what, break_it, want) in cases {
        let mut p = get_only();
        break_it(&mut p);
        let err = store
            .apply_policy("shop/get-only", &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        assert!(err.starts_with("shop/get-only: "), "{what}: {err}");
    }
    let mut t = target(&["shop/get-only"]);
    t.endpoints[0].identity = "not-spiffe".into();
    let err = store.apply_target(NAME, &t).unwrap_err().to_string();
    assert!(err.contains("endpoints[0].identity"), "{err}");
    // The last good target (no policies) and policy stay.
    assert!(matches!(
        verdict(&store, "POST"),
        HttpVerdict::Allowed { .. }
    ));
}

#[test]
fn a_custom_policy_carries_its_provider_to_the_target() {
    use waypoint::ext_authz::{HeaderPattern, Protocol};
    let mut store = Store::default();
    store.apply_target(NAME, &target(&["shop/ext"])).unwrap();
    store.apply_policy("shop/ext", &custom()).unwrap();
    let targets = store.snapshot();
    let t = targets
        .resolve("10.96.0.20:80".parse().unwrap())
        .unwrap()
        .target;
    let p = &t.ext_authz["shop/ext"];
    assert_eq!(p.name, "sample");
    assert_eq!(p.address, "10.96.0.50:8000");
    assert_eq!(p.timeout, std::time::Duration::from_millis(500));
    assert!(p.fail_open);
    assert_eq!(p.status_on_error, http::StatusCode::SERVICE_UNAVAILABLE);
    let Protocol::Http(h) = &p.protocol else {
        panic!("{:?}", p.protocol)
    };
    assert_eq!(h.path_prefix, "/check");
    assert_eq!(
        h.include_request_headers,
        [
            HeaderPattern::Exact("x-ext-authz".into()),
            HeaderPattern::Prefix("x-user-".into())
        ]
    );
    assert_eq!(
        h.to_upstream_on_allow,
        [HeaderPattern::Suffix("-id".into())]
    );
    assert_eq!(h.additional_headers.len(), 1);
    let body = waypoint::ext_authz::BodyInCheck {
        max_bytes: 1024,
        allow_partial: true,
        pack_as_bytes: false,
    };
    assert_eq!(p.body, Some(body));

    // Defaults: Istio's 10 minutes and 403; gRPC has no HTTP settings.
    let mut grpc = custom();
    grpc.ext_authz = Some(wire::ExtAuthz {
        protocol: wire::ext_authz::Protocol::Grpc as i32,
        timeout_ms: 0,
        status_on_error: 0,
        include_request_body_in_check: None,
        ..ext_authz()
    });
    store.apply_policy("shop/ext", &grpc).unwrap();
    let targets = store.snapshot();
    let t = targets
        .resolve("10.96.0.20:80".parse().unwrap())
        .unwrap()
        .target;
    let p = &t.ext_authz["shop/ext"];
    assert_eq!(p.timeout, waypoint::ext_authz::DEFAULT_TIMEOUT);
    assert_eq!(p.status_on_error, http::StatusCode::FORBIDDEN);
    assert!(matches!(p.protocol, Protocol::Grpc));
    assert_eq!(p.body, None, "no body setting: checks carry no body");

    // No provider: accepted, and the target has no authorizer for it (its requests deny).
    let mut bare = custom();
    bare.ext_authz = None;
    store.apply_policy("shop/ext", &bare).unwrap();
    let targets = store.snapshot();
    let t = targets
        .resolve("10.96.0.20:80".parse().unwrap())
        .unwrap()
        .target;
    assert!(t.ext_authz.is_empty());
}

#[test]
fn a_bad_provider_is_rejected_naming_the_field() {
    let mut store = Store::default();
    type Case = (fn(&mut wire::ExtAuthz), &'static str);
    let cases: &[Case] = &[
        (|e| e.name = "other".into(), "ext_authz.name"),
        (|e| e.address = "10.96.0.50".into(), "ext_authz.address"),
        (|e| e.address = ":80".into(), "ext_authz.address"),
        (|e| e.address = "a:70000".into(), "ext_authz.address"),
        (|e| e.status_on_error = 99, "ext_authz.status_on_error"),
        (|e| e.status_on_error = 1000, "ext_authz.status_on_error"),
        (|e| e.protocol = 7, "ext_authz.protocol"),
        (|e| e.path_prefix = "check".into(), "ext_authz.path_prefix"),
        (
            |e| e.include_request_headers_in_check = vec!["*".into()],
            "ext_authz.include_request_headers_in_check",
        ),
        (
            |e| e.headers_to_downstream_on_deny = vec!["".into()],
            "ext_authz.headers_to_downstream_on_deny",
        ),
        (
            |e| e.include_additional_headers_in_check = [("bad name".into(), "v".into())].into(),
            "ext_authz.include_additional_headers_in_check",
        ),
        (
            |e| {
                if let Some(b) = e.include_request_body_in_check.as_mut() {
                    b.max_request_bytes = 0;
                }
            },
            "ext_authz.include_request_body_in_check.max_request_bytes",
        ),
    ];
    for (break_it, want) in cases {
        let mut p = custom();
        if let Some(e) = p.ext_authz.as_mut() {
            break_it(e);
        }
        let err = store.apply_policy("shop/ext", &p).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    let mut allow = get_only();
    allow.ext_authz = Some(ext_authz());
    let err = store
        .apply_policy("shop/get-only", &allow)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only a CUSTOM policy"), "{err}");
}
