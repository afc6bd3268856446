//! Distributed tracing at the waypoint: the caller's trace context carried on, one span per
//! request, spans exported to Zipkin (v2 JSON, `POST /api/v2/spans`, `zipkin.rs`) or as
//! OTLP (`otlp.rs`: over gRPC, `TraceService/Export`, or over HTTP, protobuf); where to,
//! and how much is sampled, comes from meshd's Tracing resource or the waypoint's flags
//! (`control.rs`).
//!
//! Rules:
//! 1. The incoming context is read from W3C `traceparent`, else B3 (`x-b3-traceid` /
//!    `x-b3-spanid` / `x-b3-sampled`, or the single `b3` header). Malformed headers count as
//!    absent. With none, a new trace starts, sampled at the configured rate (Istio's
//!    `sampling`, a percentage, 1% by default); an incoming sampling decision is kept.
//! 2. The waypoint's span is a child of the caller's span; the request goes upstream with
//!    `traceparent` and the B3 headers naming the waypoint's span, whichever the caller used,
//!    so either kind of application tracer continues the trace.
//! 3. Sampled spans are queued to the exporter without blocking the request: the queue is
//!    bounded and a full queue drops the span (counted in the log once a minute at most). One
//!    batching loop sends batches of up to 100 spans, at least once a second, through the
//!    collector's encoder; failed batches are dropped and logged once a minute at most. Tag
//!    values (the URL's, chiefly) are cut to the max tag length.
//! 4. A tracer is replaced whole when the configuration changes: requests already started
//!    finish on the tracer they started with; the old exporter sends what it holds and stops
//!    when the last of them is done. An exiting waypoint turns tracing off the same way and
//!    waits (briefly) for that last send.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use crate::balance::splitmix;

mod control;
mod otlp;
mod zipkin;

pub use control::TracingControl;

const QUEUE: usize = 4096;
const BATCH: usize = 100;
const FLUSH: Duration = Duration::from_secs(1);
/// How long one batch may take to send.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// An OTLP/HTTP export's time when the provider gives none.
pub const DEFAULT_OTLP_HTTP_TIMEOUT: Duration = SEND_TIMEOUT;
/// Istio's default `maxPathTagLength` / `maxTagLength`.
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// A trace context as read from a request (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub trace_id: u128,
    /// The caller's span, the parent of ours.
    pub parent: Option<u64>,
    pub sampled: Option<bool>,
}

/// Rule 1: `traceparent`, else B3 multi, else B3 single.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(tp) = get("traceparent") {
        let mut parts = tp.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
        return Some(Context {
            trace_id,
            parent: Some(span_id),
            sampled: Some(flags & 1 == 1),
        });
    }
    if let Some(trace) = get("x-b3-traceid") {
        let trace_id = b3_trace_id(trace)?;
        let parent = get("x-b3-spanid").and_then(|s| u64::from_str_radix(s, 16).ok());
        let sampled = get("x-b3-flags")
            .filter(|f| *f == "1")
            .map(|_| true)
            .or_else(|| get("x-b3-sampled").and_then(b3_sampled));
        return Some(Context {
            trace_id,
            parent,
            sampled,
        });
    }
    let single = get("b3")?;
    let mut parts = single.split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let parent = Some(u64::from_str_radix(parts.next()?, 16).ok()?);
    let sampled = parts.next().and_then(b3_sampled);
    Some(Context {
        trace_id,
        parent,
        sampled,
    })
}

fn b3_trace_id(s: &str) -> Option<u128> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|t| *t != 0)
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// One request's span, started when the request arrived.
#[derive(Debug)]
pub struct Span {
    pub trace_id: u128,
    pub id: u64,
    pub parent: Option<u64>,
    pub sampled: bool,
    start: SystemTime,
    started: Instant,
}

