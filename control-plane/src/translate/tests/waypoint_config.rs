//! The waypoints' resources: each waypoint's Targets (services and workloads bound to it) and
//! the HttpPolicies attached to them.

use proto::waypoint::{Endpoint, HttpPolicy, Target};

use super::*;

const UW: &str = "istio.io/use-waypoint";
const API: &str = "shop/api.shop.svc.cluster.local";
const DB: &str = "shop/db.shop.svc.cluster.local";

fn port(name: &str, port: u16, target: Option<IntOrString>, app_protocol: &str) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        target_port: target,
        protocol: "TCP".into(),
        app_protocol: app_protocol.into(),
    }
}

fn bound_service(name: &str, vips: &[&str], waypoint: &str) -> Object {
    let mut s = service("shop", name, "", &[("app", name)]);
    s.spec.cluster_ips = vips.iter().map(|v| v.to_string()).collect();
    s.metadata.labels = labels(&[(UW, waypoint)]);
    Object::Service(s)
}

fn sa_pod(name: &str, ip: &str, sa: &str, l: &[(&str, &str)]) -> Pod {
    let mut p = pod("shop", name, ip, l);
    p.spec.service_account_name = sa.into();
    p
}

fn endpoint(ip: &str, sa: &str, healthy: bool, pod: &str) -> Endpoint {
    Endpoint {
        address: ip.into(),
        identity: format!("spiffe://cluster.local/ns/shop/sa/{sa}"),
        healthy,
        workload: format!("Kubernetes//Pod/shop/{pod}"),
    }
}

/// A mesh with two waypoints in `shop` and every kind of policy attachment.
fn mesh() -> Vec<Object> {
    let Object::Service(mut api) = bound_service("api", &["10.96.0.10", "fd00::10"], "wp") else {
        unreachable!()
    };
    api.spec.ports = vec![
        port("http", 80, Some(IntOrString::Int(8080)), ""),
        port(
            "grpc-api",
            9090,
            Some(IntOrString::String("grpc".into())),
            "",
        ),
        port("h2c", 81, None, "kubernetes.io/h2c"),
    ];
    let mut unready = sa_pod("api-1", "10.0.0.2", "api", &[("app", "api")]);
    unready.status.conditions = conditions("False");
    let mut pending = sa_pod("api-2", "", "api", &[("app", "api")]);
    pending.status.phase = "Pending".into();
    let mut waypoint_pod = sa_pod(
        "wp-0",
        "10.0.0.9",
        "wp",
        &[
            ("gateway.networking.k8s.io/gateway-name", "wp"),
            ("gateway.istio.io/managed", "istio.io-mesh-controller"),
        ],
    );
    waypoint_pod.metadata.labels.insert(UW.into(), "wp".into());
    let targeting = |name: &str, refs: &str, rest: &str| {
        authz_policy(&format!(
            "metadata: {{name: {name}, namespace: shop}}\nspec: {{targetRefs: [{refs}], {rest}}}"
        ))
    };
    vec![
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        gateway("shop", "wp", Some("all")),
        gateway("shop", "other", None),
        Object::Service(api),
        bound_service("db", &["10.96.0.11"], "other"),
        Object::Service(service("shop", "plain", "10.96.0.12", &[("app", "api")])),
        Object::Pod(sa_pod("api-0", "10.0.0.1", "api", &[("app", "api")])),
        Object::Pod(unready),
        Object::Pod(pending),
        Object::Pod(sa_pod("worker", "10.0.0.3", "", &[(UW, "wp")])),
        Object::Pod(waypoint_pod),
        targeting(
            "gw-deny",
            "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}",
            "action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]",
        ),
        targeting(
            "api-allow",
            "{kind: Service, group: '', name: api}",
            "rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]",
        ),
        targeting(
            "broken",
            "{kind: Service, name: api}",
            "rules: [{to: [{operation: {ports: ['99999']}}]}]",
        ),
        targeting(
            "entry",
            "{kind: ServiceEntry, group: networking.istio.io, name: ext}",
            "rules: [{}]",
        ),
        authz_policy(
            "metadata: {name: mesh-audit, namespace: istio-system}\nspec: {targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}], action: AUDIT, rules: [{}]}",
        ),
        authz_policy(
            "metadata: {name: selector, namespace: shop}\nspec: {selector: {matchLabels: {app: api}}, rules: [{}]}",
        ),
    ]
}

