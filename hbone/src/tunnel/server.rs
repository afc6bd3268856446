//! The HBONE server: mutual TLS, then HTTP/2, then one CONNECT per tunneled TCP connection.
//!
//! This module parses and answers requests; what to do with a well-formed CONNECT (authorize,
//! connect upstream, copy) is the caller's, through [`ConnectHandler`]. Rules:
//! - Not CONNECT, or an `:authority` that is missing or not `host:port`: 400.
//! - The handler answers each request exactly once: [`Responder::refuse`] with a status, or
//!   [`Responder::accept`] (200) once it is ready to carry bytes.
//! - A refusal ends the stream with the HEADERS frame; the HTTP/2 connection stays up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::copy::H2Stream;
use super::keepalive::keepalive;
use super::read_ahead::ReadAhead;
use super::settings::{H2Settings, SERVER_MAX_HEADER_LIST, SERVER_MAX_SEND_BUFFER};
use super::target::Target;
use crate::identity::SpiffeId;

/// Who is on the other end of an HBONE connection, as proven by its handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's identity from its certificate.
    pub identity: SpiffeId,
    /// The TCP peer address.
    pub remote: SocketAddr,
    /// The address the connection arrived on.
    pub local: SocketAddr,
}

/// One well-formed CONNECT request, waiting for an answer.
#[derive(Debug)]
pub struct InboundConnect {
    pub peer: Arc<PeerInfo>,
    pub target: Target,
    pub headers: HeaderMap,
    pub responder: Responder,
}

/// Answers a CONNECT exactly once.
pub struct Responder {
    respond: SendResponse<Bytes>,
    body: h2::RecvStream,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl Responder {
    /// Ends the stream with `status` (4xx/5xx). The connection stays open for other streams.
    pub fn refuse(mut self, status: StatusCode) {
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        let _ = self.respond.send_response(resp, true);
    }

    /// Answers 200 (with `headers`) and hands back the stream to carry bytes on.
    pub fn accept(mut self, headers: HeaderMap) -> Result<H2Stream, h2::Error> {
        let mut resp = Response::new(());
        *resp.headers_mut() = headers;
        let send = self.respond.send_response(resp, false)?;
        Ok(H2Stream {
            send,
            recv: self.body,
            _lease: None,
        })
    }
}

/// What the server calls for each well-formed CONNECT. `handle` itself runs on the HTTP/2
/// connection's accept loop, so its synchronous part must be quick (deciding, not waiting).
/// The future it returns is spawned as the stream's task and lives as long as the stream: keep
/// it small (it is per-connection memory).
pub trait ConnectHandler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        request: InboundConnect,
    ) -> impl Future<Output = ()> + Send + 'static;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS handshake with {remote} failed")]
    Tls {
        remote: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {remote} timed out")]
    TlsTimeout { remote: SocketAddr },
    #[error("peer {remote} presented no usable workload identity")]
    NoIdentity { remote: SocketAddr },
    #[error("HTTP/2 with {remote} failed")]
    H2 {
        remote: SocketAddr,
        #[source]
        source: h2::Error,
    },
}

/// Serves one accepted TCP connection until it closes.
pub async fn serve_connection<H: ConnectHandler>(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    settings: &H2Settings,
    handler: Arc<H>,
) -> Result<(), ServerError> {
    serve_connection_until(tcp, acceptor, settings, handler, std::future::pending()).await
}

/// As [`serve_connection`], and once `drain` completes the connection is shut down
/// gracefully: a GOAWAY tells the peer to open no more streams here, the open ones finish,
/// then the connection closes.
pub async fn serve_connection_until<H: ConnectHandler>(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    settings: &H2Settings,
    handler: Arc<H>,
    drain: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let remote = tcp.peer_addr().map_err(|source| ServerError::Tls {
        remote: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let local = tcp
        .local_addr()
        .map_err(|source| ServerError::Tls { remote, source })?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        settings.handshake_timeout,
        acceptor.accept(ReadAhead::new(tcp)),
    )
    .await
    .map_err(|_| ServerError::TlsTimeout { remote })?
    .map_err(|source| ServerError::Tls { remote, source })?;
    let identity = peer_identity(&tls).ok_or(ServerError::NoIdentity { remote })?;
    let peer = Arc::new(PeerInfo {
        identity,
        remote,
        local,
    });
    let mut conn = h2::server::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(settings.frame_size)
        .max_concurrent_streams(settings.server_max_concurrent_streams)
        .max_header_list_size(SERVER_MAX_HEADER_LIST)
        .max_send_buffer_size(SERVER_MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(|source| ServerError::H2 { remote, source })?;
    let pings = conn.ping_pong();
    let alive = async {
        match pings {
            Some(pp) => {
                keepalive(pp, settings.keepalive_interval, settings.keepalive_timeout).await
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(alive);
    tokio::pin!(drain);
    let mut draining = false;
    loop {
        // Biased: the connection first, and no random branch order drawn on every wake.
        let next = tokio::select! {
            biased;
            next = conn.accept() => next,
            e = &mut alive => {
                tracing::warn!(%remote, error = %e, "HBONE connection dropped");
                return Ok(());
            }
            () = &mut drain, if !draining => {
                draining = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        let Some(next) = next else { break };
        let (request, respond) = match next {
            Ok(r) => r,
            Err(source) if source.is_go_away() || source.is_io() => break,
            Err(source) => return Err(ServerError::H2 { remote, source }),
        };
        // Parsed here so the stream's task holds only the handler's future, not the request.
        if let Some(connect) = parse(request, respond, peer.clone()) {
            tokio::spawn(handler.clone().handle(connect));
        }
    }
    Ok(())
}

fn peer_identity(tls: &TlsStream<ReadAhead>) -> Option<SpiffeId> {
    let (_, conn) = tls.get_ref();
    crate::tls::peer_identity(conn)
}

/// Checks the request's shape; answers 400 itself when it is wrong.
fn parse(
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
    peer: Arc<PeerInfo>,
) -> Option<InboundConnect> {
    let (parts, body) = request.into_parts();
    let responder = Responder { respond, body };
    if parts.method != Method::CONNECT {
        tracing::debug!(peer = %peer.identity, method = %parts.method, "refused: not CONNECT");
        responder.refuse(StatusCode::BAD_REQUEST);
        return None;
    }
    let target = parts
        .uri
        .authority()
        .ok_or(super::target::TargetError::Missing)
        .and_then(|a| a.as_str().parse::<Target>());
    match target {
        Ok(target) => Some(InboundConnect {
            peer,
            target,
            headers: parts.headers,
            responder,
        }),
        Err(e) => {
            tracing::debug!(peer = %peer.identity, error = %e, "refused: bad authority");
            responder.refuse(StatusCode::BAD_REQUEST);
            None
        }
    }
}
