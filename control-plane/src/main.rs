//! The `meshd` binary: serve a manifest directory, or the cluster it runs in, to ztunnels as
//! istiod would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use control_plane::ca::CaPolicy;
use control_plane::mesh_config::MeshConfig;
use control_plane::meshd::{self, Config, RootCertPublish, WaypointDeploy};
use control_plane::translate::Options;
use tracing_subscriber::EnvFilter;

/// jemalloc returns memory freed after a large push to the OS (as in ztunnel).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "meshd",
    version,
    about = "The mesh control plane: Kubernetes resources in, delta xDS and workload certificates out"
)]
struct Cli {
    /// Directory of Kubernetes YAML (Namespaces, Pods, Services, AuthorizationPolicies, ...),
    /// watched; edits apply live. Without it meshd reads the cluster it runs in (or the one
    /// the kubeconfig names) and checks tokens with TokenReview.
    #[arg(long, env = "MESHD_MANIFESTS")]
    manifests: Option<PathBuf>,

    /// CA directory in Istio's `cacerts` layout; a new root CA is generated there when empty.
    #[arg(long, env = "CA_CERTS_DIR", default_value = "meshd-data/cacerts")]
    cacerts: PathBuf,

    /// Signing key of the bearer tokens meshd mints (default: `token-key` beside the CA).
    #[arg(long)]
    token_key: Option<PathBuf>,

    /// Print a token for `<namespace>/<service account>[/<pod>]`, signed with the token key,
    /// and exit (as `kubectl create token` does for a cluster): for a local waypoint or a
    /// workload joining this meshd.
    #[arg(long, value_name = "NS/SA[/POD]")]
    print_token: Option<String>,

    /// Write `root-cert.pem` and a `token-<node>` per node here, so local ztunnels can join.
    #[arg(long)]
    local_secrets: Option<PathBuf>,

    /// xDS and CA (TLS, gRPC).
    #[arg(long, default_value = "0.0.0.0:15012")]
    grpc_addr: SocketAddr,

    /// Metrics and debug endpoints (HTTP).
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring_addr: SocketAddr,

    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,

    /// Quiet time that closes a burst of changes into one push (istiod's PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    debounce: Duration,

    /// How often the manifest directory is checked for edits.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    poll: Duration,

    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,

    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    /// Istio MeshConfig YAML (the `mesh` key of the `istio` ConfigMap): meshd reads its
    /// `extensionProviders` (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc` for CUSTOM policies;
    /// `zipkin`, `opentelemetry` for tracing), `defaultProviders.tracing` and
    /// `defaultConfig.tracing`. Edits apply live; a bad edit keeps the last good version.
    #[arg(long, env = "MESH_CONFIG")]
    mesh_config: Option<PathBuf>,

    /// meshConfig rootNamespace: policies here apply mesh-wide.
    #[arg(long, env = "ROOT_NAMESPACE", default_value = "istio-system")]
    root_namespace: String,

