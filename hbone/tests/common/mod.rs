//! A real HBONE server and pool on loopback, shared by the in-process tests and the benches.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hbone::{
    CertHandle, ConnectHandler, FileCa, H2Settings, InboundConnect, Pool, PoolError, PoolKey,
    SpiffeId, Target, TrustRoots, copy_bidirectional,
};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Fixture {
    pub hbone_addr: SocketAddr,
    pub echo_addr: SocketAddr,
    pub roots: TrustRoots,
    pub client_cert: CertHandle,
    pub server_id: SpiffeId,
    pub client_id: SpiffeId,
    /// HBONE connections the server accepted, and how many have ended.
    pub accepted: Arc<AtomicUsize>,
    pub ended: Arc<AtomicUsize>,
}

/// Answers CONNECTs to port 401 with 401, everything else by connecting to the echo server.
struct Handler {
    echo: SocketAddr,
}

impl ConnectHandler for Handler {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        if matches!(req.target, Target::Addr(a) if a.port() == 401) {
            req.responder.refuse(StatusCode::UNAUTHORIZED);
            return;
        }
        let mut up = TcpStream::connect(self.echo).await.unwrap();
        up.set_nodelay(true).unwrap();
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        let _ = copy_bidirectional(&mut up, stream).await;
    }
}

pub async fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hbone-pool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = FileCa::generate(&dir, "test").unwrap();
    let roots = TrustRoots::new(ca.roots()).unwrap();
    let server_id: SpiffeId = "spiffe://cluster.local/ns/a/sa/server".parse().unwrap();
    let client_id: SpiffeId = "spiffe://cluster.local/ns/a/sa/client".parse().unwrap();
    let server_cert =
        CertHandle::new(ca.issue(&server_id, Duration::from_secs(600)).unwrap()).unwrap();
    let client_cert =
        CertHandle::new(ca.issue(&client_id, Duration::from_secs(600)).unwrap()).unwrap();

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone_addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(hbone::server_config(server_cert, &roots).unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (a, e) = (accepted.clone(), ended.clone());
    let handler = Arc::new(Handler { echo: echo_addr });
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let (acceptor, handler, e) = (acceptor.clone(), handler.clone(), e.clone());
            tokio::spawn(async move {
                let _ =
                    hbone::serve_connection(tcp, acceptor, &H2Settings::default(), handler).await;
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Fixture {
        hbone_addr,
        echo_addr,
        roots,
        client_cert,
        server_id,
        client_id,
        accepted,
        ended,
    }
}

pub fn pool(settings: H2Settings) -> Pool {
    Pool::new(
        settings,
        Arc::new(|dst, _| Box::pin(TcpStream::connect(dst))),
    )
}

impl Fixture {
    pub fn key(&self, expected: &SpiffeId) -> PoolKey {
        PoolKey::new(
            self.client_id.clone(),
            vec![expected.clone()],
            self.hbone_addr,
            None,
        )
    }

    pub async fn open(
        &self,
        pool: &Pool,
        expected: &SpiffeId,
        port: u16,
    ) -> Result<hbone::H2Stream, PoolError> {
        let authority = SocketAddr::new(self.echo_addr.ip(), port).to_string();
        pool.open(
            &self.key(expected),
            &self.client_cert,
            &self.roots,
            &authority,
            HeaderMap::new(),
        )
        .await
        .map(|(s, _)| s)
    }
}

/// Sends `msg` through `stream` via a local socket pair and returns the echo.
pub async fn echo_through(stream: hbone::H2Stream, msg: &[u8]) -> Vec<u8> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut app = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (mut side, _) = l.accept().await.unwrap();
    let copy = tokio::spawn(async move { copy_bidirectional(&mut side, stream).await });
    app.write_all(msg).await.unwrap();
    app.shutdown().await.unwrap();
    let mut got = Vec::new();
    app.read_to_end(&mut got).await.unwrap();
    copy.await.unwrap().unwrap();
    got
}
