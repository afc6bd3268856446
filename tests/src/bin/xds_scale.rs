//! The control plane at scale: `meshd` (a separate process, so its memory is its own) serving
//! a generated mesh of 10,000 pods, 1,000 services and 1,000 policies to 100 xDS clients.
//!
//! Reports, as JSON on stdout and a summary on stderr:
//! - a new client's full push: time from connecting to holding everything, and bytes;
//! - one-pod changes reaching every subscribed client: p50/p99/max from the manifest write to
//!   each client's receipt, and the resources each change sent (must be 1);
//! - meshd's resident memory with every client connected.
//!
//! `--short` (CI) runs a tenth of the mesh with 10 clients, so the harness cannot rot. Not a
//! test: no thresholds, figures only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use proto::security::Authorization;
use proto::workload::Address;
use xds_client::{Changes, Client, GrpcTarget, Token};

#[derive(Parser)]
struct Args {
    /// A tenth of the mesh and 10 clients.
    #[arg(long)]
    short: bool,
    /// Where to write the JSON report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The meshd binary (default: beside this one).
    #[arg(long)]
    meshd: Option<PathBuf>,
    /// One-pod changes to time.
    #[arg(long, default_value_t = 20)]
    changes: usize,
}

struct Shape {
    namespaces: usize,
    pods_per_namespace: usize,
    services_per_namespace: usize,
    policies_per_namespace: usize,
    nodes: usize,
    clients: usize,
}

