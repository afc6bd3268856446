//! `node-agent`: captures the ambient pods of one node and hands them to its ztunnel.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_agent::agent::{Agent, Config};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "node-agent",
    version,
    about = "Ambient pods of this node: capture rules + ZDS to ztunnel"
)]
struct Cli {
    /// A directory of Kubernetes manifests (as `meshd --manifests`); without it, the cluster
    /// from the kubeconfig or in-cluster config.
    #[arg(long)]
    manifests: Option<PathBuf>,

    /// This node's name: pods with this `spec.nodeName` are ours.
    #[arg(long, env = "NODE_NAME")]
    node: String,

    /// The ZDS socket ztunnel connects to.
    #[arg(long, env = "INPOD_UDS", default_value = zds::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// The mark ztunnel sets on its sockets, let through by the capture rules.
    #[arg(long, env = "PACKET_MARK", default_value_t = capture::DEFAULT_MARK)]
    packet_mark: u32,

    /// Look for pods' network namespaces only among the named ones (`/var/run/netns`) whose
    /// name starts with this (a local cluster beside others on one machine); by default every
    /// named namespace and every process's.
    #[arg(long)]
    pod_netns_prefix: Option<String>,

    /// How often the manifest directory is checked for edits.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    poll: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s:?} (use ms, s or m)")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.node.is_empty() {
        anyhow::bail!("NODE_NAME (or --node) is required: the agent serves one node's pods");
    }
    let listener = zds::Listener::bind(&cli.socket)
        .with_context(|| format!("listening on {}", cli.socket.display()))?;
    let (initial, updates, reports) = match &cli.manifests {
        Some(dir) => {
            let (initial, updates) = kube_source::watch(dir.clone(), cli.poll)
                .await
                .with_context(|| format!("reading manifests in {}", dir.display()))?;
            (initial, updates, None)
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("no --manifests and no cluster (kubeconfig or in-cluster config)")?;
            // Namespaces, and the pods of this node only (as istio-cni watches them).
            let opts = kube_source::ClusterOptions {
                kinds: vec![kube_source::Kind::Namespace, kube_source::Kind::Pod],
                pods_on_node: Some(cli.node.clone()),
                ..kube_source::ClusterOptions::default()
            };
            let (initial, updates) = kube_source::watch_cluster(client.clone(), opts).await?;
            // In a cluster, pods carry istio-cni's annotation.
            let (reports, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(node_agent::annotate::run(client, rx));
            (initial, updates, Some(reports))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(node_agent::server::serve(listener, rx, reports));
    tracing::info!(node = %cli.node, socket = %cli.socket.display(), "node agent started");
    let agent = Agent::new(
        Config {
            node: cli.node,
            mark: cli.packet_mark,
            ports: capture::Ports::default(),
            netns: match cli.pod_netns_prefix {
                Some(p) => node_agent::locate::Scope::Named(p),
                None => node_agent::locate::Scope::All,
            },
        },
        tx,
    );
    tokio::select! {
        _ = agent.run(initial, updates) => Ok(()),
        _ = shutdown_signal() => {
            tracing::info!("shutting down; pods stay captured and served");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
