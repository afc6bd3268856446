//! WebSocket (an HTTP/1.1 upgrade) through the waypoint.
//!
//! Rules:
//! 1. A request asks to upgrade when it is HTTP/1.1, its `Connection` names `upgrade` and its
//!    `Upgrade` is `websocket` (the whole value, any case, as Envoy matches the upgrade type
//!    Istio turns on). Any other upgrade (`h2c`, `websocket, h2c`, ...) is dropped with the
//!    other hop-by-hop headers and the request goes on as a plain one.
//! 2. It is decided as any request is (token, CUSTOM, DENY/ALLOW, rate limits). Allowed, it
//!    goes upstream over an HTTP/1.1 connection of its own (after a `101` the connection is
//!    the tunnel's, so it is never pooled), with `Connection: upgrade` and `Upgrade:
//!    websocket` and no other hop-by-hop header.
//! 3. A `101` from the endpoint switching to `websocket` is passed on with `Connection:
//!    upgrade` and `Upgrade: websocket`; then both connections are handed over by HTTP and
//!    spliced: bytes are copied both ways, through fixed buffers, until each side has ended.
//!    A `101` to anything else, or to a request that did not ask for it, is never passed on
//!    (a tunnel would carry requests no policy sees): 502, flag `UPE`. Any other answer is
//!    passed on as usual (the client's connection stays HTTP).
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

/// Rule 1: whether `req` is a WebSocket upgrade.
pub fn requested<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get(UPGRADE).is_some_and(is_websocket)
        && names_upgrade(req.headers())
}

fn is_websocket(v: &HeaderValue) -> bool {
    v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
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
pub fn keep(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Rule 3: both halves of a switched exchange, carried to where the response is sent on in
/// its extensions.
#[derive(Clone)]
pub struct Pending {
    pub downstream: OnUpgrade,
    pub upstream: OnUpgrade,
}

/// Rule 3: what the endpoint's answer is to a request that asked (`asked`) or did not ask to
/// upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not a `101`: passed on as any answer.
    Plain,
    /// A `101` to `websocket`, to a request that asked for it: splice.
    Switched,
    /// Any other `101`: never passed on.
    Refused,
}

pub fn answer<B>(asked: bool, resp: &Response<B>) -> Answer {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Answer::Plain;
    }
    match asked && resp.headers().get(UPGRADE).is_some_and(is_websocket) {
        true => Answer::Switched,
        false => Answer::Refused,
    }
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
            // The whole value, as Envoy matches it: a list could switch to the other one.
            (Version::HTTP_11, "upgrade", "foo, websocket", false),
            (Version::HTTP_11, "upgrade", "websocket, h2c", false),
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
                requested(&req),
                *taken,
                "{version:?} connection={connection:?} upgrade={upgrade:?}"
            );
        }
    }

    #[test]
    fn only_a_websocket_101_to_a_websocket_request_is_spliced() {
        let resp = |status: u16, upgrade: &str| {
            let mut b = Response::builder().status(status);
            if !upgrade.is_empty() {
                b = b.header(UPGRADE, upgrade);
            }
            b.body(()).unwrap()
        };
        // (asked, status, upgrade answered, answer)
        let rows = [
            (true, 101, "websocket", Answer::Switched),
            (true, 101, "WebSocket", Answer::Switched),
            (true, 101, "h2c", Answer::Refused),
            (true, 101, "", Answer::Refused),
            (false, 101, "websocket", Answer::Refused),
            (true, 200, "", Answer::Plain),
            (true, 426, "websocket", Answer::Plain),
            (false, 200, "", Answer::Plain),
        ];
        for (asked, status, upgrade, want) in rows {
            assert_eq!(
                answer(asked, &resp(status, upgrade)),
                want,
                "{asked} {status} {upgrade}"
            );
        }
    }
}