/// One received batch: which client, when, which Address names.
type Receipts = Arc<Mutex<Vec<(usize, Instant, Vec<String>)>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = if args.short {
        Shape {
            namespaces: 10,
            pods_per_namespace: 100,
            services_per_namespace: 10,
            policies_per_namespace: 10,
            nodes: 10,
            clients: 10,
        }
    } else {
        Shape {
            namespaces: 100,
            pods_per_namespace: 100,
            services_per_namespace: 10,
            policies_per_namespace: 10,
            nodes: 100,
            clients: 100,
        }
    };
    let meshd_bin = match args.meshd.clone() {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("meshd"),
    };
    if !meshd_bin.exists() {
        bail!(
            "{} not found: build it (`cargo build --release -p control-plane`)",
            meshd_bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("xds-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    for ns in 0..shape.namespaces {
        std::fs::write(
            manifests.join(format!("ns-{ns}.yaml")),
            namespace_yaml(&shape, ns, None),
        )?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut meshd = Meshd::start(&meshd_bin, &dir)?;
    let result = runtime.block_on(measure(&args, &shape, &dir, &meshd));
    meshd.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    println!("{text}");
    Ok(())
}

async fn measure(
    args: &Args,
    shape: &Shape,
    dir: &Path,
    meshd: &Meshd,
) -> anyhow::Result<serde_json::Value> {
    let pods = shape.namespaces * shape.pods_per_namespace;
    let loaded = Instant::now();
    wait_ready(meshd.monitoring, Duration::from_secs(300)).await?;
    let rss_loaded = rss_kib(meshd.child.id()).unwrap_or(0);
    eprintln!(
        "meshd: {pods} pods, {} services, {} policies loaded in {:?}; RSS {} MiB before any client",
        shape.namespaces * shape.services_per_namespace,
        shape.namespaces * shape.policies_per_namespace,
        loaded.elapsed(),
        rss_loaded / 1024
    );
    let secrets = dir.join("secrets");
    let receipts: Receipts = Arc::default();

    // 1. One new client's full push.
    let first = XdsClient::new(0, meshd, &secrets, shape, receipts.clone())?;
    let start = Instant::now();
    let mut synced = first.client.synced();
    let metrics = first.metrics.clone();
    let mut tasks = vec![tokio::spawn(first.client.run())];
    tokio::time::timeout(Duration::from_secs(120), synced.wait_for(|s| *s))
        .await
        .context("first client did not sync")??;
    let full_push = start.elapsed();
    let full_bytes = metrics_bytes(&metrics);
    eprintln!("full push to a new client: {full_push:?}, {full_bytes} bytes of resources");

    // 2. The rest of the clients.
    let mut waits = Vec::new();
    for i in 1..shape.clients {
        let c = XdsClient::new(i, meshd, &secrets, shape, receipts.clone())?;
        waits.push(c.client.synced());
        tasks.push(tokio::spawn(c.client.run()));
    }
    for mut w in waits {
        tokio::time::timeout(Duration::from_secs(300), w.wait_for(|s| *s))
            .await
            .context("a client did not sync")??;
    }
    let rss_synced = rss_kib(meshd.child.id()).unwrap_or(0);
    // Steady state: what the initial pushes buffered is given back (jemalloc's background purge).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_kib(meshd.child.id()).unwrap_or(0);
    eprintln!(
        "{} clients in sync; meshd RSS {} MiB right after, {} MiB 5 s later",
        shape.clients,
        rss_synced / 1024,
        rss / 1024
    );

    // 3. One-pod changes: write, then wait for every client to receive that pod.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut resources_per_change = Vec::new();
    for change in 0..args.changes {
        let ns = change % shape.namespaces;
        let pod = change % shape.pods_per_namespace;
        let uid = format!("Kubernetes//Pod/ns-{ns}/pod-{pod}");
        let mark = receipts.lock().map_or(0, |r| r.len());
        let path = dir.join("manifests").join(format!("ns-{ns}.yaml"));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, namespace_yaml(shape, ns, Some((pod, change))))?;
        let written = Instant::now();
        std::fs::rename(&tmp, &path)?;
        let deadline = written + Duration::from_secs(30);
        let got = loop {
            let seen: Vec<(usize, Instant, Vec<String>)> = receipts
                .lock()
                .map(|r| r[mark..].to_vec())
                .unwrap_or_default();
            let mut per_client: HashMap<usize, Instant> = HashMap::new();
            for (client, at, names) in &seen {
                if names.contains(&uid) {
                    per_client.entry(*client).or_insert(*at);
                }
            }
            if per_client.len() == shape.clients {
                break (seen, per_client);
            }
            if Instant::now() > deadline {
                bail!(
                    "change {change}: only {} of {} clients received {uid}",
                    per_client.len(),
                    shape.clients
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        for at in got.1.values() {
            hist.record(at.duration_since(written).as_micros() as u64)?;
        }
        let max_batch = got.0.iter().map(|(_, _, n)| n.len()).max().unwrap_or(0);
        resources_per_change.push(max_batch);
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "one-pod change -> {} clients: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; resources per change: {:?}",
        shape.clients,
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0,
        resources_per_change.iter().max()
    );
    let monitoring = meshd_metrics(meshd.monitoring).await.unwrap_or_default();
    for t in tasks {
        t.abort();
    }
    Ok(serde_json::json!({
        "shape": {
            "pods": pods,
            "services": shape.namespaces * shape.services_per_namespace,
            "policies": shape.namespaces * shape.policies_per_namespace,
            "clients": shape.clients,
        },
        "settings": "meshd --poll 20ms --debounce 10ms (latency includes noticing the file change)",
        "full_push_ms": full_push.as_secs_f64() * 1000.0,
        "full_push_bytes": full_bytes,
        "one_pod_change_ms": { "p50": ms(0.5), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0, "samples": hist.len() },
        "resources_per_one_pod_change_max": resources_per_change.iter().max(),
        "meshd_rss_mib": rss as f64 / 1024.0,
        "meshd_rss_mib_right_after_sync": rss_synced as f64 / 1024.0,
        "meshd_rss_mib_before_clients": rss_loaded as f64 / 1024.0,
        "meshd": monitoring,
    }))
}

/// The namespace's file: its Namespace, pods (pod `changed.0` gets an IP from `changed.1`),
/// services and policies.
fn namespace_yaml(shape: &Shape, ns: usize, changed: Option<(usize, usize)>) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns}\n  labels:\n    istio.io/dataplane-mode: ambient\n"
    );
    for p in 0..shape.pods_per_namespace {
        let svc = p % shape.services_per_namespace;
        let node = (ns * shape.pods_per_namespace + p) % shape.nodes;
        let ip = match changed {
            Some((pod, change)) if pod == p => {
                format!("10.200.{}.{}", change / 250, change % 250 + 1)
            }
            _ => format!("10.{}.{}.{}", 1 + ns / 250, ns % 250, p + 1),
        };
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: ns-{ns}\n  labels:\n    app: svc-{svc}\nspec:\n  serviceAccountName: sa-{svc}\n  nodeName: node-{node}\n  containers:\n  - name: app\n    ports:\n    - name: http\n      containerPort: 8080\nstatus:\n  podIPs:\n  - ip: {ip}\n"
        ));
    }
    for s in 0..shape.services_per_namespace {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: ns-{ns}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector:\n    app: svc-{s}\n  ports:\n  - port: 80\n    targetPort: http\n",
            ns,
            s + 1
        ));
    }
    for a in 0..shape.policies_per_namespace {
        let svc = a % shape.services_per_namespace;
        out.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-{a}\n  namespace: ns-{ns}\nspec:\n  selector:\n    matchLabels:\n      app: svc-{svc}\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/ns-{ns}/sa/sa-{}]\n    to:\n    - operation:\n        ports: [\"8080\"]\n",
            (a + 1) % shape.services_per_namespace
        ));
    }
    out
}

