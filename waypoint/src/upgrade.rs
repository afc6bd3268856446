//! WebSocket (an HTTP/1.1 upgrade) through the waypoint.
//!
//! Rules:
//! 1. A request asks to upgrade when it is HTTP/1.1, its `Connection` names `upgrade` and its
//!    `Upgrade` is `websocket` (any case): the upgrade type Istio turns on in Envoy. Any other
//!    upgrade (`h2c`, ...) is dropped with the other hop-by-hop headers and the request goes
//!    on as a plain one.
//! 2. It is decided as any request is (token, CUSTOM, DENY/ALLOW, rate limits). Allowed, it
//!    goes upstream over an HTTP/1.1 connection of its own (after a `101` the connection is
//!    the tunnel's, so it is never pooled), with `Connection: upgrade` and its `Upgrade`
//!    kept and its other hop-by-hop headers dropped.
//! 3. A `101` from the endpoint is passed on with `Connection: upgrade` and the endpoint's
//!    `Upgrade`; then both connections are handed over by HTTP and spliced: bytes are copied
//!    both ways, through fixed buffers, until each side has ended. Any other answer is passed
//!    on as usual (the client's connection stays HTTP).
//! 4. The request is recorded when the tunnel ends, as Envoy ends the stream then: status
//!    `101`, and the bytes moved each way as the request's and the response's bytes.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::metrics::ResponseFlags;
use crate::telemetry::{CountingIo, Switched};

/// Each direction's copy buffer.
const BUFFER: usize = 8 * 1024;

/// Rule 1: the `Upgrade` a request asks for, if it is a WebSocket upgrade.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(UPGRADE)?;
    let websocket = upgrade
        .as_bytes()
        .split(|b| *b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"));
    (websocket && names_upgrade(req.headers())).then(|| upgrade.clone())
}

/// `Connection` names `upgrade`.
fn names_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Rules 2-3: puts back the two headers an upgrade travels with (after the hop-by-hop ones
/// were dropped).
pub fn keep(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// Rule 3: both halves of a switched exchange, carried to where the response is sent on in
/// its extensions.
#[derive(Clone)]
pub struct Pending {
    pub downstream: OnUpgrade,
    pub upstream: OnUpgrade,
}

/// Rule 3: is `resp` the endpoint's `101` to a WebSocket upgrade? Then its `Upgrade`.
pub fn switched<B>(resp: &Response<B>) -> Option<HeaderValue> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return None;
    }
    resp.headers().get(UPGRADE).cloned()
}

/// Rules 3-4: splices the two connections once HTTP hands them over, in a task of its own,
/// and records the exchange when both directions have ended.
pub fn splice(pending: Pending, exchange: Switched) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(pending.downstream, pending.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade not completed");
                exchange.ended(0, 0, Some(ResponseFlags::DownstreamConnectionTermination));
                return;
            }
        };
        // Counted as they pass, so a tunnel that ends in an error still tells what it moved.
        let mut down = CountingIo::new(TokioIo::new(down));
        let mut up = TokioIo::new(up);
        let copied = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, BUFFER, BUFFER);
        if let Err(e) = copied.await {
            // A reset from either side, as a TCP stream's (`proxy.rs` rule 4), is no flag.
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        exchange.ended(down.read, down.written, None);
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_websocket_upgrades_over_http1_are_taken() {
        // (version, connection, upgrade, taken)
        let rows: &[(Version, &str, &str, bool)] = &[
            (Version::HTTP_11, "Upgrade", "websocket", true),
            (Version::HTTP_11, "keep-alive, upgrade", "WebSocket", true),
            (Version::HTTP_11, "upgrade", "foo, websocket", true),
            (Version::HTTP_11, "keep-alive", "websocket", false),
            (Version::HTTP_11, "", "websocket", false),
            (Version::HTTP_11, "upgrade", "h2c", false),
            (Version::HTTP_11, "upgrade", "", false),
            (Version::HTTP_10, "upgrade", "websocket", false),
            (Version::HTTP_2, "upgrade", "websocket", false),
        ];
        for (version, connection, upgrade, taken) in rows {
            let mut b = Request::builder().version(*version);
            if !connection.is_empty() {
                b = b.header(CONNECTION, *connection);
            }
            if !upgrade.is_empty() {
                b = b.header(UPGRADE, *upgrade);
            }
            let req = b.body(()).unwrap();
            assert_eq!(
                requested(&req).is_some(),
                *taken,
                "{version:?} connection={connection:?} upgrade={upgrade:?}"
            );
        }
    }
}
