//! `bench_local`: what shared mode costs and how fast it takes pods, on a local cluster made
//! by `meshctl local up` (two nodes, node agents, one shared ztunnel per node, meshd).
//!
//! Figures, all from one run:
//! - pods registered per second: from the node agent's start to the last of node-a's pods
//!   served by its ztunnel (both logs' timestamps), and the agent's own count;
//! - node-a's ztunnel resident memory with all of them, and per pod;
//! - cross-node throughput, one stream, pod to pod through both node proxies (HBONE), against
//!   the same path between two pods of an unlabeled namespace (no mesh), alternating rounds:
//!   medians and their ratio.
//!
//! Needs root and `meshctl`, `meshd`, `node-agent`, `ztunnel` and `meshapp` beside it (build
//! them in one profile). `--short` is the CI mode.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use e2e::local::{Cluster, bin_dir, log_time, pid_in_netns, wait_for_count};
use e2e::procfs::{median, rss};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// CI mode: 20 pods, one round of 1 s.
    #[arg(long)]
    short: bool,
    /// Pods on node-a besides the client.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Rounds of the throughput comparison (each alternates which path goes first).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// The local cluster's name (its network namespaces' prefix).
    #[arg(long, default_value = "bench")]
    name: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-local-results.json")]
    out: PathBuf,
}

const CLIENT_IP: &str = "10.244.0.2";
const OUTSIDER_IP: &str = "10.244.0.3";
const SERVER_IP: &str = "10.244.1.2";
const BARE_IP: &str = "10.244.1.3";

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.pods = 20;
        args.rounds = 1;
        args.secs = 1.0;
    }
    let bin_dir = bin_dir(&["meshctl", "meshd", "node-agent", "ztunnel", "meshapp"])?;
    let meshctl = bin_dir.join("meshctl");
    let dir = std::env::temp_dir().join(format!("bench-local-{}", args.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cluster.yaml"), manifests(args.pods))?;
    let state = dir.join("state");
    let cluster = Cluster {
        meshctl,
        name: args.name.clone(),
        state: state.clone(),
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    };

    eprintln!(
        "bench_local: meshctl local up ({} pods on node-a)",
        args.pods + 1
    );
    let up = Instant::now();
    cluster.run(&["up", &dir.to_string_lossy()])?;
    let up_secs = up.elapsed().as_secs_f64();
    let result = measure(&args, &cluster, up_secs);
    let _ = cluster.run(&["down"]);
    let doc = result?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?)?;
    println!("\nJSON: {}", args.out.display());
    Ok(())
}

