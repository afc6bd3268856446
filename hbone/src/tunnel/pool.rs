//! A pool of HBONE connections, keyed as Istio keys them: (source identity, expected
//! destination identities, destination address, local source IP).
//!
//! Rules:
//! - A stream goes on an existing connection for its key that has room (fewer open streams
//!   than min(our cap, the peer's advertised limit)); otherwise a new connection is made.
//! - Connections for one key are made one at a time, so a burst of new streams fills one
//!   connection before opening the next instead of racing to open many.
//! - A connection with no streams for `pool_idle_timeout` is closed; a dead one is dropped.
//! - Of a key's idle connections, all but one are closed sooner, after
//!   `pool_surplus_idle_timeout`: a burst that needed many connections does not leave them all
//!   open (and holding memory at both ends) for the full idle timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::HeaderMap;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::{ClientError, Connection};
use super::copy::H2Stream;
use super::settings::H2Settings;
use crate::identity::SpiffeId;
use crate::tls::{CertHandle, TrustRoots, client_config};

/// Which connections may be shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: SpiffeId,
    /// Sorted, so the same set always makes the same key.
    pub expected: Vec<SpiffeId>,
    pub dst: SocketAddr,
    pub local_ip: Option<IpAddr>,
}

impl PoolKey {
    pub fn new(
        source: SpiffeId,
        mut expected: Vec<SpiffeId>,
        dst: SocketAddr,
        local_ip: Option<IpAddr>,
    ) -> Self {
        expected.sort();
        expected.dedup();
        PoolKey {
            source,
            expected,
            dst,
            local_ip,
        }
    }
}

/// Opens the TCP connection under a pooled HBONE connection (so the caller can mark it).
pub type Dialer = Arc<
    dyn Fn(
            SocketAddr,
            Option<IpAddr>,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>
        + Send
        + Sync,
>;

/// Keeps a pooled connection's open-stream count; dropped with the stream.
pub struct Lease {
    conn: Arc<Pooled>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .conn
                .idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

struct Pooled {
    conn: Connection,
    /// Streams open on this connection now.
    active: AtomicUsize,
    /// When `active` last dropped to zero.
    idle_since: Mutex<Instant>,
}

type Slot = Arc<tokio::sync::Mutex<Vec<Arc<Pooled>>>>;

/// Shared HBONE client connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    settings: H2Settings,
    dialer: Dialer,
    /// Per key, its connections; the async mutex serializes making new ones for that key.
    slots: Mutex<HashMap<PoolKey, Slot>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool; spawns the task that releases idle connections (it ends with the pool).
    pub fn new(settings: H2Settings, dialer: Dialer) -> Pool {
        let inner = Arc::new(Inner {
            settings,
            dialer,
            slots: Mutex::new(HashMap::new()),
        });
        let s = &inner.settings;
        let sweep_every = (s.pool_idle_timeout.min(s.pool_surplus_idle_timeout) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(sweep(Arc::downgrade(&inner), sweep_every));
        Pool { inner }
    }

    /// Opens a CONNECT stream to `authority` over a connection for `key`.
    pub async fn open(
        &self,
        key: &PoolKey,
        cert: &CertHandle,
        roots: &TrustRoots,
        authority: &str,
        headers: HeaderMap,
    ) -> Result<(H2Stream, HeaderMap), PoolError> {
        let (pooled, lease) = self.lease(key, cert, roots).await?;
        let (mut stream, response_headers) = pooled.conn.open(authority, headers).await?;
        stream._lease = Some(lease);
        Ok((stream, response_headers))
    }

    /// How many HBONE connections the pool holds (all keys).
    pub fn connection_count(&self) -> usize {
        let slots: Vec<Slot> = self.slots().values().cloned().collect();
        slots
            .iter()
            .map(|s| s.try_lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Slot>> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn lease(
        &self,
        key: &PoolKey,
        cert: &CertHandle,
        roots: &TrustRoots,
    ) -> Result<(Arc<Pooled>, Lease), PoolError> {
        let slot = self.slots().entry(key.clone()).or_default().clone();
        let mut conns = slot.lock().await;
        conns.retain(|c| !c.conn.is_closed());
        let cap = self.inner.settings.max_streams_per_connection;
        let take = |c: &Arc<Pooled>| {
            let limit = cap.min(c.conn.peer_max_streams().max(1));
            c.active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
        };
        if let Some(c) = conns.iter().find(|c| take(c)) {
            let c = c.clone();
            return Ok((c.clone(), Lease { conn: c }));
        }
        let tls = client_config(cert.clone(), roots, key.expected.clone())?;
        let tcp = (self.inner.dialer)(key.dst, key.local_ip)
            .await
            .map_err(|source| ClientError::Connect {
                dst: key.dst,
                source,
            })?;
        let conn = Connection::handshake(tcp, key.dst, tls, &self.inner.settings).await?;
        tracing::debug!(dst = %key.dst, source = %key.source, "new HBONE connection");
        let pooled = Arc::new(Pooled {
            conn,
            active: AtomicUsize::new(1),
            idle_since: Mutex::new(Instant::now()),
        });
        conns.push(pooled.clone());
        Ok((pooled.clone(), Lease { conn: pooled }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("TLS client configuration")]
    Tls(#[from] crate::tls::TlsError),
}

impl PoolError {
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            PoolError::Client(c) => c.status(),
            PoolError::Tls(_) => None,
        }
    }
}

async fn sweep(pool: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = pool.upgrade() else { return };
        let timeout = inner.settings.pool_idle_timeout;
        let surplus_timeout = timeout.min(inner.settings.pool_surplus_idle_timeout);
        let mut slots = inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| {
            // A slot locked right now is in use; look again next round.
            let Ok(mut conns) = slot.try_lock() else {
                return true;
            };
            release_idle(&mut conns, timeout, surplus_timeout);
            !conns.is_empty()
        });
    }
}

/// Drops dead connections, connections idle for `timeout`, and idle connections beyond the
/// first idle for `surplus_timeout` (the one idle the longest is kept warm).
fn release_idle(conns: &mut Vec<Arc<Pooled>>, timeout: Duration, surplus_timeout: Duration) {
    let idle_for = |c: &Pooled| {
        (c.active.load(Ordering::Acquire) == 0).then(|| {
            c.idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
        })
    };
    conns.retain(|c| !c.conn.is_closed() && idle_for(c).is_none_or(|d| d < timeout));
    let keep = conns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| idle_for(c).map(|d| (i, d)))
        .max_by_key(|(_, d)| *d)
        .map(|(i, _)| i);
    let mut i = 0;
    conns.retain(|c| {
        let kept = Some(i) == keep || idle_for(c).is_none_or(|d| d < surplus_timeout);
        i += 1;
        kept
    });
}
