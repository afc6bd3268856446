//! A waypoint's configuration over meshd's delta ADS, over real TLS and gRPC: a client
//! authenticated as the waypoint's service account receives exactly its own targets and the
//! policies they name; a policy edit pushes that policy alone, and a ztunnel on the same
//! meshd sees nothing of it. The mesh config's tracing reaches every waypoint, and an edit of
//! the mesh config file moves it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::security::Authorization;
use proto::waypoint::{HttpPolicy, Target, Tracing};
use proto::workload::Address;
use support::{Meshd, NAMESPACE_YAML, POLICY_YAML, eventually, pod, run_synced};
use xds_client::{Backoff, Changes, Client, Rejection};

const API: &str = "shop/api.shop.svc.cluster.local";

/// Resource names held per type, and each batch as (type, upserted names, removed names).
#[derive(Default)]
struct Held {
    names: BTreeMap<&'static str, BTreeSet<String>>,
    batches: Vec<(&'static str, Vec<String>, Vec<String>)>,
}

type Shared = Arc<Mutex<Held>>;

/// A handler that keeps the names of type `kind` in `held` and logs every batch.
fn keep<T>(held: Shared, kind: &'static str) -> impl FnMut(Changes<T>) -> Vec<Rejection> {
    move |c: Changes<T>| {
        let mut h = held.lock().unwrap();
        let upserted: Vec<String> = c.upserts.into_iter().map(|(n, _)| n).collect();
        let names = h.names.entry(kind).or_default();
        for n in &c.removed {
            names.remove(n);
        }
        names.extend(upserted.iter().cloned());
        h.batches.push((kind, upserted, c.removed));
        Vec::new()
    }
}

fn names(held: &Shared, kind: &str) -> Vec<String> {
    let h = held.lock().unwrap();
    h.names
        .get(kind)
        .map(|m| m.iter().cloned().collect())
        .unwrap_or_default()
}

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(200), 0.2)
}

fn waypoint_client(meshd: &Meshd, token: String, held: Shared) -> Client {
    let node = proto::core::Node {
        id: "waypoint~10.0.0.9~waypoint-0.shop~shop.svc.cluster.local".into(),
        ..Default::default()
    };
    Client::builder(meshd.target(Some(token)), node)
        .watch::<Target, _>(keep(held.clone(), "target"))
        .watch::<HttpPolicy, _>(keep(held, "policy"))
        .backoff(backoff())
        .build()
}

fn ztunnel_client(meshd: &Meshd, held: Shared) -> Client {
    let node = proto::core::Node {
        id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    Client::builder(meshd.target(Some(meshd.node_token("node-a"))), node)
        .watch::<Address, _>(keep(held.clone(), "address"))
        .watch::<Authorization, _>(keep(held, "authorization"))
        .backoff(backoff())
        .build()
}

fn gateway(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {{name: mesh, port: 15008, protocol: HBONE}}
"
    )
}

fn service(name: &str, vip: &str, waypoint: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
  labels: {{istio.io/use-waypoint: {waypoint}}}
spec:
  clusterIP: {vip}
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"
    )
}

/// A DENY of `method` on `kind` `name` (a Service or the Gateway).
fn deny(name: &str, kind: &str, target: &str, method: &str) -> String {
    let group = if kind == "Gateway" {
        "gateway.networking.k8s.io"
    } else {
        "''"
    };
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: shop
spec:
  targetRefs: [{{kind: {kind}, group: {group}, name: {target}}}]
  action: DENY
  rules: [{{to: [{{operation: {{methods: [{method}]}}}}]}}]
"
    )
}

fn manifests() -> Vec<(&'static str, String)> {
    let docs = |d: &[String]| d.join("---\n");
    vec![
        ("ns.yaml", NAMESPACE_YAML.to_string()),
        (
            "gateways.yaml",
            docs(&[gateway("waypoint"), gateway("other")]),
        ),
        (
            "services.yaml",
            docs(&[
                service("api", "10.96.0.10", "waypoint"),
                service("db", "10.96.0.11", "other"),
            ]),
        ),
        (
            "pods.yaml",
            docs(&[
                pod("api-0", "api", "node-a", "10.1.0.1"),
                pod("db-0", "db", "node-a", "10.1.0.2"),
                // A waypoint pod whose service account does not name its Gateway.
                pod("other-0", "default", "node-a", "10.1.0.9").replace(
                    "    app: default\n",
                    "    app: default\n    gateway.networking.k8s.io/gateway-name: other\n",
                ),
            ]),
        ),
        (
            "api-deny.yaml",
            deny("api-deny", "Service", "api", "DELETE"),
        ),
        (
            "gw-deny.yaml",
            deny("gw-deny", "Gateway", "waypoint", "PATCH"),
        ),
        ("db-deny.yaml", deny("db-deny", "Service", "db", "PUT")),
        ("policy.yaml", POLICY_YAML.to_string()),
    ]
}

