//! The `ztunnel` binary: run the proxy, or manage its CA and capture rules.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hbone::{CertManager, FileCa, LocalCa, SpiffeId, TrustRoots};
use tracing_subscriber::EnvFilter;
use ztunnel::admin::{Admin, LogControl};
use ztunnel::config::{ProxyMode, RunArgs, WorkloadInfo};
use ztunnel::metrics::Metrics;
use ztunnel::proxy::{self, Ports, ProxyContext};
use ztunnel::readiness::Ready;
use ztunnel::state::StateHandle;
use ztunnel::state::local::LocalConfig;
use ztunnel::{http, redirect, socket};

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
                RedirectAction::Install { mark } => redirect::install(Ports::default(), mark)?,
                RedirectAction::Remove => redirect::remove()?,
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
    if args.proxy_mode != ProxyMode::Dedicated {
        bail!(
            "PROXY_MODE=shared needs the node agent (ZDS), which this build does not support yet; set PROXY_MODE=dedicated"
        );
    }
    if !args.xds_address.is_empty() {
        bail!(
            "XDS_ADDRESS is set, but this build has no xDS client yet; unset it and use LOCAL_XDS_PATH"
        );
    }
    if !args.ca_address.is_empty() {
        bail!(
            "CA_ADDRESS is set, but this build has no CA client yet; unset it and use CA_CERTS_DIR"
        );
    }
    let info: WorkloadInfo = args
        .proxy_workload_info
        .as_deref()
        .context("PROXY_WORKLOAD_INFO (or --proxy-workload-info) is required in dedicated mode")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let ca_dir = args
        .ca_certs_dir
        .clone()
        .context("CA_CERTS_DIR (or --ca-certs-dir) is required without CA_ADDRESS")?;

    let (state, source) = match (&args.local_xds_path, &args.local_xds) {
        (Some(path), _) => (LocalConfig::load(path)?, path.clone()),
        (None, Some(inline)) => {
            let name = PathBuf::from("LOCAL_XDS");
            (LocalConfig::parse(&name, inline)?, name)
        }
        (None, None) => {
            bail!("LOCAL_XDS_PATH (or LOCAL_XDS, or --local-xds-path) is required without xDS")
        }
    };
    let local = state
        .workload_by_name(&info.namespace, &info.name)
        .with_context(|| {
            format!(
                "{}: no workload {}/{} (from PROXY_WORKLOAD_INFO)",
                source.display(),
                info.namespace,
                info.name
            )
        })?;
    if local.service_account != info.service_account {
        bail!(
            "PROXY_WORKLOAD_INFO says service account {:?}, {} says {:?} for {}/{}",
            info.service_account,
            source.display(),
            local.service_account,
            info.namespace,
            info.name
        );
    }
    let identity = SpiffeId::new(&local.trust_domain, &info.namespace, &info.service_account)?;
    let ca = FileCa::load(&ca_dir)?;
    let roots = TrustRoots::new(ca.roots())?;
    let certs = CertManager::new(Arc::new(LocalCa {
        ca,
        lifetime: args.secret_ttl,
    }));
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
    runtime.block_on(async move {
        let ready = Ready::new(&["certificate", "listeners"]);
        let metrics = Arc::new(Metrics::new());
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let handle = StateHandle::new(state);
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
        if let Some(path) = args.local_xds_path.clone() {
            tokio::spawn(watch_config(
                path,
                handle.clone(),
                args.local_xds_poll_interval,
            ));
        }
        let ctx = ProxyContext::new(
            handle,
            info,
            identity,
            certs,
            roots,
            Some(args.packet_mark),
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
    })
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
