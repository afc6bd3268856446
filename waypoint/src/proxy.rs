//! The waypoint's data path: HBONE in, policy per request, HBONE out.
//!
//! Rules, in order, for each CONNECT:
//! 1. Its `:authority` must resolve to a target this waypoint serves ([`Targets::resolve`]);
//!    otherwise 400, as ztunnel answers a target it does not serve.
//! 2. The CONNECT is accepted, and the stream's protocol is detected ([`detect`]).
//! 3. HTTP/1.1 and HTTP/2 are served per request ([`crate::request`]): each is decided by the
//!    target's L7 policies and, if allowed, sent to an endpoint over an upstream HBONE stream
//!    presenting the waypoint's own identity, `:authority` = `<pod IP>:<target port>`.
//! 4. Anything else is carried as TCP to one endpoint, after the same policies decide the
//!    connection with no HTTP attributes (so a rule that needs a method or path never allows
//!    it: fail closed); a CUSTOM policy that matches asks its authorizer about the connection
//!    first ([`crate::ext_authz`] rule 7).
//!
//! 5. Draining ([`Waypoint::drain`], on SIGTERM; the binary exits at the end of the drain
//!    window, as Istio's agent does): each HBONE connection open then gets a GOAWAY (no new
//!    streams there) and each HTTP connection in its streams closes after the request it is
//!    serving (an idle one at once); TCP streams and upgraded (WebSocket) tunnels go on, to
//!    the exit. New HBONE connections are still accepted and served (a client that has not
//!    yet seen this endpoint go), each HTTP connection in them for one request
//!    (`connection: close`).
//!
//! Upstream HBONE connections come from one [`Pool`], and the HTTP connections inside them
//! from one [`Upstreams`]: both shared by all downstream connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use hbone::{
    CertHandle, ConnectHandler, H2Settings, HBONE_PORT, InboundConnect, PeerInfo, Pool, PoolKey,
    SpiffeId, StreamIo, Target, TrustRoots,
};
use http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::balance::{Balancer, InFlight};
use crate::detect::{DETECT_TIMEOUT, Protocol, detect};
use crate::drain::{Drain, Draining};
use crate::ext_authz;
use crate::metrics::{Metrics, ResponseFlags};
use crate::peers::{Peers, Upstream, Workload};
use crate::ratelimit::Limiter;
use crate::targets::{Endpoint, Resolved, Targets};
use crate::telemetry::{CountingIo, TcpStream};
use crate::upstream::Upstreams;

/// Why an upstream stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no healthy endpoint for {0}")]
    NoEndpoint(String),
    #[error("HBONE to {dst}")]
    Hbone {
        dst: SocketAddr,
        #[source]
        source: hbone::PoolError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS configuration")]
    Tls(#[from] hbone::TlsError),
}

/// One waypoint: its identity, what it serves, and its upstream pool.
pub struct Waypoint {
    targets: RwLock<Arc<Targets>>,
    cert: CertHandle,
    roots: TrustRoots,
    pool: Pool,
    /// HTTP connections over `pool`'s streams (`upstream.rs`).
    upstreams: Upstreams,
    settings: H2Settings,
    /// Which endpoint each request goes to (`balance.rs`).
    pub balancer: Balancer,
    /// The token buckets of every target's rate limits.
    pub limiter: Limiter,
    metrics: Arc<Metrics>,
    /// `jwksUri` key sets, shared by every target and kept across config changes.
    jwks: crate::jwt::KeyCache,
    /// The mesh's workloads, which name peers in metrics (`peers.rs`).
    peers: Peers,
    /// The current tracer (`trace.rs`), replaced whole when tracing's configuration changes;
    /// each request clones the `Arc` it starts with and finishes on it. `None`: off.
    tracer: RwLock<Option<Arc<crate::trace::Tracer>>>,
    /// Rule 5 (`drain.rs`).
    drain: Drain,
}

impl std::fmt::Debug for Waypoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waypoint")
            .field("identity", self.cert.identity())
            .finish_non_exhaustive()
    }
}

impl Waypoint {
    pub fn new(cert: CertHandle, roots: TrustRoots, settings: H2Settings) -> Arc<Waypoint> {
        Waypoint::build(
            cert,
            roots,
            settings,
            Arc::default(),
            crate::jwt::FetchSettings::default(),
        )
    }

