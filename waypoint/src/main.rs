//! `waypoint`: the L7 proxy for the services and workloads bound to one waypoint Gateway.
//! Configured by meshd (or istiod-compatible settings): its certificate from the CA, what it
//! serves over delta ADS (`mesh.waypoint.v1`), with the environment names Istio's proxies use.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hbone::{CertManager, H2Settings, SpiffeId, TrustRoots};
use proto::waypoint::{HttpPolicy, Target, Tracing};
use proto::workload::Address;
use waypoint::Waypoint;
use waypoint::admin::{Admin, LogControl, ReloadableFilter};
use waypoint::config::Store;
use xds_client::ca::RemoteCa;
use xds_client::{Changes, Client, GrpcTarget, Rejection, Token};

#[derive(Parser, Debug)]
#[command(name = "waypoint", version, about = "The mesh's L7 proxy (a waypoint)")]
struct Args {
    /// The control plane (`https://host:port`): xDS, and the CA unless `CA_ADDRESS` is set.
    #[arg(long, env = "XDS_ADDRESS")]
    xds_address: String,

    /// Trust roots for the control plane's certificate; also the mesh roots peers chain to.
    #[arg(
        long,
        env = "XDS_ROOT_CA",
        default_value = "./var/run/secrets/istio/root-cert.pem"
    )]
    xds_root_ca: std::path::PathBuf,

    /// Name the control plane's certificate must carry, instead of the address's host.
    #[arg(long, env = "ALT_XDS_HOSTNAME")]
    alt_xds_hostname: Option<String>,

    /// Certificate service (`https://host:port`); default: the xDS address.
    #[arg(long, env = "CA_ADDRESS", default_value = "")]
    ca_address: String,

    /// Bearer token for xDS and the CA: a file path, or the token itself.
    #[arg(
        long,
        env = "AUTH_TOKEN",
        default_value = "./var/run/secrets/tokens/istio-token"
    )]
    auth_token: String,

    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,

    #[arg(long, env = "POD_NAME")]
    pod_name: String,

    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: String,

    /// The waypoint's service account (istiod names it after the Gateway).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    service_account: String,

    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    #[arg(long, env = "INSTANCE_IP", default_value = "0.0.0.0")]
    instance_ip: std::net::IpAddr,

    /// Where HBONE is served.
    #[arg(long, default_value_t = hbone::HBONE_PORT)]
    hbone_port: u16,

    /// Readiness (`/healthz/ready`), as Istio's proxies serve it.
    #[arg(long, default_value_t = 15021)]
    readiness_port: u16,

    /// A Zipkin collector (`host:port`, as Istio's `tracing.zipkin.address`) to export a span
    /// per sampled request to; none: no tracing. meshd's Tracing (from its mesh config)
    /// overrides this and `--tracing-sampling` once received.
    #[arg(long, env = "TRACING_ZIPKIN_ADDRESS")]
    tracing_zipkin_address: Option<SocketAddr>,

    /// The percentage of new traces sampled (Istio's `tracing.sampling`).
    #[arg(long, env = "TRACING_SAMPLING", default_value_t = 1.0)]
    tracing_sampling: f64,

    /// Threads serving connections (as ztunnel's `ZTUNNEL_WORKER_THREADS`). One (the default)
    /// runs everything on one thread, the cheapest per request (docs/BENCHMARKS.md); more
    /// threads serve more requests per replica at a higher cost each.
    #[arg(long, env = "WAYPOINT_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,

    /// How requests are spread over a service's healthy endpoints: least request (Istio's
    /// default) or round robin.
    #[arg(long, env = "WAYPOINT_LOAD_BALANCING", value_enum, default_value_t)]
    load_balancing: waypoint::balance::Balance,

    /// Admin: `/config_dump`, `/logging`, `/explain`, `/quitquitquit`.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,

    /// Prometheus: `/metrics` and `/stats/prometheus`.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,

    /// Certificate lifetime asked for; renewed at half of it.
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    secret_ttl: Duration,

    /// On SIGTERM, SIGINT or `/quitquitquit`, how long the waypoint drains (readiness 503, a
    /// GOAWAY on open connections, HTTP connections closed after their request, new ones still
    /// served) before it exits (Istio's `terminationDrainDuration`, same variable). A second
    /// signal exits at once.
    #[arg(long, env = "TERMINATION_DRAIN_DURATION_SECONDS", default_value_t = 5)]
    termination_drain_duration_seconds: u64,
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
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (use ms, s, m or h)")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = init_logging();
    // One thread: a runtime without work stealing, so a request's hand-offs between tasks
    // never wake another thread (no futex, no eventfd), which is most of what a request costs
    // at moderate rates.
    let runtime = match args.worker_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let result = runtime.block_on(run(args, logs));
    // Not waiting on blocking tasks still running (a stuck DNS lookup, say): the drain window
    // has passed and the kubelet's grace period is running.
    runtime.shutdown_timeout(Duration::from_millis(200));
    waypoint::log_sink::LogSink::global().flush();
    result
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), changeable on the admin port.
fn init_logging() -> Arc<dyn LogControl> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let (filter, control) = ReloadableFilter::new(&initial);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(waypoint::log_sink::LogSink::global())
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    waypoint::access::write_to(waypoint::log_sink::LogSink::global());
    control
}

