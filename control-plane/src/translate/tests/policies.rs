//! Authorization resources and the keys each workload lists.

use super::*;

#[test]
fn selector_policies_are_listed_on_exactly_the_selected_pods() {
    let t = run([
        authz_policy(
            "metadata: {name: web-only, namespace: a}\nspec: {selector: {matchLabels: {app: web}}, rules: [{}]}",
        ),
        authz_policy(
            "metadata: {name: mesh-web, namespace: istio-system}\nspec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}",
        ),
        authz_policy("metadata: {name: ns-wide, namespace: a}\nspec: {rules: [{}]}"),
        authz_policy("metadata: {name: global, namespace: istio-system}\nspec: {rules: [{}]}"),
        authz_policy(
            "metadata: {name: b-web, namespace: b}\nspec: {selector: {matchLabels: {app: web, v: '2'}}}",
        ),
        Object::Pod(pod("a", "web", "10.0.0.1", &[("app", "web")])),
        Object::Pod(pod("a", "db", "10.0.0.2", &[("app", "db")])),
        Object::Pod(pod("b", "web1", "10.0.0.3", &[("app", "web"), ("v", "1")])),
        Object::Pod(pod("b", "web2", "10.0.0.4", &[("app", "web"), ("v", "2")])),
        Object::Pod(pod("istio-system", "web", "10.0.0.5", &[("app", "web")])),
    ]);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("a", "web", &["a/web-only", "istio-system/mesh-web"]),
        ("a", "db", &[]),
        ("b", "web1", &["istio-system/mesh-web"]),
        ("b", "web2", &["b/b-web", "istio-system/mesh-web"]),
        ("istio-system", "web", &["istio-system/mesh-web"]),
    ];
    for (ns, name, want) in cases {
        let w = workload(&t, ns, name).expect(name);
        assert_eq!(w.authorization_policies, want, "{ns}/{name}");
    }
    use proto::security::Scope;
    let scopes: Vec<(&str, Scope)> = vec![
        ("a/web-only", Scope::WorkloadSelector),
        ("a/ns-wide", Scope::Namespace),
        ("istio-system/global", Scope::Global),
        ("istio-system/mesh-web", Scope::WorkloadSelector),
        ("b/b-web", Scope::WorkloadSelector),
    ];
    for (k, scope) in scopes {
        let a = authorization(&t, k).expect(k);
        assert_eq!(a.scope, scope as i32, "{k}");
    }
    assert_eq!(t.resources.authorizations.len(), 5);
    assert!(t.errors.is_empty() && t.warnings.is_empty(), "{t:?}");
}

#[test]
fn peer_authentication_strict_namespace() {
    let t = run([
        peer_auth("metadata: {name: strict, namespace: a}\nspec: {mtls: {mode: STRICT}}"),
        peer_auth(
            "metadata: {name: ports, namespace: b}\nspec: {selector: {matchLabels: {app: db}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {5432: {mode: STRICT}}}",
        ),
        peer_auth("metadata: {name: broken, namespace: c}\nspec: {mtls: {mode: SOMETIMES}}"),
        Object::Pod(pod("a", "p1", "10.0.0.1", &[])),
        Object::Pod(pod("a", "p2", "10.0.0.2", &[("app", "db")])),
        Object::Pod(pod("b", "db", "10.0.0.3", &[("app", "db")])),
        Object::Pod(pod("b", "web", "10.0.0.4", &[("app", "web")])),
        Object::Pod(pod("c", "p", "10.0.0.5", &[])),
    ]);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("a", "p1", &[STRICT_KEY]),
        ("a", "p2", &[STRICT_KEY]),
        ("b", "db", &["b/converted_peer_authentication_ports"]),
        ("b", "web", &[]),
        ("c", "p", &[]),
    ];
    for (ns, name, want) in cases {
        let w = workload(&t, ns, name).expect(name);
        assert_eq!(w.authorization_policies, want, "{ns}/{name}");
    }
    let keys: Vec<&str> = t.resources.authorizations.keys().map(|k| &**k).collect();
    assert_eq!(
        keys,
        [
            &"b/converted_peer_authentication_ports".to_string(),
            &STRICT_KEY.to_string()
        ]
    );
    let strict = authorization(&t, STRICT_KEY).expect("static policy");
    assert_eq!(strict.action, proto::security::Action::Deny as i32);
    assert_eq!(t.errors.len(), 1);
    assert_eq!(t.errors[0].0, key(Kind::PeerAuthentication, "c", "broken"));
}

#[test]
fn policy_errors_and_warnings() {
    let t = run([
        authz_policy(
            "metadata: {name: bad-port, namespace: a}\nspec: {rules: [{to: [{operation: {ports: ['99999']}}]}]}",
        ),
        authz_policy(
            "metadata: {name: good, namespace: a}\nspec: {rules: [{from: [{source: {principals: ['cluster.local/ns/a/sa/x']}}]}]}",
        ),
        authz_policy(
            "metadata: {name: custom, namespace: a}\nspec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}",
        ),
        authz_policy(
            "metadata: {name: for-waypoint, namespace: a}\nspec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], action: DENY}",
        ),
        authz_policy(
            "metadata: {name: dry, namespace: a, annotations: {istio.io/dry-run: 'true'}}\nspec: {rules: [{}]}",
        ),
        authz_policy(
            "metadata: {name: l7, namespace: a}\nspec: {rules: [{to: [{operation: {methods: [GET]}}]}]}",
        ),
        authz_policy(
            "metadata: {name: istio_converted_static_strict, namespace: istio-system}\nspec: {}",
        ),
        peer_auth(
            "metadata: {name: mesh, namespace: istio-system}\nspec: {mtls: {mode: PERMISSIVE}}",
        ),
    ]);
    let published: Vec<&str> = t.resources.authorizations.keys().map(|k| &**k).collect();
    assert_eq!(published, ["a/good", "a/l7", STRICT_KEY]);
    let errors: Vec<&str> = t.errors.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(errors, ["bad-port", "istio_converted_static_strict"]);
    let warned: Vec<&str> = t.warnings.iter().map(|(k, _)| k.name.as_str()).collect();
    // for-waypoint's come from the waypoint translation: no waypoint `wp`, a DENY without rules.
    assert_eq!(
        warned,
        ["custom", "dry", "l7", "for-waypoint", "for-waypoint"],
        "{:?}",
        t.warnings
    );
    // The L7-only ALLOW rule is dropped: the policy is published with no rules.
    assert!(authorization(&t, "a/l7").expect("l7").rules.is_empty());
}

#[test]
fn dry_run_policies_when_enabled() {
    let idx = index([authz_policy(
        "metadata: {name: dry, namespace: a, annotations: {istio.io/dry-run: 'true'}}\nspec: {rules: [{}]}",
    )]);
    let opts = Options {
        enable_dry_run: true,
        ..Options::default()
    };
    let t = translate(&idx, &opts);
    assert!(authorization(&t, "a/dry").expect("published").dry_run);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}
