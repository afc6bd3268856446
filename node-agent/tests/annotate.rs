//! The redirection annotation against the API-server fixture (real HTTP, real merge patches):
//! what the ZDS server reports is what the pod carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../kube-source/tests/support/apiserver.rs"]
mod apiserver;

use apiserver::ApiServer;
use node_agent::annotate::{self, ANNOTATION, Redirection, State};
use serde_json::json;

fn pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "annotations": {"keep": "me"}},
        "spec": {"nodeName": "node-a"},
    })
}

fn report(name: &str, state: Option<State>) -> Redirection {
    Redirection {
        uid: format!("uid-{name}"),
        namespace: "shop".into(),
        name: name.into(),
        state,
    }
}

fn annotation(c: &apiserver::Cluster, name: &str) -> Option<String> {
    let pod = c.object("Pod", "shop", name)?;
    pod["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn the_annotation_follows_what_ztunnel_took() {
    let server = ApiServer::start().await;
    server.apply(pod("web"));
    server.apply(pod("api"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(annotate::run(server.client(), rx));

    tx.send(report("web", Some(State::Pending))).unwrap();
    server
        .wait_for("web pending", |c| {
            annotation(c, "web").as_deref() == Some("pending")
        })
        .await;
    tx.send(report("web", Some(State::Enabled))).unwrap();
    tx.send(report("api", Some(State::Enabled))).unwrap();
    server
        .wait_for("both enabled", |c| {
            annotation(c, "web").as_deref() == Some("enabled")
                && annotation(c, "api").as_deref() == Some("enabled")
        })
        .await;
    let patches = server.with(|c| c.patches);
    assert_eq!(patches, 3);

    // A replay acks every pod again: nothing to write.
    tx.send(report("web", Some(State::Enabled))).unwrap();
    tx.send(report("api", Some(State::Enabled))).unwrap();
    // Released: the annotation goes, the pod's other annotations stay.
    tx.send(report("web", None)).unwrap();
    server
        .wait_for("web released", |c| annotation(c, "web").is_none())
        .await;
    server.with(|c| {
        assert_eq!(c.patches, 4, "the replay wrote nothing");
        let web = c.object("Pod", "shop", "web").unwrap();
        assert_eq!(web["metadata"]["annotations"]["keep"], "me");
        assert_eq!(annotation(c, "api").as_deref(), Some("enabled"));
    });

    // A pod deleted before its release is nothing to annotate (404 is not retried forever),
    // and a later report is still written.
    server.delete("Pod", "shop", "api");
    tx.send(report("api", None)).unwrap();
    server.apply(pod("db"));
    tx.send(report("db", Some(State::Enabled))).unwrap();
    server
        .wait_for("db enabled", |c| {
            annotation(c, "db").as_deref() == Some("enabled")
        })
        .await;
}

/// An API server that fails a patch: the annotation is written on a later try.
#[tokio::test]
async fn a_failed_patch_is_retried() {
    let server = ApiServer::start().await;
    server.apply(pod("web"));
    server.with(|c| c.fail_patches = 1);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(annotate::run(server.client(), rx));
    tx.send(report("web", Some(State::Enabled))).unwrap();
    server
        .wait_for("web enabled after a retry", |c| {
            annotation(c, "web").as_deref() == Some("enabled")
        })
        .await;
    server.with(|c| assert_eq!((c.fail_patches, c.patches), (0, 1)));
}