struct Meshd {
    child: Child,
    grpc: std::net::SocketAddr,
    monitoring: std::net::SocketAddr,
    root_pem: String,
}

impl Meshd {
    fn start(bin: &Path, dir: &Path) -> anyhow::Result<Meshd> {
        let grpc = free_port()?;
        let monitoring = free_port()?;
        let child = Command::new(bin)
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .arg("--cacerts")
            .arg(dir.join("cacerts"))
            .arg("--local-secrets")
            .arg(dir.join("secrets"))
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--monitoring-addr", &monitoring.to_string()])
            .args(["--poll", "20ms", "--debounce", "10ms"])
            // MESHD_LOG=info shows each publish with its translation time.
            .env(
                "RUST_LOG",
                std::env::var("MESHD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let root = dir.join("secrets/root-cert.pem");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !root.exists() {
            if Instant::now() > deadline {
                bail!("meshd wrote no {}", root.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        let root_pem = std::fs::read_to_string(&root)?;
        Ok(Meshd {
            child,
            grpc,
            monitoring,
            root_pem,
        })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

struct XdsClient {
    client: Client,
    metrics: xds_client::Metrics,
}

impl XdsClient {
    fn new(
        index: usize,
        meshd: &Meshd,
        secrets: &Path,
        shape: &Shape,
        receipts: Receipts,
    ) -> anyhow::Result<XdsClient> {
        let node = format!("node-{}", index % shape.nodes);
        let token_path = secrets.join(format!("token-{node}"));
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&meshd.root_pem)? {
            roots.add(c)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(hbone::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let target = GrpcTarget {
            address: format!("https://{}", meshd.grpc),
            tls: Arc::new(tls),
            server_name: Some("istiod.istio-system.svc".into()),
            token: Some(Token::File(token_path)),
            headers: vec![("clusterid".into(), "Kubernetes".into())],
            mark: None,
        };
        let node_msg = proto::core::Node {
            id: format!(
                "ztunnel~10.255.0.{index}~zt-{index}.istio-system~istio-system.svc.cluster.local"
            ),
            ..Default::default()
        };
        let metrics = xds_client::Metrics::default();
        let addresses = move |c: Changes<Address>| {
            let names = c.upserts.into_iter().map(|(n, _)| n).collect();
            if let Ok(mut r) = receipts.lock() {
                r.push((index, Instant::now(), names));
            }
            Vec::new()
        };
        let policies = |_: Changes<Authorization>| Vec::new();
        let client = Client::builder(target, node_msg)
            .watch::<Address, _>(addresses)
            .watch::<Authorization, _>(policies)
            .metrics(metrics.clone())
            .build();
        Ok(XdsClient { client, metrics })
    }
}

fn metrics_bytes(m: &xds_client::Metrics) -> u64 {
    m.message_bytes(proto::ADDRESS_TYPE_URL) + m.message_bytes(proto::AUTHORIZATION_TYPE_URL)
}

fn rustls_pemfile_certs(
    pem: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("root PEM")
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

async fn wait_ready(addr: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = http_get(addr, "/ready").await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("meshd not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// meshd's translation-time histogram sum and count, from its metrics.
async fn meshd_metrics(addr: std::net::SocketAddr) -> anyhow::Result<serde_json::Value> {
    let (_, text) = http_get(addr, "/metrics").await?;
    let find = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let mean_ms = |metric: &str| match (
        find(&format!("{metric}_sum")),
        find(&format!("{metric}_count")),
    ) {
        (Some(s), Some(c)) if c > 0.0 => Some(s / c * 1000.0),
        _ => None,
    };
    Ok(serde_json::json!({
        "translation_mean_ms": mean_ms("meshd_translation_seconds"),
        // From the first change of a push arriving at the pipeline to each client's push
        // being queued: meshd's part of the change's delay (the rest is noticing the file
        // change, and the client's side).
        "convergence_mean_ms": mean_ms("pilot_proxy_convergence_time"),
    }))
}
