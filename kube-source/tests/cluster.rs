//! The cluster source against a fake API server speaking the list/watch protocol over HTTP
//! (`support/apiserver.rs`): initial list, watch events, bookmarks, 410 -> relist, kinds
//! whose CRD is missing. Every wait is bounded by `apiserver::WAIT`; no sleep is an assertion.

#[path = "support/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::{ApiServer, WAIT};
use kube_source::{ClusterOptions, Object, Update, watch_cluster};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Small pages (so lists are paged) and quick retries.
fn options() -> ClusterOptions {
    ClusterOptions {
        page_size: 2,
        missing_kind_retry: Duration::from_millis(50),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..ClusterOptions::default()
    }
}

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {"serviceAccountName": "shop", "nodeName": "node-a"},
        "status": {"phase": "Running", "podIP": ip},
    })
}

fn service(name: &str, port: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": name}, "ports": [{"port": port}]},
    })
}

fn gateway(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"gatewayClassName": "istio-waypoint"},
    })
}

async fn next(rx: &mut mpsc::Receiver<Update>) -> Update {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an update in time")
        .expect("the source is running")
}

/// `Kind ns/name` of what an update applied and deleted.
fn summary(update: &Update) -> (Vec<String>, Vec<String>) {
    (
        update
            .applied
            .iter()
            .map(|(o, _)| o.key().to_string())
            .collect(),
        update.deleted.iter().map(|k| k.to_string()).collect(),
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn initial_list_then_watch_events() {
    let server = ApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        server.apply(pod(name, ip));
    }
    server.apply(service("cart", json!(80)));
    server.apply(service("broken", json!("http")));

    let (initial, mut rx) = watch_cluster(server.client(), options())
        .await
        .expect("the cluster source starts");
    assert_eq!(
        summary(&initial).0,
        strings(&[
            "Namespace shop",
            "Pod shop/a",
            "Pod shop/b",
            "Pod shop/c",
            "Service shop/cart",
        ])
    );
    let origins: Vec<String> = initial.applied.iter().map(|(_, o)| o.to_string()).collect();
    assert!(origins.contains(&"/api/v1/namespaces/shop/pods/a".to_string()));
    assert_eq!(initial.errors.len(), 1, "{:?}", initial.errors);
    assert!(
        initial.errors[0]
            .to_string()
            .starts_with("/api/v1/namespaces/shop/services/broken: "),
        "{}",
        initial.errors[0]
    );
    server.with(|c| assert_eq!(c.lists("Pod"), 2, "three pods in pages of two"));

    server.apply(pod("d", "10.0.0.4"));
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (strings(&["Pod shop/d"]), vec![]));
    assert_eq!(u.applied[0].1.to_string(), "/api/v1/namespaces/shop/pods/d");
    assert_eq!(u.errors.len(), 1, "errors stay the complete list");

    server.apply(pod("a", "10.0.0.9"));
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (strings(&["Pod shop/a"]), vec![]));
    let Object::Pod(a) = &u.applied[0].0 else {
        panic!("a pod: {u:?}");
    };
    assert_eq!(a.ips(), vec!["10.0.0.9"]);

    server.delete("Pod", "shop", "b");
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (vec![], strings(&["Pod shop/b"])));

    server.apply(service("broken", json!(8080)));
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (strings(&["Service shop/broken"]), vec![]));
    assert!(u.errors.is_empty(), "the fixed object's error is gone");

    // The consumer going away stops every watch.
    drop(rx);
    server
        .wait_for("every watch to close", |c| c.open_watches() == 0)
        .await;
}

#[tokio::test]
async fn a_list_whose_continue_token_expires_starts_over() {
    let server = ApiServer::start().await;
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        server.apply(pod(name, ip));
    }
    server.with(|c| c.expire_next_continue = true);
    let (initial, _rx) = watch_cluster(server.client(), options())
        .await
        .expect("the cluster source starts");
    assert_eq!(
        summary(&initial).0,
        strings(&["Pod shop/a", "Pod shop/b", "Pod shop/c"])
    );
    server.with(|c| {
        assert_eq!(c.lists("Pod"), 4, "page 1, page 2 (410), page 1, page 2");
    });
}

