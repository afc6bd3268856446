//! Upstream HTTP connections, shared by every downstream connection of the waypoint.
//!
//! Rules:
//! 1. Connections are kept per endpoint address (`<pod IP>:<target port>`) and protocol. Each
//!    is one HBONE stream from the waypoint's [`hbone::Pool`], which checked the endpoint's
//!    identity when it connected.
//! 2. HTTP/2: one connection per endpoint, multiplexing every request to it; replaced once it
//!    closes.
//! 3. HTTP/1.1: a connection carries one request at a time. A request takes the most recently
//!    used idle one (so the others age out) or opens one. The connection goes back to the idle
//!    list when the response body has ended (the [`Lease`] rides on the body); a body dropped
//!    before its end takes its connection with it, since hyper cannot reuse it.
//! 4. A request that an idle HTTP/1.1 connection could not take (the server had closed it) is
//!    retried once on a new connection: hyper hands back a request it did not send.
//! 5. Bounded: at most [`MAX_IDLE`] idle HTTP/1.1 connections per endpoint (a connection
//!    returned beyond that is closed), and [`Upstreams::sweep`] closes those idle for longer
//!    than [`IDLE_TIMEOUT`] and forgets closed HTTP/2 ones.
//! 6. An upgrade (`upgrade.rs`) gets an HTTP/1.1 connection of its own, never pooled: after a
//!    `101` the connection is the tunnel's; after anything else it closes with the response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::proxy::{UpstreamError, Waypoint};
use crate::request_body::RequestBody;
use crate::targets::Endpoint;
use crate::telemetry::Counted;

/// Idle HTTP/1.1 connections kept per endpoint (rule 5).
pub const MAX_IDLE: usize = 64;
/// How long an idle HTTP/1.1 connection is kept (rule 5; hyper's pooled client says 90 s too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A request body on its way upstream, its bytes counted for telemetry.
pub type Sent = Counted<RequestBody>;

type H1 = client1::SendRequest<Sent>;
type H2 = client2::SendRequest<Sent>;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("upstream HTTP")]
    Http(#[from] hyper::Error),
}

#[derive(Default)]
struct Shared {
    h1: HashMap<SocketAddr, Vec<(H1, Instant)>>,
    h2: HashMap<SocketAddr, H2>,
}

/// The waypoint's upstream HTTP connections (module rules).
#[derive(Default)]
pub struct Upstreams {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h1, h2) = self.counts();
        f.debug_struct("Upstreams")
            .field("idle_h1", &h1)
            .field("h2", &h2)
            .finish()
    }
}

