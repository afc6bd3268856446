//! `bench_waypoint`: what the waypoint adds, on a local cluster made by `meshctl local up`.
//!
//! HTTP/1.1 `POST`s with a 1 KiB body at a fixed rate (1,000/s by default, over 10 kept-alive
//! connections) from a pod on node-a to two identical HTTP servers on node-b: `direct` (client
//! ztunnel -> server ztunnel) and `via` (client ztunnel -> waypoint -> server ztunnel, where the
//! waypoint decides each request against an ALLOW and a user-agent DENY policy). Rounds
//! alternate which path goes first; figures are medians over rounds:
//! - p50 and p99 latency of each path and what the waypoint adds;
//! - the waypoint's CPU over a `via` run (CPU seconds / wall seconds: vCPU), per 1,000
//!   requests/s, and its resident memory after it.
//!
//! Needs root and `meshctl`, `meshd`, `node-agent`, `ztunnel`, `waypoint` and `meshapp`
//! beside it (one build profile). `--short` is the CI mode.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use e2e::local::{Cluster, bin_dir, pid_in_netns, wait_for_count};
use e2e::procfs::{median, proc_cpu_split, rss};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// CI mode: one round of 2 s at 200 requests/s.
    #[arg(long)]
    short: bool,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    /// Kept-alive client connections the requests are spread over.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Request body bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Rounds (each alternates which path goes first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// The local cluster's name (its network namespaces' prefix).
    #[arg(long, default_value = "benchwp")]
    name: String,
    /// The waypoint's process name, when it runs under another program (valgrind, for
    /// `scripts/bench-waypoint-instructions.sh`).
    #[arg(long, default_value = "waypoint")]
    waypoint_process: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-waypoint-results.json")]
    out: PathBuf,
}

const DIRECT_VIP: &str = "10.96.0.40:80";
const VIA_VIP: &str = "10.96.0.41:80";

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.rps = 200.0;
        args.rounds = 1;
        args.secs = 2.0;
    }
    let bin_dir = bin_dir(&[
        "meshctl",
        "meshd",
        "node-agent",
        "ztunnel",
        "waypoint",
        "meshapp",
    ])?;
    let dir = std::env::temp_dir().join(format!("bench-waypoint-{}", args.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cluster.yaml"), MANIFESTS)?;
    let cluster = Cluster {
        meshctl: bin_dir.join("meshctl"),
        name: args.name.clone(),
        state: dir.join("state"),
        path: format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    };
    eprintln!("bench_waypoint: meshctl local up");
    cluster.run(&["up", &dir.to_string_lossy()])?;
    let result = measure(&args, &cluster);
    let _ = cluster.run(&["down"]);
    let doc = result?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?)?;
    println!("\nJSON: {}", args.out.display());
    Ok(())
}

/// One run's figures.
struct Run {
    p50_us: f64,
    p99_us: f64,
    count: f64,
}

fn run(args: &Args, cluster: &Cluster, vip: &str, rps: f64, secs: f64) -> anyhow::Result<Run> {
    let out = cluster.output(&[
        "exec",
        "bench/client",
        "--",
        "meshapp",
        "http-rate",
        "--connect",
        vip,
        "--rps",
        &rps.to_string(),
        "--conns",
        &args.conns.to_string(),
        "--size",
        &args.size.to_string(),
        "--secs",
        &secs.to_string(),
    ])?;
    let v: Value =
        serde_json::from_str(out.trim()).with_context(|| format!("http-rate's output: {out}"))?;
    let field = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Run {
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        count: field("count"),
    })
}