    /// As [`Waypoint::new`], recording into `metrics`.
    pub fn with_metrics(
        cert: CertHandle,
        roots: TrustRoots,
        settings: H2Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Waypoint> {
        Waypoint::build(
            cert,
            roots,
            settings,
            metrics,
            crate::jwt::FetchSettings::default(),
        )
    }

    /// [`Waypoint::new`] with its own JWKS refresh intervals (tests shorten them).
    pub fn with_jwks(
        cert: CertHandle,
        roots: TrustRoots,
        settings: H2Settings,
        jwks: crate::jwt::FetchSettings,
    ) -> Arc<Waypoint> {
        Waypoint::build(cert, roots, settings, Arc::default(), jwks)
    }

    fn build(
        cert: CertHandle,
        roots: TrustRoots,
        settings: H2Settings,
        metrics: Arc<Metrics>,
        jwks: crate::jwt::FetchSettings,
    ) -> Arc<Waypoint> {
        let dialer: hbone::Dialer = Arc::new(|dst, _local| {
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(dst).await?;
                tcp.set_nodelay(true)?;
                Ok(tcp)
            })
        });
        Arc::new(Waypoint {
            targets: RwLock::new(Arc::new(Targets::default())),
            cert,
            roots,
            pool: Pool::new(settings.clone(), dialer),
            upstreams: Upstreams::default(),
            settings,
            balancer: Balancer::default(),
            limiter: Limiter::default(),
            metrics,
            jwks: crate::jwt::KeyCache::new(jwks),
            peers: Peers::default(),
            tracer: RwLock::new(None),
            drain: Drain::default(),
        })
    }

    /// Rule 5: starts draining.
    pub fn drain(&self) {
        self.drain.start();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.started()
    }

    /// Resolves once draining has started; cheap to race on every wake (`drain.rs`).
    pub(crate) fn draining(&self) -> Draining {
        self.drain.waiter()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Turns tracing on, or replaces the tracer (requests under way finish on theirs).
    pub fn set_tracer(&self, tracer: crate::trace::Tracer) {
        *self.tracer.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(tracer));
    }

    /// Turns tracing off.
    pub fn clear_tracer(&self) {
        *self.tracer.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Turns tracing off and waits, at most `within`, for the exporter to send the spans it
    /// holds (once the requests still on the tracer are done): what an exiting waypoint does.
    pub async fn flush_tracing(&self, within: std::time::Duration) {
        let taken = self
            .tracer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(tracer) = taken else {
            return;
        };
        let exported = tracer.exported();
        drop(tracer);
        let _ = tokio::time::timeout(within, exported).await;
    }

    /// The current tracer, if tracing is on.
    pub fn tracer(&self) -> Option<Arc<crate::trace::Tracer>> {
        self.tracer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The workloads the waypoint knows, updated from `Address` resources.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The workload `peer` proved to be, if known (`peers.rs` rule 3).
    pub(crate) fn source_workload(&self, peer: &PeerInfo) -> Option<Arc<Workload>> {
        self.peers.lookup(source_ip(peer), &peer.identity)
    }

    /// `endpoint` as metrics name it.
    pub(crate) fn upstream_of(&self, endpoint: &Endpoint) -> Upstream {
        Upstream {
            identity: endpoint.identity.clone(),
            workload: self.peers.lookup(endpoint.ip, &endpoint.identity),
        }
    }

    pub(crate) fn jwks(&self) -> &crate::jwt::KeyCache {
        &self.jwks
    }

    pub fn identity(&self) -> &SpiffeId {
        self.cert.identity()
    }

    /// Replaces what the waypoint serves; streams already open keep their snapshot.
    pub fn set_targets(&self, targets: Targets) {
        let mut t = self.targets.write().unwrap_or_else(|p| p.into_inner());
        *t = Arc::new(targets);
    }

    pub fn targets(&self) -> Arc<Targets> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves HBONE on `listener` until the task is dropped (rule 5: draining changes how, not
    /// whether).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<(), StartError> {
        let tls = hbone::server_config(self.cert.clone(), &self.roots)?;
        let acceptor = TlsAcceptor::from(tls);
        tokio::spawn(sweep_upstreams(Arc::downgrade(&self)));
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, me) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let settings = me.settings.clone();
                // Rule 5: one accepted while draining is served, not sent away.
                let drain = (!me.is_draining()).then(|| me.draining());
                let drain = async move {
                    match drain {
                        Some(drain) => drain.await,
                        None => std::future::pending().await,
                    }
                };
                let served = hbone::serve_connection_until(tcp, acceptor, &settings, me, drain);
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "HBONE connection ended");
                }
            });
        }
    }

    /// The endpoint a request or connection goes to: the pinned one (rule 2 of targets), else
    /// one the balancer picks among the healthy ones; counted in flight while the guard lives.
    pub(crate) fn pick(
        &self,
        resolved: &Resolved,
    ) -> Result<(Endpoint, u16, Option<InFlight<'_>>), UpstreamError> {
        if let Some(e) = &resolved.pinned {
            return Ok((e.clone(), resolved.addressed.port(), None));
        }
        let (endpoint, in_flight) = self
            .balancer
            .pick(&resolved.target.endpoints)
            .ok_or_else(|| UpstreamError::NoEndpoint(resolved.target.key.clone()))?;
        let port = resolved.target.target_port(resolved.addressed.port());
        Ok((endpoint.clone(), port, Some(in_flight)))
    }

    /// Opens an HBONE stream to `endpoint` for `<ip>:<port>`, as the waypoint.
    pub(crate) async fn open(
        &self,
        endpoint: &Endpoint,
        port: u16,
    ) -> Result<StreamIo, UpstreamError> {
        let dst = SocketAddr::new(endpoint.ip, HBONE_PORT);
        let key = PoolKey::new(
            self.cert.identity().clone(),
            vec![endpoint.identity.clone()],
            dst,
            None,
        );
        let authority = SocketAddr::new(endpoint.ip, port).to_string();
        let (stream, _) = self
            .pool
            .open(&key, &self.cert, &self.roots, &authority, HeaderMap::new())
            .await
            .map_err(|source| UpstreamError::Hbone { dst, source })?;
        Ok(StreamIo::new(stream))
    }
}

