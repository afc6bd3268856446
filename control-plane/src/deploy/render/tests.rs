//! Tables over `render` and `status`: what a waypoint Gateway becomes, what is refused, and
//! what is left alone.

use super::*;
use kube_source::{GatewayListener, Meta, ServiceSpec};

fn settings() -> Settings {
    Settings {
        image: "registry.example/mesh/waypoint:1.0".into(),
        image_pull_policy: None,
        xds_address: "https://istiod.istio-system.svc:15012".into(),
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
    }
}

fn listener(name: &str, port: u16, protocol: &str) -> GatewayListener {
    GatewayListener {
        name: name.into(),
        port,
        protocol: protocol.into(),
    }
}

/// `shop/waypoint`, class istio-waypoint, the `mesh` listener, uid `uid-1`, generation 3.
fn waypoint() -> Gateway {
    let mut gw = Gateway {
        metadata: Meta {
            name: "waypoint".into(),
            namespace: "shop".into(),
            uid: "uid-1".into(),
            generation: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    gw.spec.gateway_class_name = WAYPOINT_CLASS.into();
    gw.spec.listeners = vec![listener("mesh", 15008, "HBONE")];
    gw
}

fn rendered(gw: &Gateway) -> Rendered {
    render(gw, &settings())
        .expect("renders")
        .expect("a waypoint")
}

fn body(r: &Rendered, kind: Child) -> &Value {
    &r.objects
        .iter()
        .find(|o| o.kind == kind)
        .expect("object of kind")
        .body
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))
}

#[test]
fn a_waypoint_becomes_an_account_a_service_and_a_deployment_named_after_it() {
    let r = rendered(&waypoint());
    let kinds: Vec<(Child, &str, &str)> = r
        .objects
        .iter()
        .map(|o| (o.kind, o.namespace.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Child::ServiceAccount, "shop", "waypoint"),
            (Child::Service, "shop", "waypoint"),
            (Child::Deployment, "shop", "waypoint"),
        ]
    );
    assert_eq!(r.service, "waypoint");
    for o in &r.objects {
        let meta = &o.body["metadata"];
        assert_eq!(meta["name"], o.name.as_str());
        assert_eq!(meta["namespace"], "shop");
        assert_eq!(o.body["kind"], o.kind.as_str());
        assert_eq!(
            meta["ownerReferences"],
            json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "name": "waypoint", "uid": "uid-1"}]),
            "{:?} is owned by its Gateway",
            o.kind
        );
        assert_eq!(
            meta["labels"],
            json!({
                "gateway.networking.k8s.io/gateway-name": "waypoint",
                "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
                "gateway.istio.io/managed": "istio.io-mesh-controller",
            })
        );
    }
    assert_eq!(
        Child::Deployment.collection("shop"),
        "/apis/apps/v1/namespaces/shop/deployments"
    );
    assert_eq!(
        Child::ServiceAccount.collection("shop"),
        "/api/v1/namespaces/shop/serviceaccounts"
    );
}

#[test]
fn the_service_selects_the_pods_and_exposes_status_and_listener_ports() {
    let r = rendered(&waypoint());
    let svc = body(&r, Child::Service);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"})
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "status-port", "port": 15021, "protocol": "TCP", "appProtocol": "tcp"},
            {"name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "hbone"},
        ])
    );
    assert_eq!(
        svc["metadata"]["annotations"]["networking.istio.io/traffic-distribution"],
        "PreferClose"
    );
}

