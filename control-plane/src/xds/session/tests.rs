use std::collections::HashMap;

use proto::discovery::DeltaDiscoveryRequest;
use proto::security::Authorization;

use super::*;
use crate::resources::{Resource, Resources};
use crate::snapshot::{Delta, Snapshot};

const AUTHZ: &str = proto::AUTHORIZATION_TYPE_URL;

fn policy(name: &str, dry_run: bool) -> Resource {
    let a = Authorization {
        name: name.into(),
        namespace: "ns".into(),
        dry_run,
        ..Default::default()
    };
    Resource::new(format!("ns/{name}"), vec![format!("alias-{name}")], &a)
}

fn resources(policies: &[Resource]) -> Resources {
    let mut r = Resources::default();
    for p in policies {
        r.insert_authorization(p.clone());
    }
    r
}

/// A snapshot at version 1 with no delta (every diff is a full one).
fn snapshot(policies: &[Resource]) -> Snapshot {
    Snapshot {
        version: 1,
        resources: resources(policies),
        ..Default::default()
    }
}

/// The snapshot after `prev`, carrying its delta.
fn next(prev: &Snapshot, policies: &[Resource]) -> Snapshot {
    let resources = resources(policies);
    Snapshot {
        version: prev.version + 1,
        delta: Some(Delta::between(prev.version, &prev.resources, &resources)),
        resources,
        ..Default::default()
    }
}

