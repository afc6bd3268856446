//! The HBONE client: one mutual-TLS HTTP/2 connection that carries many CONNECT streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::copy::H2Stream;
use super::keepalive::keepalive;
use super::read_ahead::ReadAhead;
use super::settings::{CLIENT_MAX_HEADER_LIST, H2Settings};
use crate::tls::server_name;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {dst} failed")]
    Connect {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TLS handshake with {dst} failed (is port 15008 blocked, or is the peer not who we expect?)"
    )]
    Tls {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("handshake with {dst} timed out")]
    Timeout { dst: SocketAddr },
    #[error("HTTP/2 with {dst} failed")]
    H2 {
        dst: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("{dst} answered CONNECT {authority} with {status}")]
    Refused {
        dst: SocketAddr,
        authority: String,
        status: StatusCode,
    },
    #[error("bad CONNECT request for {authority}")]
    Request {
        authority: String,
        #[source]
        source: http::Error,
    },
}

impl ClientError {
    /// The status the peer answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An established HBONE connection.
#[derive(Clone)]
pub struct Connection {
    dst: SocketAddr,
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("dst", &self.dst)
            .finish()
    }
}

impl Connection {
    /// TLS and HTTP/2 handshakes over an already connected `tcp` to `dst`.
    pub async fn handshake(
        tcp: TcpStream,
        dst: SocketAddr,
        tls: Arc<ClientConfig>,
        settings: &H2Settings,
    ) -> Result<Connection, ClientError> {
        let _ = tcp.set_nodelay(true);
        let work = async {
            let tls = TlsConnector::from(tls)
                .connect(server_name(dst.ip()), ReadAhead::new(tcp))
                .await
                .map_err(|source| ClientError::Tls { dst, source })?;
            let (send, conn) = h2::client::Builder::new()
                .initial_window_size(settings.stream_window)
                .initial_connection_window_size(settings.connection_window)
                .max_frame_size(settings.frame_size)
                .max_header_list_size(CLIENT_MAX_HEADER_LIST)
                .max_send_buffer_size(settings.stream_window as usize)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|source| ClientError::H2 { dst, source })?;
            Ok::<_, ClientError>((send, conn))
        };
        let (send, mut conn) = tokio::time::timeout(settings.handshake_timeout, work)
            .await
            .map_err(|_| ClientError::Timeout { dst })??;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let pings = conn.ping_pong();
        let (every, within) = (settings.keepalive_interval, settings.keepalive_timeout);
        tokio::spawn(async move {
            let alive = async {
                match pings {
                    Some(pp) => keepalive(pp, every, within).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut conn => if let Err(e) = r {
                    tracing::debug!(%dst, error = %e, "HBONE connection ended with error");
                },
                e = alive => tracing::warn!(%dst, error = %e, "HBONE connection dropped"),
            }
            flag.store(true, Ordering::Release);
        });
        Ok(Connection { dst, send, closed })
    }

    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// Whether the connection is gone (peer closed, error, GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Streams the peer lets us open at once on this connection.
    pub fn peer_max_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// Opens a CONNECT stream to `authority`; succeeds only on a 200.
    pub async fn open(
        &self,
        authority: &str,
        headers: HeaderMap,
    ) -> Result<(H2Stream, HeaderMap), ClientError> {
        let dst = self.dst;
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|source| ClientError::Request {
                authority: authority.to_string(),
                source,
            })?;
        *request.headers_mut() = headers;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|source| ClientError::H2 { dst, source })?;
        let (response, stream) = send
            .send_request(request, false)
            .map_err(|source| ClientError::H2 { dst, source })?;
        let response = response
            .await
            .map_err(|source| ClientError::H2 { dst, source })?;
        if response.status() != StatusCode::OK {
            return Err(ClientError::Refused {
                dst,
                authority: authority.to_string(),
                status: response.status(),
            });
        }
        let (parts, recv) = response.into_parts();
        Ok((
            H2Stream {
                send: stream,
                recv,
                _lease: None,
            },
            parts.headers,
        ))
    }
}
