//! The incremental translator gives what a full translation gives, change after change, and
//! names exactly the resources that changed.

use std::collections::BTreeSet;

use super::*;
use crate::resources::Resources;
use crate::translate::{Scope, Translator};

fn sorted(mut v: Vec<(ObjectKey, String)>) -> Vec<(ObjectKey, String)> {
    v.sort();
    v
}

fn assert_same(step: &str, incremental: &Translation, index: &Index, prev: &mut Resources) {
    let full = translate(index, &Options::default());
    let walked = crate::snapshot::Delta::between(0, prev, &full.resources);
    let types = [
        proto::ADDRESS_TYPE_URL,
        proto::AUTHORIZATION_TYPE_URL,
        proto::WAYPOINT_TRACING_TYPE_URL,
    ]
    .into_iter()
    .chain(crate::resources::WAYPOINT_TYPE_URLS);
    for type_url in types {
        let names = |m: &std::collections::HashMap<String, Vec<std::sync::Arc<str>>>| {
            let mut v: Vec<String> = m
                .get(type_url)
                .into_iter()
                .flatten()
                .map(|n| n.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&incremental.changed),
            names(&walked.names),
            "{step}: changed {type_url}"
        );
    }
    *prev = full.resources.clone();
    assert_eq!(incremental.resources, full.resources, "{step}: resources");
    assert_eq!(
        sorted(incremental.errors.clone()),
        sorted(full.errors),
        "{step}: errors"
    );
    assert_eq!(
        sorted(incremental.warnings.clone()),
        sorted(full.warnings),
        "{step}: warnings"
    );
}

fn policy(ns: &str, name: &str, app: &str) -> Object {
    authz_policy(&format!(
        "metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  rules:\n  - from:\n    - source: {{principals: [cluster.local/ns/{ns}/sa/x]}}\n"
    ))
}

#[test]
fn namespace_scoped_changes_match_a_full_translation() {
    let ambient = [("istio.io/dataplane-mode", "ambient")];
    let mut idx = index([
        namespace("a", &ambient),
        namespace("b", &ambient),
        Object::Pod(pod("a", "web-0", "10.0.0.1", &[("app", "web")])),
        Object::Pod(pod("a", "db-0", "10.0.0.2", &[("app", "db")])),
        Object::Pod(pod("b", "web-0", "10.0.1.1", &[("app", "web")])),
        Object::Service(service("a", "web", "10.96.0.1", &[("app", "web")])),
        Object::Service(service("b", "web", "10.96.1.1", &[("app", "web")])),
        policy("a", "web", "web"),
    ]);
    let mut t = Translator::new(Options::default());
    let mut prev = Resources::default();
    let out = t.translate(&idx, &Scope::All);
    assert_same("initial", &out, &idx, &mut prev);
    let only = |ns: &str| Scope::Namespaces(BTreeSet::from([ns.to_string()]));

    // A pod's IP changes in a.
    idx.apply(Object::Pod(pod(
        "a",
        "web-0",
        "10.0.0.9",
        &[("app", "web")],
    )));
    assert_same("pod edit", &t.translate(&idx, &only("a")), &idx, &mut prev);
    // A policy in b starts selecting b's pods.
    idx.apply(policy("b", "web", "web"));
    assert_same(
        "policy added",
        &t.translate(&idx, &only("b")),
        &idx,
        &mut prev,
    );
    // A service goes, a bad pod arrives (an error kept across later calls).
    idx.delete(&key(Kind::Service, "b", "web"));
    idx.apply(Object::Pod(pod("b", "bad", "not-an-ip", &[])));
    assert_same(
        "service deleted, bad pod",
        &t.translate(&idx, &only("b")),
        &idx,
        &mut prev,
    );
    // A change elsewhere leaves b's error in place.
    idx.apply(Object::Pod(pod("a", "db-0", "10.0.0.3", &[("app", "db")])));
    assert_same(
        "other namespace",
        &t.translate(&idx, &only("a")),
        &idx,
        &mut prev,
    );
    // A namespace's pods all go.
    idx.delete(&key(Kind::Pod, "a", "web-0"));
    idx.delete(&key(Kind::Pod, "a", "db-0"));
    idx.delete(&key(Kind::Service, "a", "web"));
    assert_same(
        "namespace emptied",
        &t.translate(&idx, &only("a")),
        &idx,
        &mut prev,
    );
    // Nothing in scope: policies alone are redone.
    idx.delete(&key(Kind::AuthorizationPolicy, "a", "web"));
    assert_same(
        "policy removed",
        &t.translate(&idx, &Scope::Namespaces(BTreeSet::new())),
        &idx,
        &mut prev,
    );
    // A namespace-wide change redoes everything and still names only what changed.
    idx.apply(namespace("b", &[]));
    assert_same(
        "b leaves ambient",
        &t.translate(&idx, &Scope::All),
        &idx,
        &mut prev,
    );
    let unchanged = t.translate(&idx, &Scope::All);
    assert!(unchanged.unchanged(), "{:?}", unchanged.changed);
}