impl Span {
    /// Rule 2: the headers the upstream request carries.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let flags = if self.sampled { "01" } else { "00" };
        let tp = format!("00-{:032x}-{:016x}-{flags}", self.trace_id, self.id);
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set("traceparent", tp);
        set("x-b3-traceid", format!("{:032x}", self.trace_id));
        set("x-b3-spanid", format!("{:016x}", self.id));
        set(
            "x-b3-sampled",
            (if self.sampled { "1" } else { "0" }).into(),
        );
        match self.parent {
            Some(p) => set("x-b3-parentspanid", format!("{p:016x}")),
            None => {
                headers.remove("x-b3-parentspanid");
            }
        }
        headers.remove("b3");
    }
}

/// What a finished span says about its request.
#[derive(Debug, Clone)]
pub struct Finished {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub peer: String,
    /// The target's key (`namespace/hostname`).
    pub target: String,
    /// As Istio's waypoint names it (`inbound-vip|80|http|<hostname>`).
    pub upstream_cluster: String,
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exporter {
    /// Zipkin v2 JSON (`POST /api/v2/spans`).
    Zipkin(SocketAddr),
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
    OtlpGrpc(SocketAddr),
    /// OTLP/HTTP: the same `ExportTraceServiceRequest`, protobuf, POSTed.
    OtlpHttp(OtlpHttp),
}

/// An OTLP/HTTP collector (Istio's `opentelemetry.http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpHttp {
    pub collector: SocketAddr,
    /// Starts with `/`.
    pub path: String,
    /// One export's time.
    pub timeout: Duration,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Exporter {
    /// As the admin dump and the logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Exporter::Zipkin(_) => "zipkin",
            Exporter::OtlpGrpc(_) => "otlp_grpc",
            Exporter::OtlpHttp(_) => "otlp_http",
        }
    }

    pub fn collector(&self) -> SocketAddr {
        match self {
            Exporter::Zipkin(a) | Exporter::OtlpGrpc(a) => *a,
            Exporter::OtlpHttp(h) => h.collector,
        }
    }
}

/// A tracer's configuration, from meshd or the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub exporter: Exporter,
    /// Percent of new traces sampled (Istio's `sampling`).
    pub sampling: f64,
    pub max_tag_length: usize,
}

/// Who the spans say produced them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `service.name` / Zipkin's `localEndpoint.serviceName`.
    pub service: String,
    /// Envoy's node id (`router~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`), tag `node_id`;
    /// empty: no tag.
    pub node_id: String,
}

/// One finished, sampled span as both encoders read it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub trace_id: u128,
    pub id: u64,
    pub parent: Option<u64>,
    pub start: SystemTime,
    pub duration: Duration,
    pub name: String,
    /// Tags, values cut to the max tag length (rule 3); `http.status_code` among them.
    pub tags: Vec<(&'static str, String)>,
    pub status: u16,
}

impl Record {
    pub fn start_nanos(&self) -> u64 {
        self.start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The waypoint's tracer: sampling and the exporter's queue.
#[derive(Debug)]
pub struct Tracer {
    /// Sampled per million new traces.
    per_million: u64,
    next: AtomicU64,
    queue: Option<mpsc::Sender<Record>>,
    max_tag_length: usize,
    node_id: String,
    dropped: Mutex<(u64, Option<Instant>)>,
    settings: Option<Settings>,
    /// True once the exporter has sent what it held and stopped (rule 4).
    exported: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for Tracer {
    /// Nothing exported, nothing sampled.
    fn default() -> Self {
        Tracer {
            per_million: 0,
            next: AtomicU64::new(0),
            queue: None,
            max_tag_length: DEFAULT_MAX_TAG_LENGTH,
            node_id: String::new(),
            dropped: Mutex::new((0, None)),
            settings: None,
            exported: None,
        }
    }
}

impl Tracer {
    /// A tracer exporting as `settings` say, naming the waypoint as `identity` says. Spawns
    /// the exporter (so: inside a tokio runtime).
    pub fn new(settings: Settings, identity: Identity) -> Tracer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = match &settings.exporter {
            Exporter::Zipkin(addr) => Sink::Zipkin(zipkin::Sink::new(*addr, &identity.service)),
            Exporter::OtlpGrpc(addr) => Sink::Otlp(otlp::Sink::new(*addr, &identity.service)),
            Exporter::OtlpHttp(h) => Sink::OtlpHttp(otlp::HttpSink::new(h, &identity.service)),
        };
        let (done, exported) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            export(sink, rx).await;
            done.send_replace(true);
        });
        Tracer {
            per_million: (settings.sampling.clamp(0.0, 100.0) * 10_000.0) as u64,
            next: AtomicU64::new(seed()),
            queue: Some(tx),
            max_tag_length: settings.max_tag_length.max(1),
            node_id: identity.node_id,
            dropped: Mutex::new((0, None)),
            settings: Some(settings),
            exported: Some(exported),
        }
    }