fn measure(args: &Args, cluster: &Cluster) -> anyhow::Result<Value> {
    let logs = cluster.state.join(&cluster.name).join("logs");
    // meshctl waits for the waypoint to be ready; this also checks where its log is.
    wait_for_count(
        &logs.join("waypoint-bench.waypoint-0.log"),
        "serving HBONE",
        1,
    )?;
    let wp = pid_in_netns(
        &format!("{}.node-a.bench.waypoint-0", cluster.name),
        &args.waypoint_process,
    )?;
    // A yardstick on the same machine: node-b's ztunnel, which terminates the direct path's
    // HBONE (TLS and HTTP/2 but no HTTP/1.1), measured over the direct runs.
    let zt = pid_in_netns(&format!("{}.node-b", cluster.name), "ztunnel")?;
    // Warm-up (pools, certificates, neighbour discovery), not counted.
    for vip in [DIRECT_VIP, VIA_VIP] {
        run(args, cluster, vip, 100.0, 1.0)?;
    }
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    // Per `via` run: the waypoint's user and system CPU over the run's wall time.
    let (mut user, mut system) = (Vec::new(), Vec::new());
    let mut ztunnel = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [VIA_VIP, DIRECT_VIP]
        } else {
            [DIRECT_VIP, VIA_VIP]
        };
        for vip in order {
            if vip == VIA_VIP {
                let (u0, s0) = proc_cpu_split(wp).context("the waypoint's CPU time")?;
                let t0 = Instant::now();
                via.push(run(args, cluster, vip, args.rps, args.secs)?);
                let (u1, s1) = proc_cpu_split(wp).context("the waypoint's CPU time")?;
                let wall = t0.elapsed().as_secs_f64();
                user.push((u1 - u0) / wall);
                system.push((s1 - s0) / wall);
            } else {
                let (u0, s0) = proc_cpu_split(zt).context("the ztunnel's CPU time")?;
                let t0 = Instant::now();
                direct.push(run(args, cluster, vip, args.rps, args.secs)?);
                let (u1, s1) = proc_cpu_split(zt).context("the ztunnel's CPU time")?;
                ztunnel.push((u1 - u0 + s1 - s0) / t0.elapsed().as_secs_f64());
            }
        }
    }
    let rss_kib = rss(wp).map(|r| r.total()).unwrap_or(0);
    let med = |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (d50, d99) = (med(&direct, |r| r.p50_us), med(&direct, |r| r.p99_us));
    let (v50, v99) = (med(&via, |r| r.p50_us), med(&via, |r| r.p99_us));
    let rounds: Vec<f64> = user.iter().zip(&system).map(|(u, s)| u + s).collect();
    let vcpu = median(&rounds);
    let per_k = vcpu * 1000.0 / args.rps;
    let (lowest, highest) = rounds
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let rss_mb = rss_kib as f64 / 1024.0;
    println!(
        "HTTP/1.1 POST {} B at {} req/s over {} connections, {} rounds of {} s (medians):",
        args.size, args.rps, args.conns, args.rounds, args.secs
    );
    println!("  ztunnel only:            p50 {d50:.0} µs, p99 {d99:.0} µs");
    println!("  through the waypoint:    p50 {v50:.0} µs, p99 {v99:.0} µs");
    println!(
        "  added by the waypoint:   p50 {:.0} µs, p99 {:.0} µs",
        v50 - d50,
        v99 - d99
    );
    println!("  waypoint: {vcpu:.3} vCPU ({per_k:.3} per 1,000 req/s), {rss_mb:.1} MiB resident");
    println!(
        "            user {:.3} + system {:.3} vCPU; rounds from {lowest:.3} to {highest:.3}",
        median(&user),
        median(&system)
    );
    println!(
        "  yardstick: node-b's ztunnel over the direct path {:.3} vCPU",
        median(&ztunnel)
    );
    Ok(json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "mode": if args.short { "short" } else { "full" },
        "rps": args.rps, "conns": args.conns, "body_bytes": args.size,
        "rounds": args.rounds, "secs": args.secs,
        "requests_per_run": med(&via, |r| r.count),
        "direct_us": { "p50": d50, "p99": d99 },
        "via_waypoint_us": { "p50": v50, "p99": v99 },
        "added_us": { "p50": v50 - d50, "p99": v99 - d99 },
        "waypoint": {
            "vcpu": vcpu, "vcpu_per_1000_rps": per_k, "rss_kib": rss_kib,
            "vcpu_user": median(&user), "vcpu_system": median(&system), "vcpu_rounds": rounds,
        },
        "server_ztunnel_direct_vcpu": median(&ztunnel),
    }))
}

/// Ambient `bench`: the client on node-a, two HTTP servers on node-b behind Services `direct`
/// and `via` (the latter bound to the waypoint), the waypoint's Gateway and pod, and the L7
/// policies it applies to `via`.
const MANIFESTS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: bench
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench}
spec: {nodeName: node-a, serviceAccountName: client}
status:
  podIPs: [{ip: 10.244.0.2}]
---
apiVersion: v1
kind: Pod
metadata: {name: direct-0, namespace: bench, labels: {app: direct}}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
  - name: app
    command: [meshapp, http-serve, --listen, "0.0.0.0:8080"]
status:
  podIPs: [{ip: 10.244.1.2}]
---
apiVersion: v1
kind: Pod
metadata: {name: via-0, namespace: bench, labels: {app: via}}
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
  - name: app
    command: [meshapp, http-serve, --listen, "0.0.0.0:8080"]
status:
  podIPs: [{ip: 10.244.1.3}]
---
apiVersion: v1
kind: Service
metadata: {name: direct, namespace: bench}
spec:
  clusterIP: 10.96.0.40
  selector: {app: direct}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: via
  namespace: bench
  labels: {istio.io/use-waypoint: waypoint}
spec:
  clusterIP: 10.96.0.41
  selector: {app: via}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: bench}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: bench}
spec:
  clusterIP: 10.96.0.42
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: bench
  labels:
    gateway.networking.k8s.io/gateway-name: waypoint
    istio.io/dataplane-mode: none
spec: {nodeName: node-a, serviceAccountName: waypoint}
status:
  podIPs: [{ip: 10.244.0.13}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: via-allow, namespace: bench}
spec:
  targetRefs: [{kind: Service, group: "", name: via}]
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bench/sa/client"]}}]
    to: [{operation: {methods: ["POST"], paths: ["/bench*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-scanners, namespace: bench}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - when: [{key: "request.headers[User-Agent]", values: ["*sqlmap*", "*nmap*", "*nikto*"]}]
"#;
