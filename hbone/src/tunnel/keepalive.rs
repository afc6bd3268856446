//! HTTP/2 PING keepalive: a peer that stops answering is noticed and its connection dropped,
//! instead of streams hanging on a dead network path (Istio: every 10 s, 20 s timeout).

use std::future::poll_fn;
use std::time::Duration;

use h2::{Ping, PingPong};

/// Why the keepalive gave up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum KeepaliveError {
    #[error("peer did not answer a PING within {0:?}")]
    Timeout(Duration),
    #[error("PING failed")]
    H2(#[source] h2::Error),
}

/// Pings every `interval`; returns when a PONG does not arrive within `timeout`. Never
/// returns while the peer answers, so callers race it against the connection.
pub async fn keepalive(mut pp: PingPong, interval: Duration, timeout: Duration) -> KeepaliveError {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = pp.send_ping(Ping::opaque()) {
            return KeepaliveError::H2(e);
        }
        match tokio::time::timeout(timeout, poll_fn(|cx| pp.poll_pong(cx))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return KeepaliveError::H2(e),
            Err(_) => return KeepaliveError::Timeout(timeout),
        }
    }
}