    /// Resolves once this tracer's exporter has sent what it held and stopped, which it does
    /// when the tracer is dropped (rule 4). Holds no reference to the tracer.
    pub fn exported(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let exported = self.exported.clone();
        async move {
            if let Some(mut rx) = exported {
                let _ = rx.wait_for(|done| *done).await;
            }
        }
    }

    /// A tracer exporting to the Zipkin collector at `zipkin` (`host:port`), sampling
    /// `percent` of new traces; `service` names the waypoint in spans.
    pub fn zipkin(zipkin: SocketAddr, percent: f64, service: String) -> Tracer {
        let settings = Settings {
            exporter: Exporter::Zipkin(zipkin),
            sampling: percent,
            max_tag_length: DEFAULT_MAX_TAG_LENGTH,
        };
        Tracer::new(
            settings,
            Identity {
                service,
                node_id: String::new(),
            },
        )
    }

    /// What it was made with (`None`: the default, off).
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// Rules 1-2 for a request with `headers`; `None` when tracing is off.
    pub fn start(&self, headers: &HeaderMap) -> Option<Span> {
        self.queue.as_ref()?;
        let incoming = extract(headers);
        let r = splitmix(self.next.fetch_add(1, Ordering::Relaxed));
        let sampled = match incoming.and_then(|c| c.sampled) {
            Some(s) => s,
            None => r % 1_000_000 < self.per_million,
        };
        let trace_id = match incoming {
            Some(c) => c.trace_id,
            None => (u128::from(splitmix(r)) << 64) | u128::from(splitmix(r ^ 0x5555)),
        };
        Some(Span {
            trace_id,
            id: splitmix(r ^ 0xaaaa).max(1),
            parent: incoming.and_then(|c| c.parent),
            sampled,
            start: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// Rule 3: queues a sampled span for export.
    pub fn finish(&self, span: Span, done: Finished) {
        let Some(queue) = &self.queue else {
            return;
        };
        if !span.sampled {
            return;
        }
        let bound = |s: String| cut(s, self.max_tag_length);
        let mut tags = vec![
            ("http.method", bound(done.method.clone())),
            ("http.url", bound(done.url)),
            ("http.status_code", done.status.to_string()),
            ("peer.principal", bound(done.peer)),
            ("component", "proxy".to_string()),
            ("upstream_cluster", bound(done.upstream_cluster)),
        ];
        if !self.node_id.is_empty() {
            tags.push(("node_id", bound(self.node_id.clone())));
        }
        let record = Record {
            trace_id: span.trace_id,
            id: span.id,
            parent: span.parent,
            start: span.start,
            duration: span.started.elapsed().max(Duration::from_micros(1)),
            name: format!("{} {}", done.target, done.method),
            tags,
            status: done.status,
        };
        if queue.try_send(record).is_err() {
            let mut d = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
            d.0 += 1;
            if d.1.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(dropped = d.0, "trace export queue full: spans dropped");
                d.1 = Some(Instant::now());
            }
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// The collector's encoder and connection.
enum Sink {
    Zipkin(zipkin::Sink),
    Otlp(otlp::Sink),
    OtlpHttp(otlp::HttpSink),
}

impl Sink {
    /// How long one batch may take: an OTLP/HTTP provider's own timeout, else the default.
    fn timeout(&self) -> Duration {
        match self {
            Sink::OtlpHttp(o) => o.timeout(),
            Sink::Zipkin(_) | Sink::Otlp(_) => SEND_TIMEOUT,
        }
    }

    async fn send(&mut self, batch: &[Record]) -> Result<(), String> {
        match self {
            Sink::Zipkin(z) => z.send(batch).await,
            Sink::Otlp(o) => o.send(batch).await,
            Sink::OtlpHttp(o) => o.send(batch).await,
        }
    }
}

/// The exporter: batches from the queue, sent to the collector (rule 3); ends, after a last
/// batch, when the tracer is gone (rule 4).
async fn export(mut sink: Sink, mut rx: mpsc::Receiver<Record>) {
    let mut batch = Vec::with_capacity(BATCH);
    // Failed batches, and when that was last logged.
    let (mut failures, mut last_warned) = (0u64, None);
    loop {
        let deadline = tokio::time::sleep(FLUSH);
        tokio::pin!(deadline);
        let mut closed = false;
        loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= BATCH {
                            break;
                        }
                    }
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            let failed = match tokio::time::timeout(sink.timeout(), sink.send(&batch)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("timed out".to_string()),
            };
            if let Some(error) = failed {
                // A collector that is wrong or down fails every batch: say so once a minute.
                failures += 1;
                if last_warned.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(%error, failures, spans = batch.len(), "trace export failed");
                    last_warned = Some(Instant::now());
                }
            }
            batch.clear();
        }
        if closed {
            return;
        }
    }
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(kv: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in kv {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn contexts_are_read_from_w3c_then_b3() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let want = Context {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            parent: Some(0x00f067aa0ba902b7),
            sampled: Some(true),
        };
        assert_eq!(extract(&headers(&[("traceparent", tp)])), Some(want));
        let b3 = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(extract(&b3), Some(want));
        let single = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")]);
        assert_eq!(
            extract(&single),
            Some(Context {
                sampled: Some(false),
                ..want
            })
        );
        // 64-bit B3 trace ids are fine; malformed headers are no context.
        let short = headers(&[("x-b3-traceid", "a3ce929d0e0e4736")]);
        assert_eq!(
            extract(&short).map(|c| c.trace_id),
            Some(0xa3ce929d0e0e4736)
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
        assert_eq!(extract(&HeaderMap::new()), None);
    }

    #[test]
    fn the_upstream_request_names_the_waypoints_span() {
        let span = Span {
            trace_id: 0xabc,
            id: 0x12,
            parent: Some(0x34),
            sampled: true,
            start: SystemTime::now(),
            started: Instant::now(),
        };
        let mut h = headers(&[("b3", "stale"), ("traceparent", "stale")]);
        span.inject(&mut h);
        assert_eq!(
            h["traceparent"],
            "00-00000000000000000000000000000abc-0000000000000012-01"
        );
        assert_eq!(h["x-b3-spanid"], "0000000000000012");
        assert_eq!(h["x-b3-parentspanid"], "0000000000000034");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(h.get("b3").is_none());
        let back = extract(&h).unwrap();
        assert_eq!((back.trace_id, back.parent), (0xabc, Some(0x12)));
    }

    #[test]
    fn tag_values_are_cut_on_a_character_boundary() {
        assert_eq!(cut("/orders".into(), 256), "/orders");
        assert_eq!(cut("/orders".into(), 3), "/or");
        // 'é' is two bytes: a cut inside it keeps the character out.
        assert_eq!(cut("/é".into(), 2), "/");
        assert_eq!(cut("/é".into(), 3), "/é");
    }
}