fn open(subscribe: &[&str], initial: &[(&str, &str)]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: AUTHZ.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        initial_resource_versions: initial
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn wildcard_open_sends_everything_then_only_changes() {
    let (a, b) = (policy("a", false), policy("b", false));
    let mut s = Session::new();
    let out = s
        .on_request(open(&[], &[]), &snapshot(&[a.clone(), b.clone()]))
        .unwrap();
    let r = out.response.unwrap();
    assert_eq!(names(&r), ["ns/a", "ns/b"]);
    assert!(out.ack.is_none());

    // Unchanged snapshot: nothing to send.
    assert!(s.on_snapshot(&snapshot(&[a.clone(), b.clone()])).is_empty());

    // One change, one removal: exactly those (O(1) per change).
    let a2 = policy("a", true);
    let pushes = s.on_snapshot(&snapshot(std::slice::from_ref(&a2)));
    assert_eq!(pushes.len(), 1);
    assert_eq!(names(&pushes[0]), ["ns/a"]);
    assert_eq!(pushes[0].removed_resources, ["ns/b"]);
    assert_eq!(s.held(AUTHZ), vec![("ns/a".into(), a2.version.to_string())]);
}

#[test]
fn opening_is_always_answered_even_when_empty() {
    let mut s = Session::new();
    let out = s.on_request(open(&[], &[]), &Snapshot::default()).unwrap();
    let r = out.response.unwrap();
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert!(!r.nonce.is_empty());
}

#[test]
fn reconnect_with_initial_versions_sends_only_the_difference() {
    let (a, b, c) = (policy("a", false), policy("b", false), policy("c", false));
    let mut s = Session::new();
    // The client held a (current), b (stale version) and gone (deleted meanwhile).
    let req = open(
        &[],
        &[("ns/a", &a.version), ("ns/b", "stale"), ("ns/gone", "x")],
    );
    let r = s
        .on_request(req, &snapshot(&[a, b, c]))
        .unwrap()
        .response
        .unwrap();
    assert_eq!(names(&r), ["ns/b", "ns/c"]);
    assert_eq!(r.removed_resources, ["ns/gone"]);
}

#[test]
fn acks_and_nacks_are_reported_and_send_nothing() {
    let a = policy("a", false);
    let snap = snapshot(std::slice::from_ref(&a));
    let mut s = Session::new();
    let r = s
        .on_request(open(&[], &[]), &snap)
        .unwrap()
        .response
        .unwrap();
    let ack = DeltaDiscoveryRequest {
        type_url: AUTHZ.into(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    let out = s.on_request(ack, &snap).unwrap();
    assert!(out.response.is_none());
    assert_eq!(
        out.ack,
        Some(Ack::Ack {
            type_url: AUTHZ.into(),
            nonce: r.nonce.clone()
        })
    );
    let nack = DeltaDiscoveryRequest {
        type_url: AUTHZ.into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(proto::rpc::Status {
            code: 3,
            message: "ns/a: bad".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    let out = s.on_request(nack, &snap).unwrap();
    assert!(out.response.is_none(), "a NACK is not answered by a resend");
    assert!(matches!(out.ack, Some(Ack::Nack { message, .. }) if message == "ns/a: bad"));
}

#[test]
fn named_subscriptions_match_names_and_aliases() {
    let (a, b, c) = (policy("a", false), policy("b", false), policy("c", false));
    let snap = snapshot(&[a, b, c]);
    let mut s = Session::new();
    let r = s
        .on_request(open(&["ns/a", "alias-c"], &[]), &snap)
        .unwrap()
        .response
        .unwrap();
    assert_eq!(names(&r), ["ns/a", "ns/c"]);
    // Unsubscribing removes; subscribing more sends it.
    let change = DeltaDiscoveryRequest {
        type_url: AUTHZ.into(),
        resource_names_subscribe: vec!["ns/b".into()],
        resource_names_unsubscribe: vec!["ns/a".into()],
        ..Default::default()
    };
    let r = s.on_request(change, &snap).unwrap().response.unwrap();
    assert_eq!(names(&r), ["ns/b"]);
    assert_eq!(r.removed_resources, ["ns/a"]);
}

#[test]
fn unknown_types_are_refused() {
    let mut s = Session::new();
    let req = DeltaDiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.on_request(req, &Snapshot::default()),
        Err(RequestError::UnknownType(_))
    ));
}

#[test]
fn a_delta_from_where_the_client_is_limits_the_comparison() {
    let (a, b) = (policy("a", false), policy("b", false));
    let mut s = Session::new();
    let v1 = snapshot(&[a.clone(), b.clone()]);
    s.on_request(open(&[], &[]), &v1).unwrap();
    // v2 changes a and removes b; its delta says so, and exactly that is sent.
    let a2 = policy("a", true);
    let v2 = next(&v1, std::slice::from_ref(&a2));
    let pushes = s.on_snapshot(&v2);
    assert_eq!(names(&pushes[0]), ["ns/a"]);
    assert_eq!(pushes[0].removed_resources, ["ns/b"]);
    // A delta that does not start where the client is falls back to a full comparison: this
    // one (wrongly) lists nothing, yet b's return is found.
    let mut v3 = next(&v2, &[a2.clone(), b.clone()]);
    v3.delta = Some(Delta {
        from: 99,
        names: Default::default(),
    });
    let pushes = s.on_snapshot(&v3);
    assert_eq!(names(&pushes[0]), ["ns/b"]);
    // And a delta from the right version is trusted: listing nothing sends nothing.
    let mut v4 = next(&v3, &[a2, policy("b", true)]);
    v4.delta = Some(Delta {
        from: v3.version,
        names: Default::default(),
    });
    assert!(s.on_snapshot(&v4).is_empty());
}

mod waypoints {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::auth::Caller;
    use crate::resources::{ResourceSet, WaypointKey, WaypointResources, WaypointSets};

    const TARGETS: &str = proto::WAYPOINT_TARGET_TYPE_URL;

    fn target(name: &str) -> Resource {
        let t = proto::waypoint::Target {
            name: name.into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        Resource::new(format!("shop/{name}"), vec![], &t)
    }

    fn key(name: &str) -> WaypointKey {
        WaypointKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    /// Waypoints `wp` (targets a, b) and `gw` (target c); pod `gw-0` labelled for `gw`
    /// when `labelled`.
    fn snapshot(version: u64, labelled: bool) -> Snapshot {
        let set = |rs: &[Resource]| -> ResourceSet {
            rs.iter().map(|r| (r.name.clone(), r.clone())).collect()
        };
        let sets = |rs: &[Resource]| WaypointSets {
            targets: set(rs),
            policies: ResourceSet::new(),
        };
        let mut pods = BTreeMap::new();
        if labelled {
            pods.insert(("shop".to_string(), "gw-0".to_string()), "gw".to_string());
        }
        let waypoints = WaypointResources {
            by_waypoint: BTreeMap::from([
                (key("wp"), sets(&[target("a"), target("b")])),
                (key("gw"), sets(&[target("c")])),
            ]),
            pods,
        };
        Snapshot {
            version,
            resources: Resources {
                waypoints: Arc::new(waypoints),
                ..Resources::default()
            },
            ..Default::default()
        }
    }

    fn caller(ns: &str, sa: &str, pod: Option<&str>) -> Caller {
        Caller {
            namespace: ns.into(),
            service_account: sa.into(),
            pod: pod.map(str::to_string),
            node: None,
        }
    }

    fn open_targets() -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: TARGETS.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_client_gets_its_own_waypoints_set() {
        let cases: [(&str, Caller, &[&str]); 6] = [
            (
                "by service account",
                caller("shop", "wp", None),
                &["shop/a", "shop/b"],
            ),
            (
                "by the pod's gateway-name label",
                caller("shop", "default", Some("gw-0")),
                &["shop/c"],
            ),
            (
                "a pod without the label: the service account",
                caller("shop", "wp", Some("wp-0")),
                &["shop/a", "shop/b"],
            ),
            ("another namespace", caller("other", "wp", None), &[]),
            ("no waypoint", caller("shop", "web", None), &[]),
            ("ztunnel", caller("istio-system", "ztunnel", None), &[]),
        ];
        for (what, c, want) in cases {
            let mut s = Session::for_caller(c);
            let r = s
                .on_request(open_targets(), &snapshot(1, true))
                .unwrap()
                .response
                .expect("an opening is answered");
            assert_eq!(names(&r), want, "{what}");
        }
        // No identity at all (tests, or a future anonymous client): nothing, not an error.
        let mut s = Session::new();
        let r = s.on_request(open_targets(), &snapshot(1, true)).unwrap();
        assert!(r.response.unwrap().resources.is_empty());
    }

    #[test]
    fn a_client_whose_waypoint_changes_gets_the_whole_new_set() {
        let mut s = Session::for_caller(caller("shop", "wp", Some("gw-0")));
        let v1 = snapshot(1, false);
        let r = s.on_request(open_targets(), &v1).unwrap().response.unwrap();
        assert_eq!(names(&r), ["shop/a", "shop/b"]);
        // The pod's label appears; the delta names nothing (no set changed), yet the client
        // now sees gw's set.
        let mut v2 = snapshot(2, true);
        v2.delta = Some(Delta::between(1, &v1.resources, &v2.resources));
        let pushes = s.on_snapshot(&v2);
        assert_eq!(names(&pushes[0]), ["shop/c"]);
        assert_eq!(pushes[0].removed_resources, ["shop/a", "shop/b"]);
    }

    /// The mesh-wide Tracing: every waypoint gets the same one, alongside its own targets,
    /// and a change of it is pushed.
    #[test]
    fn every_waypoint_gets_the_mesh_tracing() {
        use proto::waypoint::Tracing;
        let tracing = |address: &str| {
            let t = Tracing {
                exporter: proto::waypoint::tracing::Exporter::Zipkin as i32,
                address: address.into(),
                sampling: 1.0,
                ..Default::default()
            };
            let r = Resource::new(proto::WAYPOINT_TRACING_NAME.into(), vec![], &t);
            ResourceSet::from([(r.name.clone(), r)])
        };
        let with = |version: u64, address: &str| {
            let mut s = snapshot(version, true);
            s.resources.tracing = tracing(address);
            s
        };
        let open = || DeltaDiscoveryRequest {
            type_url: proto::WAYPOINT_TRACING_TYPE_URL.into(),
            ..Default::default()
        };
        let v1 = with(1, "10.96.0.9:9411");
        for c in [
            caller("shop", "wp", None),
            caller("shop", "default", Some("gw-0")),
        ] {
            let mut s = Session::for_caller(c);
            let r = s.on_request(open(), &v1).unwrap().response.unwrap();
            assert_eq!(names(&r), [proto::WAYPOINT_TRACING_NAME]);
            assert_eq!(r.type_url, proto::WAYPOINT_TRACING_TYPE_URL);
        }
        let mut s = Session::for_caller(caller("shop", "wp", None));
        s.on_request(open(), &v1).unwrap();
        let mut v2 = with(2, "10.96.0.17:4317");
        v2.delta = Some(Delta::between(1, &v1.resources, &v2.resources));
        let pushes = s.on_snapshot(&v2);
        assert_eq!(pushes.len(), 1);
        assert_eq!(names(&pushes[0]), [proto::WAYPOINT_TRACING_NAME]);
        let mut v3 = with(3, "10.96.0.17:4317");
        v3.resources.tracing.clear();
        v3.delta = Some(Delta::between(2, &v2.resources, &v3.resources));
        let pushes = s.on_snapshot(&v3);
        assert_eq!(pushes[0].removed_resources, [proto::WAYPOINT_TRACING_NAME]);

        // A waypoint a Telemetry gives its own Tracing gets it; the others keep the mesh's.
        let mut own = Session::for_caller(caller("shop", "wp", None));
        let mut other = Session::for_caller(caller("shop", "other", None));
        for s in [&mut own, &mut other] {
            s.on_request(open(), &v1).unwrap();
        }
        let mut v4 = with(4, "10.96.0.9:9411");
        let key = crate::resources::WaypointKey {
            namespace: "shop".into(),
            name: "wp".into(),
        };
        v4.resources
            .waypoint_tracing
            .insert(key, tracing("10.96.0.33:4317"));
        v4.delta = Some(Delta::between(1, &v1.resources, &v4.resources));
        let pushes = own.on_snapshot(&v4);
        assert_eq!(pushes.len(), 1, "its own Tracing");
        let body = &pushes[0].resources[0].resource.as_ref().unwrap().value;
        let got = <proto::waypoint::Tracing as prost::Message>::decode(body.as_slice()).unwrap();
        assert_eq!(got.address, "10.96.0.33:4317");
        assert!(other.on_snapshot(&v4).is_empty(), "the mesh's, unchanged");
    }
}