    /// Service accounts (`namespace/name`, comma-separated) allowed to get certificates for
    /// the pods on their node.
    #[arg(
        long,
        env = "CA_TRUSTED_NODE_ACCOUNTS",
        default_value = "istio-system/ztunnel",
        value_delimiter = ','
    )]
    trusted_node_accounts: Vec<String>,

    /// Certificate lifetime when a request asks for none.
    #[arg(long, env = "DEFAULT_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    default_cert_ttl: Duration,

    /// Longest certificate lifetime granted.
    #[arg(long, env = "MAX_WORKLOAD_CERT_TTL", default_value = "2160h", value_parser = parse_duration)]
    max_cert_ttl: Duration,

    /// Send policies annotated `istio.io/dry-run: "true"` (as dry-run) instead of dropping them.
    #[arg(
        long,
        env = "AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY",
        default_value_t = false
    )]
    enable_dry_run: bool,

    /// In a cluster, create a ServiceAccount, Deployment and Service for each Gateway of class
    /// `istio-waypoint` and write its status, as istiod does (`--deploy-waypoints=false`:
    /// leave that to istiod or to you). Without effect with `--manifests`.
    #[arg(
        long,
        env = "MESHD_DEPLOY_WAYPOINTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    deploy_waypoints: bool,

    /// In a cluster, keep the `istio-ca-root-cert` ConfigMap (the mesh's roots, which pods
    /// mount) in every namespace but kube-public, kube-node-lease and local-path-storage, as
    /// istiod does (`--publish-root-cert=false`: leave that to istiod or to you). Without
    /// effect with `--manifests`.
    #[arg(
        long,
        env = "MESHD_PUBLISH_ROOT_CERT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    publish_root_cert: bool,

    /// The image of the waypoints meshd deploys (our `waypoint` binary).
    #[arg(long, env = "WAYPOINT_IMAGE", default_value = WaypointDeploy::DEFAULT_IMAGE)]
    waypoint_image: String,

    /// `imagePullPolicy` of deployed waypoints (default: Kubernetes' for the tag).
    #[arg(long, env = "WAYPOINT_IMAGE_PULL_POLICY")]
    waypoint_image_pull_policy: Option<String>,

    /// meshd's xDS and CA address as deployed waypoints reach it (`XDS_ADDRESS`); its
    /// certificate must carry the host (see `--dns-name`).
    #[arg(long, env = "WAYPOINT_XDS_ADDRESS", default_value = WaypointDeploy::DEFAULT_XDS_ADDRESS)]
    waypoint_xds_address: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    let token_key = cli.token_key.clone().unwrap_or_else(|| {
        cli.cacerts
            .parent()
            .map(|p| p.join("token-key"))
            .unwrap_or_else(|| PathBuf::from("token-key"))
    });
    if let Some(who) = &cli.print_token {
        let parts: Vec<&str> = who.split('/').collect();
        let (ns, sa, pod) = match parts.as_slice() {
            [ns, sa] => (*ns, *sa, None),
            [ns, sa, pod] => (*ns, *sa, Some(*pod)),
            _ => anyhow::bail!(
                "--print-token takes <namespace>/<service account>[/<pod>], not {who:?}"
            ),
        };
        anyhow::ensure!(
            !ns.is_empty() && !sa.is_empty(),
            "--print-token: empty namespace or service account in {who:?}"
        );
        let tokens = control_plane::auth::LocalTokens::load_or_create(&token_key)
            .with_context(|| format!("token key {}", token_key.display()))?;
        let token = match pod {
            Some(pod) => tokens.mint_pod(ns, sa, pod),
            None => tokens.mint_account(ns, sa),
        };
        println!("{token}");
        return Ok(());
    }
    let mesh = match &cli.mesh_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --mesh-config {}", path.display()))?;
            MeshConfig::parse(&text).with_context(|| format!("--mesh-config {}", path.display()))?
        }
        None => MeshConfig::default(),
    };
    let config = Config {
        manifests: cli.manifests,
        cacerts: cli.cacerts,
        token_key,
        local_secrets: cli.local_secrets,
        grpc_addr: cli.grpc_addr,
        monitoring_addr: cli.monitoring_addr,
        dns_names: cli.dns_names,
        debounce: cli.debounce,
        poll: cli.poll,
        mesh_config: cli.mesh_config.clone(),
        translate: Options {
            cluster_id: cli.cluster_id,
            trust_domain: cli.trust_domain.clone(),
            root_namespace: cli.root_namespace,
            enable_dry_run: cli.enable_dry_run,
            mesh,
            ..Options::default()
        },
        ca: CaPolicy {
            trust_domain: cli.trust_domain,
            trusted_node_accounts: cli.trusted_node_accounts,
            default_ttl: cli.default_cert_ttl,
            max_ttl: cli.max_cert_ttl,
        },
        waypoints: cli.deploy_waypoints.then(|| WaypointDeploy {
            image: cli.waypoint_image,
            image_pull_policy: cli.waypoint_image_pull_policy,
            xds_address: cli.waypoint_xds_address,
            ..WaypointDeploy::default()
        }),
        root_cert: cli.publish_root_cert.then(RootCertPublish::default),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = meshd::start(config).await.context("meshd cannot start")?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        drop(running);
        Ok(())
    })
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

/// Go-style durations: `100ms`, `30s`, `24h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (ms, s, m or h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 100ms, 30s or 24h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    }
}