#[tokio::test]
async fn a_bookmark_moves_the_resource_version_without_an_update() {
    let server = ApiServer::start().await;
    server.apply(pod("a", "10.0.0.1"));
    let (_, mut rx) = watch_cluster(server.client(), options())
        .await
        .expect("the cluster source starts");
    server
        .wait_for("the pod watch", |c| c.watches("Pod").len() == 1)
        .await;
    let listed_at = server.with(|c| c.watches("Pod")[0].clone());

    // Other kinds move the revision on; the pod watch hears of it only by a bookmark.
    server.apply(service("cart", json!(80)));
    assert_eq!(
        summary(&next(&mut rx).await).0,
        strings(&["Service shop/cart"])
    );
    let bookmark_at = server.with(|c| {
        c.bookmark("Pod");
        c.close_watches("Pod");
        c.revision().to_string()
    });
    assert_ne!(listed_at, bookmark_at);
    server
        .wait_for("a pod watch from the bookmark", |c| {
            c.watches("Pod") == [listed_at.clone(), bookmark_at.clone()]
        })
        .await;
    server.with(|c| assert_eq!(c.lists("Pod"), 1, "a bookmark is no reason to list"));

    // The next update is the next real change: the bookmark made none.
    server.apply(pod("b", "10.0.0.2"));
    assert_eq!(
        summary(&next(&mut rx).await),
        (strings(&["Pod shop/b"]), vec![])
    );
}

/// How the history runs out while pods change: the open watch gets an `ERROR` 410 event, or
/// the watch ends and the next one, from a compacted resourceVersion, gets 410 as an event or
/// as the HTTP answer. Each way, a relist reports what the watch missed.
#[tokio::test]
async fn gone_means_relist_and_missed_deletions_are_reported() {
    #[derive(Debug, Clone, Copy)]
    enum Way {
        OpenWatchExpires,
        RewatchGetsErrorEvent,
        RewatchGetsHttp410,
    }
    for way in [
        Way::OpenWatchExpires,
        Way::RewatchGetsErrorEvent,
        Way::RewatchGetsHttp410,
    ] {
        let server = ApiServer::start().await;
        for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            server.apply(pod(name, ip));
        }
        let (initial, mut rx) = watch_cluster(server.client(), options())
            .await
            .expect("the cluster source starts");
        assert_eq!(initial.applied.len(), 3);
        server
            .wait_for("the pod watch", |c| c.watches("Pod").len() == 1)
            .await;
        let lists_before = server.with(|c| c.lists("Pod"));

        server.with(|c| {
            c.delete("Pod", "shop", "b");
            c.apply(pod("a", "10.0.0.9"));
            match way {
                Way::OpenWatchExpires => c.expire("Pod"),
                Way::RewatchGetsErrorEvent | Way::RewatchGetsHttp410 => {
                    c.stale_watch_as_http_410 = matches!(way, Way::RewatchGetsHttp410);
                    c.compact("Pod");
                    c.close_watches("Pod");
                }
            }
        });
        let u = next(&mut rx).await;
        assert_eq!(
            summary(&u),
            (strings(&["Pod shop/a"]), strings(&["Pod shop/b"])),
            "{way:?}: only the changed pod is applied again"
        );
        server.with(|c| {
            assert!(c.lists("Pod") > lists_before, "{way:?}: relisted");
            let watches = c.watches("Pod");
            if !matches!(way, Way::OpenWatchExpires) {
                assert_eq!(
                    watches[1], watches[0],
                    "{way:?}: rewatched from the compacted version"
                );
            }
        });

        // Watching goes on from the relist.
        server.apply(pod("d", "10.0.0.4"));
        assert_eq!(
            summary(&next(&mut rx).await),
            (strings(&["Pod shop/d"]), vec![]),
            "{way:?}"
        );
    }
}

