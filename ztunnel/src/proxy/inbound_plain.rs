//! Inbound plaintext (15006): TCP to the workload that did not come over HBONE.
//! There is no peer identity; PeerAuthentication and policy decide later whether to allow it.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::Transferred;
use tokio::net::TcpStream;

use super::access::ConnectionLog;
use super::outbound::passthrough;
use super::{ProxyContext, policy};
use crate::metrics::{PolicyLabels, ResponseFlags};
use crate::route::ILLEGAL_PORTS;
use crate::socket;

#[derive(Debug, thiserror::Error)]
enum PlainError {
    #[error("destination {0} is not an address of the local workload")]
    NotLocal(SocketAddr),
    #[error("destination {0} is one of ztunnel's own ports")]
    IllegalPort(SocketAddr),
}

pub(super) async fn serve(ctx: Arc<ProxyContext>, tcp: TcpStream, peer: SocketAddr) {
    let mut log = ConnectionLog::new("inbound", peer, ctx.metrics.clone());
    let original = match socket::original_dst(&tcp) {
        Ok(a) => a,
        Err(e) => {
            log.finish(Transferred::default(), Some(&e));
            return;
        }
    };
    log.dst_addr = Some(original);
    let state = ctx.state.load();
    log.src_workload = state.workload_by_ip(peer.ip()).cloned();
    let local = match ctx.local_workload(&state) {
        Ok(w) => w,
        Err(e) => {
            log.finish(Transferred::default(), Some(&e));
            return;
        }
    };
    log.dst_identity = Some(ctx.identity.clone());
    log.dst_workload = Some(local.clone());
    if !local.ips.contains(&original.ip()) {
        log.finish(
            Transferred::default(),
            Some(&PlainError::NotLocal(original)),
        );
        return;
    }
    if ILLEGAL_PORTS.contains(&original.port()) {
        log.finish(
            Transferred::default(),
            Some(&PlainError::IllegalPort(original)),
        );
        return;
    }
    let verdict = policy::check(&state, &local, &policy::connection(peer, original, None));
    drop(state);
    if !verdict.allowed {
        // Plaintext has no status to send: the connection is just closed.
        deny(&ctx, &mut log, &verdict);
        log.finish(Transferred::default(), Some(&policy::Denied));
        return;
    }
    let registration = ctx.registry.register(&local, peer, original, None);
    passthrough(&ctx, tcp, original, log, registration.revocation.revoked()).await;
}

/// Records a denial in the log entry and the metrics.
pub(super) fn deny(ctx: &ProxyContext, log: &mut ConnectionLog, verdict: &authz::Verdict) {
    log.flags = ResponseFlags::Deny;
    log.policy = policy::decided_by(verdict);
    ctx.metrics
        .denials
        .get_or_create(&PolicyLabels {
            policy: policy::denial_key(verdict),
        })
        .inc();
}
