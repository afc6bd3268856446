//! The `ztunnel` binary: run the proxy, or manage its CA and capture rules.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hbone::{CertManager, FileCa, LocalCa, SpiffeId, TrustRoots};
use tracing_subscriber::EnvFilter;
use xds_client::ca::RemoteCa;
use xds_client::{GrpcTarget, Token};
use ztunnel::admin::{Admin, LogControl};
use ztunnel::config::{ProxyMode, RunArgs, WorkloadInfo};
use ztunnel::metrics::Metrics;
use ztunnel::proxy::{self, Ports, ProxyContext};
use ztunnel::readiness::Ready;
use ztunnel::state::StateHandle;
use ztunnel::state::local::LocalConfig;
use ztunnel::xds::{NodeIdentity, env_with_prefix};
use ztunnel::{http, socket, xds};

#[derive(Parser)]
#[command(name = "ztunnel", version, about = "Ambient-mode mesh proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Manage a file CA directory (Istio `cacerts` layout).
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Install or remove traffic capture in the current network namespace (dedicated mode).
    Redirect {
        #[command(subcommand)]
        action: RedirectAction,
    },
}

#[derive(Subcommand)]
enum CaAction {
    /// Create a new self-signed root CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
    Generate {
        #[arg(long, env = "CA_CERTS_DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "mesh")]
        organisation: String,
    },
}

#[derive(Subcommand)]
enum RedirectAction {
    /// Capture the namespace's TCP into ztunnel's ports.
    Install {
        #[arg(long, env = "PACKET_MARK", default_value_t = 1337)]
        mark: u32,
    },
    /// Remove the capture rules.
    Remove,
}

/// jemalloc with background purging: memory freed after a burst of connections goes back to
/// the OS within seconds (glibc's malloc kept ~4x the resting RSS after 10,000 closed).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = init_logging();
    match cli.command {
        None | Some(Command::Run) => run(cli.run, logs),
        Some(Command::Ca {
            action: CaAction::Generate { dir, organisation },
        }) => {
            FileCa::generate(&dir, &organisation)?;
            eprintln!("CA written to {}", dir.display());
            Ok(())
        }
        Some(Command::Redirect { action }) => {
            match action {
                RedirectAction::Install { mark } => {
                    capture::install(capture::Ports::default(), mark)?
                }
                RedirectAction::Remove => capture::remove()?,
            }
            Ok(())
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), changeable through the admin API.
fn init_logging() -> Arc<dyn LogControl> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Istio's LOG_FORMAT: `json` for one JSON object per line, anything else for text.
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
        }))
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
        }))
        .init();
    Arc::new(ReloadableFilter {
        handle,
        current: std::sync::Mutex::new(initial),
    })
}

struct ReloadableFilter {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    current: std::sync::Mutex<String>,
}

impl LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed =
            EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        if let Ok(mut c) = self.current.lock() {
            *c = filter.to_string();
        }
        tracing::info!(filter, "log filter changed");
        Ok(())
    }
}

fn run(args: RunArgs, logs: Arc<dyn LogControl>) -> anyhow::Result<()> {
    let info: Option<WorkloadInfo> = match args.proxy_mode {
        ProxyMode::Shared => None,
        ProxyMode::Dedicated => Some(
            args.proxy_workload_info
                .as_deref()
                .context(
                    "PROXY_WORKLOAD_INFO (or --proxy-workload-info) is required in dedicated mode",
                )?
                .parse()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let source = ConfigSource::from_args(&args, info.as_ref())?;
    let certs = CertSource::from_args(&args)?;
    socket::raise_fd_limit();

    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.into())
            .enable_all()
            .build()?,
    };
    match info {
        Some(info) => runtime.block_on(serve(args, info, source, certs, logs)),
        None => runtime.block_on(serve_shared(args, source, certs, logs)),
    }
}

/// Where config comes from: the control plane, or a local file read before starting.
enum ConfigSource {
    Xds {
        target: GrpcTarget,
        node: proto::core::Node,
    },
    Local {
        state: ztunnel::state::State,
        path: Option<PathBuf>,
    },
}