#[tokio::test]
async fn a_kind_without_its_crd_does_not_stop_the_others() {
    let server = ApiServer::start().await;
    server.with(|c| {
        c.set_served("Gateway", false);
        c.set_served("AuthorizationPolicy", false);
    });
    server.apply(pod("a", "10.0.0.1"));
    let (initial, mut rx) = watch_cluster(server.client(), options())
        .await
        .expect("a missing CRD is not fatal");
    assert_eq!(summary(&initial).0, strings(&["Pod shop/a"]));
    assert!(initial.errors.is_empty(), "{:?}", initial.errors);

    server.apply(pod("b", "10.0.0.2"));
    assert_eq!(summary(&next(&mut rx).await).0, strings(&["Pod shop/b"]));

    // The CRD gets installed: the kind is listed again and its objects arrive.
    server.with(|c| {
        c.set_served("Gateway", true);
        c.apply(gateway("waypoint"));
    });
    let u = next(&mut rx).await;
    assert_eq!(summary(&u).0, strings(&["Gateway shop/waypoint"]));
    assert_eq!(
        u.applied[0].1.to_string(),
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint"
    );
    server.apply(gateway("second"));
    assert_eq!(
        summary(&next(&mut rx).await).0,
        strings(&["Gateway shop/second"])
    );
    server
        .wait_for("a kind still missing to be listed again", |c| {
            c.lists("AuthorizationPolicy") >= 3
        })
        .await;

    // And removed again: its objects go.
    server.with(|c| c.set_served("Gateway", false));
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&u).1,
        strings(&["Gateway shop/second", "Gateway shop/waypoint"])
    );
}

/// Over plain HTTP and over TLS (which also proves kube builds its rustls config with the
/// workspace's ring provider).
#[tokio::test]
async fn no_server_is_an_error_at_start() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    for scheme in ["http", "https"] {
        let uri = format!("{scheme}://{addr}").parse().expect("uri");
        let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
        let err = watch_cluster(client, options())
            .await
            .expect_err("nothing listens there");
        let message = err.to_string();
        assert!(message.starts_with("cannot list "), "{message}");
        assert!(message.contains("is the API server reachable"), "{message}");
    }
}

/// A node agent's view: namespaces and the pods of its node only, asked of the server with a
/// field selector (not filtered after a cluster-wide list), in the list and in the watch.
#[tokio::test]
async fn a_node_view_lists_and_watches_only_its_pods() {
    let server = ApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    server.apply(service("cart", json!(80)));
    let on = |name: &str, node: &str| {
        let mut p = pod(name, "10.0.0.1");
        p["spec"]["nodeName"] = node.into();
        p
    };
    server.apply(on("a", "node-a"));
    server.apply(on("b", "node-b"));
    server.apply(on("c", "node-a"));
    let opts = ClusterOptions {
        kinds: vec![kube_source::Kind::Namespace, kube_source::Kind::Pod],
        pods_on_node: Some("node-a".into()),
        ..options()
    };
    let (initial, mut rx) = watch_cluster(server.client(), opts)
        .await
        .expect("the cluster source starts");
    assert_eq!(
        summary(&initial).0,
        strings(&["Namespace shop", "Pod shop/a", "Pod shop/c"]),
        "no service (kind not asked for), no pod of node-b"
    );
    server.apply(on("d", "node-b"));
    server.apply(on("e", "node-a"));
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (strings(&["Pod shop/e"]), vec![]));
    server.with(|c| {
        assert!(
            c.field_selectors("Pod")
                .iter()
                .all(|s| s == "spec.nodeName=node-a"),
            "{:?}",
            c.field_selectors("Pod")
        );
        assert!(c.field_selectors("Namespace").iter().all(String::is_empty));
        assert!(
            c.field_selectors("Service").is_empty(),
            "services never asked for"
        );
    });
}

