#![allow(clippy::unwrap_used, clippy::expect_used)]
//! meshd in cluster mode publishes its roots as istiod's namespace controller does, against
//! the API-server fixture (`kube-source/tests/support/apiserver.rs`, real HTTP, real
//! server-side apply requests): every namespace but the ones istiod skips gets the
//! `istio-ca-root-cert` ConfigMap with the mesh's roots, a new namespace too; an edited or
//! deleted one is restored; a failed write is retried; new roots (a new CA) are written
//! everywhere.

#[path = "../../kube-source/tests/support/apiserver.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::Duration;

use apiserver::{ApiServer, Cluster, WAIT};
use cluster::namespace;
use control_plane::deploy::{Namespaces, RootCertPublisher};
use control_plane::meshd::{self, RootCertPublish};
use serde_json::{Value, json};
use tokio::sync::watch;

const CM: &str = "istio-ca-root-cert";

fn publish() -> RootCertPublish {
    RootCertPublish {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

async fn start(api: &ApiServer, name: &str) -> meshd::Running {
    cluster::start_meshd(api, name, |config| config.root_cert = Some(publish())).await
}

/// The `root-cert.pem` of `ns`'s ConfigMap.
fn root_in(c: &Cluster, ns: &str) -> Option<String> {
    c.object("ConfigMap", ns, CM)?["data"]["root-cert.pem"]
        .as_str()
        .map(str::to_string)
}

fn published(c: &Cluster, namespaces: &[&str], pem: &str) -> bool {
    namespaces
        .iter()
        .all(|ns| root_in(c, ns).as_deref() == Some(pem))
}

/// Changes the stored ConfigMap of `ns` as a user's edit would.
fn edit(api: &ApiServer, ns: &str, f: impl FnOnce(&mut Value)) {
    api.with(|c| {
        let mut cm = c.object("ConfigMap", ns, CM).expect("configmap").clone();
        f(&mut cm);
        c.apply(cm);
    });
}

#[tokio::test]
async fn every_namespace_gets_the_roots_and_keeps_them() {
    let api = ApiServer::start().await;
    let skipped = ["kube-public", "kube-node-lease", "local-path-storage"];
    for ns in ["shop", "kube-system"].iter().chain(&skipped) {
        api.apply(namespace(ns, json!({})));
    }
    let mut leaving = namespace("leaving", json!({}));
    leaving["status"] = json!({"phase": "Terminating"});
    api.apply(leaving);
    // Someone else's ConfigMap: not read, not touched.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "settings", "namespace": "shop"},
                     "data": {"a": "b"}}));
    let running = start(&api, "root-cert").await;
    let pem = running.root_pem.clone();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    api.wait_for("the roots in shop and kube-system", |c| {
        published(c, &["shop", "kube-system"], &pem)
    })
    .await;
    // A namespace created now gets them. By then every earlier namespace has been passed over.
    api.apply(namespace(
        "web",
        json!({"istio.io/dataplane-mode": "ambient"}),
    ));
    api.wait_for("the roots in web", |c| published(c, &["web"], &pem))
        .await;
    api.with(|c| {
        for ns in skipped.iter().chain(&["leaving"]) {
            assert!(c.object("ConfigMap", ns, CM).is_none(), "{ns}");
            assert!(c.applies.iter().all(|a| a.namespace != *ns), "{ns}");
        }
        let cm = c.object("ConfigMap", "shop", CM).unwrap();
        assert_eq!(cm["metadata"]["labels"], json!({"istio.io/config": "true"}));
        assert_eq!(cm["data"], json!({"root-cert.pem": pem}));
        assert_eq!(
            c.object("ConfigMap", "shop", "settings").unwrap()["data"],
            json!({"a": "b"})
        );
        assert!(!c.applies.is_empty());
        for a in &c.applies {
            assert_eq!(
                (a.kind.as_str(), a.name.as_str()),
                ("ConfigMap", CM),
                "{a:?}"
            );
            assert_eq!(a.field_manager, "istio.io/namespace-controller", "{a:?}");
            assert!(a.force, "{a:?}");
        }
        let selectors = c.field_selectors("ConfigMap");
        assert!(
            !selectors.is_empty()
                && selectors
                    .iter()
                    .all(|s| s == "metadata.name=istio-ca-root-cert"),
            "meshd reads no other ConfigMap: {selectors:?}"
        );
    });

    // Edited: the roots are put back; a key someone added stays theirs.
    edit(&api, "shop", |cm| {
        cm["data"]["root-cert.pem"] = "forged".into();
        cm["data"]["extra"] = "mine".into();
    });
    api.wait_for("the roots back after an edit", |c| {
        published(c, &["shop"], &pem)
    })
    .await;
    api.with(|c| {
        let data = &c.object("ConfigMap", "shop", CM).unwrap()["data"];
        assert_eq!(data["extra"], "mine");
    });

    // The label removed: put back.
    edit(&api, "shop", |cm| {
        cm["metadata"].as_object_mut().unwrap().remove("labels");
    });
    api.wait_for("the label back", |c| {
        c.object("ConfigMap", "shop", CM).unwrap()["metadata"]["labels"]["istio.io/config"]
            == "true"
    })
    .await;

    // Deleted: written again.
    api.delete("ConfigMap", "web", CM);
    api.wait_for("the roots back after a delete", |c| {
        published(c, &["web"], &pem)
    })
    .await;

    // The API server fails the next writes: retried until one goes through. (Three, so that
    // passes already on their way cannot pass for retries.)
    api.with(|c| c.fail_patches = 3);
    api.apply(namespace("billing", json!({})));
    api.wait_for("the roots in billing after failed writes", |c| {
        published(c, &["billing"], &pem)
    })
    .await;
    api.with(|c| assert_eq!(c.fail_patches, 0, "the failures were met"));

    running.stop().await;
}

