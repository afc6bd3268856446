//! The TLS port (15012): one listener serving delta ADS and the CA over HTTP/2, as istiod does.
//!
//! TLS is rustls with a serving certificate from the mesh CA (DNS names such as
//! `istiod.istio-system.svc`), renewed in place at half its lifetime; clients authenticate
//! with bearer tokens, not certificates. gRPC calls are routed by path: the CA to tonic's
//! generated service, delta ADS to `xds` (which frames its responses itself); anything else
//! gets `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proto::citadel::istio_certificate_service_server::IstioCertificateServiceServer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::ca::CaService;
use crate::xds::AdsService;

/// The caller's socket address, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Time a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest xDS/CA message accepted or sent (istiod's ztunnel client allows 200 MiB).
const MAX_MESSAGE: usize = 200 * 1024 * 1024;

/// A serving certificate that can be swapped while connections use the old one.
#[derive(Debug, Clone)]
pub struct ServingCert(Arc<RwLock<Arc<CertifiedKey>>>);

impl ServingCert {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        ServingCert(Arc::new(RwLock::new(key)))
    }

    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// rustls settings for the port: TLS 1.3 (as istiod's default), ALPN h2, no client certs.
pub fn server_config(cert: ServingCert) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(hbone::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Routes gRPC calls by path to the services behind the port.
#[derive(Clone)]
struct Router {
    ads: AdsService,
    ca: IstioCertificateServiceServer<CaService>,
    peer: SocketAddr,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Incoming>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        let path = req.uri().path();
        if path.starts_with("/envoy.service.discovery.v3.AggregatedDiscoveryService/") {
            let ads = self.ads.clone();
            let peer = self.peer;
            Box::pin(async move { Ok(ads.call(req, peer, MAX_MESSAGE).await) })
        } else if path.starts_with("/istio.v1.auth.IstioCertificateService/") {
            let mut ca = self.ca.clone();
            Box::pin(async move { ca.call(req).await })
        } else {
            let status = tonic::Status::unimplemented(format!(
                "{path}: meshd serves delta ADS and IstioCertificateService only"
            ));
            Box::pin(async move { Ok(status.into_http()) })
        }
    }
}

/// Accepts connections on `listener` until the task is dropped, which closes them all.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ads: AdsService,
    ca: CaService,
) {
    let acceptor = TlsAcceptor::from(tls);
    let ca = IstioCertificateServiceServer::new(ca);
    let mut backoff = Duration::from_millis(5);
    // Owning the connection tasks means stopping this future closes every connection too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                // Usually EMFILE: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = Router {
            ads: ads.clone(),
            ca: ca.clone(),
            peer,
        };
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http.timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20));
            if let Err(e) = http
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`: half way.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    not_before + not_after.duration_since(not_before).unwrap_or_default() / 2
}