fn target(args: &Args, address: &str) -> anyhow::Result<GrpcTarget> {
    let roots = hbone::load_roots(&args.xds_root_ca)
        .with_context(|| format!("XDS_ROOT_CA {}", args.xds_root_ca.display()))?;
    let tls = xds_client::tls_with_roots(roots)
        .with_context(|| format!("XDS_ROOT_CA {}: unusable root", args.xds_root_ca.display()))?;
    Ok(GrpcTarget {
        address: address.to_string(),
        tls,
        server_name: args.alt_xds_hostname.clone(),
        token: Some(Token::from_env_value(&args.auth_token)),
        headers: vec![("clusterid".into(), args.cluster_id.clone())],
        mark: None,
    })
}

/// Envoy's node id for a router (istiod's name for gateways and waypoints).
fn node(args: &Args) -> proto::core::Node {
    proto::core::Node {
        id: format!(
            "router~{}~{}.{}~{}.svc.cluster.local",
            args.instance_ip, args.pod_name, args.pod_namespace, args.pod_namespace
        ),
        ..Default::default()
    }
}

async fn run(args: Args, logs: Arc<dyn LogControl>) -> anyhow::Result<()> {
    let mut stop = Stop::new();
    let identity = SpiffeId::new(
        &args.trust_domain,
        &args.pod_namespace,
        &args.service_account,
    )
    .context("the waypoint's identity (TRUST_DOMAIN, POD_NAMESPACE, SERVICE_ACCOUNT)")?;
    let ca_address = if args.ca_address.is_empty() {
        args.xds_address.clone()
    } else {
        args.ca_address.clone()
    };
    let roots = TrustRoots::new(&hbone::load_roots(&args.xds_root_ca)?)?;
    let certs = CertManager::new(Arc::new(RemoteCa {
        target: target(&args, &ca_address)?,
        lifetime: args.secret_ttl,
        impersonate: false,
    }));
    // The control plane may not be up yet (or reachable): keep asking, as a pod would.
    let mut wait = Duration::from_millis(200);
    let fetched = async {
        loop {
            match certs.fetch(&identity).await {
                Ok(cert) => break cert,
                Err(e) => {
                    tracing::warn!(%identity, error = %format!("{:#}", anyhow::Error::new(e)), retry_in = ?wait, "no certificate yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(15));
                }
            }
        }
    };
    let cert = tokio::select! {
        cert = fetched => cert,
        () = stop.next() => return Ok(()),
    };
    tracing::info!(%identity, "certificate issued");

    let metrics = Arc::new(waypoint::metrics::Metrics::new(
        &args.cluster_id,
        waypoint::metrics::MAX_SERIES,
    ));
    let waypoint = Waypoint::with_metrics(cert, roots, H2Settings::default(), metrics);
    waypoint.balancer.set_policy(args.load_balancing);
    let flags = args
        .tracing_zipkin_address
        .map(|zipkin| waypoint::trace::Settings {
            exporter: waypoint::trace::Exporter::Zipkin(zipkin),
            sampling: args.tracing_sampling,
            max_tag_length: waypoint::trace::DEFAULT_MAX_TAG_LENGTH,
        });
    let identity = waypoint::trace::Identity {
        service: format!("{}.{}", args.pod_name, args.pod_namespace),
        node_id: node(&args).id,
    };
    let mut tracing_control =
        waypoint::trace::TracingControl::new(waypoint.clone(), flags, identity);
    let shutdown = Arc::new(tokio::sync::Notify::new());
    operational(&args, &waypoint, logs, &shutdown).await?;
    let store = Arc::new(Mutex::new(Store::default()));
    let (store_t, wp_t) = (store.clone(), waypoint.clone());
    let targets = move |c: Changes<Target>| {
        apply(&store_t, &wp_t, |s| {
            c.removed.iter().for_each(|n| s.remove_target(n));
            c.upserts
                .iter()
                .filter_map(|(n, t)| s.apply_target(n, t).err().map(|e| (n.clone(), e)))
                .collect()
        })
    };
    let (store_p, wp_p) = (store, waypoint.clone());
    let policies = move |c: Changes<HttpPolicy>| {
        apply(&store_p, &wp_p, |s| {
            c.removed.iter().for_each(|n| s.remove_policy(n));
            c.upserts
                .iter()
                .filter_map(|(n, p)| s.apply_policy(n, p).err().map(|e| (n.clone(), e)))
                .collect()
        })
    };
    // The mesh's workloads, which name peers in metrics (`peers.rs`).
    let wp_a = waypoint.clone();
    let addresses = move |c: Changes<Address>| {
        let rejected = wp_a.peers().apply(&c.upserts, &c.removed);
        rejected
            .into_iter()
            .map(|e| {
                tracing::warn!(error = %e, "Address rejected; the last good version stays");
                Rejection {
                    name: e.resource.clone(),
                    reason: e.to_string(),
                }
            })
            .collect()
    };
    let client = Client::builder(target(&args, &args.xds_address)?, node(&args))
        .watch::<Target, _>(targets)
        .watch::<HttpPolicy, _>(policies)
        .watch::<Tracing, _>(move |c: Changes<Tracing>| tracing_control.on_changes(c))
        .watch::<Address, _>(addresses)
        .build();
    let mut synced = client.synced();
    tokio::spawn(client.run());
    let hbone = tokio::net::TcpListener::bind(SocketAddr::new(args.instance_ip, args.hbone_port))
        .await
        .with_context(|| format!("binding HBONE on port {}", args.hbone_port))?;
    let ready = tokio::net::TcpListener::bind(SocketAddr::new(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        args.readiness_port,
    ))
    .await
    .with_context(|| format!("binding readiness on port {}", args.readiness_port))?;
    tracing::info!(address = %args.xds_address, "waiting for config from the control plane");
    tokio::select! {
        synced = synced.wait_for(|s| *s) => {
            synced.context("xDS client stopped")?;
        }
        () = stop.next() => return Ok(()),
    }
    tracing::info!(
        targets = waypoint.targets().iter().count(),
        port = args.hbone_port,
        "config received; serving HBONE"
    );
    tokio::spawn(waypoint::health::serve(ready, waypoint.clone()));
    let served = waypoint.clone().serve(hbone);
    tokio::pin!(served);
    tokio::select! {
        r = &mut served => return r.context("HBONE server"),
        () = stop.next() => tracing::info!("stop signal: draining"),
        () = shutdown.notified() => tracing::info!("admin /quitquitquit: draining"),
    }
    // As Istio's agent: the whole window, the listener still open (`proxy.rs` rule 5).
    waypoint.drain();
    let window = Duration::from_secs(args.termination_drain_duration_seconds);
    tokio::select! {
        r = &mut served => r.context("HBONE server"),
        () = tokio::time::sleep(window) => {
            tracing::info!(?window, "drain window over; exiting");
            // The last spans, not lost with the process.
            waypoint.flush_tracing(Duration::from_secs(1)).await;
            Ok(())
        }
        () = stop.next() => {
            tracing::warn!("second stop signal: exiting without waiting for the drain");
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod) and SIGINT, watched from the start: before the
/// waypoint serves, one ends it at once; then the first starts the drain, a second ends it.
/// Streams, not one-off futures: a signal that comes between two waits is kept for the next.
struct Stop {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Stop {
    fn new() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind, name: &str| {
            signal(kind)
                .map_err(|e| tracing::warn!(error = %e, "cannot watch {name}"))
                .ok()
        };
        Stop {
            term: watch(SignalKind::terminate(), "SIGTERM"),
            int: watch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => {}
            () = recv(&mut self.int) => {}
        }
    }
}

/// Admin and metrics, up once the certificate is issued and before the first config, so an
/// operator can look at a waypoint that is still waiting for it.
async fn operational(
    args: &Args,
    waypoint: &Arc<Waypoint>,
    logs: Arc<dyn LogControl>,
    shutdown: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let admin = Arc::new(Admin {
        waypoint: waypoint.clone(),
        logs,
        shutdown: shutdown.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding admin on {}", args.admin_addr))?;
    tokio::spawn(waypoint::admin::serve(listener, move |req| {
        admin.clone().handle(req)
    }));
    let metrics = waypoint.metrics().clone();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding metrics on {}", args.metrics_addr))?;
    tokio::spawn(waypoint::admin::serve(listener, move |req| {
        waypoint::admin::metrics(metrics.clone(), req)
    }));
    Ok(())
}

/// Applies a push to the store and publishes the new snapshot; rejected resources NACK.
fn apply(
    store: &Mutex<Store>,
    waypoint: &Waypoint,
    f: impl FnOnce(&mut Store) -> Vec<(String, waypoint::config::ConfigError)>,
) -> Vec<Rejection> {
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    let rejected = f(&mut s);
    waypoint.set_targets(s.snapshot());
    rejected
        .into_iter()
        .map(|(name, e)| {
            tracing::warn!(%name, error = %e, "resource rejected; the last good version stays");
            Rejection {
                name,
                reason: e.to_string(),
            }
        })
        .collect()
}
