#![allow(clippy::unwrap_used, clippy::expect_used)]
//! meshd in cluster mode deploys waypoints, against the API-server fixture
//! (`kube-source/tests/support/apiserver.rs`, real HTTP, real server-side apply requests): a
//! Gateway of class `istio-waypoint` gets its ServiceAccount, Service and Deployment and a
//! status with the Service's address; an edit is applied again; another class gets nothing;
//! a write the API server fails is retried; a deleted Service, Deployment or ServiceAccount is
//! put back, and an edited Deployment taken back.

#[path = "../../kube-source/tests/support/apiserver.rs"]
mod apiserver;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::Duration;

use apiserver::{ApiServer, Cluster};
use control_plane::meshd::{self, WaypointDeploy};
use serde_json::{Value, json};

const IMAGE: &str = "registry.example/mesh/waypoint:test";

fn gateway(name: &str, class: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "labels": labels},
        "spec": {
            "gatewayClassName": class,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    })
}

fn object<'a>(c: &'a Cluster, kind: &str, name: &str) -> Option<&'a Value> {
    c.object(kind, "shop", name)
}

fn deployed(c: &Cluster, name: &str) -> bool {
    ["ServiceAccount", "Service", "Deployment"]
        .iter()
        .all(|kind| object(c, kind, name).is_some())
}

fn addresses(c: &Cluster, name: &str) -> Value {
    object(c, "Gateway", name).map_or(Value::Null, |g| g["status"]["addresses"].clone())
}

fn deployment_label(c: &Cluster, label: &str) -> Option<String> {
    object(c, "Deployment", "waypoint")?["metadata"]["labels"][label]
        .as_str()
        .map(str::to_string)
}

/// Sets the `team` label of the stored waypoint Gateway, keeping the rest (its status too, as
/// an edit through the API server does: status is a subresource).
fn label_gateway(api: &ApiServer, team: &str) {
    api.with(|c| {
        let mut gw = object(c, "Gateway", "waypoint").expect("gateway").clone();
        gw["metadata"]["labels"]["team"] = team.into();
        c.apply(gw);
    });
}

async fn start_meshd(api: &ApiServer, name: &str) -> meshd::Running {
    cluster::start_meshd(api, name, |config| {
        config.waypoints = Some(WaypointDeploy {
            image: IMAGE.into(),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..WaypointDeploy::default()
        });
    })
    .await
}