/// A step: what it is, objects applied (Ok) or deleted (Err), the namespaces to redo.
type Step = (&'static str, Vec<Result<Object, ObjectKey>>, Scope);

/// A DENY policy with `targetRefs: [refs]` and one operation.
fn target_policy(ns: &str, name: &str, refs: &str, operation: &str) -> Object {
    authz_policy(&format!(
        "metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  targetRefs: [{refs}]\n  action: DENY\n  rules: [{{to: [{{operation: {operation}}}]}}]\n"
    ))
}

/// Waypoint targets and policies, including a waypoint in another namespace than its
/// services, whose policies change where the services are not.
#[test]
fn waypoint_changes_match_a_full_translation() {
    let bound = |ns: &str, name: &str, vip: &str| {
        let mut s = service(ns, name, vip, &[("app", name)]);
        s.metadata.labels = labels(&[
            ("istio.io/use-waypoint", "wp"),
            ("istio.io/use-waypoint-namespace", "infra"),
        ]);
        Object::Service(s)
    };
    let gw_ref = "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}";
    let web_ref = "{kind: Service, name: web}";
    let mut idx = index([
        gateway("infra", "wp", Some("all")),
        bound("a", "web", "10.96.0.1"),
        bound("b", "api", "10.96.1.1"),
        Object::Pod(pod("a", "web-0", "10.0.0.1", &[("app", "web")])),
        Object::Pod(pod("b", "api-0", "10.0.1.1", &[("app", "api")])),
        target_policy("a", "web-deny", web_ref, "{methods: [DELETE]}"),
    ]);
    let mut t = Translator::new(Options::default());
    let mut prev = Resources::default();
    assert_same("initial", &t.translate(&idx, &Scope::All), &idx, &mut prev);
    let only = |ns: &[&str]| Scope::Namespaces(ns.iter().map(|n| n.to_string()).collect());
    let gone = |kind, ns, name| Err(key(kind, ns, name));
    let steps: Vec<Step> = vec![
        (
            "a policy's rules change: the policy, no target",
            vec![Ok(target_policy(
                "a",
                "web-deny",
                web_ref,
                "{methods: [PUT]}",
            ))],
            only(&["a"]),
        ),
        (
            "a policy on the waypoint appears in infra: a's and b's targets list it",
            vec![Ok(target_policy(
                "infra",
                "all-deny",
                gw_ref,
                "{methods: [PATCH]}",
            ))],
            only(&["infra"]),
        ),
        (
            "it breaks: not sent, still listed",
            vec![Ok(target_policy(
                "infra",
                "all-deny",
                gw_ref,
                "{ports: ['99999']}",
            ))],
            only(&["infra"]),
        ),
        (
            "a rate limit on the waypoint appears in infra: a's and b's targets carry it",
            vec![Ok(super::rate_limits::local_rate_limit(
                "infra",
                "burst",
                gw_ref,
                "{maxTokens: 5}",
            ))],
            only(&["infra"]),
        ),
        (
            "its numbers change: the targets carry the new ones",
            vec![Ok(super::rate_limits::local_rate_limit(
                "infra",
                "burst",
                gw_ref,
                "{maxTokens: 9, fillInterval: 2s}",
            ))],
            only(&["infra"]),
        ),
        (
            "an endpoint moves",
            vec![Ok(Object::Pod(pod(
                "b",
                "api-0",
                "10.0.1.9",
                &[("app", "api")],
            )))],
            only(&["b"]),
        ),
        (
            "a service leaves the waypoint",
            vec![Ok(Object::Service(service(
                "b",
                "api",
                "10.96.1.1",
                &[("app", "api")],
            )))],
            only(&["b"]),
        ),
        (
            "the policies go",
            vec![
                gone(Kind::AuthorizationPolicy, "infra", "all-deny"),
                gone(Kind::AuthorizationPolicy, "a", "web-deny"),
                gone(Kind::LocalRateLimit, "infra", "burst"),
            ],
            only(&["a", "infra"]),
        ),
        (
            "the waypoint goes (a Gateway change redoes everything)",
            vec![gone(Kind::Gateway, "infra", "wp")],
            Scope::All,
        ),
    ];
    for (step, edits, scope) in steps {
        for edit in edits {
            match edit {
                Ok(object) => idx.apply(object),
                Err(key) => idx.delete(&key),
            };
        }
        assert_same(step, &t.translate(&idx, &scope), &idx, &mut prev);
    }
    assert!(prev.waypoints.by_waypoint.is_empty());
}