/// Switched off, meshd neither reads nor writes ConfigMaps.
#[tokio::test]
async fn switched_off_nothing_is_published() {
    let api = ApiServer::start().await;
    api.apply(namespace("shop", json!({})));
    let running =
        cluster::start_meshd(&api, "root-cert-off", |config| config.root_cert = None).await;
    // The Namespace list happened before start returned; ConfigMaps were never asked for.
    api.with(|c| {
        assert!(c.lists("Namespace") > 0);
        assert_eq!(c.lists("ConfigMap"), 0);
        assert!(c.field_selectors("ConfigMap").is_empty());
        assert!(c.object("ConfigMap", "shop", CM).is_none());
    });
    running.stop().await;
}

/// A new CA (meshd restarted with other roots): every namespace gets the new roots.
#[tokio::test]
async fn a_new_ca_is_published_everywhere() {
    let api = ApiServer::start().await;
    for ns in ["shop", "web"] {
        api.apply(namespace(ns, json!({})));
    }
    let first = start(&api, "root-cert-ca-1").await;
    let old = first.root_pem.clone();
    api.wait_for("the first roots", |c| published(c, &["shop", "web"], &old))
        .await;
    first.stop().await;

    let second = start(&api, "root-cert-ca-2").await;
    let new = second.root_pem.clone();
    assert_ne!(new, old, "another directory, another CA");
    api.wait_for("the new roots everywhere", |c| {
        published(c, &["shop", "web"], &new)
    })
    .await;
    second.stop().await;
}

/// The publisher on its own: roots that change while it runs are written everywhere, and it
/// stops when its view's sender goes away.
#[tokio::test]
async fn roots_changed_in_process_are_published_everywhere() {
    let api = ApiServer::start().await;
    let mut view = Namespaces::default();
    for ns in ["shop", "web", "kube-public"] {
        view.namespaces.insert(ns.into(), false);
    }
    let (view_tx, view_rx) = watch::channel(view);
    let (roots_tx, roots_rx) = watch::channel("ROOT-1".to_string());
    let publisher = RootCertPublisher {
        client: api.client(),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let task = tokio::spawn(publisher.run(view_rx, roots_rx));
    api.wait_for("ROOT-1", |c| published(c, &["shop", "web"], "ROOT-1"))
        .await;
    roots_tx.send_replace("ROOT-2".into());
    api.wait_for("ROOT-2", |c| published(c, &["shop", "web"], "ROOT-2"))
        .await;
    api.with(|c| assert!(c.object("ConfigMap", "kube-public", CM).is_none()));

    drop(view_tx);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the publisher stops with its view")
        .expect("the publisher does not panic");
}
