//! End-to-end, the node agent in a cluster: pods come from the API server (the list/watch
//! fixture over real HTTP; no API server runs on these machines), capture and ZDS are real,
//! and the agent writes istio-cni's `ambient.istio.io/redirection` annotation back. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../kube-source/tests/support/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::{ApiServer, Cluster};
use e2e::mesh::{Binaries, Mesh, wait_for_file};
use e2e::netns::{Host, Net};
use e2e::topology::{self, CLIENT_IP, SERVER_IP};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const ANNOTATION: &str = "ambient.istio.io/redirection";

fn namespace(name: &str, ambient: bool) -> Value {
    let labels = if ambient {
        json!({"istio.io/dataplane-mode": "ambient"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "serviceAccountName": name},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn annotation(c: &Cluster, ns: &str, name: &str) -> Option<String> {
    c.object("Pod", ns, name)?["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .map(str::to_string)
}

fn captured(host: &Host) -> bool {
    host.command("nft")
        .args(["list", "table", "inet", capture::TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The agent watches only its node's pods, captures the ambient ones, marks them `pending`
/// until a ztunnel takes them and `enabled` once one has, and removes the annotation and the
/// rules when the namespace loses its label.
#[test]
fn node_agent_in_a_cluster_annotates_its_pods() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt.block_on(ApiServer::start());
    api.apply(namespace("demo", true));
    api.apply(pod("demo", "client", "node-a", CLIENT_IP));
    api.apply(pod("demo", "server", "node-a", SERVER_IP));
    // Same namespace, another node: not this agent's.
    api.apply(pod("demo", "elsewhere", "node-b", "10.244.9.9"));

    let mut net = Net::new("agentkube").expect("net");
    let client = net.host("client", CLIENT_IP).expect("client");
    let server = net.host("server", SERVER_IP).expect("server");
    let node = net.host("node", "10.244.0.20").expect("node");
    let mut mesh = Mesh::new(
        "agentkube",
        Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries"),
    )
    .expect("mesh");
    let kubeconfig = mesh
        .write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {}\nusers:\n- name: agent\n  user: {{}}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: agent\ncurrent-context: fixture\n",
                api.url()
            ),
        )
        .expect("kubeconfig");
    let socket = mesh.dir.join("ztunnel.sock");
    let log = mesh.dir.join("node-agent.log");
    let prefix = node
        .ns
        .rsplit_once('.')
        .map_or(node.ns.as_str(), |(p, _)| p);
    // The agent runs on the host: it reaches the API server on loopback and finds the pods'
    // namespaces among this test's.
    let mut agent = std::process::Command::new(mesh.bins.node_agent().expect("node-agent"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .args(["--node", "node-a", "--pod-netns-prefix", prefix])
        .arg("--socket")
        .arg(&socket)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("node-agent");
    wait_for_file(&log, "node agent started", T).expect("agent up");

    // No ztunnel yet: captured, pending.
    rt.block_on(api.wait_for("both pods pending", |c| {
        annotation(c, "demo", "client").as_deref() == Some("pending")
            && annotation(c, "demo", "server").as_deref() == Some("pending")
    }));
    assert!(captured(&client) && captured(&server));
    api.with(|c| {
        assert_eq!(annotation(c, "demo", "elsewhere"), None);
        assert!(
            c.field_selectors("Pod")
                .iter()
                .all(|s| s == "spec.nodeName=node-a"),
            "the agent asks only for its node's pods: {:?}",
            c.field_selectors("Pod")
        );
        assert!(
            c.field_selectors("AuthorizationPolicy").is_empty(),
            "nor for kinds it does not use"
        );
    });

    // A ztunnel connects and takes the replay: enabled.
    let config = mesh
        .write("mesh.yaml", &topology::config("server"))
        .expect("config");
    let zt = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("ztunnel");
    zt.wait_for_count("serving workload", 2, T)
        .expect("pods served");
    rt.block_on(api.wait_for("both pods enabled", |c| {
        annotation(c, "demo", "client").as_deref() == Some("enabled")
            && annotation(c, "demo", "server").as_deref() == Some("enabled")
    }));

    // The namespace loses its label: released, annotation gone, rules gone.
    api.apply(namespace("demo", false));
    rt.block_on(api.wait_for("annotations removed", |c| {
        annotation(c, "demo", "client").is_none() && annotation(c, "demo", "server").is_none()
    }));
    zt.wait_for_count("pod no longer served", 2, T)
        .expect("ztunnel released both");
    let deadline = std::time::Instant::now() + T;
    while captured(&client) || captured(&server) {
        assert!(std::time::Instant::now() < deadline, "rules not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
