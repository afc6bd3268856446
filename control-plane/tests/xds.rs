//! xds-client against meshd over real TLS and gRPC: pushes, live edits, O(1) updates, NACKs,
//! reconnects with resubscription, and refused tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::security::Authorization;
use proto::workload::Address;
use support::{Meshd, NAMESPACE_YAML, POLICY_YAML, eventually, pod, run_synced};
use xds_client::{Backoff, Changes, Client, Rejection};

/// What a client holds and every batch it received, per type.
#[derive(Default)]
struct Seen {
    addresses: BTreeMap<String, Address>,
    policies: BTreeMap<String, Authorization>,
    /// (type, upserted names, removed names) per response.
    batches: Vec<(&'static str, Vec<String>, Vec<String>)>,
}

type Shared = Arc<Mutex<Seen>>;

fn client(
    meshd: &Meshd,
    token: Option<String>,
    seen: Shared,
    reject: Option<&'static str>,
) -> Client {
    let node = proto::core::Node {
        id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    let addresses = recorder(seen.clone(), "address", |s| &mut s.addresses, None);
    let policies = recorder(seen, "authorization", |s| &mut s.policies, reject);
    Client::builder(meshd.target(token), node)
        .watch::<Address, _>(addresses)
        .watch::<Authorization, _>(policies)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(200),
            0.2,
        ))
        .build()
}

/// A handler that records each batch and applies it to the map `held` picks, rejecting the
/// resource named `reject`.
fn recorder<T: Send + 'static>(
    seen: Shared,
    kind: &'static str,
    held: fn(&mut Seen) -> &mut BTreeMap<String, T>,
    reject: Option<&'static str>,
) -> impl FnMut(Changes<T>) -> Vec<Rejection> + Send + 'static {
    move |c: Changes<T>| {
        let mut s = seen.lock().unwrap();
        s.batches.push((
            kind,
            c.upserts.iter().map(|(n, _)| n.clone()).collect(),
            c.removed.clone(),
        ));
        let mut rejected = Vec::new();
        for n in &c.removed {
            held(&mut s).remove(n);
        }
        for (n, v) in c.upserts {
            if Some(n.as_str()) == reject {
                rejected.push(Rejection {
                    name: n,
                    reason: "rejected by the test".into(),
                });
            } else {
                held(&mut s).insert(n, v);
            }
        }
        rejected
    }
}

fn manifests(pods: usize) -> Vec<(&'static str, String)> {
    let mut pods_yaml = String::new();
    for i in 0..pods {
        if i > 0 {
            pods_yaml.push_str("---\n");
        }
        let node = if i % 2 == 0 { "node-a" } else { "node-b" };
        pods_yaml.push_str(&pod(
            &format!("cart-{i}"),
            "cart",
            node,
            &format!("10.1.{}.{}", i / 200, i % 200 + 1),
        ));
    }
    vec![
        ("ns.yaml", NAMESPACE_YAML.to_string()),
        ("pods.yaml", pods_yaml),
        ("policy.yaml", POLICY_YAML.to_string()),
    ]
}

#[tokio::test]
async fn pushes_edits_and_one_pod_changes_send_one_resource() {
    let meshd = Meshd::start("pushes", &manifests(200)).await;
    let seen = Shared::default();
    let client = client(&meshd, Some(meshd.node_token("node-a")), seen.clone(), None);
    let task = run_synced(client).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.addresses.len(), 200, "every pod is a workload");
        assert!(s.policies.contains_key("shop/cart-from-web"));
        let w = match &s.addresses["Kubernetes//Pod/shop/cart-7"].r#type {
            Some(proto::workload::address::Type::Workload(w)) => w.clone(),
            other => panic!("not a workload: {other:?}"),
        };
        assert_eq!(
            w.tunnel_protocol,
            proto::workload::TunnelProtocol::Hbone as i32
        );
        assert_eq!(w.service_account, "cart");
        assert_eq!(
            w.authorization_policies,
            vec!["shop/cart-from-web".to_string()]
        );
    }
    let before = seen.lock().unwrap().batches.len();

    // One pod's IP changes: exactly that workload is pushed.
    let mut files = manifests(200);
    files[1].1 = files[1].1.replace("10.1.0.8\n", "10.9.9.9\n");
    let written = Instant::now();
    meshd.write("pods.yaml", &files[1].1);
    eventually("the edited pod", Duration::from_secs(10), async || {
        seen.lock()
            .unwrap()
            .addresses
            .values()
            .any(|a| match &a.r#type {
                Some(proto::workload::address::Type::Workload(w)) => {
                    w.addresses.contains(&vec![10, 9, 9, 9])
                }
                _ => false,
            })
    })
    .await;
    println!("manifest edit -> xds client: {:?}", written.elapsed());
    let new: Vec<_> = seen.lock().unwrap().batches[before..].to_vec();
    assert_eq!(
        new,
        vec![(
            "address",
            vec!["Kubernetes//Pod/shop/cart-7".to_string()],
            vec![]
        )],
        "a one-pod change sends one resource"
    );

    // Deleting the policy sends its removal.
    std::fs::remove_file(meshd.dir.join("manifests/policy.yaml")).unwrap();
    eventually("the policy removal", Duration::from_secs(10), async || {
        seen.lock().unwrap().policies.is_empty()
    })
    .await;
    assert!(meshd.metric("pilot_xds_pushes_total", "wds").await >= 2.0);
    assert_eq!(
        meshd.metric("pilot_xds ", "").await,
        1.0,
        "one client connected"
    );
    task.abort();
}