impl ConnectHandler for Waypoint {
    fn handle(
        self: Arc<Self>,
        request: InboundConnect,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Rule 1, decided on the accept loop (no waiting).
        let resolved = match &request.target {
            Target::Addr(a) => self.targets().resolve(*a),
            Target::Host(..) => None,
        };
        async move {
            let InboundConnect {
                peer,
                target,
                responder,
                ..
            } = request;
            let Some(resolved) = resolved else {
                tracing::debug!(%target, peer = %peer.identity, "not a target of this waypoint");
                responder.refuse(StatusCode::BAD_REQUEST);
                return;
            };
            let Ok(stream) = responder.accept(HeaderMap::new()) else {
                return;
            };
            // Rule 2.
            let (protocol, io) = match detect(StreamIo::new(stream), DETECT_TIMEOUT).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "stream ended before its protocol was known");
                    return;
                }
            };
            match protocol {
                Protocol::Http1 | Protocol::Http2 => {
                    crate::request::serve(self, peer, resolved, protocol, io).await
                }
                Protocol::Tcp => serve_tcp(&self, &peer, &resolved, io).await,
            }
        }
    }
}

/// Closes idle upstream HTTP connections now and then, while the waypoint lives.
async fn sweep_upstreams(waypoint: std::sync::Weak<Waypoint>) {
    let period = crate::upstream::IDLE_TIMEOUT / 3;
    loop {
        tokio::time::sleep(period).await;
        let Some(w) = waypoint.upgrade() else { return };
        w.upstreams
            .sweep(std::time::Instant::now(), crate::upstream::IDLE_TIMEOUT);
    }
}

/// The policy view of a peer's identity.
pub(crate) fn authz_peer(identity: &SpiffeId) -> authz::Peer {
    authz::Peer {
        trust_domain: identity.trust_domain().to_string(),
        namespace: identity.namespace().to_string(),
        service_account: identity.service_account().to_string(),
    }
}

/// The source address policies see: the peer's IP.
pub(crate) fn source_ip(peer: &PeerInfo) -> IpAddr {
    peer.remote.ip()
}

