//! One log line per connection, in Istio ztunnel's shape: tracing target `access`, message
//! `connection complete` (or `connection failed`), dotted field names.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{SpiffeId, Transferred};
use tokio::time::Instant;

use crate::state::{Service, Workload};

/// What is known about a connection, filled in as the proxy learns it.
#[derive(Debug)]
pub struct ConnectionLog {
    pub direction: &'static str,
    pub src_addr: SocketAddr,
    pub src_workload: Option<Arc<Workload>>,
    pub src_identity: Option<SpiffeId>,
    pub dst_addr: Option<SocketAddr>,
    pub dst_hbone_addr: Option<SocketAddr>,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_service: Option<Arc<Service>>,
    pub dst_identity: Option<SpiffeId>,
    start: Instant,
}

impl ConnectionLog {
    pub fn new(direction: &'static str, src_addr: SocketAddr) -> Self {
        ConnectionLog {
            direction,
            src_addr,
            src_workload: None,
            src_identity: None,
            dst_addr: None,
            dst_hbone_addr: None,
            dst_workload: None,
            dst_service: None,
            dst_identity: None,
            start: Instant::now(),
        }
    }

    /// Writes the line. `error` is the reason the connection failed, if it did.
    pub fn finish(self, moved: Transferred, error: Option<&(dyn std::error::Error + 'static)>) {
        let name = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.name.clone());
        let ns = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.namespace.clone());
        let src_workload = name(&self.src_workload);
        let src_namespace = ns(&self.src_workload);
        let dst_workload = name(&self.dst_workload);
        let dst_namespace = ns(&self.dst_workload);
        let dst_service = self.dst_service.as_ref().map(|s| s.hostname.clone());
        let error = error.map(error_chain);
        // "sent" is always towards the destination: outbound that is into the tunnel,
        // inbound it is what came out of the tunnel to the local application.
        let (sent, recv) = if self.direction == "inbound" {
            (moved.from_tunnel, moved.to_tunnel)
        } else {
            (moved.to_tunnel, moved.from_tunnel)
        };
        let duration_ms = self.start.elapsed().as_millis() as u64;
        let message = if error.is_some() {
            "connection failed"
        } else {
            "connection complete"
        };
        tracing::info!(
            target: "access",
            direction = self.direction,
            "src.addr" = %self.src_addr,
            "src.workload" = src_workload.as_deref(),
            "src.namespace" = src_namespace.as_deref(),
            "src.identity" = self.src_identity.as_ref().map(tracing::field::display),
            "dst.addr" = self.dst_addr.map(tracing::field::display),
            "dst.hbone_addr" = self.dst_hbone_addr.map(tracing::field::display),
            "dst.service" = dst_service.as_deref(),
            "dst.workload" = dst_workload.as_deref(),
            "dst.namespace" = dst_namespace.as_deref(),
            "dst.identity" = self.dst_identity.as_ref().map(tracing::field::display),
            bytes_sent = sent,
            bytes_recv = recv,
            duration = format_args!("{duration_ms}ms"),
            error = error.as_deref(),
            "{message}"
        );
    }
}

/// `outer: inner: innermost`, so a log line carries the whole reason.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