/// ConfigMaps are read by name only (meshd's `istio-ca-root-cert`), with a field selector the
/// server applies to the list and the watch; a ConfigMap's string data is read.
#[tokio::test]
async fn config_maps_are_listed_and_watched_by_name_only() {
    let server = ApiServer::start().await;
    let config_map = |ns: &str, name: &str, pem: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"root-cert.pem": pem},
        })
    };
    server.apply(config_map("shop", "istio-ca-root-cert", "ROOT-1"));
    server.apply(config_map("shop", "app-settings", "not ours"));
    let opts = ClusterOptions {
        kinds: vec![kube_source::Kind::Namespace],
        config_map_name: Some("istio-ca-root-cert".into()),
        ..options()
    };
    let (initial, mut rx) = watch_cluster(server.client(), opts)
        .await
        .expect("the cluster source starts");
    assert_eq!(
        summary(&initial).0,
        strings(&["ConfigMap shop/istio-ca-root-cert"])
    );
    let Some((Object::ConfigMap(cm), origin)) = initial.applied.first() else {
        panic!("a ConfigMap: {initial:?}");
    };
    assert_eq!(
        cm.data.get("root-cert.pem").map(String::as_str),
        Some("ROOT-1")
    );
    assert_eq!(
        origin.to_string(),
        "/api/v1/namespaces/shop/configmaps/istio-ca-root-cert"
    );

    server.apply(config_map("shop", "app-settings", "edited"));
    server.apply(config_map("web", "istio-ca-root-cert", "ROOT-2"));
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&u),
        (strings(&["ConfigMap web/istio-ca-root-cert"]), vec![])
    );
    server.delete("ConfigMap", "shop", "istio-ca-root-cert");
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&u),
        (vec![], strings(&["ConfigMap shop/istio-ca-root-cert"]))
    );
    server.with(|c| {
        let selectors = c.field_selectors("ConfigMap");
        assert!(selectors.len() >= 2, "a list and a watch: {selectors:?}");
        assert!(
            selectors
                .iter()
                .all(|s| s == "metadata.name=istio-ca-root-cert"),
            "{selectors:?}"
        );
    });
}

/// Without a name, ConfigMaps are not read at all.
#[tokio::test]
async fn config_maps_are_not_read_without_a_name() {
    let server = ApiServer::start().await;
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"}}));
    let (initial, _rx) = watch_cluster(server.client(), options())
        .await
        .expect("the cluster source starts");
    assert!(initial.applied.is_empty(), "{initial:?}");
    server.with(|c| assert_eq!(c.lists("ConfigMap"), 0));
}

/// Deployments are read by label only (meshd's waypoints), with a label selector the server
/// applies to the list and the watch; without one they are not read at all.
#[tokio::test]
async fn deployments_are_listed_and_watched_by_label_only() {
    let server = ApiServer::start().await;
    let deployment = |name: &str, labels: serde_json::Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {"replicas": 1},
        })
    };
    let ours = json!({"gateway.istio.io/managed": "istio.io-mesh-controller"});
    server.apply(deployment("waypoint", ours.clone()));
    server.apply(deployment("cart", json!({"app": "cart"})));
    let (initial, _rx) = watch_cluster(server.client(), options())
        .await
        .expect("the cluster source starts");
    assert!(
        initial.applied.is_empty(),
        "no selector, no Deployments: {initial:?}"
    );
    server.with(|c| assert_eq!(c.lists("Deployment"), 0));

    let opts = ClusterOptions {
        kinds: vec![kube_source::Kind::Namespace],
        deployments_labelled: Some("gateway.istio.io/managed=istio.io-mesh-controller".into()),
        ..options()
    };
    let (initial, mut rx) = watch_cluster(server.client(), opts)
        .await
        .expect("the cluster source starts");
    assert!(initial.errors.is_empty(), "{:?}", initial.errors);
    assert_eq!(summary(&initial).0, strings(&["Deployment shop/waypoint"]));
    server.apply(deployment("orders", json!({"app": "orders"})));
    server.apply(deployment("second", ours));
    let u = next(&mut rx).await;
    assert_eq!(summary(&u), (strings(&["Deployment shop/second"]), vec![]));
    server.delete("Deployment", "shop", "waypoint");
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&u),
        (vec![], strings(&["Deployment shop/waypoint"]))
    );
    server.with(|c| {
        let selectors = c.label_selectors("Deployment");
        assert!(selectors.len() >= 2, "a list and a watch: {selectors:?}");
        assert!(
            selectors
                .iter()
                .all(|s| s == "gateway.istio.io/managed=istio.io-mesh-controller"),
            "{selectors:?}"
        );
    });
}
