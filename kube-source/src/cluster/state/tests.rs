use serde_json::json;

use super::*;

fn service(name: &str, rv: &str, port: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv},
        "spec": {"ports": [{"port": port}]},
    })
}

fn event(kind: &str, object: Value) -> String {
    json!({"type": kind, "object": object}).to_string()
}

fn names(change: &Change) -> (Vec<String>, Vec<String>) {
    (
        change
            .applied
            .iter()
            .map(|(o, _)| o.meta().name.clone())
            .collect(),
        change.deleted.iter().map(|k| k.name.clone()).collect(),
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::Service,
        namespace: "shop".into(),
        name: name.into(),
    }
}

#[test]
fn list_items_without_kind_are_read_and_located() {
    let mut s = KindState::new(Kind::Service);
    let change = s.relisted("10".into(), vec![service("cart", "7", json!(80))]);
    assert_eq!(s.resource_version(), Some("10"));
    assert_eq!(change.errors, None);
    let [(object, origin)] = change.applied.as_slice() else {
        panic!("one object expected: {change:?}");
    };
    assert_eq!(object.key(), key("cart"));
    assert_eq!(
        origin.to_string(),
        "/api/v1/namespaces/shop/services/cart",
        "line 0 is not printed"
    );
}

#[test]
fn relist_applies_only_changes_and_deletes_what_vanished() {
    let mut s = KindState::new(Kind::Service);
    s.relisted(
        "10".into(),
        vec![
            service("a", "1", json!(80)),
            service("b", "2", json!(80)),
            service("c", "3", json!(80)),
        ],
    );
    let change = s.relisted(
        "20".into(),
        vec![
            service("a", "1", json!(80)),
            service("c", "15", json!(81)),
            service("d", "16", json!(80)),
        ],
    );
    assert_eq!(
        names(&change),
        (vec!["c".into(), "d".into()], vec!["b".into()])
    );
    assert_eq!(s.resource_version(), Some("20"));
}

#[test]
fn bad_objects_are_errors_until_fixed_or_deleted() {
    let mut s = KindState::new(Kind::Service);
    s.relisted("10".into(), vec![service("a", "1", json!(80))]);

    let Step::Changed(change) = s.event(&event("MODIFIED", service("a", "11", json!("http"))))
    else {
        panic!("a change expected");
    };
    assert!(change.applied.is_empty(), "the last good version stays");
    let errors = change.errors.expect("the error is reported");
    assert_eq!(errors.len(), 1);
    // JSON errors name no field (see `parse_json_object`); the API path locates the object.
    assert_eq!(
        errors[0].to_string(),
        "/api/v1/namespaces/shop/services/a: invalid type: string \"http\", expected u16"
    );
    assert_eq!(s.resource_version(), Some("11"));

    // The same error again changes nothing.
    let Step::Changed(change) = s.event(&event("MODIFIED", service("a", "12", json!("http"))))
    else {
        panic!("a change expected");
    };
    assert!(change.is_empty(), "{change:?}");

    // A relist at the same version keeps the error and applies nothing.
    let change = s.relisted("12".into(), vec![service("a", "12", json!("http"))]);
    assert!(change.is_empty(), "{change:?}");

    let Step::Changed(change) = s.event(&event("MODIFIED", service("a", "13", json!(81)))) else {
        panic!("a change expected");
    };
    assert_eq!(names(&change).0, vec!["a".to_string()]);
    assert_eq!(change.errors, Some(vec![]));

    s.event(&event("MODIFIED", service("a", "14", json!("http"))));
    let Step::Changed(change) = s.event(&event("DELETED", service("a", "15", json!("http"))))
    else {
        panic!("a change expected");
    };
    assert_eq!(change.deleted, vec![key("a")]);
    assert_eq!(
        change.errors,
        Some(vec![]),
        "a deleted object's error goes too"
    );
}

#[test]
fn watch_events() {
    let mut s = KindState::new(Kind::Service);
    s.relisted("10".into(), vec![]);

    let Step::Changed(c) = s.event(&event("ADDED", service("a", "11", json!(80)))) else {
        panic!("ADDED is a change");
    };
    assert_eq!(names(&c), (vec!["a".into()], vec![]));

    let bookmark =
        json!({"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "25"}});
    assert!(matches!(
        s.event(&event("BOOKMARK", bookmark)),
        Step::Bookmark
    ));
    assert_eq!(
        s.resource_version(),
        Some("25"),
        "a bookmark moves the version"
    );

    // Deleting something never seen reports nothing.
    let Step::Changed(c) = s.event(&event("DELETED", service("zz", "26", json!(80)))) else {
        panic!("DELETED is a change");
    };
    assert!(c.is_empty());

    let Step::Changed(c) = s.event(&event("DELETED", service("a", "27", json!(80)))) else {
        panic!("DELETED is a change");
    };
    assert_eq!(names(&c), (vec![], vec!["a".into()]));
    assert_eq!(s.resource_version(), Some("27"));

    assert!(matches!(s.event(r#"{"type":"NEW","object":{}}"#), Step::Unknown(t) if t == "NEW"));
    assert!(matches!(s.event("{not json"), Step::Malformed(_)));
}

#[test]
fn error_events() {
    let cases = [
        (
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "too old resource version: 5 (9)", "reason": "Expired", "code": 410}),
            Some(410),
            None,
        ),
        (
            json!({"kind": "Status", "status": "Failure", "reason": "Gone", "code": 410}),
            Some(410),
            None,
        ),
        (
            json!({"kind": "Status", "status": "Failure", "message": "etcd is sad", "code": 500}),
            None,
            Some(500),
        ),
        (json!({"code": 410}), Some(410), None),
    ];
    for (status, expired, failed) in cases {
        let mut s = KindState::new(Kind::Pod);
        s.relisted("10".into(), vec![]);
        match s.event(&event("ERROR", status.clone())) {
            Step::Expired(r) => {
                assert_eq!(Some(r.code), expired, "{status}");
                assert_eq!(s.resource_version(), None, "410 forces a relist");
            }
            Step::Failed(r) => {
                assert_eq!(Some(r.code), failed, "{status}");
                assert_eq!(
                    s.resource_version(),
                    Some("10"),
                    "other errors keep the version"
                );
            }
            other => panic!("{status}: {other:?}"),
        }
    }
}

#[test]
fn a_kind_no_longer_served_deletes_its_objects() {
    let mut s = KindState::new(Kind::Gateway);
    let gateway =
        json!({"metadata": {"name": "waypoint", "namespace": "shop", "resourceVersion": "3"}});
    let change = s.relisted("5".into(), vec![gateway]);
    assert_eq!(change.applied.len(), 1);
    assert_eq!(
        change.applied[0].1.to_string(),
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint"
    );
    let change = s.not_served();
    assert_eq!(change.deleted.len(), 1);
    assert_eq!(s.resource_version(), None);
}

#[test]
fn cluster_scoped_and_defaulted_keys() {
    let mut s = KindState::new(Kind::Namespace);
    let change = s.relisted(
        "5".into(),
        vec![json!({"metadata": {"name": "shop", "resourceVersion": "1"}})],
    );
    assert_eq!(change.applied[0].1.to_string(), "/api/v1/namespaces/shop");
    let Step::Changed(c) = s.event(&event(
        "DELETED",
        json!({"metadata": {"name": "shop", "namespace": "ignored"}}),
    )) else {
        panic!("DELETED is a change");
    };
    assert_eq!(c.deleted.len(), 1, "cluster-scoped keys have no namespace");
}