#[test]
fn listener_ports_table() {
    let cases: &[(&[GatewayListener], Value)] = &[
        (&[], json!([])),
        (
            &[
                listener("mesh", 15008, "HBONE"),
                listener("again", 15008, "TCP"),
            ],
            json!([{"name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "hbone"}]),
        ),
        (
            &[listener("a.b", 8080, "HTTP")],
            json!([{"name": "a-b", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]),
        ),
        (
            &[listener("", 9000, "TCP")],
            json!([{"name": "tcp-0", "port": 9000, "protocol": "TCP", "appProtocol": "tcp"}]),
        ),
        (
            &[listener(&"x".repeat(70), 9001, "TCP")],
            json!([{"name": "x".repeat(63), "port": 9001, "protocol": "TCP", "appProtocol": "tcp"}]),
        ),
        // The status port is never listed twice.
        (&[listener("status", 15021, "HTTP")], json!([])),
    ];
    for (listeners, want) in cases {
        let mut gw = waypoint();
        gw.spec.listeners = listeners.to_vec();
        let r = rendered(&gw);
        let ports = body(&r, Child::Service)["spec"]["ports"]
            .as_array()
            .expect("ports")
            .clone();
        assert_eq!(ports[0]["name"], "status-port");
        assert_eq!(Value::Array(ports[1..].to_vec()), *want, "{listeners:?}");
    }
}

#[test]
fn the_pod_runs_the_waypoint_image_with_meshd_and_its_identity() {
    let mut s = settings();
    s.image_pull_policy = Some("IfNotPresent".into());
    let r = render(&waypoint(), &s).expect("renders").expect("waypoint");
    let d = body(&r, Child::Deployment);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"})
    );
    let pod = &d["spec"]["template"];
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["istio.io/dataplane-mode"], "none");
    assert_eq!(labels["sidecar.istio.io/inject"], "false");
    assert_eq!(labels["service.istio.io/canonical-name"], "waypoint");
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "waypoint");
    assert_eq!(
        labels["gateway.istio.io/managed"],
        "istio.io-mesh-controller"
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/mesh/waypoint:1.0");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    for (name, value) in [
        ("XDS_ADDRESS", "https://istiod.istio-system.svc:15012"),
        ("XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem"),
        ("AUTH_TOKEN", "/var/run/secrets/tokens/istio-token"),
        ("CLUSTER_ID", "Kubernetes"),
        ("TRUST_DOMAIN", "cluster.local"),
    ] {
        assert_eq!(env_value(d, name)["value"], value, "{name}");
    }
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ("INSTANCE_IP", "status.podIP"),
    ] {
        assert_eq!(
            env_value(d, name)["valueFrom"]["fieldRef"]["fieldPath"],
            path,
            "{name}"
        );
    }
    let volumes = &pod["spec"]["volumes"];
    assert_eq!(
        volumes[0]["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"})
    );
    assert_eq!(volumes[1]["configMap"]["name"], "istio-ca-root-cert");
    let mounts = &c["volumeMounts"];
    assert_eq!(
        *mounts,
        json!([
            {"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"},
            {"mountPath": "/var/run/secrets/tokens", "name": "istio-token"},
        ])
    );
    // Without a policy, Kubernetes' default applies.
    let plain = rendered(&waypoint());
    assert!(
        body(&plain, Child::Deployment)["spec"]["template"]["spec"]["containers"][0]
            .get("imagePullPolicy")
            .is_none()
    );
}