impl ConfigSource {
    /// `info` is the dedicated workload; shared mode has none.
    fn from_args(args: &RunArgs, info: Option<&WorkloadInfo>) -> anyhow::Result<Self> {
        if !args.xds_address.is_empty() {
            let target = grpc_target(
                &args.xds_address,
                &args.xds_root_ca,
                "XDS_ROOT_CA",
                args.alt_xds_hostname.clone(),
                args,
                "XDS_HEADER_",
            )?;
            let mut meta = env_with_prefix(std::env::vars(), "ISTIO_META_");
            let cluster_id = meta
                .get("CLUSTER_ID")
                .cloned()
                .unwrap_or_else(|| args.cluster_id.clone());
            meta.insert("CLUSTER_ID".into(), cluster_id.clone());
            // ztunnel's own pod: the dedicated workload's, or Istio's ztunnel DaemonSet's.
            let node = NodeIdentity {
                pod_name: args
                    .pod_name
                    .clone()
                    .or_else(|| info.map(|i| i.name.clone()))
                    .unwrap_or_else(|| "ztunnel".into()),
                pod_namespace: args
                    .pod_namespace
                    .clone()
                    .or_else(|| info.map(|i| i.namespace.clone()))
                    .unwrap_or_else(|| "istio-system".into()),
                instance_ip: args.instance_ip.clone(),
                node_name: args.node_name.clone(),
                cluster_id,
                meta,
            };
            return Ok(ConfigSource::Xds {
                target,
                node: node.node(),
            });
        }
        let (state, source) = match (&args.local_xds_path, &args.local_xds) {
            (Some(path), _) => (LocalConfig::load(path)?, path.clone()),
            (None, Some(inline)) => {
                let name = PathBuf::from("LOCAL_XDS");
                (LocalConfig::parse(&name, inline)?, name)
            }
            (None, None) => {
                bail!(
                    "LOCAL_XDS_PATH (or LOCAL_XDS, or --local-xds-path) is required without XDS_ADDRESS"
                )
            }
        };
        // Offline, a missing or mismatched local workload is a startup error.
        if let Some(info) = info {
            check_local(&state, info, &source.display().to_string())?;
        }
        Ok(ConfigSource::Local {
            state,
            path: args.local_xds_path.clone(),
        })
    }
}

/// Where certificates come from: the control plane's CA, or a local CA directory.
enum CertSource {
    Remote {
        target: GrpcTarget,
        roots: TrustRoots,
    },
    File {
        ca: Box<FileCa>,
    },
}

impl CertSource {
    fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        // Without CA_ADDRESS or CA_CERTS_DIR, the xDS server is the CA too (as istiod is).
        let ca_address = match (args.ca_address.as_str(), &args.ca_certs_dir) {
            ("", None) if !args.xds_address.is_empty() => args.xds_address.clone(),
            (a, _) => a.to_string(),
        };
        if ca_address.is_empty() {
            let ca_dir = args
                .ca_certs_dir
                .clone()
                .context("CA_CERTS_DIR (or --ca-certs-dir) is required without CA_ADDRESS")?;
            return Ok(CertSource::File {
                ca: Box::new(FileCa::load(&ca_dir)?),
            });
        }
        let target = grpc_target(
            &ca_address,
            &args.ca_root_ca,
            "CA_ROOT_CA",
            args.alt_ca_hostname.clone(),
            args,
            "CA_HEADER_",
        )?;
        let roots = hbone::load_roots(&args.ca_root_ca)
            .with_context(|| format!("CA_ROOT_CA {}", args.ca_root_ca.display()))?;
        Ok(CertSource::Remote {
            target,
            roots: TrustRoots::new(&roots)?,
        })
    }
}

impl CertSource {
    /// The certificate manager over this source, and the trust roots. `impersonate`: a node
    /// proxy asking for its pods' identities.
    fn manager(
        self,
        lifetime: std::time::Duration,
        impersonate: bool,
    ) -> anyhow::Result<(Arc<CertManager>, TrustRoots)> {
        Ok(match self {
            CertSource::File { ca } => {
                let roots = TrustRoots::new(ca.roots())?;
                (
                    CertManager::new(Arc::new(LocalCa { ca: *ca, lifetime })),
                    roots,
                )
            }
            CertSource::Remote { target, roots } => {
                let source = RemoteCa {
                    target,
                    lifetime,
                    impersonate,
                };
                (CertManager::new(Arc::new(source)), roots)
            }
        })
    }
}

