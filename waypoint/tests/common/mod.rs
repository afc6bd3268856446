//! What the waypoint's in-process tests share: a CA, the destination's HBONE server (standing
//! in for its ztunnel), a client's HBONE stream to the waypoint, and a target to serve.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use authz::http::HttpPolicies;
use bytes::Bytes;
use hbone::{
    CertHandle, ConnectHandler, FileCa, H2Settings, Pool, PoolKey, SpiffeId, StreamIo, TrustRoots,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use waypoint::{Endpoint, Target};

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn id(ns: &str, sa: &str) -> SpiffeId {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
        .parse()
        .unwrap()
}

/// AuthorizationPolicies (YAML or JSON) as the waypoint holds them.
pub fn policies(docs: &[&str]) -> HttpPolicies {
    docs.iter()
        .map(|y| {
            authz::translate::http_authorization_policy(*y, "istio-system")
                .unwrap()
                .policy
        })
        .collect()
}

/// A test CA in its own directory, and its roots.
pub struct Pki {
    pub ca: FileCa,
    pub roots: TrustRoots,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("waypoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = FileCa::generate(&dir, "test").unwrap();
        let roots = TrustRoots::new(ca.roots()).unwrap();
        Pki { ca, roots }
    }

    pub fn cert(&self, identity: &SpiffeId) -> CertHandle {
        CertHandle::new(self.ca.issue(identity, Duration::from_secs(600)).unwrap()).unwrap()
    }

    /// The destination: an HBONE server at `ip:15008` as `shop/api`, each CONNECT to `handler`.
    pub async fn backend<H: ConnectHandler>(&self, ip: &str, handler: Arc<H>) {
        let listener = TcpListener::bind((ip, hbone::HBONE_PORT)).await.unwrap();
        let tls = hbone::server_config(self.cert(&id("shop", "api")), &self.roots).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    let settings = H2Settings::default();
                    let _ = hbone::serve_connection(tcp, acceptor, &settings, handler).await;
                });
            }
        });
    }

    /// An HBONE stream from `client` to the waypoint at `waypoint` for `authority`.
    pub async fn connect(
        &self,
        client: &SpiffeId,
        waypoint: SocketAddr,
        authority: &str,
    ) -> Result<StreamIo, hbone::PoolError> {
        let cert = self.cert(client);
        let dialer: hbone::Dialer =
            Arc::new(|dst, _| Box::pin(tokio::net::TcpStream::connect(dst)));
        let pool = Pool::new(H2Settings::default(), dialer);
        let key = PoolKey::new(client.clone(), vec![id("shop", "waypoint")], waypoint, None);
        let (stream, _) = pool
            .open(&key, &cert, &self.roots, authority, HeaderMap::new())
            .await?;
        Ok(StreamIo::new(stream))
    }
}

/// An HTTP/1.1 client over `io`.
pub async fn http1(io: StreamIo) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A request to the `api` service as `agent`.
pub fn request(method: &str, path: &str, agent: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.shop.svc.cluster.local")
        .header("user-agent", agent)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Sends `req` once `send` is ready; the response's status and body.
pub async fn status_and_body(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, String) {
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A service target `key` at `vip` (port 80 -> 8080) with one healthy endpoint
/// (`shop/api`), or none when `endpoint_ip` is empty.
pub fn target(key: &str, vip: IpAddr, endpoint_ip: &str, policies: HttpPolicies) -> Target {
    Target {
        key: key.into(),
        namespace: "shop".into(),
        vips: vec![vip],
        ports: [(80, 8080)].into(),
        h2_ports: Default::default(),
        endpoints: if endpoint_ip.is_empty() {
            Vec::new()
        } else {
            vec![Endpoint {
                ip: endpoint_ip.parse().unwrap(),
                identity: id("shop", "api"),
                healthy: true,
            }]
        },
        policies,
        rate_limits: Vec::new(),
        jwt: Vec::new(),
        ext_authz: Default::default(),
    }
}