#[test]
fn waypoint_targets() {
    struct Case {
        waypoint: &'static str,
        target: &'static str,
        vips: &'static [&'static str],
        ports: &'static [(u32, u32)],
        h2_ports: &'static [u32],
        endpoints: Vec<Endpoint>,
        policies: &'static [&'static str],
    }
    let cases = [
        Case {
            waypoint: "wp",
            target: API,
            vips: &["10.96.0.10", "fd00::10"],
            // A named targetPort is sent as the service port.
            ports: &[(80, 8080), (81, 81), (9090, 9090)],
            h2_ports: &[9090, 81],
            // api-2 has no IP: not an endpoint; api-1 is not ready.
            endpoints: vec![
                endpoint("10.0.0.1", "api", true, "api-0"),
                endpoint("10.0.0.2", "api", false, "api-1"),
            ],
            // broken did not translate but still names the target (fail closed).
            policies: &[
                "istio-system/mesh-audit",
                "shop/api-allow",
                "shop/broken",
                "shop/gw-deny",
            ],
        },
        Case {
            waypoint: "wp",
            target: "shop/worker",
            vips: &[],
            ports: &[],
            h2_ports: &[],
            endpoints: vec![endpoint("10.0.0.3", "default", true, "worker")],
            policies: &["istio-system/mesh-audit", "shop/gw-deny"],
        },
        Case {
            waypoint: "other",
            target: DB,
            vips: &["10.96.0.11"],
            ports: &[(80, 8080)],
            h2_ports: &[],
            endpoints: vec![],
            policies: &["istio-system/mesh-audit"],
        },
    ];
    let t = run(mesh());
    for c in cases {
        let set: BTreeMap<String, Target> =
            waypoint_set(&t, "shop", c.waypoint, proto::WAYPOINT_TARGET_TYPE_URL);
        let target = set.get(c.target).expect(c.target);
        let (name, namespace) = c.target.split_once('/').map(|(n, h)| (h, n)).expect("key");
        assert_eq!(
            (target.name.as_str(), target.namespace.as_str()),
            (name, namespace)
        );
        assert_eq!(target.vips, c.vips, "{}", c.target);
        let ports: BTreeMap<u32, u32> = target.ports.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(ports, c.ports.iter().copied().collect(), "{}", c.target);
        assert_eq!(target.h2_ports, c.h2_ports, "{}", c.target);
        assert_eq!(target.endpoints, c.endpoints, "{}", c.target);
        assert_eq!(target.policies, c.policies, "{}", c.target);
    }
    // Each waypoint is sent only its own targets: plain has no waypoint, db is other's, the
    // waypoint's own pod is none.
    let names = |w: &str| -> Vec<String> {
        waypoint_set::<Target>(&t, "shop", w, proto::WAYPOINT_TARGET_TYPE_URL)
            .into_keys()
            .collect()
    };
    assert_eq!(names("wp"), [API, "shop/worker"]);
    assert_eq!(names("other"), [DB]);
    assert!(names("nobody").is_empty());
    assert_eq!(
        t.resources
            .waypoints
            .pods
            .get(&("shop".into(), "wp-0".into())),
        Some(&"wp".to_string())
    );
}

#[test]
fn waypoint_policies() {
    let t = run(mesh());
    let policies = |w: &str| -> BTreeMap<String, HttpPolicy> {
        waypoint_set(&t, "shop", w, proto::WAYPOINT_POLICY_TYPE_URL)
    };
    // What its targets name and that translated; the selector policy is ztunnel's.
    let cases: [(&str, &[&str]); 3] = [
        (
            "wp",
            &["istio-system/mesh-audit", "shop/api-allow", "shop/gw-deny"],
        ),
        ("other", &["istio-system/mesh-audit"]),
        ("nobody", &[]),
    ];
    for (w, want) in cases {
        let got: Vec<String> = policies(w).into_keys().collect();
        assert_eq!(got, want, "{w}");
    }
    let deny = &policies("wp")["shop/gw-deny"];
    assert_eq!(deny.action, proto::waypoint::Action::Deny as i32);
    assert_eq!(deny.rules.len(), 1);

    // The broken policy is one error (not one from ztunnel's translation too), the
    // ServiceEntry reference a warning; no targetRefs policy is an Authorization for ztunnel.
    let errors: Vec<&ObjectKey> = t.errors.iter().map(|(k, _)| k).collect();
    assert_eq!(errors, [&key(Kind::AuthorizationPolicy, "shop", "broken")]);
    let warned: Vec<(&str, &str)> = t
        .warnings
        .iter()
        .map(|(k, w)| (k.name.as_str(), w.as_str()))
        .collect();
    assert!(
        warned.contains(&(
            "entry",
            "targetRefs: ServiceEntry shop/ext is not supported yet: this reference applies \
             nowhere"
        )),
        "{warned:?}"
    );
    let ztunnel: Vec<&str> = t.resources.authorizations.keys().map(|k| &**k).collect();
    assert_eq!(ztunnel, ["shop/selector"]);
    // The Address resources are unchanged by all this.
    assert_eq!(
        svc(&t, "shop", "api").expect("api").waypoint,
        waypoint_at("shop", "wp")
    );
}

#[test]
fn identities_follow_the_trust_domain() {
    let opts = Options {
        trust_domain: "example.org".into(),
        ..Options::default()
    };
    let t = translate(&index(mesh()), &opts);
    let set: BTreeMap<String, Target> =
        waypoint_set(&t, "shop", "wp", proto::WAYPOINT_TARGET_TYPE_URL);
    assert_eq!(
        set["shop/worker"].endpoints[0].identity,
        "spiffe://example.org/ns/shop/sa/default"
    );
}