#[tokio::test]
async fn a_waypoint_gets_its_targets_and_policies_and_only_edits_after() {
    let meshd = Meshd::start("waypoint", &manifests()).await;
    let (wp, zt) = (Shared::default(), Shared::default());
    // The token names a pod meshd does not know: the service account names the Gateway.
    let token = meshd
        .running()
        .tokens
        .mint_pod("shop", "waypoint", "waypoint-0");
    let tasks = [
        run_synced(waypoint_client(&meshd, token, wp.clone())).await,
        run_synced(ztunnel_client(&meshd, zt.clone())).await,
    ];
    // Its own: db is the other waypoint's, and so is db-deny.
    assert_eq!(names(&wp, "target"), [API]);
    assert_eq!(names(&wp, "policy"), ["shop/api-deny", "shop/gw-deny"]);
    assert!(names(&zt, "address").contains(&API.to_string()));
    assert_eq!(
        names(&zt, "authorization"),
        ["shop/cart-from-web"],
        "targetRefs policies are not ztunnel's"
    );
    let (wp_before, zt_before) = (
        wp.lock().unwrap().batches.len(),
        zt.lock().unwrap().batches.len(),
    );

    // One policy's rules change: that policy, and nothing else, to the waypoint.
    meshd.write(
        "api-deny.yaml",
        &deny("api-deny", "Service", "api", "DELETE, PUT"),
    );
    eventually("the policy edit", Duration::from_secs(10), async || {
        wp.lock().unwrap().batches.len() > wp_before
    })
    .await;
    // Whatever else would have come with it has had time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new: Vec<_> = wp.lock().unwrap().batches[wp_before..].to_vec();
    assert_eq!(
        new,
        [("policy", vec!["shop/api-deny".to_string()], vec![])],
        "an edit of one policy sends that policy"
    );
    assert_eq!(
        zt.lock().unwrap().batches.len(),
        zt_before,
        "ztunnel is sent nothing"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_waypoint_pod_is_known_by_its_gateway_name_label() {
    let meshd = Meshd::start("waypoint-label", &manifests()).await;
    let held = Shared::default();
    let token = meshd
        .running()
        .tokens
        .mint_pod("shop", "default", "other-0");
    let task = run_synced(waypoint_client(&meshd, token, held.clone())).await;
    assert_eq!(names(&held, "target"), ["shop/db.shop.svc.cluster.local"]);
    assert_eq!(names(&held, "policy"), ["shop/db-deny"]);
    task.abort();
}

const TRACING_MESH: &str = "extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.shop.svc.cluster.local, port: 9411}
- name: otel
  opentelemetry: {service: otel.shop, port: 4317}
defaultConfig: {tracing: {sampling: 10}}
";

fn collector_service(name: &str, vip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
  clusterIP: {vip}
  ports:
  - {{name: grpc, port: 4317}}
"
    )
}

#[tokio::test]
async fn the_mesh_tracing_reaches_a_waypoint_and_follows_mesh_config_edits() {
    let mut files = manifests();
    files.push((
        "collectors.yaml",
        [
            collector_service("zipkin", "10.96.0.41"),
            collector_service("otel", "10.96.0.40"),
        ]
        .join("---\n"),
    ));
    let meshd = Meshd::start_with_mesh(
        "waypoint-tracing",
        &files,
        &format!("{TRACING_MESH}defaultProviders: {{tracing: [zipkin]}}\n"),
    )
    .await;
    let held: Arc<Mutex<Vec<Tracing>>> = Arc::default();
    let seen = held.clone();
    let node = proto::core::Node {
        id: "waypoint~10.0.0.9~waypoint-0.shop~shop.svc.cluster.local".into(),
        ..Default::default()
    };
    let token = meshd.running().tokens.mint_account("shop", "waypoint");
    let client = Client::builder(meshd.target(Some(token)), node)
        .watch::<Target, _>(|_: Changes<Target>| Vec::<Rejection>::new())
        .watch::<Tracing, _>(move |c: Changes<Tracing>| {
            let mut seen = seen.lock().unwrap();
            seen.extend(c.upserts.into_iter().map(|(name, t)| {
                assert_eq!(name, proto::WAYPOINT_TRACING_NAME);
                t
            }));
            Vec::<Rejection>::new()
        })
        .backoff(backoff())
        .build();
    let task = run_synced(client).await;
    let last = || held.lock().unwrap().last().cloned();
    let first = last().expect("the tracing arrives with the first config");
    assert_eq!(
        first.exporter,
        proto::waypoint::tracing::Exporter::Zipkin as i32
    );
    assert_eq!(first.address, "10.96.0.41:9411");
    assert_eq!(first.sampling, 10.0);

    meshd.write_mesh(&format!(
        "{TRACING_MESH}defaultProviders: {{tracing: [otel]}}\n"
    ));
    eventually("the edited tracing", Duration::from_secs(10), async || {
        last().is_some_and(|t| t.address == "10.96.0.40:4317")
    })
    .await;
    assert_eq!(
        last().map(|t| t.exporter),
        Some(proto::waypoint::tracing::Exporter::OtlpGrpc as i32)
    );
    task.abort();
}
