//! What every connection leaves behind: one access-log line and its metrics.
//!
//! The log line follows Istio ztunnel: tracing target `access`, message `connection complete`
//! (INFO on success, ERROR with `error` on failure), dotted field names. Metrics: a connection
//! that got going counts as opened, then closed with its bytes; one that never did counts as
//! failed, with `response_flags` saying why.

use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{SpiffeId, Transferred};
use tokio::time::Instant;

use crate::metrics::{
    Metrics, OpenCounters, Reporter, ResponseFlags, SecurityPolicy, TrafficLabels,
};
use crate::state::{Service, Workload};

/// What is known about a connection, filled in as the proxy learns it. Boxed: it lives as
/// long as the connection inside its task's future, and a pointer is all that future needs.
#[derive(Debug)]
pub struct ConnectionLog(Box<LogEntry>);

impl std::ops::Deref for ConnectionLog {
    type Target = LogEntry;
    fn deref(&self) -> &LogEntry {
        &self.0
    }
}

impl std::ops::DerefMut for ConnectionLog {
    fn deref_mut(&mut self) -> &mut LogEntry {
        &mut self.0
    }
}

#[derive(Debug)]
pub struct LogEntry {
    pub direction: &'static str,
    pub src_addr: SocketAddr,
    pub src_workload: Option<Arc<Workload>>,
    pub src_identity: Option<SpiffeId>,
    pub dst_addr: Option<SocketAddr>,
    pub dst_hbone_addr: Option<SocketAddr>,
    pub dst_workload: Option<Arc<Workload>>,
    pub dst_service: Option<Arc<Service>>,
    pub dst_identity: Option<SpiffeId>,
    /// The waypoint an outbound connection went to; then `dst_workload` is the workload
    /// addressed, if one was (not when a service was), and `dst_identity` the waypoint's.
    pub dst_waypoint: Option<Arc<Workload>>,
    /// Why the connection failed, for `response_flags`.
    pub flags: ResponseFlags,
    /// For a denial: the policy and rule that decided.
    pub policy: Option<String>,
    start: Instant,
    metrics: Arc<Metrics>,
    /// Where the connection counts its close; `None` until it is counted as opened.
    opened: Option<OpenCounters>,
}

impl ConnectionLog {
    pub fn new(direction: &'static str, src_addr: SocketAddr, metrics: Arc<Metrics>) -> Self {
        ConnectionLog(Box::new(LogEntry {
            direction,
            src_addr,
            src_workload: None,
            src_identity: None,
            dst_addr: None,
            dst_hbone_addr: None,
            dst_workload: None,
            dst_service: None,
            dst_identity: None,
            dst_waypoint: None,
            flags: ResponseFlags::None,
            policy: None,
            start: Instant::now(),
            metrics,
            opened: None,
        }))
    }

    /// The metric labels for what is known now.
    fn labels(&self) -> TrafficLabels {
        let reporter = if self.direction == "inbound" {
            Reporter::destination
        } else {
            Reporter::source
        };
        // HBONE is mutual TLS; plaintext and passthrough are not.
        let security = if self.dst_hbone_addr.is_some() {
            SecurityPolicy::mutual_tls
        } else {
            SecurityPolicy::unknown
        };
        let mut l = TrafficLabels::new(reporter, security);
        if let Some(w) = &self.src_workload {
            l.source(w);
        }
        if let Some(id) = &self.src_identity {
            l.source_principal = id.to_string();
        }
        // The peer is the destination, as in Istio: through a waypoint, the waypoint.
        if let Some(w) = self.dst_waypoint.as_ref().or(self.dst_workload.as_ref()) {
            l.destination(w);
        }
        if let Some(id) = &self.dst_identity {
            l.destination_principal = id.to_string();
        }
        if let Some(s) = &self.dst_service {
            l.destination_service(s);
        }
        l.response_flags = self.flags;
        l
    }