fn measure(args: &Args, cluster: &Cluster, up_secs: f64) -> anyhow::Result<Value> {
    let logs = cluster.state.join(&cluster.name).join("logs");
    let served = args.pods + 1;
    let zt_log = logs.join("ztunnel-node-a.log");
    let zt_text = wait_for_count(&zt_log, "serving workload", served)?;
    let agent_text = std::fs::read_to_string(logs.join("node-agent-node-a.log"))?;
    let agent_start = agent_text
        .lines()
        .find(|l| l.contains("node agent started"))
        .and_then(log_time)
        .context("the agent's start in its log")?;
    let last_served = zt_text
        .lines()
        .filter(|l| l.contains("serving workload"))
        .nth(served - 1)
        .and_then(log_time)
        .context("the last pod served in ztunnel's log")?;
    let register_secs = last_served - agent_start;
    let agent_rate: f64 = agent_text
        .lines()
        .filter(|l| l.contains("pods captured"))
        .filter_map(|l| {
            l.split("per_second=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next()
        .unwrap_or(0.0);
    let zt_pid = pid_in_netns(&format!("{}.node-a", cluster.name), "ztunnel")?;
    let zt_rss = rss(zt_pid).map(|r| r.total()).unwrap_or(0);

    // Throughput: one stream through both node proxies vs the same hop without the mesh.
    // Round 0 warms both paths up (first connections wait on neighbour discovery, the
    // client's certificate and its connection pool) and is not counted.
    let mut mesh = Vec::new();
    let mut direct = Vec::new();
    for round in 0..=args.rounds {
        let secs = if round == 0 { 0.5 } else { args.secs };
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for meshed in order {
            let (from, to) = if meshed {
                ("bench/client", SERVER_IP)
            } else {
                ("plain/outsider", BARE_IP)
            };
            let out = cluster.output(&[
                "exec",
                from,
                "--",
                "meshapp",
                "bulk",
                "--connect",
                &format!("{to}:9000"),
                "--secs",
                &secs.to_string(),
            ])?;
            let v: Value = serde_json::from_str(out.trim())
                .with_context(|| format!("bulk's output: {out}"))?;
            let gbps = v["mbps"].as_f64().unwrap_or(0.0) / 1000.0;
            if round > 0 {
                if meshed { &mut mesh } else { &mut direct }.push(gbps);
            }
        }
    }
    let (mesh_gbps, direct_gbps) = (median(&mesh), median(&direct));
    let doc = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "mode": if args.short { "short" } else { "full" },
        "pods_on_node": served,
        "meshctl_up_secs": up_secs,
        "register": {
            "secs_from_agent_start": register_secs,
            "pods_per_sec": served as f64 / register_secs.max(1e-9),
            "agent_reported_pods_per_sec": agent_rate,
        },
        "ztunnel_rss_kib": zt_rss,
        "ztunnel_rss_kib_per_pod": zt_rss as f64 / served as f64,
        "cross_node_gbps": { "mesh": mesh_gbps, "direct": direct_gbps, "samples_mesh": mesh, "samples_direct": direct },
        "mesh_vs_direct": mesh_gbps / direct_gbps.max(1e-9),
    });
    println!(
        "pods registered on node-a: {served} in {register_secs:.2} s from the agent's start ({:.0} pods/s; the agent's own count {agent_rate:.0}/s); meshctl local up took {up_secs:.1} s in all",
        served as f64 / register_secs.max(1e-9)
    );
    println!(
        "node-a's ztunnel with {served} pods: {} KiB resident ({:.0} KiB per pod)",
        zt_rss,
        zt_rss as f64 / served as f64
    );
    println!(
        "cross-node, one stream, pod to pod: mesh {mesh_gbps:.2} Gbit/s, direct {direct_gbps:.2} Gbit/s, mesh/direct {:.2} (medians of {} rounds of {} s)",
        mesh_gbps / direct_gbps.max(1e-9),
        args.rounds,
        args.secs
    );
    Ok(doc)
}

/// The manifests: ambient `bench` (client and `pods` idle pods on node-a, the server on
/// node-b) and unlabeled `plain` (one pod per node) for the path without the mesh.
fn manifests(pods: usize) -> String {
    let pod = |ns: &str, name: &str, node: &str, ip: &str, command: &str| {
        let containers = if command.is_empty() {
            String::new()
        } else {
            format!("  containers:\n  - name: app\n    command: [{command}]\n")
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  nodeName: {node}\n  serviceAccountName: {name}\n{containers}status:\n  podIPs:\n  - ip: {ip}\n"
        )
    };
    let sink = "meshapp, sink, --listen, \"0.0.0.0:9000\"";
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n  labels:\n    istio.io/dataplane-mode: ambient\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: plain\n",
    );
    y += &pod("bench", "client", "node-a", CLIENT_IP, "");
    y += &pod("plain", "outsider", "node-a", OUTSIDER_IP, "");
    y += &pod("bench", "server", "node-b", SERVER_IP, sink);
    y += &pod("plain", "bare", "node-b", BARE_IP, sink);
    for i in 0..pods {
        let ip = format!("10.245.{}.{}", i / 250, i % 250 + 1);
        // Ten service accounts: certificates are per identity, shared by its pods.
        y += &pod("bench", &format!("idle-{i}"), "node-a", &ip, "").replace(
            &format!("serviceAccountName: idle-{i}"),
            &format!("serviceAccountName: idle-{}", i % 10),
        );
    }
    y
}