#[tokio::test]
async fn a_nack_keeps_the_last_good_config_and_shows_in_meshd() {
    let meshd = Meshd::start("nack", &manifests(2)).await;
    let seen = Shared::default();
    let client = client(
        &meshd,
        Some(meshd.node_token("node-a")),
        seen.clone(),
        Some("shop/cart-from-web"),
    );
    let task = tokio::spawn(client.run());
    eventually(
        "the NACK to reach meshd",
        Duration::from_secs(10),
        async || meshd.metric("pilot_total_xds_rejects_total", "wads").await == 1.0,
    )
    .await;
    // The rest of the push applied; the rejected policy is absent.
    assert_eq!(seen.lock().unwrap().addresses.len(), 2);
    assert!(seen.lock().unwrap().policies.is_empty());
    let connections = meshd.get("/debug/connections").await;
    assert!(
        connections.contains("shop/cart-from-web: rejected by the test"),
        "{connections}"
    );
    task.abort();
}

#[tokio::test]
async fn restart_resyncs_only_what_changed() {
    let mut meshd = Meshd::start("restart", &manifests(4)).await;
    let seen = Shared::default();
    let client = client(&meshd, Some(meshd.node_token("node-a")), seen.clone(), None);
    let task = run_synced(client).await;
    meshd.stop().await;
    // While meshd is down: one pod changes, a policy that selects no pod arrives.
    let mut files = manifests(4);
    files[1].1 = files[1].1.replace("10.1.0.2\n", "10.7.7.7\n");
    meshd.write("pods.yaml", &files[1].1);
    meshd.write(
        "other.yaml",
        &POLICY_YAML
            .replace("cart-from-web", "db-from-cart")
            .replace("app: cart", "app: db"),
    );
    let before = seen.lock().unwrap().batches.len();
    let restarted = Instant::now();
    meshd.restart().await;
    eventually("the resync", Duration::from_secs(10), async || {
        seen.lock().unwrap().policies.len() == 2
    })
    .await;
    println!("meshd restart -> resynced: {:?}", restarted.elapsed());
    eventually("the pod change", Duration::from_secs(10), async || {
        seen.lock().unwrap().batches.len() >= before + 2
    })
    .await;
    let resync: Vec<_> = seen.lock().unwrap().batches[before..].to_vec();
    // Only the difference is sent again: the changed pod and the removed policy.
    assert!(
        resync.contains(&(
            "address",
            vec!["Kubernetes//Pod/shop/cart-1".to_string()],
            vec![]
        )),
        "{resync:?}"
    );
    assert!(
        resync.contains(&(
            "authorization",
            vec!["shop/db-from-cart".to_string()],
            vec![]
        )),
        "{resync:?}"
    );
    assert_eq!(resync.len(), 2, "nothing else is resent: {resync:?}");
    assert_eq!(seen.lock().unwrap().addresses.len(), 4);
    task.abort();
}

#[tokio::test]
async fn bad_or_missing_tokens_are_refused() {
    let meshd = Meshd::start("tokens", &manifests(1)).await;
    for token in [None, Some("not.a.token".to_string())] {
        let seen = Shared::default();
        let metrics = xds_client::Metrics::default();
        let client =
            client(&meshd, token.clone(), seen.clone(), None).with_metrics(metrics.clone());
        let synced = client.synced();
        let task = tokio::spawn(client.run());
        eventually(
            "two refused attempts",
            Duration::from_secs(10),
            async || metrics.terminations() >= 2,
        )
        .await;
        assert!(!*synced.borrow(), "{token:?} must not sync");
        assert!(seen.lock().unwrap().batches.is_empty());
        task.abort();
    }
    assert!(meshd.get("/debug/connections").await.trim() == "[]");
}

/// What a raw gRPC client (tonic's generated one, as a foreign client would be) is told: the
/// status codes come through meshd's own response framing.
#[tokio::test]
async fn raw_calls_get_istiods_status_codes() {
    use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use proto::discovery::{DeltaDiscoveryRequest, DiscoveryRequest};

    let meshd = Meshd::start("raw", &manifests(1)).await;
    let open = |target: &xds_client::GrpcTarget, type_url: &str| {
        target
            .request(futures_util::stream::iter([DeltaDiscoveryRequest {
                type_url: type_url.into(),
                ..Default::default()
            }]))
            .unwrap()
    };
    let good = meshd.target(Some(meshd.node_token("node-a")));
    let channel = xds_client::connect(&good).await.unwrap();
    let mut ads = AggregatedDiscoveryServiceClient::new(channel);

    // Served: the first response names the type and carries the workload.
    let mut stream = ads
        .delta_aggregated_resources(open(&good, proto::ADDRESS_TYPE_URL))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.type_url, proto::ADDRESS_TYPE_URL);
    assert!(!first.resources.is_empty(), "{first:?}");

    // A type meshd does not serve ends the stream with INVALID_ARGUMENT.
    let mut stream = ads
        .delta_aggregated_resources(open(
            &good,
            "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        ))
        .await
        .unwrap()
        .into_inner();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("is not served here"),
        "{status:?}"
    );

    // No token: UNAUTHENTICATED, before any stream is set up.
    let anonymous = meshd.target(None);
    let status = ads
        .delta_aggregated_resources(open(&anonymous, proto::ADDRESS_TYPE_URL))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // State-of-the-world ADS: UNIMPLEMENTED, as meshd serves delta xDS only.
    let sotw = good
        .request(futures_util::stream::iter([DiscoveryRequest::default()]))
        .unwrap();
    let status = ads.stream_aggregated_resources(sotw).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("delta xDS only"), "{status:?}");
}
