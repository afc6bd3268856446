//! Services -> Service resources, and the services that select each pod.

use super::*;

#[test]
fn pod_services_and_target_ports() {
    let mut p = pod("a", "p", "10.0.0.1", &[("app", "web"), ("tier", "front")]);
    p.spec.containers = vec![PodContainer {
        ports: vec![
            ContainerPort {
                name: "http".into(),
                container_port: 8000,
                protocol: "TCP".into(),
            },
            ContainerPort {
                name: "dns".into(),
                container_port: 5353,
                protocol: "UDP".into(),
            },
        ],
        ..Default::default()
    }];
    let ports = |s: &mut Service, list: &[(u16, Option<IntOrString>)]| {
        s.spec.ports = list
            .iter()
            .map(|(port, target)| ServicePort {
                name: String::new(),
                port: *port,
                target_port: target.clone(),
                protocol: "TCP".into(),
                app_protocol: String::new(),
            })
            .collect();
    };
    let mut mixed = service("a", "mixed", "10.96.0.1", &[("app", "web")]);
    ports(
        &mut mixed,
        &[
            (80, Some(IntOrString::Int(8080))),
            (81, None),
            (82, Some(IntOrString::String("http".into()))),
            (83, Some(IntOrString::String("missing".into()))),
            (84, Some(IntOrString::String("dns".into()))),
        ],
    );
    let mut external = service("a", "ext", "", &[("app", "web")]);
    external.spec.kind = "ExternalName".into();
    let t = run([
        Object::Pod(p),
        Object::Service(mixed),
        Object::Service(service(
            "a",
            "both",
            "10.96.0.2",
            &[("app", "web"), ("tier", "front")],
        )),
        Object::Service(service("a", "headless", "None", &[("tier", "front")])),
        Object::Service(service("a", "other-app", "10.96.0.3", &[("app", "db")])),
        Object::Service(service("a", "no-selector", "10.96.0.4", &[])),
        Object::Service(service("b", "other-ns", "10.96.0.5", &[("app", "web")])),
        Object::Service(external),
        Object::Service(service("a", "bad-vip", "10.96.0.999", &[("app", "web")])),
    ]);
    let w = workload(&t, "a", "p").expect("workload");
    let port = |service_port, target_port| Port {
        service_port,
        target_port,
        app_protocol: 0,
    };
    let got: BTreeMap<String, Vec<Port>> =
        w.services.into_iter().map(|(k, v)| (k, v.ports)).collect();
    let want: BTreeMap<String, Vec<Port>> = [
        (
            "a/mixed.a.svc.cluster.local",
            // named "missing" and UDP-only "dns" are left out for this pod
            vec![port(80, 8080), port(81, 81), port(82, 8000)],
        ),
        ("a/both.a.svc.cluster.local", vec![port(80, 8080)]),
        ("a/headless.a.svc.cluster.local", vec![port(80, 8080)]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
    // The Service itself keeps named ports as 0.
    let mixed = svc(&t, "a", "mixed").expect("service");
    let targets: Vec<u32> = mixed.ports.iter().map(|p| p.target_port).collect();
    assert_eq!(targets, [8080, 81, 0, 0, 0]);
}

#[test]
fn service_resources() {
    let mut dual = service("a", "dual", "", &[("app", "x")]);
    dual.spec.cluster_ips = vec!["10.96.0.9".into(), "fd00::9".into()];
    let mut v6 = service("a", "v6", "fd00::10", &[]);
    v6.metadata.annotations.insert(
        "networking.istio.io/traffic-distribution".into(),
        "preferclose".into(),
    );
    let mut ext = service("a", "ext", "", &[]);
    ext.spec.kind = "ExternalName".into();
    let mut opted_out = service("lb", "any", "10.96.0.12", &[]);
    opted_out.metadata.annotations.insert(
        "networking.istio.io/traffic-distribution".into(),
        "Any".into(),
    );
    let lb_ns = Object::Namespace(Namespace {
        metadata: Meta {
            name: "lb".into(),
            annotations: labels(&[("networking.istio.io/traffic-distribution", "PreferClose")]),
            ..Default::default()
        },
        ..Default::default()
    });
    let t = run([
        lb_ns,
        Object::Service(service("a", "v4", "10.96.0.8", &[])),
        Object::Service(dual),
        Object::Service(v6),
        Object::Service(service("a", "headless", "None", &[("app", "x")])),
        Object::Service(service("a", "broken", "10.96.0.999", &[])),
        Object::Service(ext),
        Object::Service(service("lb", "inherit", "10.96.0.11", &[])),
        Object::Service(opted_out),
    ]);
    let prefer_close = Some(proto::workload::LoadBalancing {
        routing_preference: vec![6, 1, 2, 3],
        mode: 2,
        health_policy: 0,
    });
    let cases: [(&str, &str, IpFamilies, &[&str], bool); 6] = [
        ("a", "v4", IpFamilies::Ipv4Only, &["/10.96.0.8"], false),
        (
            "a",
            "dual",
            IpFamilies::Dual,
            &["/10.96.0.9", "/fd00::9"],
            false,
        ),
        ("a", "v6", IpFamilies::Ipv6Only, &["/fd00::10"], true),
        ("a", "headless", IpFamilies::Automatic, &[], false),
        (
            "lb",
            "inherit",
            IpFamilies::Ipv4Only,
            &["/10.96.0.11"],
            true,
        ),
        ("lb", "any", IpFamilies::Ipv4Only, &["/10.96.0.12"], false),
    ];
    for (ns, name, families, aliases, lb) in cases {
        let s = svc(&t, ns, name).expect(name);
        assert_eq!(s.hostname, format!("{name}.{ns}.svc.cluster.local"));
        assert_eq!(s.ip_families, families as i32, "{name}");
        assert_eq!(s.addresses.len(), aliases.len(), "{name}");
        let r = &t.resources.addresses[format!("{ns}/{}", s.hostname).as_str()];
        assert_eq!(&*r.aliases, aliases, "{name}");
        assert_eq!(
            s.load_balancing,
            if lb { prefer_close.clone() } else { None },
            "{name}"
        );
        assert_eq!(
            s.ports,
            vec![Port {
                service_port: 80,
                target_port: 8080,
                app_protocol: 0
            }]
        );
    }
    assert!(
        svc(&t, "a", "ext").is_none(),
        "ExternalName is not published"
    );
    assert!(svc(&t, "a", "broken").is_none());
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert_eq!(t.errors[0].0, key(Kind::Service, "a", "broken"));
    assert_eq!(t.resources.addresses.len(), 6);
}
