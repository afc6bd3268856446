#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The API-server fixture's server-side apply (`support/apiserver.rs`), as `kube` sends it
//! and meshd's waypoint deployer uses it: create, merge, the `status` subresource, and the
//! requests it refuses as the real server does.

#[path = "support/apiserver.rs"]
mod apiserver;

use apiserver::{ApiServer, ApplyRequest};
use kube::api::{Patch, PatchParams};
use kube::core::Request;
use serde_json::{Value, json};

async fn apply(
    server: &ApiServer,
    collection: &str,
    name: &str,
    status: bool,
    body: &Value,
) -> Result<Value, kube::Error> {
    let params = PatchParams::apply("tester").force();
    let request = Request::new(collection);
    let request = if status {
        request.patch_subresource("status", name, &params, &Patch::Apply(body))
    } else {
        request.patch(name, &params, &Patch::Apply(body))
    }
    .expect("request");
    server.client().request::<Value>(request).await
}

fn code(result: Result<Value, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(r)) => r.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

const SERVICES: &str = "/api/v1/namespaces/shop/services";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways";

#[tokio::test]
async fn apply_creates_then_merges_and_status_touches_only_status() {
    let server = ApiServer::start().await;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "w", "namespace": "shop"},
                     "spec": {"ports": [{"port": 15008}]}});
    let created = apply(&server, SERVICES, "w", false, &svc)
        .await
        .expect("created");
    let ip = created["spec"]["clusterIP"].as_str().expect("a VIP");
    assert!(ip.starts_with("10.96."), "{ip}");
    assert!(created["metadata"]["uid"].as_str().is_some());

    let labelled = json!({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "w", "namespace": "shop", "labels": {"a": "b"}},
                          "spec": {"ports": [{"port": 15021}]}});
    let merged = apply(&server, SERVICES, "w", false, &labelled)
        .await
        .expect("merged");
    assert_eq!(merged["metadata"]["labels"]["a"], "b");
    assert_eq!(merged["spec"]["clusterIP"], ip, "the VIP stays");
    assert_eq!(merged["spec"]["ports"], json!([{"port": 15021}]));
    // The generation: 1 on create, one more for the spec's change.
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(merged["metadata"]["generation"], 2);
    // The same apply again changes nothing: no new resourceVersion (no event), same generation.
    let again = apply(&server, SERVICES, "w", false, &labelled)
        .await
        .expect("again");
    assert_eq!(again["metadata"], merged["metadata"]);

    let gw = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "wp", "namespace": "shop"},
                    "spec": {"gatewayClassName": "istio-waypoint"}});
    let status = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "metadata": {"name": "wp", "namespace": "shop"},
                        "spec": {"gatewayClassName": "ignored"},
                        "status": {"addresses": [{"type": "IPAddress", "value": ip}]}});
    assert_eq!(
        code(apply(&server, GATEWAYS, "wp", true, &status).await),
        404,
        "status of a Gateway that does not exist"
    );
    server.apply(gw);
    let written = apply(&server, GATEWAYS, "wp", true, &status)
        .await
        .expect("status");
    assert_eq!(written["status"]["addresses"][0]["value"], ip);
    assert_eq!(written["spec"]["gatewayClassName"], "istio-waypoint");
    assert_eq!(
        written["metadata"]["generation"], 1,
        "status is not the spec"
    );

    server.with(|c| {
        let applies: Vec<(&str, Option<&str>, &str, bool)> = c
            .applies
            .iter()
            .map(|a: &ApplyRequest| {
                (
                    a.kind.as_str(),
                    a.subresource.as_deref(),
                    a.field_manager.as_str(),
                    a.force,
                )
            })
            .collect();
        assert_eq!(
            applies,
            [
                ("Service", None, "tester", true),
                ("Service", None, "tester", true),
                ("Service", None, "tester", true),
                ("Gateway", Some("status"), "tester", true),
            ]
        );
    });
}

#[tokio::test]
async fn apply_refusals() {
    let server = ApiServer::start().await;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "w", "namespace": "shop"}});

    // No fieldManager: the real server's 400 (kube itself refuses to build such a request).
    let request = http::Request::patch(format!("{SERVICES}/w"))
        .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
        .body(serde_json::to_vec(&svc).unwrap())
        .unwrap();
    assert_eq!(code(server.client().request::<Value>(request).await), 400);
    // A body for another object than the path names.
    assert_eq!(
        code(apply(&server, SERVICES, "other", false, &svc).await),
        400
    );
    // A strategic merge patch is not taken.
    let request = http::Request::patch(format!("{SERVICES}/w"))
        .header(
            http::header::CONTENT_TYPE,
            "application/strategic-merge-patch+json",
        )
        .body(serde_json::to_vec(&svc).unwrap())
        .unwrap();
    assert_eq!(code(server.client().request::<Value>(request).await), 415);
    // A server in trouble.
    server.with(|c| c.fail_patches = 1);
    assert_eq!(code(apply(&server, SERVICES, "w", false, &svc).await), 500);
    apply(&server, SERVICES, "w", false, &svc)
        .await
        .expect("the next one goes through");
    server.with(|c| {
        assert_eq!(c.applies.len(), 1, "only accepted applies are recorded");
        assert!(c.object("Service", "shop", "w").is_some());
    });
}
