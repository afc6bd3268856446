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
