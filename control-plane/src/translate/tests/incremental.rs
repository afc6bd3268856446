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
    for type_url in [proto::ADDRESS_TYPE_URL, proto::AUTHORIZATION_TYPE_URL] {
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
