//! Waypoint bindings on namespaces, services and pods.

use super::*;

#[test]
fn waypoint_bindings() {
    struct Case {
        name: &'static str,
        ns_labels: &'static [(&'static str, &'static str)],
        svc_labels: &'static [(&'static str, &'static str)],
        pod_labels: &'static [(&'static str, &'static str)],
        svc_waypoint: Option<(&'static str, &'static str)>,
        pod_waypoint: Option<(&'static str, &'static str)>,
        warnings: &'static [(Kind, &'static str)],
    }
    const UW: &str = "istio.io/use-waypoint";
    const UWN: &str = "istio.io/use-waypoint-namespace";
    let cases = [
        Case {
            name: "namespace binds services only (default waypoint-for service)",
            ns_labels: &[(UW, "svc-wp")],
            svc_labels: &[],
            pod_labels: &[],
            svc_waypoint: Some(("app", "svc-wp")),
            pod_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "namespace binds both to an `all` waypoint",
            ns_labels: &[(UW, "all-wp")],
            svc_labels: &[],
            pod_labels: &[],
            svc_waypoint: Some(("app", "all-wp")),
            pod_waypoint: Some(("app", "all-wp")),
            warnings: &[],
        },
        Case {
            name: "objects opt out of the namespace waypoint",
            ns_labels: &[(UW, "all-wp")],
            svc_labels: &[(UW, "none")],
            pod_labels: &[(UW, "none")],
            svc_waypoint: None,
            pod_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "service and pod labels override the namespace",
            ns_labels: &[(UW, "all-wp")],
            svc_labels: &[(UW, "svc-wp")],
            pod_labels: &[(UW, "wl-wp")],
            svc_waypoint: Some(("app", "svc-wp")),
            pod_waypoint: Some(("app", "wl-wp")),
            warnings: &[],
        },
        Case {
            name: "cross-namespace waypoint",
            ns_labels: &[],
            svc_labels: &[(UW, "shared"), (UWN, "infra")],
            pod_labels: &[(UW, "shared"), (UWN, "infra")],
            svc_waypoint: Some(("infra", "shared")),
            pod_waypoint: Some(("infra", "shared")),
            warnings: &[],
        },
        Case {
            name: "waypoint-for forbids: warnings on the objects that asked",
            ns_labels: &[],
            svc_labels: &[(UW, "wl-wp")],
            pod_labels: &[(UW, "svc-wp")],
            svc_waypoint: None,
            pod_waypoint: None,
            warnings: &[(Kind::Service, "s"), (Kind::Pod, "p")],
        },
        Case {
            name: "missing gateway named by the namespace: one warning on the namespace",
            ns_labels: &[(UW, "ghost")],
            svc_labels: &[],
            pod_labels: &[],
            svc_waypoint: None,
            pod_waypoint: None,
            warnings: &[(Kind::Namespace, "app")],
        },
        Case {
            name: "missing gateway named by the objects, or not a waypoint class",
            ns_labels: &[],
            svc_labels: &[(UW, "ghost")],
            pod_labels: &[(UW, "ingress")],
            svc_waypoint: None,
            pod_waypoint: None,
            warnings: &[(Kind::Service, "s"), (Kind::Pod, "p")],
        },
    ];
    for c in cases {
        let mut ingress = Gateway {
            metadata: meta("app", "ingress", &[("istio.io/waypoint-for", "all")]),
            ..Default::default()
        };
        ingress.spec.gateway_class_name = "istio".into();
        let mut s = service("app", "s", "10.96.0.1", &[("app", "x")]);
        s.metadata.labels = labels(c.svc_labels);
        let t = run([
            namespace("app", c.ns_labels),
            gateway("app", "svc-wp", None),
            gateway("app", "wl-wp", Some("workload")),
            gateway("app", "all-wp", Some("all")),
            gateway("infra", "shared", Some("all")),
            Object::Gateway(ingress),
            Object::Service(s),
            Object::Pod(pod("app", "p", "10.0.0.1", c.pod_labels)),
            Object::Pod(pod("app", "p2", "10.0.0.2", &[])),
        ]);
        let w = workload(&t, "app", "p").expect(c.name);
        let s = svc(&t, "app", "s").expect(c.name);
        let at = |b: Option<(&str, &str)>| b.and_then(|(ns, n)| waypoint_at(ns, n));
        assert_eq!(s.waypoint, at(c.svc_waypoint), "{}: service", c.name);
        assert_eq!(w.waypoint, at(c.pod_waypoint), "{}: pod", c.name);
        let warned: Vec<(Kind, &str)> = t
            .warnings
            .iter()
            .map(|(k, _)| (k.kind, k.name.as_str()))
            .collect();
        assert_eq!(warned, c.warnings, "{}: {:?}", c.name, t.warnings);
    }
}

#[test]
fn waypoint_address_prefers_status_hostname() {
    let mut g = Gateway {
        metadata: meta("app", "wp", &[("istio.io/waypoint-for", "all")]),
        ..Default::default()
    };
    g.spec.gateway_class_name = "istio-waypoint".into();
    g.status.addresses = vec![
        kube_source::GatewayAddress {
            kind: "IPAddress".into(),
            value: "10.96.9.9".into(),
        },
        kube_source::GatewayAddress {
            kind: "Hostname".into(),
            value: "wp.app.svc.example.org".into(),
        },
    ];
    let mut waypoint_pod = pod(
        "app",
        "wp-1",
        "10.0.0.9",
        &[("istio.io/use-waypoint", "wp")],
    );
    waypoint_pod.metadata.labels.insert(
        "gateway.istio.io/managed".into(),
        "istio.io-mesh-controller".into(),
    );
    let t = run([
        Object::Gateway(g),
        Object::Pod(pod(
            "app",
            "p",
            "10.0.0.1",
            &[("istio.io/use-waypoint", "wp")],
        )),
        Object::Pod(waypoint_pod),
    ]);
    let w = workload(&t, "app", "p").expect("workload");
    let mut want = waypoint_at("app", "wp");
    if let Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(h)),
        ..
    }) = want.as_mut()
    {
        h.hostname = "wp.app.svc.example.org".into();
    }
    assert_eq!(w.waypoint, want);
    assert_eq!(
        workload(&t, "app", "wp-1").expect("waypoint pod").waypoint,
        None
    );
}