#[test]
fn gateway_labels_and_annotations_are_copied_and_ours_win() {
    let mut gw = waypoint();
    gw.metadata.labels = [
        ("istio.io/waypoint-for", "all"),
        ("istio.io/dataplane-mode", "ambient"),
        ("gateway.networking.k8s.io/gateway-name", "impostor"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    gw.metadata.annotations = [
        ("team", "payments"),
        ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        (CONTROLLER_VERSION, "5"),
        (NAME_OVERRIDE, "payments-waypoint"),
        (SERVICE_ACCOUNT_OVERRIDE, "payments.waypoint"),
        (SERVICE_TYPE, "LoadBalancer"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let r = rendered(&gw);
    let names: Vec<(Child, &str)> = r
        .objects
        .iter()
        .map(|o| (o.kind, o.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (Child::ServiceAccount, "payments.waypoint"),
            (Child::Service, "payments-waypoint"),
            (Child::Deployment, "payments-waypoint"),
        ]
    );
    assert_eq!(r.service, "payments-waypoint");
    let d = body(&r, Child::Deployment);
    assert_eq!(
        d["spec"]["template"]["spec"]["serviceAccountName"],
        "payments.waypoint"
    );
    let labels = &d["metadata"]["labels"];
    assert_eq!(labels["istio.io/waypoint-for"], "all");
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "waypoint");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient",
        "a Gateway's own label overrides the pod default (a captured waypoint)"
    );
    assert_eq!(
        d["metadata"]["annotations"],
        json!({"networking.istio.io/service-type": "LoadBalancer", "team": "payments"}),
        "annotations that steer the controller are not copied"
    );
    assert_eq!(body(&r, Child::Service)["spec"]["type"], "LoadBalancer");
}

#[test]
fn what_is_not_a_waypoint_of_ours_renders_nothing() {
    let mut other_class = waypoint();
    other_class.spec.gateway_class_name = "istio".into();
    let mut newer = waypoint();
    newer
        .metadata
        .annotations
        .insert(CONTROLLER_VERSION.into(), "6".into());
    let mut unknown = waypoint();
    unknown
        .metadata
        .annotations
        .insert(CONTROLLER_VERSION.into(), "v2".into());
    let mut deleting = waypoint();
    deleting.metadata.deletion_timestamp = Some("2026-12-03T08:00:00Z".into());
    for (what, gw) in [
        ("another class", other_class),
        ("a newer controller's", newer),
        ("an unknown controller version", unknown),
        ("one being deleted", deleting),
    ] {
        assert_eq!(render(&gw, &settings()), Ok(None), "{what}");
    }
    let mut older = waypoint();
    older
        .metadata
        .annotations
        .insert(CONTROLLER_VERSION.into(), "1".into());
    assert!(matches!(render(&older, &settings()), Ok(Some(_))));
}

#[test]
fn names_kubernetes_would_refuse_are_errors() {
    type Edit = fn(&mut Gateway);
    let cases: &[(&str, Edit, &str)] = &[
        (
            "uppercase name",
            |g| g.metadata.name = "Waypoint".into(),
            "metadata.name \"Waypoint\" cannot name a Service",
        ),
        (
            "name too long for a Service",
            |g| g.metadata.name = "w".repeat(64),
            "cannot name a Service",
        ),
        (
            "name starting with a digit",
            |g| g.metadata.name = "1waypoint".into(),
            "cannot name a Service",
        ),
        (
            "name override with a dot",
            |g| {
                g.metadata
                    .annotations
                    .insert(NAME_OVERRIDE.into(), "a.b".into());
            },
            "gateway.istio.io/name-override \"a.b\" cannot name a Service",
        ),
        (
            "service account with an empty label",
            |g| {
                g.metadata
                    .annotations
                    .insert(SERVICE_ACCOUNT_OVERRIDE.into(), "a..b".into());
            },
            "gateway.istio.io/service-account \"a..b\" cannot name a ServiceAccount",
        ),
        (
            "service account ending in '-'",
            |g| {
                g.metadata
                    .annotations
                    .insert(SERVICE_ACCOUNT_OVERRIDE.into(), "sa-".into());
            },
            "cannot name a ServiceAccount",
        ),
        (
            "no uid",
            |g| g.metadata.uid.clear(),
            "metadata.uid is empty",
        ),
        (
            "no namespace",
            |g| g.metadata.namespace.clear(),
            "metadata.namespace is empty",
        ),
    ];
    for (what, edit, want) in cases {
        let mut gw = waypoint();
        edit(&mut gw);
        match render(&gw, &settings()) {
            Err(e) => assert!(e.to_string().contains(want), "{what}: {e}"),
            Ok(r) => panic!("{what}: rendered {r:?}"),
        }
    }
}

fn service(ips: &[&str]) -> Service {
    Service {
        spec: ServiceSpec {
            cluster_ips: ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn status_reports_the_service_once_it_has_a_vip() {
    let gw = waypoint();
    let r = rendered(&gw);
    let none = "Failed to assign to any requested addresses: hostname \
                \"waypoint.shop.svc.cluster.local\" not found";
    // The Service now, the addresses and `Programmed` (its message, or why not).
    type Case = (
        Option<Service>,
        Vec<(&'static str, &'static str)>,
        Result<&'static str, &'static str>,
    );
    let cases: &[Case] = &[
        (None, vec![], Err(none)),
        (Some(service(&[])), vec![], Err(none)),
        (Some(service(&["None"])), vec![], Err(none)),
        (
            Some(service(&["10.96.0.7", "fd00::7"])),
            vec![
                ("IPAddress", "10.96.0.7"),
                ("IPAddress", "fd00::7"),
                ("Hostname", "waypoint.shop.svc.cluster.local"),
            ],
            Ok("Resource programmed, assigned to service(s) waypoint.shop.svc.cluster.local:15008"),
        ),
    ];
    for (svc, addresses, programmed) in cases {
        let s = status(&gw, &r, svc.as_ref(), &settings());
        let got: Vec<(&str, &str)> = s
            .addresses
            .iter()
            .map(|a| (a.kind, a.value.as_str()))
            .collect();
        assert_eq!(got, *addresses, "{svc:?}");
        assert_eq!(
            s.programmed.as_deref().map_err(String::as_str),
            *programmed,
            "{svc:?}"
        );
        assert_eq!(s.generation, 3);
    }
}

#[test]
fn status_apply_body_carries_conditions_with_generation_and_time() {
    let gw = waypoint();
    let r = rendered(&gw);
    let s = status(&gw, &r, Some(&service(&["10.96.0.7"])), &settings());
    let body = s.to_apply("shop", "waypoint", "2026-01-02T03:04:05Z");
    assert_eq!(body["kind"], "Gateway");
    assert_eq!(body["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(
        body["metadata"],
        json!({"name": "waypoint", "namespace": "shop"})
    );
    assert_eq!(
        body["status"]["addresses"],
        json!([
            {"type": "IPAddress", "value": "10.96.0.7"},
            {"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"},
        ])
    );
    let conditions = body["status"]["conditions"].as_array().expect("conditions");
    let summary: Vec<(&str, &str, &str)> = conditions
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Accepted", "True", "Accepted"),
            ("Programmed", "True", "Programmed")
        ]
    );
    for c in conditions {
        assert_eq!(c["observedGeneration"], 3);
        assert_eq!(c["lastTransitionTime"], "2026-01-02T03:04:05Z");
    }
    let pending = status(&gw, &r, None, &settings()).to_apply("shop", "waypoint", "t");
    assert_eq!(
        pending["status"]["conditions"][1]["reason"],
        "AddressNotUsable"
    );
    assert_eq!(pending["status"]["conditions"][1]["status"], "False");
    assert_eq!(pending["status"]["addresses"], json!([]));
}