/// A control-plane endpoint: TLS roots from `root_file`, token and headers as Istio sends them.
fn grpc_target(
    address: &str,
    root_file: &std::path::Path,
    root_env: &str,
    server_name: Option<String>,
    args: &RunArgs,
    header_prefix: &str,
) -> anyhow::Result<GrpcTarget> {
    let roots = hbone::load_roots(root_file)
        .with_context(|| format!("{root_env} {}", root_file.display()))?;
    let tls = xds_client::tls_with_roots(roots)
        .with_context(|| format!("{root_env} {}: unusable root", root_file.display()))?;
    let cluster_id =
        std::env::var("ISTIO_META_CLUSTER_ID").unwrap_or_else(|_| args.cluster_id.clone());
    let mut headers = vec![("clusterid".to_string(), cluster_id)];
    headers.extend(
        env_with_prefix(std::env::vars(), header_prefix)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v)),
    );
    Ok(GrpcTarget {
        address: address.to_string(),
        tls,
        server_name,
        token: Some(Token::from_env_value(&args.auth_token)),
        headers,
        // Marked like every socket ztunnel opens, so its own capture rules skip it.
        mark: Some(args.packet_mark),
    })
}

/// The local workload must exist and match `PROXY_WORKLOAD_INFO`'s service account.
fn check_local(
    state: &ztunnel::state::State,
    info: &WorkloadInfo,
    source: &str,
) -> anyhow::Result<SpiffeId> {
    let local = state
        .workload_by_name(&info.namespace, &info.name)
        .with_context(|| {
            format!(
                "{source}: no workload {}/{} (from PROXY_WORKLOAD_INFO)",
                info.namespace, info.name
            )
        })?;
    if local.service_account != info.service_account {
        bail!(
            "PROXY_WORKLOAD_INFO says service account {:?}, {source} says {:?} for {}/{}",
            info.service_account,
            local.service_account,
            info.namespace,
            info.name
        );
    }
    Ok(SpiffeId::new(
        &local.trust_domain,
        &info.namespace,
        &info.service_account,
    )?)
}

/// Shared mode: every pod the node agent hands over ZDS, each in its own namespace.
async fn serve_shared(
    args: RunArgs,
    source: ConfigSource,
    certs: CertSource,
    logs: Arc<dyn LogControl>,
) -> anyhow::Result<()> {
    let ready = Ready::new(&["config", ztunnel::inpod::client::READY_TASK]);
    let metrics = Arc::new(Metrics::new());
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let handle = StateHandle::default();
    // A node proxy asks for its pods' certificates (Istio's impersonation).
    let (certs, roots) = certs.manager(args.secret_ttl, true)?;
    endpoints(&args, &handle, &certs, &metrics, &ready, logs, &shutdown)?;
    match source {
        ConfigSource::Local { state, path } => {
            handle.store(state);
            if let Some(path) = path {
                tokio::spawn(watch_config(
                    path,
                    handle.clone(),
                    args.local_xds_poll_interval,
                ));
            }
        }
        ConfigSource::Xds { target, node } => {
            tracing::info!(address = %target.address, node_id = %node.id, "config from xDS");
            let client = xds::client(target, node, handle.clone(), metrics.xds.clone());
            let mut synced = client.synced();
            tokio::spawn(client.run());
            synced
                .wait_for(|s| *s)
                .await
                .context("xDS client stopped")?;
        }
    }
    ready.done("config");
    let node = ztunnel::inpod::Node {
        state: handle,
        certs,
        roots,
        mark: args.packet_mark,
        settings: args.h2_settings(),
        metrics,
        trust_domain: args.trust_domain.clone(),
        ports: Ports::default(),
    };
    tracing::info!(socket = %args.inpod_uds.display(), "shared mode: serving the pods the node agent hands over");
    let active = node.metrics.active.clone();
    tokio::select! {
        _ = ztunnel::inpod::run(args.inpod_uds.clone(), ztunnel::inpod::Pods::new(node), ready) => {}
        _ = shutdown_signal() => {}
        _ = shutdown.notified() => tracing::info!("shutdown asked (admin /quitquitquit)"),
    }
    // Leaving the select dropped every pod's listeners and the agent connection: new
    // connections go to the ztunnel that replaces this one. The open ones finish here.
    let deadline = args.connection_termination_deadline;
    tracing::info!(
        active = active.count(),
        ?deadline,
        "draining: listeners closed, waiting for open connections to end"
    );
    match tokio::time::timeout(deadline, active.idle()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            active = active.count(),
            "drain deadline passed; exiting with connections open"
        ),
    }
    Ok(())
}