    /// The connection is established end to end: count it as opened.
    pub fn opened(&mut self) {
        if self.opened.is_none() {
            self.opened = Some(self.metrics.opened(&self.labels()));
        }
    }

    /// Records the metrics and writes the line. `error` is why the connection failed, if it did.
    pub fn finish(self, moved: Transferred, error: Option<&(dyn std::error::Error + 'static)>) {
        // "sent" is always towards the destination: outbound that is into the tunnel,
        // inbound it is what came out of the tunnel to the local application.
        let (sent, recv) = if self.direction == "inbound" {
            (moved.from_tunnel, moved.to_tunnel)
        } else {
            (moved.to_tunnel, moved.from_tunnel)
        };
        match &self.opened {
            Some(counters) => counters.closed(sent, recv),
            None => self.metrics.failed(&self.labels()),
        }
        match LIMITER.admit(std::time::Instant::now()) {
            Admit::Yes => {}
            Admit::AfterDropping(n) => {
                tracing::warn!(target: "access", dropped = n, "access log rate limited: lines dropped");
            }
            Admit::No => return,
        }
        let name = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.name.clone());
        let ns = |w: &Option<Arc<Workload>>| w.as_ref().map(|w| w.namespace.clone());
        let src_workload = name(&self.src_workload);
        let src_namespace = ns(&self.src_workload);
        let dst_workload = name(&self.dst_workload);
        let dst_namespace = ns(&self.dst_workload);
        let dst_waypoint = name(&self.dst_waypoint);
        let dst_service = self.dst_service.as_ref().map(|s| s.hostname.clone());
        let error = error.map(error_chain);
        let duration_ms = self.start.elapsed().as_millis() as u64;
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "access",
                    $level,
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
                    "dst.waypoint" = dst_waypoint.as_deref(),
                    bytes_sent = sent,
                    bytes_recv = recv,
                    duration = format_args!("{duration_ms}ms"),
                    policy = self.policy.as_deref(),
                    error = error.as_deref(),
                    "connection complete"
                )
            };
        }
        if error.is_some() {
            line!(tracing::Level::ERROR);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

/// Access-log lines per second allowed on average, and in a burst.
const LOG_RATE: f64 = 1000.0;
const LOG_BURST: f64 = 2000.0;

static LIMITER: RateLimiter = RateLimiter::new(LOG_RATE, LOG_BURST);

/// A token bucket for log lines: a flood of connections must not turn into a flood of I/O.
/// Metrics are unaffected; only lines are dropped, and how many is said when lines resume.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// (tokens, last refill, lines dropped since the last admitted one).
    state: std::sync::Mutex<Option<(f64, std::time::Instant, u64)>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, and this many were dropped before it.
    AfterDropping(u64),
    No,
}

impl RateLimiter {
    pub const fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            state: std::sync::Mutex::new(None),
        }
    }

    /// Whether a line may be written at `now`. Takes time as input so it is testable.
    pub fn admit(&self, now: std::time::Instant) -> Admit {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last, dropped) = guard.get_or_insert((self.burst, now, 0));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens < 1.0 {
            *dropped += 1;
            return Admit::No;
        }
        *tokens -= 1.0;
        match std::mem::take(dropped) {
            0 => Admit::Yes,
            n => Admit::AfterDropping(n),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn limiter_drops_a_flood_and_reports_it() {
        let l = RateLimiter::new(10.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.admit(t0), Admit::Yes);
        }
        for _ in 0..7 {
            assert_eq!(l.admit(t0), Admit::No);
        }
        // 100 ms later one token is back; the line says 7 were dropped.
        assert_eq!(
            l.admit(t0 + Duration::from_millis(100)),
            Admit::AfterDropping(7)
        );
        assert_eq!(l.admit(t0 + Duration::from_millis(100)), Admit::No);
        // Idle for long: the bucket refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        let admitted = (0..100).filter(|_| l.admit(later) != Admit::No).count();
        assert_eq!(admitted, 5);
    }
}
