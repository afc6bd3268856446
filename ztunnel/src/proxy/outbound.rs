//! Outbound (15001): route the captured connection, then tunnel it or pass it through.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{H2Stream, PoolKey, Transferred, copy_bidirectional, reset_tcp};
use http::{HeaderMap, HeaderValue};
use tokio::net::TcpStream;

use super::access::ConnectionLog;
use super::{ProxyContext, random_u64};
use crate::metrics::ResponseFlags;
use crate::route::{Route, route};
use crate::socket;

pub(super) async fn serve(ctx: Arc<ProxyContext>, mut tcp: TcpStream, peer: SocketAddr) {
    let _active = ctx.metrics.active.track();
    let log = ConnectionLog::new("outbound", peer, ctx.metrics.clone());
    // Boxed: routing, the certificate, the pool and the CONNECT are over before bytes flow, so
    // none of their state stays in this connection's task for its life (proxy::size_tests).
    let Some((next, mut log)) = Box::pin(setup(&ctx, &tcp, peer, log)).await else {
        return;
    };
    match next {
        Next::Tunnel(stream) => {
            log.opened();
            match copy_bidirectional(&mut tcp, stream).await {
                Ok(moved) => log.finish(moved, None),
                Err((e, moved)) => {
                    if e.is_reset() {
                        reset_tcp(&tcp);
                    }
                    log.finish(moved, Some(&e));
                }
            }
        }
        Next::Passthrough(target) => {
            passthrough(&ctx, tcp, target, log, std::future::pending()).await;
        }
    }
}

/// Where an accepted connection's bytes go once set up.
enum Next {
    Tunnel(H2Stream),
    Passthrough(SocketAddr),
}

/// Routes the connection and, for a mesh destination, opens its HBONE stream. On failure the
/// connection is refused (reset) and logged here.
async fn setup(
    ctx: &ProxyContext,
    tcp: &TcpStream,
    peer: SocketAddr,
    mut log: ConnectionLog,
) -> Option<(Next, ConnectionLog)> {
    let original = match socket::original_dst(tcp) {
        Ok(a) => a,
        Err(e) => {
            log.finish(Transferred::default(), Some(&e));
            return None;
        }
    };
    log.dst_addr = Some(original);
    let state = ctx.state.load();
    let source = match ctx.local_workload(&state) {
        Ok(w) => w,
        Err(e) => {
            // Outbound from a workload we do not know is refused, as Istio does.
            log.finish(Transferred::default(), Some(&e));
            return None;
        }
    };
    log.src_identity = Some(ctx.identity.clone());
    let route = route(&state, &source, original, |n| ctx.pick(n));
    log.src_workload = Some(source);
    let route = match route {
        Ok(r) => r,
        Err(e) => {
            reset_tcp(tcp);
            log.finish(Transferred::default(), Some(&e));
            return None;
        }
    };
    drop(state);
    let (hbone_addr, target, expected) = match route {
        Route::Hbone {
            hbone_addr,
            target,
            expected,
            destination,
            service,
        } => {
            log.dst_identity = destination.identity().ok();
            log.dst_workload = Some(destination);
            log.dst_service = service;
            (hbone_addr, target, expected)
        }
        Route::Waypoint {
            hbone_addr,
            target,
            expected,
            waypoint,
            destination,
            service,
        } => {
            // The peer is the waypoint; the workload addressed, if one was, is logged too.
            log.dst_identity = waypoint.identity().ok();
            log.dst_waypoint = Some(waypoint);
            log.dst_workload = destination;
            log.dst_service = service;
            (hbone_addr, target, expected)
        }
        Route::Passthrough {
            target,
            destination,
            service,
        } => {
            log.dst_addr = Some(target);
            log.dst_workload = destination;
            log.dst_service = service;
            return Some((Next::Passthrough(target), log));
        }
    };
    log.dst_addr = Some(target);
    log.dst_hbone_addr = Some(hbone_addr);
    let cert = match ctx.local_cert().await {
        Ok(c) => c,
        Err(e) => {
            reset_tcp(tcp);
            log.finish(Transferred::default(), Some(&e));
            return None;
        }
    };
    // Keyed by where the connection goes and who may answer there, so a waypoint's connection
    // is shared only with others to the same waypoint endpoint expecting the same identities.
    let key = PoolKey::new(ctx.identity.clone(), expected, hbone_addr, None);
    let headers = request_headers(
        peer,
        log.dst_service.as_deref().map(|s| s.hostname.as_str()),
    );
    match ctx
        .pool
        .open(&key, &cert, &ctx.roots, &target.to_string(), headers)
        .await
    {
        Ok((stream, _)) => Some((Next::Tunnel(stream), log)),
        Err(e) => {
            reset_tcp(tcp);
            log.flags = match e.status() {
                Some(http::StatusCode::UNAUTHORIZED) => ResponseFlags::Deny,
                _ => ResponseFlags::Connect,
            };
            log.finish(Transferred::default(), Some(&e));
            None
        }
    }
}

/// Plain TCP to `target`, bytes copied unchanged, until done or `stop` completes.
pub(super) async fn passthrough(
    ctx: &ProxyContext,
    mut tcp: TcpStream,
    target: SocketAddr,
    mut log: ConnectionLog,
    stop: impl std::future::Future<Output = Option<String>>,
) {
    let mut upstream = match socket::connect(target, None, ctx.mark, ctx.netns.as_deref()).await {
        Ok(u) => u,
        Err(e) => {
            reset_tcp(&tcp);
            log.flags = ResponseFlags::Connect;
            log.finish(Transferred::default(), Some(&e));
            return;
        }
    };
    log.opened();
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut tcp, &mut upstream) => r,
        reason = stop => {
            // Revoked by policy: reset both sides. (Bytes moved so far are not known here.)
            reset_tcp(&tcp);
            reset_tcp(&upstream);
            log.flags = ResponseFlags::Deny;
            log.policy = reason;
            log.finish(Transferred::default(), Some(&super::policy::Revoked));
            return;
        }
    };
    match copied {
        Ok((to, from)) => log.finish(
            Transferred {
                to_tunnel: to,
                from_tunnel: from,
            },
            None,
        ),
        Err(e) => log.finish(Transferred::default(), Some(&e)),
    }
}

/// `forwarded` and `traceparent`, as Istio's ztunnel sends them.
fn request_headers(client: SocketAddr, service_host: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut forwarded = format!("for=\"{client}\"");
    if let Some(host) = service_host {
        forwarded.push_str(";host=");
        forwarded.push_str(host);
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert("forwarded", v);
    }
    let trace = format!(
        "00-{:016x}{:016x}-{:016x}-00",
        random_u64(),
        random_u64(),
        random_u64()
    );
    if let Ok(v) = HeaderValue::from_str(&trace) {
        headers.insert("traceparent", v);
    }
    headers
}
