//! The data path: three listeners in the workload's network namespace.
//!
//! | port  | what                                                        |
//! |-------|-------------------------------------------------------------|
//! | 15001 | outbound capture: the app's TCP, REDIRECTed here            |
//! | 15006 | inbound plaintext capture: non-HBONE TCP to the app         |
//! | 15008 | inbound HBONE: mutual TLS + HTTP/2 CONNECT from peers       |

pub mod access;
mod inbound;
mod inbound_plain;
mod outbound;
pub mod policy;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hbone::{CertManager, H2Settings, Pool, SpiffeId, TrustRoots};
use tokio::net::TcpListener;
use zds::Netns;

use crate::config::WorkloadInfo;
use crate::metrics::Metrics;
use crate::readiness::Ready;
use crate::socket;
use crate::state::{State, StateHandle, Workload};

/// Ports ztunnel listens on inside the workload's namespace (the ones capture sends to).
pub use capture::Ports;

/// One proxied workload: everything its listeners and connections share. Dedicated mode has
/// one; shared mode one per pod, each with the pod's identity and network namespace, over the
/// node-wide state, certificates and metrics.
pub struct ProxyContext {
    pub state: StateHandle,
    /// The workload served.
    pub local: WorkloadInfo,
    pub identity: SpiffeId,
    pub certs: Arc<CertManager>,
    pub roots: TrustRoots,
    pub pool: Pool,
    pub mark: Option<u32>,
    /// The pod's network namespace (shared mode): every socket of this workload is created
    /// there. `None`: ztunnel's own (dedicated mode).
    pub netns: Option<Arc<Netns>>,
    pub settings: H2Settings,
    pub metrics: Arc<Metrics>,
    /// Open inbound connections, re-checked when policy changes.
    pub registry: Arc<policy::Registry>,
    /// Round-robin position for picking service endpoints.
    next_endpoint: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("workload {namespace}/{name} (PROXY_WORKLOAD_INFO) is not in the config")]
    UnknownLocalWorkload { namespace: String, name: String },
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate for {identity}")]
    Cert {
        identity: String,
        #[source]
        source: Box<hbone::IssueError>,
    },
    #[error("TLS server configuration")]
    Tls(#[source] hbone::TlsError),
}

impl ProxyContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: StateHandle,
        local: WorkloadInfo,
        identity: SpiffeId,
        certs: Arc<CertManager>,
        roots: TrustRoots,
        mark: Option<u32>,
        netns: Option<Arc<Netns>>,
        settings: H2Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let dial_ns = netns.clone();
        let dialer: hbone::Dialer = Arc::new(move |dst, local_ip| {
            let netns = dial_ns.clone();
            Box::pin(async move { socket::connect(dst, local_ip, mark, netns.as_deref()).await })
        });
        let pool = Pool::new(settings.clone(), dialer);
        Arc::new(ProxyContext {
            state,
            local,
            identity,
            certs,
            roots,
            pool,
            mark,
            netns,
            settings,
            registry: Arc::new(policy::Registry::new(metrics.active.clone())),
            metrics,
            next_endpoint: AtomicUsize::new(0),
        })
    }

    /// The local workload as the current config describes it.
    pub fn local_workload(&self, state: &State) -> Result<Arc<Workload>, ProxyError> {
        state
            .workload_by_name(&self.local.namespace, &self.local.name)
            .cloned()
            .ok_or_else(|| ProxyError::UnknownLocalWorkload {
                namespace: self.local.namespace.clone(),
                name: self.local.name.clone(),
            })
    }

    /// The local workload's certificate handle (issued on first use).
    pub async fn local_cert(&self) -> Result<hbone::CertHandle, ProxyError> {
        self.certs
            .fetch(&self.identity)
            .await
            .map_err(|source| ProxyError::Cert {
                identity: self.identity.to_string(),
                source: Box::new(source),
            })
    }

    fn pick(&self, n: usize) -> usize {
        self.next_endpoint.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }
}