impl Upstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle HTTP/1.1 connections and HTTP/2 connections held now.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.h1.values().map(Vec::len).sum(), s.h2.len())
    }

    /// Rule 5: closes idle HTTP/1.1 connections older than `timeout` (at `now`) and forgets
    /// closed connections of both kinds.
    pub fn sweep(&self, now: Instant, timeout: Duration) {
        let mut s = self.lock();
        s.h1.retain(|_, idle| {
            idle.retain(|(c, since)| !c.is_closed() && now.duration_since(*since) < timeout);
            !idle.is_empty()
        });
        s.h2.retain(|_, c| !c.is_closed());
    }

    /// Sends `req` to `endpoint` (`dst` = its address and the target port), over HTTP/2 when
    /// `h2`, else HTTP/1.1.
    pub(crate) async fn send(
        &self,
        waypoint: &Waypoint,
        endpoint: &Endpoint,
        port: u16,
        h2: bool,
        req: Request<Sent>,
    ) -> Result<Response<Leased>, ForwardError> {
        let dst = SocketAddr::new(endpoint.ip, port);
        if h2 {
            let mut conn = self.h2(waypoint, endpoint, port, dst).await?;
            let resp = conn.send_request(req).await?;
            return Ok(resp.map(Leased::plain));
        }
        let (mut conn, reused) = match self.idle_h1(dst).await {
            Some(c) => (c, true),
            None => (open_h1(waypoint, endpoint, port, false).await?, false),
        };
        let resp = match conn.try_send_request(req).await {
            Ok(resp) => resp,
            // Rule 4: not sent on a pooled connection the server had closed.
            Err(mut e) if reused => match e.take_message() {
                Some(req) => {
                    conn = open_h1(waypoint, endpoint, port, false).await?;
                    conn.send_request(req).await?
                }
                None => return Err(e.into_error().into()),
            },
            Err(e) => return Err(e.into_error().into()),
        };
        let lease = Lease {
            shared: Arc::downgrade(&self.shared),
            dst,
            conn,
        };
        Ok(resp.map(|inner| Leased {
            inner,
            lease: Some(lease),
        }))
    }

    /// Rule 6: sends the upgrade request `req` to `endpoint` over a new HTTP/1.1 connection.
    pub(crate) async fn send_upgrade(
        &self,
        waypoint: &Waypoint,
        endpoint: &Endpoint,
        port: u16,
        req: Request<Sent>,
    ) -> Result<Response<Leased>, ForwardError> {
        let mut conn = open_h1(waypoint, endpoint, port, true).await?;
        let resp = conn.send_request(req).await?;
        Ok(resp.map(Leased::plain))
    }

    /// Rule 3: the most recently used idle connection that is still usable.
    async fn idle_h1(&self, dst: SocketAddr) -> Option<H1> {
        loop {
            let (mut conn, _) = self.lock().h1.get_mut(&dst)?.pop()?;
            // Ready at once unless it is closing; a closed one is dropped and the next tried.
            if conn.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Rule 2: the endpoint's HTTP/2 connection, opened if there is none or it closed.
    async fn h2(
        &self,
        waypoint: &Waypoint,
        endpoint: &Endpoint,
        port: u16,
        dst: SocketAddr,
    ) -> Result<H2, ForwardError> {
        let existing = self.lock().h2.get(&dst).cloned();
        if let Some(mut conn) = existing
            && conn.ready().await.is_ok()
        {
            return Ok(conn);
        }
        // Two requests racing here each open one; the last stored is the one kept, the other
        // closes when its request is done.
        let io = TokioIo::new(waypoint.open(endpoint, port).await?);
        let (conn, driver) = client2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(driver);
        self.lock().h2.insert(dst, conn.clone());
        Ok(conn)
    }
}

/// A new HTTP/1.1 connection to `endpoint`; `upgrades`: one that a `101` hands over (rule 6).
async fn open_h1(
    waypoint: &Waypoint,
    endpoint: &Endpoint,
    port: u16,
    upgrades: bool,
) -> Result<H1, ForwardError> {
    let io = TokioIo::new(waypoint.open(endpoint, port).await?);
    let (conn, driver) = client1::handshake(io).await?;
    match upgrades {
        true => tokio::spawn(driver.with_upgrades()),
        false => tokio::spawn(driver),
    };
    Ok(conn)
}

/// An HTTP/1.1 connection out of the idle list until its response ends (rule 3).
pub struct Lease {
    shared: Weak<Mutex<Shared>>,
    dst: SocketAddr,
    conn: H1,
}

impl Lease {
    fn release(self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if self.conn.is_closed() {
            return;
        }
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let idle = s.h1.entry(self.dst).or_default();
        if idle.len() < MAX_IDLE {
            idle.push((self.conn, Instant::now()));
        }
    }
}

/// An upstream response body; an HTTP/1.1 one carries its connection's [`Lease`] (rule 3).
pub struct Leased {
    inner: Incoming,
    lease: Option<Lease>,
}

impl Leased {
    fn plain(inner: Incoming) -> Leased {
        Leased { inner, lease: None }
    }
}

impl Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        // A body known to be empty is never polled to its end: it is done all the same.
        if let Some(lease) = self.lease.take()
            && self.inner.is_end_stream()
        {
            lease.release();
        }
    }
}