/// Rule 4's decision: the target's policies with no HTTP attributes, CUSTOM first. `Err` is
/// why the connection is refused (the access log's policy) and its flags.
async fn tcp_decision(
    waypoint: &Waypoint,
    peer: &PeerInfo,
    resolved: &Resolved,
) -> Result<(), (String, ResponseFlags)> {
    let policies = &resolved.target.policies;
    if let Some(check) = with_tcp_view(peer, resolved, |r| policies.custom(r)) {
        ask_about_connection(waypoint, peer, resolved, &check).await?;
    }
    match with_tcp_view(peer, resolved, |r| policies.decide(r).verdict) {
        authz::http::HttpVerdict::Allowed { .. } => Ok(()),
        denied => Err((denied.to_string(), ResponseFlags::None)),
    }
}

/// `f` over the connection as policies see it: the peer, no HTTP attributes.
fn with_tcp_view<R>(
    peer: &PeerInfo,
    resolved: &Resolved,
    f: impl FnOnce(&authz::http::Request<'_>) -> R,
) -> R {
    let who = authz_peer(&peer.identity);
    let mut request = authz::http::Request::new(source_ip(peer), resolved.addressed, "", "", "");
    request.peer = Some(&who);
    f(&request)
}

/// Rule 4's CUSTOM policy: its authorizer asked about the connection (`ext_authz` rule 7).
async fn ask_about_connection(
    waypoint: &Waypoint,
    peer: &PeerInfo,
    resolved: &Resolved,
    check: &authz::http::CustomCheck,
) -> Result<(), (String, ResponseFlags)> {
    let uaex = ResponseFlags::UnauthorizedExternalService;
    let Some(provider) = resolved.target.ext_authz.get(&*check.policy) else {
        return Err((format!("{check}: no external authorizer configured"), uaex));
    };
    let conn = ext_authz::ConnectionCheck {
        source: peer.remote,
        source_principal: peer.identity.to_string(),
        destination: resolved.addressed,
        destination_principal: waypoint.identity().to_string(),
    };
    match ext_authz::check_connection(provider, &conn).await {
        Ok(true) => Ok(()),
        Ok(false) => Err((check.to_string(), uaex)),
        Err(e @ ext_authz::CheckError::NotForConnections) => Err((format!("{check}: {e}"), uaex)),
        Err(e) => {
            provider.warn_failed(&e, "TCP connection");
            match provider.fail_open {
                true => Ok(()),
                false => Err((format!("{check}: the check failed"), uaex)),
            }
        }
    }
}

/// Rule 4, counted and logged as a TCP stream (denials and upstream failures too).
async fn serve_tcp<IO>(waypoint: &Waypoint, peer: &PeerInfo, resolved: &Resolved, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let metrics = waypoint.metrics();
    let source = waypoint.source_workload(peer);
    let opened = |upstream: Option<&Upstream>, flags| {
        let source = source.as_deref();
        TcpStream::opened(metrics, &peer.identity, source, resolved, upstream, flags)
    };
    if let Err((policy, flags)) = tcp_decision(waypoint, peer, resolved).await {
        opened(None, flags).closed(0, 0, Some(&policy));
        return;
    }
    // Held while the stream is open: least request counts open streams.
    let (endpoint, port, _in_flight) = match waypoint.pick(resolved) {
        Ok(picked) => picked,
        Err(e) => {
            tracing::debug!(target = %resolved.addressed, error = %e, "TCP connection failed upstream");
            opened(None, ResponseFlags::NoHealthyUpstream).closed(0, 0, None);
            return;
        }
    };
    let named = waypoint.upstream_of(&endpoint);
    let mut upstream = match waypoint.open(&endpoint, port).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(target = %resolved.addressed, error = %e, "TCP connection failed upstream");
            opened(Some(&named), ResponseFlags::UpstreamConnectionFailure).closed(0, 0, None);
            return;
        }
    };
    let stream = opened(Some(&named), ResponseFlags::None);
    let mut io = CountingIo::new(io);
    if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        tracing::debug!(error = %e, "TCP stream ended with an error");
    }
    stream.closed(io.written, io.read, None);
}