/// A workload's listeners, being served. Dropping it closes the listeners (connections
/// already accepted carry on until they end).
pub struct Running {
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Waits until a listener stops (they run until dropped).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

/// Fetches the workload's certificate, binds the three listeners (in its namespace) and
/// starts serving them.
pub async fn start(ctx: Arc<ProxyContext>, ports: Ports) -> Result<Running, ProxyError> {
    let handle = ctx.local_cert().await?;
    let tls = hbone::server_config(handle, &ctx.roots).map_err(ProxyError::Tls)?;
    let netns = ctx.netns.as_deref();
    let mut tasks = tokio::task::JoinSet::new();
    for l in bind(ports.outbound, ctx.mark, netns)? {
        tasks.spawn(accept_loop(l, ctx.clone(), outbound::serve));
    }
    for l in bind(ports.inbound_plain, ctx.mark, netns)? {
        tasks.spawn(accept_loop(l, ctx.clone(), inbound_plain::serve));
    }
    for l in bind(ports.inbound_hbone, ctx.mark, netns)? {
        tasks.spawn(inbound::accept_loop(l, ctx.clone(), tls.clone()));
    }
    tracing::info!(
        workload = %ctx.local,
        identity = %ctx.identity,
        netns = ctx.netns.as_ref().map_or("ztunnel's", |n| n.id()),
        outbound = ports.outbound,
        inbound_plain = ports.inbound_plain,
        inbound_hbone = ports.inbound_hbone,
        "serving workload"
    );
    tasks.spawn(ctx.registry.clone().watch(ctx.state.clone()));
    tasks.spawn(refresh_cert_expiry(ctx.clone()));
    Ok(Running { tasks })
}

/// Dedicated mode: serves the one workload until the task is dropped.
pub async fn run(ctx: Arc<ProxyContext>, ports: Ports, ready: Ready) -> Result<(), ProxyError> {
    let mut running = start(ctx, ports).await?;
    ready.done("certificate");
    ready.done("listeners");
    tracing::info!("ztunnel ready");
    running.wait().await;
    Ok(())
}

/// Listeners on `port` for IPv4 and, where the namespace has it, IPv6.
fn bind(
    port: u16,
    mark: Option<u32>,
    netns: Option<&Netns>,
) -> Result<Vec<TcpListener>, ProxyError> {
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let mut listeners = vec![
        socket::listen(v4, mark, netns).map_err(|source| ProxyError::Bind { addr: v4, source })?,
    ];
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match socket::listen(v6, mark, netns) {
        Ok(l) => listeners.push(l),
        Err(e) => tracing::debug!(addr = %v6, error = %e, "no IPv6 listener; IPv4 only"),
    }
    Ok(listeners)
}

async fn accept_loop<F, Fut>(listener: TcpListener, ctx: Arc<ProxyContext>, serve: F)
where
    F: Fn(Arc<ProxyContext>, tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = socket::accept(&listener).await;
        // Small writes (responses, handshakes) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(ctx.clone(), tcp, peer));
    }
}

/// A random id for `traceparent`, without a random number crate: std's hasher keys are random.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Keeps the certificate expiry metric current across renewals.
async fn refresh_cert_expiry(ctx: Arc<ProxyContext>) {
    loop {
        if let Err(e) = cert_expiry(&ctx).await {
            tracing::warn!(error = %e, "certificate unavailable");
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

/// Publishes the local certificate's expiry (Unix seconds) as a metric.
async fn cert_expiry(ctx: &ProxyContext) -> Result<i64, ProxyError> {
    let handle = ctx.local_cert().await?;
    let expiry = handle
        .certificate()
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    ctx.metrics
        .cert_expiry
        .get_or_create(&crate::metrics::IdentityLabels {
            identity: ctx.identity.to_string(),
        })
        .set(expiry);
    Ok(expiry)
}

#[cfg(test)]
mod size_tests {
    //! Every open connection holds its task's future for its whole life, so their sizes are
    //! per-connection memory. These pin them.
    use super::*;

    async fn context() -> Arc<ProxyContext> {
        let dir = std::env::temp_dir().join(format!("zt-size-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = hbone::FileCa::generate(&dir, "t").unwrap();
        let roots = TrustRoots::new(ca.roots()).unwrap();
        let certs = CertManager::new(Arc::new(hbone::LocalCa {
            ca,
            lifetime: std::time::Duration::from_secs(3600),
        }));
        ProxyContext::new(
            StateHandle::default(),
            "ns/a/sa".parse().unwrap(),
            "spiffe://cluster.local/ns/ns/sa/sa".parse().unwrap(),
            certs,
            roots,
            None,
            None,
            H2Settings::default(),
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn connection_futures_are_small() {
        let ctx = context().await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let out = outbound::serve(ctx.clone(), tcp, addr);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let plain = inbound_plain::serve(ctx.clone(), tcp, addr);
        // Measured 5,152 and 3,824 bytes before ConnectionLog was boxed and the cold
        // connection-setup futures were; 1,480 and 1,080 after; outbound 880 once all of its
        // setup moved into one boxed future.
        assert!(
            std::mem::size_of_val(&out) <= 1000,
            "outbound: {}",
            std::mem::size_of_val(&out)
        );
        assert!(
            std::mem::size_of_val(&plain) <= 1200,
            "plaintext: {}",
            std::mem::size_of_val(&plain)
        );
        assert_eq!(
            std::mem::size_of::<access::ConnectionLog>(),
            std::mem::size_of::<usize>()
        );
    }

    /// The size of the future `f` returns, without calling it.
    fn returned_size<A, B, R>(_f: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn inbound_stream_future_is_small() {
        // The task of every inbound HBONE stream. It was 1,864 bytes when the stream's task
        // also held the parsed request, the policy verdict and the state snapshot.
        let n = returned_size(inbound::carry);
        assert!(n <= 1100, "inbound: {n}");
    }
}