/// Admin (15000), metrics (15020) and readiness (15021).
fn endpoints(
    args: &RunArgs,
    handle: &StateHandle,
    certs: &Arc<CertManager>,
    metrics: &Arc<Metrics>,
    ready: &Ready,
    logs: Arc<dyn LogControl>,
    shutdown: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let admin = Arc::new(Admin {
        state: handle.clone(),
        certs: certs.clone(),
        logs,
        shutdown: shutdown.clone(),
    });
    let admin_listener = http::bind(args.admin_addr)?;
    tokio::spawn(http::serve(admin_listener, move |req| {
        admin.clone().handle(req)
    }));
    let stats = metrics.clone();
    let stats_listener = http::bind(args.stats_addr)?;
    tokio::spawn(http::serve(stats_listener, move |req| {
        let stats = stats.clone();
        async move {
            match req.uri().path() {
                "/metrics" | "/stats/prometheus" => {
                    http::text(hyper::StatusCode::OK, stats.encode())
                }
                _ => http::text(hyper::StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    }));
    let probe = ready.clone();
    let readiness_listener = http::bind(args.readiness_addr)?;
    tokio::spawn(http::serve(readiness_listener, move |req| {
        let probe = probe.clone();
        async move { probe.response(req.uri().path()) }
    }));
    Ok(())
}

async fn serve(
    args: RunArgs,
    info: WorkloadInfo,
    source: ConfigSource,
    certs: CertSource,
    logs: Arc<dyn LogControl>,
) -> anyhow::Result<()> {
    let ready = Ready::new(&["config", "certificate", "listeners"]);
    let metrics = Arc::new(Metrics::new());
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let handle = StateHandle::default();
    let (certs, roots) = certs.manager(args.secret_ttl, false)?;
    endpoints(&args, &handle, &certs, &metrics, &ready, logs, &shutdown)?;

    let identity = match source {
        ConfigSource::Local { state, path } => {
            let identity = check_local(&state, &info, "local config")?;
            handle.store(state);
            if let Some(path) = path {
                tokio::spawn(watch_config(
                    path,
                    handle.clone(),
                    args.local_xds_poll_interval,
                ));
            }
            ready.done("config");
            identity
        }
        ConfigSource::Xds { target, node } => {
            tracing::info!(address = %target.address, node_id = %node.id, "config from xDS");
            let client = xds::client(target, node, handle.clone(), metrics.xds.clone());
            let mut synced = client.synced();
            tokio::spawn(client.run());
            wait_for_local(&handle, &mut synced, &info).await?
        }
    };
    ready.done("config");
    // The first certificate: retried until the CA answers (renewals retry on their own).
    let mut retry = std::time::Duration::from_millis(200);
    loop {
        match certs.fetch(&identity).await {
            Ok(_) => break,
            Err(e) => {
                let e = anyhow::Error::from(e);
                tracing::warn!(identity = %identity, error = format!("{e:#}"), retry_in = ?retry, "no certificate yet");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(std::time::Duration::from_secs(15));
            }
        }
    }
    let ctx = ProxyContext::new(
        handle,
        info,
        identity,
        certs,
        roots,
        Some(args.packet_mark),
        None,
        args.h2_settings(),
        metrics,
    );
    tokio::select! {
        r = proxy::run(ctx, Ports::default(), ready) => r.map_err(anyhow::Error::from),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        _ = shutdown.notified() => {
            tracing::info!("shutting down (admin /quitquitquit)");
            Ok(())
        }
    }
}

/// Waits for the first xDS sync and for the local workload to appear in it.
async fn wait_for_local(
    handle: &StateHandle,
    synced: &mut tokio::sync::watch::Receiver<bool>,
    info: &WorkloadInfo,
) -> anyhow::Result<SpiffeId> {
    synced
        .wait_for(|s| *s)
        .await
        .context("xDS client stopped")?;
    let mut changes = handle.subscribe();
    let mut warned = false;
    loop {
        match check_local(&handle.load(), info, "xDS config") {
            Ok(id) => return Ok(id),
            Err(e) if !warned => {
                tracing::warn!(error = %e, "waiting for the control plane to send this workload");
                warned = true;
            }
            Err(_) => {}
        }
        changes.changed().await.context("config updates stopped")?;
    }
}

/// Re-reads the config file when its contents change; a bad file keeps the last good state.
async fn watch_config(path: PathBuf, state: StateHandle, every: std::time::Duration) {
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        tokio::time::sleep(every).await;
        let now = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "config unreadable; keeping the last good config");
                continue;
            }
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        last = Some(now.clone());
        let parsed = String::from_utf8(now)
            .map_err(|e| anyhow::anyhow!("{}: not UTF-8: {e}", path.display()))
            .and_then(|text| LocalConfig::parse(&path, &text).map_err(anyhow::Error::from));
        match parsed {
            Ok(new) => {
                let (w, s) = (new.workloads().len(), new.services_len());
                state.store(new);
                tracing::info!(path = %path.display(), workloads = w, services = s, "config reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "config rejected; keeping the last good config"),
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