#[tokio::test]
async fn a_waypoint_gateway_is_deployed_and_gets_its_address() {
    let api = ApiServer::start().await;
    api.apply(cluster::namespace(
        "shop",
        json!({"istio.io/dataplane-mode": "ambient"}),
    ));
    api.apply(gateway(
        "waypoint",
        "istio-waypoint",
        json!({"istio.io/waypoint-for": "service"}),
    ));
    api.apply(gateway("ingress", "istio", json!({})));
    // A waypoint whose Service name Kubernetes would refuse: logged, nothing written.
    let mut broken = gateway("broken", "istio-waypoint", json!({}));
    broken["metadata"]["annotations"] = json!({"gateway.istio.io/name-override": "Bad.Name"});
    api.apply(broken);
    let running = start_meshd(&api, "deploy-waypoint").await;

    api.wait_for("the waypoint's objects and status", |c| {
        deployed(c, "waypoint")
            && addresses(c, "waypoint")
                .as_array()
                .is_some_and(|a| a.len() == 2)
    })
    .await;
    api.with(|c| {
        let svc = object(c, "Service", "waypoint").expect("service");
        let vip = svc["spec"]["clusterIP"].as_str().expect("allocated VIP");
        assert_eq!(
            addresses(c, "waypoint"),
            json!([
                {"type": "IPAddress", "value": vip},
                {"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"},
            ])
        );
        let status = &object(c, "Gateway", "waypoint").expect("gateway")["status"];
        let conditions: Vec<(&str, &str)> = status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(conditions, [("Accepted", "True"), ("Programmed", "True")]);
        assert_eq!(
            object(c, "Gateway", "waypoint").unwrap()["spec"]["gatewayClassName"],
            "istio-waypoint",
            "the status apply leaves the spec alone"
        );

        for kind in ["ServiceAccount", "Service", "Deployment"] {
            let meta = &object(c, kind, "waypoint").unwrap()["metadata"];
            assert_eq!(
                meta["ownerReferences"],
                json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "waypoint", "uid": "uid-waypoint"}]),
                "{kind}"
            );
            assert_eq!(
                meta["labels"]["gateway.networking.k8s.io/gateway-name"],
                "waypoint"
            );
            assert_eq!(
                meta["labels"]["gateway.istio.io/managed"],
                "istio.io-mesh-controller"
            );
            assert_eq!(meta["labels"]["istio.io/waypoint-for"], "service", "{kind}");
        }
        let ports: Vec<(u64, &str)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["appProtocol"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports, [(15021, "tcp"), (15008, "hbone")]);
        let d = object(c, "Deployment", "waypoint").unwrap();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "waypoint");
        assert_eq!(pod["containers"][0]["image"], IMAGE);
        let xds = pod["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "XDS_ADDRESS")
            .expect("XDS_ADDRESS");
        assert_eq!(xds["value"], "https://istiod.istio-system.svc:15012");

        // Another class: nothing.
        for kind in ["ServiceAccount", "Service", "Deployment"] {
            assert!(object(c, kind, "ingress").is_none(), "{kind} for ingress");
        }
        assert_eq!(addresses(c, "ingress"), Value::Null);
        assert!(c.applies.iter().all(|a| a.name != "ingress"));
        // The broken waypoint came first in the same pass and got nothing, not even a status.
        assert!(
            c.applies
                .iter()
                .all(|a| a.name != "broken" && a.name != "Bad.Name"),
            "{:?}",
            c.applies
        );
        // Every write is a forced server-side apply by istiod's field manager.
        assert!(!c.applies.is_empty());
        for a in &c.applies {
            assert_eq!(a.field_manager, "istio.io/gateway-controller", "{a:?}");
            assert!(a.force, "{a:?}");
        }
        let status_writes: Vec<&str> = c
            .applies
            .iter()
            .filter(|a| a.subresource.as_deref() == Some("status"))
            .map(|a| a.kind.as_str())
            .collect();
        assert!(!status_writes.is_empty() && status_writes.iter().all(|k| *k == "Gateway"));
    });

    // An edit of the Gateway (a label) is applied again.
    label_gateway(&api, "payments");
    api.wait_for("the edited label on the deployment", |c| {
        deployment_label(c, "team").as_deref() == Some("payments")
    })
    .await;
    api.with(|c| {
        let svc = &object(c, "Service", "waypoint").unwrap();
        assert_eq!(svc["metadata"]["labels"]["team"], "payments");
    });

    // The API server fails the next writes: they are retried until one goes through. (Three,
    // so that wakes already on their way cannot pass for retries.)
    api.with(|c| c.fail_patches = 3);
    label_gateway(&api, "billing");
    api.wait_for("the label after failed writes", |c| {
        deployment_label(c, "team").as_deref() == Some("billing")
    })
    .await;
    api.with(|c| assert_eq!(c.fail_patches, 0, "the failures were met"));

    // Someone deletes the Service: it is applied again, and the status follows its new VIP.
    let old_vip =
        api.with(|c| object(c, "Service", "waypoint").unwrap()["spec"]["clusterIP"].clone());
    api.delete("Service", "shop", "waypoint");
    api.wait_for("the service back with a new VIP in the status", |c| {
        let Some(svc) = object(c, "Service", "waypoint") else {
            return false;
        };
        let vip = &svc["spec"]["clusterIP"];
        *vip != old_vip && addresses(c, "waypoint")[0]["value"] == *vip
    })
    .await;

    // Someone deletes the Deployment: it is applied again. meshd reads only the Deployments
    // a waypoint controller manages.
    api.delete("Deployment", "shop", "waypoint");
    api.wait_for("the deployment back", |c| {
        object(c, "Deployment", "waypoint").is_some()
    })
    .await;
    // And the ServiceAccount.
    let deployment_applies =
        |c: &Cluster| c.applies.iter().filter(|a| a.kind == "Deployment").count();
    let before_put_back = api.with(|c| deployment_applies(c));
    api.delete("ServiceAccount", "shop", "waypoint");
    api.wait_for("the service account back", |c| {
        object(c, "ServiceAccount", "waypoint").is_some()
    })
    .await;

    // (Once the put-back is done: its Deployment apply would take an edit back as well.)
    api.wait_for("the put-back done", |c| {
        deployment_applies(c) > before_put_back
    })
    .await;
    // Someone edits the Deployment: our fields are taken back at once (the Gateway has not
    // changed); a field that is not ours (an autoscaler's replicas) stays theirs.
    let edited = api.with(|c| {
        let mut d = object(c, "Deployment", "waypoint").unwrap().clone();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest".into();
        d["spec"]["replicas"] = 3.into();
        d
    });
    let before = edited["metadata"]["generation"].as_u64().unwrap();
    let status_writes = |c: &Cluster| c.applies.iter().filter(|a| a.subresource.is_some()).count();
    let statuses = api.with(|c| status_writes(c));
    api.apply(edited);
    api.wait_for("the image taken back", |c| {
        let d = object(c, "Deployment", "waypoint").unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    })
    .await;
    api.with(|c| {
        let d = object(c, "Deployment", "waypoint").unwrap();
        assert_eq!(d["spec"]["replicas"], 3, "not ours: left alone");
        assert_eq!(
            d["metadata"]["generation"],
            before + 2,
            "their edit, then ours"
        );
        assert_eq!(
            status_writes(c),
            statuses,
            "the status, unchanged, is not written again"
        );
    });

    // Settled: no more writes (the deployer sees its Deployment, and does not apply again and
    // again as if it were missing or edited).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = api.with(|c| deployment_applies(c));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.with(|c| deployment_applies(c)),
        settled,
        "no apply loop"
    );
    api.with(|c| {
        let selectors = c.label_selectors("Deployment");
        assert!(!selectors.is_empty(), "Deployments are listed and watched");
        assert!(
            selectors
                .iter()
                .all(|s| s == "gateway.istio.io/managed=istio.io-mesh-controller"),
            "{selectors:?}"
        );
    });

    running.stop().await;
}
