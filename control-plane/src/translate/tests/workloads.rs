//! Pods -> Workloads: enrolment, fields, which pods count, and versions that follow content.

use super::*;

#[test]
fn enrolment_decides_the_tunnel_protocol() {
    type Tweak = fn(&mut Pod);
    let none: Tweak = |_| {};
    let cases: [(&str, &str, Tweak, TunnelProtocol, NetworkMode); 8] = [
        (
            "ambient namespace",
            "amb",
            none,
            TunnelProtocol::Hbone,
            NetworkMode::Standard,
        ),
        (
            "plain namespace",
            "plain",
            none,
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
        (
            "pod label enrols in a plain namespace",
            "plain",
            |p| {
                drop(
                    p.metadata
                        .labels
                        .insert("istio.io/dataplane-mode".into(), "ambient".into()),
                )
            },
            TunnelProtocol::Hbone,
            NetworkMode::Standard,
        ),
        (
            "pod opts out",
            "amb",
            |p| {
                drop(
                    p.metadata
                        .labels
                        .insert("istio.io/dataplane-mode".into(), "none".into()),
                )
            },
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
        (
            "host network",
            "amb",
            |p| p.spec.host_network = true,
            TunnelProtocol::None,
            NetworkMode::HostNetwork,
        ),
        (
            "sidecar injected",
            "amb",
            |p| {
                drop(
                    p.metadata
                        .annotations
                        .insert("sidecar.istio.io/status".into(), "{}".into()),
                )
            },
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
        (
            "istio-cni says captured",
            "plain",
            |p| {
                drop(
                    p.metadata
                        .annotations
                        .insert("ambient.istio.io/redirection".into(), "enabled".into()),
                )
            },
            TunnelProtocol::Hbone,
            NetworkMode::Standard,
        ),
        (
            "namespace object missing",
            "ghost",
            none,
            TunnelProtocol::None,
            NetworkMode::Standard,
        ),
    ];
    for (name, ns, tweak, tunnel, mode) in cases {
        let mut p = pod(ns, "p", "10.0.0.1", &[]);
        tweak(&mut p);
        let t = run([
            namespace("amb", &[("istio.io/dataplane-mode", "ambient")]),
            namespace("plain", &[]),
            Object::Pod(p),
        ]);
        let w = workload(&t, ns, "p").expect(name);
        assert_eq!(w.tunnel_protocol, tunnel as i32, "{name}");
        assert_eq!(w.network_mode, mode as i32, "{name}");
    }
}

#[test]
fn workload_fields_as_istiod_sets_them() {
    let mut p = pod(
        "shop",
        "cart-7d9c8b6f5-abcde",
        "",
        &[
            ("app", "cart"),
            ("version", "v2"),
            ("pod-template-hash", "7d9c8b6f5"),
        ],
    );
    p.status.pod_ips = vec![
        PodIp {
            ip: "10.0.0.7".into(),
        },
        PodIp {
            ip: "fd00::7".into(),
        },
    ];
    p.spec.service_account_name = "cart-sa".into();
    p.metadata
        .owner_references
        .push(kube_source::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "cart-7d9c8b6f5".into(),
            controller: Some(true),
        });
    p.spec.containers = vec![PodContainer {
        name: "app".into(),
        ports: vec![ContainerPort {
            name: "grpc".into(),
            container_port: 9090,
            protocol: String::new(),
        }],
        ..Default::default()
    }];
    p.status.conditions = conditions("False");
    let mut s = service("shop", "cart", "10.96.0.7", &[("app", "cart")]);
    s.spec.ports.push(ServicePort {
        name: "grpc".into(),
        port: 90,
        target_port: Some(IntOrString::String("grpc".into())),
        protocol: "TCP".into(),
        app_protocol: String::new(),
    });
    let t = run([
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        Object::Pod(p),
        Object::Service(s),
    ]);
    let want = Workload {
        uid: "Kubernetes//Pod/shop/cart-7d9c8b6f5-abcde".into(),
        name: "cart-7d9c8b6f5-abcde".into(),
        namespace: "shop".into(),
        addresses: vec![
            vec![10, 0, 0, 7],
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        ],
        tunnel_protocol: TunnelProtocol::Hbone as i32,
        service_account: "cart-sa".into(),
        node: "node-1".into(),
        canonical_name: "cart".into(),
        canonical_revision: "v2".into(),
        workload_type: WorkloadType::Deployment as i32,
        workload_name: "cart".into(),
        services: HashMap::from([(
            "shop/cart.shop.svc.cluster.local".to_string(),
            PortList {
                ports: vec![
                    Port {
                        service_port: 80,
                        target_port: 8080,
                        app_protocol: 0,
                    },
                    Port {
                        service_port: 90,
                        target_port: 9090,
                        app_protocol: 0,
                    },
                ],
            },
        )]),
        status: WorkloadStatus::Unhealthy as i32,
        cluster_id: "Kubernetes".into(),
        ..Default::default()
    };
    assert_eq!(workload(&t, "shop", "cart-7d9c8b6f5-abcde"), Some(want));
    let r = &t.resources.addresses["Kubernetes//Pod/shop/cart-7d9c8b6f5-abcde"];
    assert_eq!(&*r.aliases, ["/10.0.0.7", "/fd00::7"]);
    assert!(t.errors.is_empty() && t.warnings.is_empty(), "{t:?}");
}

#[test]
fn which_pods_become_workloads() {
    let mut done = pod("a", "done", "10.0.0.2", &[]);
    done.status.phase = "Succeeded".into();
    let mut pending = pod("a", "pending", "10.0.0.3", &[]);
    pending.status.phase = "Pending".into();
    let t = run([
        Object::Pod(pod("a", "no-ip", "", &[])),
        Object::Pod(done),
        Object::Pod(pending),
        Object::Pod(pod("a", "bad-ip", "10.0.0.300", &[])),
        Object::Pod(pod("a", "ok", "10.0.0.1", &[])),
    ]);
    let present: Vec<&str> = ["no-ip", "done", "pending", "bad-ip", "ok"]
        .into_iter()
        .filter(|n| workload(&t, "a", n).is_some())
        .collect();
    assert_eq!(present, ["pending", "ok"]);
    assert_eq!(t.errors.len(), 1);
    assert_eq!(t.errors[0].0, key(Kind::Pod, "a", "bad-ip"));
    assert!(t.errors[0].1.contains("10.0.0.300"), "{:?}", t.errors);
}

#[test]
fn one_changed_pod_changes_one_version() {
    let objects = |web_ready: &str| {
        let mut web = pod("a", "web", "10.0.0.1", &[("app", "web")]);
        web.status.conditions = conditions(web_ready);
        vec![
            namespace("a", &[("istio.io/dataplane-mode", "ambient")]),
            Object::Pod(web),
            Object::Pod(pod(
                "a",
                "db",
                "10.0.0.2",
                &[("app", "web"), ("tier", "db")],
            )),
            Object::Service(service("a", "web", "10.96.0.1", &[("app", "web")])),
            Object::Service(service("a", "all", "10.96.0.2", &[("app", "web")])),
            Object::Service(service("a", "db", "10.96.0.3", &[("tier", "db")])),
            authz_policy(
                "metadata: {name: p, namespace: a}\nspec: {selector: {matchLabels: {app: web}}}",
            ),
        ]
    };
    let before = run(objects("True"));
    let again = run(objects("True"));
    assert_eq!(
        before.resources, again.resources,
        "translation is deterministic"
    );
    let after = run(objects("False"));
    let versions = |t: &Translation| -> BTreeMap<String, String> {
        t.resources
            .addresses
            .iter()
            .chain(&t.resources.authorizations)
            .map(|(k, r)| (k.to_string(), r.version.to_string()))
            .collect()
    };
    let (b, a) = (versions(&before), versions(&after));
    assert_eq!(b.keys().collect::<Vec<_>>(), a.keys().collect::<Vec<_>>());
    let changed: Vec<&String> = b.keys().filter(|k| b[*k] != a[*k]).collect();
    assert_eq!(changed, ["Kubernetes//Pod/a/web"]);
}

#[test]
fn scale_ten_thousand_pods() {
    const NAMESPACES: usize = 50;
    const PODS: usize = 10_000;
    const SERVICES: usize = 1_000;
    const POLICIES: usize = 1_000;
    let mut objects = Vec::with_capacity(PODS + SERVICES + POLICIES + NAMESPACES + 1);
    for n in 0..NAMESPACES {
        objects.push(namespace(
            &format!("ns{n}"),
            &[("istio.io/dataplane-mode", "ambient")],
        ));
    }
    // 20 apps per namespace, 10 pods per app; each app has one Service.
    for i in 0..PODS {
        let (ns, app) = (i % NAMESPACES, (i / NAMESPACES) % (SERVICES / NAMESPACES));
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let app = format!("app{app}");
        objects.push(Object::Pod(pod(
            &format!("ns{ns}"),
            &format!("pod{i}"),
            &ip,
            &[("app", &app)],
        )));
    }
    for i in 0..SERVICES {
        let (ns, app) = (i % NAMESPACES, i / NAMESPACES);
        let vip = format!("10.96.{}.{}", i >> 8, i & 255);
        objects.push(Object::Service(service(
            &format!("ns{ns}"),
            &format!("svc{i}"),
            &vip,
            &[("app", &format!("app{app}"))],
        )));
    }
    for i in 0..POLICIES {
        let (ns, app) = (i % NAMESPACES, (i / NAMESPACES) % (SERVICES / NAMESPACES));
        objects.push(authz_policy(&format!(
            "metadata: {{name: p{i}, namespace: ns{ns}}}\nspec: {{selector: {{matchLabels: {{app: app{app}}}}}, rules: [{{from: [{{source: {{namespaces: [ns{ns}]}}}}], to: [{{operation: {{ports: ['8080']}}}}]}}]}}"
        )));
    }
    objects.push(peer_auth(
        "metadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}",
    ));
    let t = run(objects);
    assert!(
        t.errors.is_empty() && t.warnings.is_empty(),
        "{:?}",
        t.errors.first()
    );
    assert_eq!(t.resources.addresses.len(), PODS + SERVICES);
    assert_eq!(t.resources.authorizations.len(), POLICIES + 1);
    let w = workload(&t, "ns3", "pod3").expect("pod3");
    assert_eq!(w.services.len(), 1);
    assert_eq!(
        w.authorization_policies,
        ["istio-system/istio_converted_static_strict", "ns3/p3"]
    );
}
