//! What each request and TCP stream leaves behind: its metrics ([`crate::metrics`]) and one
//! access-log line (tracing target `access`).
//!
//! Rules, in order:
//! 1. A request is timed from its arrival to the end of its response body (Envoy's
//!    `requestComplete`). Bytes are body bytes, counted frame by frame as they stream through
//!    (nothing is buffered): the request body as the upstream reads it, the response body as
//!    the client is sent it.
//! 2. The request's handler says what happened through the response's extensions
//!    ([`Outcome`]): the response flags, the deciding policy of a denial, the endpoint chosen.
//!    An RBAC denial is `403` with flags `-`, as Envoy reports it.
//! 3. A request is recorded once: when its response body ends; or, if it is dropped first, as
//!    `DC` (the client went away), with `response_code` `0` when no response had started.
//!    An upstream body that fails mid-way is `UC`.
//! 4. A TCP stream is counted as opened once its policy was decided, and closed with the bytes
//!    it moved either way, whether it ended cleanly or not.
//! 5. A connection keeps handles to the last few metric series its requests were recorded in
//!    ([`CONNECTION_SERIES`]): a request like the one before it is counted without looking
//!    its two dozen labels up again. The access line is built by `access.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hbone::SpiffeId;
use http::{HeaderMap, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::access;
use crate::metrics::{
    Metrics, OpenStream, PeerLabels, RequestLabels, RequestProtocol, RequestSample, RequestSeries,
    ResponseFlags, SecurityPolicy, TcpLabels,
};
use crate::peers::{Upstream, Workload};
use crate::targets::Resolved;

/// What a handler reports about a response it made or passed on (rule 2).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub flags: ResponseFlags,
    /// The policy (and rule) that decided a denial.
    pub policy: Option<String>,
    /// The endpoint the request went to.
    pub upstream: Option<Upstream>,
}

fn outcome<B>(resp: &mut Response<B>) -> &mut Outcome {
    resp.extensions_mut().get_or_insert_default::<Outcome>()
}

/// Marks `resp` as a denial by `policy` (rule 2).
pub fn denied<B>(mut resp: Response<B>, policy: String, flags: ResponseFlags) -> Response<B> {
    let o = outcome(&mut resp);
    o.policy = Some(policy);
    o.flags = flags;
    resp
}

/// Marks `resp` with Envoy's response flags.
pub fn flagged<B>(mut resp: Response<B>, flags: ResponseFlags) -> Response<B> {
    outcome(&mut resp).flags = flags;
    resp
}

/// Notes the endpoint that answered.
pub fn upstream<B>(resp: &mut Response<B>, upstream: Upstream) {
    outcome(resp).upstream = Some(upstream);
}

/// The request body's byte count, carried in the request's extensions to where it is sent on.
#[derive(Debug, Clone)]
struct RequestBytes(Arc<AtomicU64>);

/// Wraps a request's body so its bytes are counted as they are read (rule 1).
pub fn count_request<B>(req: Request<B>) -> Request<Counted<B>> {
    let count = req
        .extensions()
        .get::<RequestBytes>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    req.map(|inner| Counted { inner, count })
}

/// A body that counts its data bytes into a shared counter.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
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

/// One connection's share of every request's record: who, which target, and the metric
/// series its requests were recorded in.
#[derive(Debug)]
pub struct Connection {
    metrics: Arc<Metrics>,
    /// The address the peer dialled, as every access line writes it (its identity is the
    /// labels' `source_principal`).
    addressed: String,
    labels: PeerLabels,
    /// The series this connection's requests went to, most recent first: finding one in the
    /// registry hashes two dozen labels, and a kept-alive connection's requests mostly share
    /// one or two (rule 5).
    series: Mutex<Vec<(SeriesKey, RequestSeries)>>,
}

/// What, beyond its connection, decides a request's series.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeriesKey {
    protocol: RequestProtocol,
    upstream: Option<Upstream>,
    status: u16,
    grpc_status: Option<String>,
    flags: ResponseFlags,
}

/// Series a connection keeps (rule 5); past this the oldest is dropped.
const CONNECTION_SERIES: usize = 4;

impl Connection {
    /// `source`: the peer's workload, if the waypoint knows it (`peers.rs`).
    pub fn new(
        metrics: Arc<Metrics>,
        peer: &SpiffeId,
        source: Option<&Workload>,
        resolved: &Resolved,
    ) -> Connection {
        let labels = PeerLabels::new(
            metrics.cluster(),
            RequestProtocol::http,
            peer,
            source,
            &resolved.target,
        );
        Connection {
            metrics,
            addressed: resolved.addressed.to_string(),
            labels,
            series: Mutex::new(Vec::new()),
        }
    }

    /// A request arrived: its record starts now.
    pub fn start<B>(self: &Arc<Self>, mut req: Request<B>) -> (Request<B>, Exchange) {
        let request_bytes = Arc::new(AtomicU64::new(0));
        req.extensions_mut()
            .insert(RequestBytes(request_bytes.clone()));
        let grpc = is_grpc(req.headers());
        let exchange = Exchange {
            conn: self.clone(),
            protocol: if grpc {
                RequestProtocol::grpc
            } else {
                RequestProtocol::http
            },
            version: req.version(),
            method: req.method().clone(),
            // A share of the request's bytes, not a copy.
            path: req.uri().path_and_query().cloned(),
            start: Instant::now(),
            request_bytes,
            response_bytes: 0,
            status: 0,
            grpc_status: None,
            outcome: Outcome::default(),
            done: false,
        };
        (req, exchange)
    }

    /// Records one request in its series (rule 5).
    fn record(&self, key: SeriesKey, sample: RequestSample) {
        let mut kept = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = kept.iter().position(|(k, _)| *k == key) {
            kept[i].1.record(sample);
            if i > 0 {
                let hit = kept.remove(i);
                kept.insert(0, hit);
            }
            return;
        }
        let series = self.metrics.request_series(&self.request_labels(&key));
        series.record(sample);
        kept.truncate(CONNECTION_SERIES - 1);
        kept.insert(0, (key, series));
    }

    fn request_labels(&self, key: &SeriesKey) -> RequestLabels {
        let mut peers = self.labels.clone();
        peers.request_protocol = key.protocol;
        if let Some(upstream) = &key.upstream {
            peers.endpoint(upstream);
        }
        RequestLabels {
            peers,
            response_code: key.status,
            grpc_response_status: match key.protocol {
                RequestProtocol::grpc => key.grpc_status.clone().unwrap_or_default(),
                _ => String::new(),
            },
            response_flags: key.flags,
            connection_security_policy: SecurityPolicy::mutual_tls,
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One request's record, written once (rule 3).
#[derive(Debug)]
pub struct Exchange {
    conn: Arc<Connection>,
    protocol: RequestProtocol,
    version: http::Version,
    method: http::Method,
    path: Option<http::uri::PathAndQuery>,
    start: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
    /// `0` until a response starts.
    status: u16,
    grpc_status: Option<String>,
    outcome: Outcome,
    done: bool,
}

impl Exchange {
    /// The response starts: its body is measured from here (rule 2).
    pub fn respond<B: Body>(mut self, mut resp: Response<B>) -> Response<Measured<B>> {
        self.status = resp.status().as_u16();
        if let Some(o) = resp.extensions_mut().remove::<Outcome>() {
            self.outcome = o;
        }
        if self.protocol == RequestProtocol::grpc {
            self.grpc_status = grpc_status(resp.headers());
        }
        resp.map(|inner| Measured {
            inner,
            exchange: Some(self),
        })
    }

    /// A `101` that switched the connection (`upgrade.rs` rule 4): its empty body is sent on
    /// unmeasured, and the request is recorded when the tunnel ends.
    pub fn switch<B: Body>(mut self, mut resp: Response<B>) -> (Response<Measured<B>>, Switched) {
        self.status = resp.status().as_u16();
        if let Some(o) = resp.extensions_mut().remove::<Outcome>() {
            self.outcome = o;
        }
        let resp = resp.map(|inner| Measured {
            inner,
            exchange: None,
        });
        (resp, Switched(self))
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = self.start.elapsed();
        let request_bytes = self.request_bytes.load(Ordering::Relaxed);
        let conn = &*self.conn;
        conn.record(
            SeriesKey {
                protocol: self.protocol,
                upstream: self.outcome.upstream.clone(),
                status: self.status,
                grpc_status: self.grpc_status.clone(),
                flags: self.outcome.flags,
            },
            RequestSample {
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes,
                response_bytes: self.response_bytes,
            },
        );
        access::log(&access::Request {
            version: self.version,
            peer: conn.labels.source_principal.as_str(),
            addressed: &conn.addressed,
            service: conn.labels.destination_service.as_str(),
            upstream: self.outcome.upstream.as_ref().map(|u| &u.identity),
            method: self.method.as_str(),
            path: self.path.as_ref().map_or("/", |p| p.as_str()),
            status: self.status,
            grpc_status: self.grpc_status.as_deref(),
            duration_ms: duration.as_millis() as u64,
            bytes_received: request_bytes,
            bytes_sent: self.response_bytes,
            flags: self.outcome.flags,
            policy: self.outcome.policy.as_deref(),
        });
    }
}

impl Drop for Exchange {
    /// Rule 3: dropped before a response: the client left.
    fn drop(&mut self) {
        if !self.done {
            self.outcome.flags = ResponseFlags::DownstreamConnectionTermination;
            self.finish();
        }
    }
}

/// An upgraded exchange, recorded when its tunnel ends (`upgrade.rs` rule 4); dropped
/// unended, it is recorded as `DC` as any exchange is.
#[derive(Debug)]
pub struct Switched(Exchange);

impl Switched {
    /// The tunnel ended, having moved `sent` bytes from the client and `received` to it.
    pub fn ended(mut self, sent: u64, received: u64, flags: Option<ResponseFlags>) {
        let ex = &mut self.0;
        ex.request_bytes.fetch_add(sent, Ordering::Relaxed);
        ex.response_bytes += received;
        if let Some(f) = flags {
            ex.outcome.flags = f;
        }
        ex.finish();
    }
}

/// A response body that measures what the client is sent and records its request at the end.
#[derive(Debug)]
pub struct Measured<B: Body> {
    inner: B,
    exchange: Option<Exchange>,
}

impl<B: Body> Measured<B> {
    fn end(&mut self, flags: Option<ResponseFlags>) {
        if let Some(mut ex) = self.exchange.take() {
            if let Some(f) = flags {
                ex.outcome.flags = f;
            }
            ex.finish();
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Measured<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(ex) = this.exchange.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        ex.response_bytes += data.len() as u64;
                    }
                    if let Some(trailers) = frame.trailers_ref() {
                        if ex.protocol == RequestProtocol::grpc {
                            ex.grpc_status = grpc_status(trailers).or(ex.grpc_status.take());
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    this.end(None);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.end(Some(ResponseFlags::UpstreamConnectionTermination));
            }
            Poll::Ready(None) => this.end(None),
            Poll::Pending => {}
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

impl<B: Body> Drop for Measured<B> {
    /// Rule 3: a body dropped before its end was cut short by the client.
    fn drop(&mut self) {
        let flags =
            (!self.inner.is_end_stream()).then_some(ResponseFlags::DownstreamConnectionTermination);
        self.end(flags);
    }
}

/// One TCP stream's record (rule 4).
#[derive(Debug)]
pub struct TcpStream {
    open: Option<OpenStream>,
    labels: TcpLabels,
    peer: SpiffeId,
    addressed: SocketAddr,
    upstream: Option<SpiffeId>,
    start: Instant,
}

impl TcpStream {
    /// Counts the stream as opened, with its outcome so far.
    pub fn opened(
        metrics: &Metrics,
        peer: &SpiffeId,
        source: Option<&Workload>,
        resolved: &Resolved,
        upstream: Option<&Upstream>,
        flags: ResponseFlags,
    ) -> TcpStream {
        let mut peers = PeerLabels::new(
            metrics.cluster(),
            RequestProtocol::tcp,
            peer,
            source,
            &resolved.target,
        );
        if let Some(u) = upstream {
            peers.endpoint(u);
        }
        let labels = TcpLabels {
            peers,
            response_flags: flags,
            connection_security_policy: SecurityPolicy::mutual_tls,
        };
        TcpStream {
            open: Some(metrics.tcp_opened(&labels)),
            labels,
            peer: peer.clone(),
            addressed: resolved.addressed,
            upstream: upstream.map(|u| u.identity.clone()),
            start: Instant::now(),
        }
    }

    /// The stream ended: `sent` bytes to the client, `received` from it.
    pub fn closed(mut self, sent: u64, received: u64, policy: Option<&str>) {
        if let Some(open) = self.open.take() {
            open.closed(sent, received);
        }
        tracing::info!(
            target: "access",
            protocol = "tcp",
            "src.identity" = %self.peer,
            "dst.addr" = %self.addressed,
            "dst.service" = %self.labels.peers.destination_service,
            "dst.identity" = self.upstream.as_ref().map(tracing::field::display),
            duration_ms = self.start.elapsed().as_millis() as u64,
            bytes_received = received,
            bytes_sent = sent,
            response_flags = %self.labels.response_flags,
            policy,
            "connection complete"
        );
    }
}

/// An IO that counts the bytes read from and written to it.
#[derive(Debug)]
pub struct CountingIo<IO> {
    inner: IO,
    pub read: u64,
    pub written: u64,
}

impl<IO> CountingIo<IO> {
    pub fn new(inner: IO) -> Self {
        CountingIo {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CountingIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CountingIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;
    use crate::targets::Target;

    /// A response body made of given frames (or errors), one per poll.
    struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front())
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn id(ns: &str, sa: &str) -> SpiffeId {
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
            .parse()
            .unwrap()
    }

    fn connection(metrics: &Arc<Metrics>) -> Arc<Connection> {
        let target = Target {
            key: "shop/api.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            vips: vec!["10.96.0.20".parse().unwrap()],
            ports: Default::default(),
            h2_ports: Default::default(),
            endpoints: vec![],
            policies: Default::default(),
            rate_limits: Vec::new(),
            jwt: Vec::new(),
            ext_authz: Default::default(),
        };
        let resolved = Resolved {
            target: Arc::new(target),
            addressed: "10.96.0.20:80".parse().unwrap(),
            pinned: None,
        };
        Arc::new(Connection::new(
            metrics.clone(),
            &id("web", "front"),
            None,
            &resolved,
        ))
    }

    fn request(grpc: bool) -> Request<()> {
        let mut b = Request::builder().method("POST").uri("/pkg.Svc/Call");
        if grpc {
            b = b.header("content-type", "application/grpc+proto");
        }
        b.body(()).unwrap()
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn series(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_string)
            .collect()
    }

    /// Rule 3, table-driven: how a response body ends decides what is recorded.
    #[test]
    fn a_request_is_recorded_once_by_how_its_response_ended() {
        enum End {
            /// Read to the end.
            Complete,
            /// Dropped after the first frame.
            DroppedEarly,
        }
        struct Row {
            name: &'static str,
            grpc: bool,
            frames: Vec<Result<Frame<Bytes>, std::io::Error>>,
            end: End,
            want: &'static [&'static str],
            response_bytes: u64,
        }
        let trailers = |status: &'static str| {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static(status));
            Ok(Frame::trailers(t))
        };
        let rows = vec![
            Row {
                name: "plain HTTP, complete",
                grpc: false,
                frames: vec![data("hello "), data("world")],
                end: End::Complete,
                want: &[
                    "request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\"",
                ],
                response_bytes: 11,
            },
            Row {
                name: "gRPC with its status in trailers",
                grpc: true,
                frames: vec![data("12345"), trailers("7")],
                end: End::Complete,
                want: &[
                    "request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"7\",response_flags=\"-\"",
                ],
                response_bytes: 5,
            },
            Row {
                name: "the client left mid-body",
                grpc: false,
                frames: vec![data("abc"), data("def")],
                end: End::DroppedEarly,
                want: &["response_code=\"200\",grpc_response_status=\"\",response_flags=\"DC\""],
                response_bytes: 3,
            },
            Row {
                name: "the upstream failed mid-body",
                grpc: false,
                frames: vec![data("abcd"), Err(std::io::Error::other("reset"))],
                end: End::Complete,
                want: &["response_code=\"200\",grpc_response_status=\"\",response_flags=\"UC\""],
                response_bytes: 4,
            },
        ];
        for row in rows {
            let metrics = Arc::new(Metrics::new("c", 100));
            let conn = connection(&metrics);
            let (_req, exchange) = conn.start(request(row.grpc));
            let resp = Response::new(Frames(row.frames.into()));
            let mut body = exchange.respond(resp).into_body();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            match row.end {
                End::Complete => {
                    rt.block_on(async { while body.frame().await.is_some() {} });
                }
                End::DroppedEarly => {
                    let _ = rt.block_on(body.frame());
                }
            }
            // The end, or the drop, records; a drop after the end records nothing more.
            drop(body);
            let lines = series(&metrics);
            assert_eq!(lines.len(), 1, "{}: {lines:?}", row.name);
            assert!(lines[0].ends_with("} 1"), "{}: {lines:?}", row.name);
            for w in row.want {
                assert!(lines[0].contains(w), "{}: {w} in {}", row.name, lines[0]);
            }
            let text = metrics.encode();
            let bytes = text
                .lines()
                .find(|l| l.starts_with("istio_response_bytes_sum{"))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<f64>().unwrap());
            assert_eq!(bytes, Some(row.response_bytes as f64), "{}", row.name);
        }
    }

    #[test]
    fn a_request_dropped_before_its_response_is_dc_with_code_0() {
        let metrics = Arc::new(Metrics::new("c", 100));
        let (req, exchange) = connection(&metrics).start(request(false));
        // The handler saw the byte counter travel with the request.
        let counted = count_request(req.map(|()| Frames(vec![data("xyz")].into())));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut body = counted.into_body();
        rt.block_on(async { while body.frame().await.is_some() {} });
        drop(exchange);
        let lines = series(&metrics);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0]
                .contains("response_code=\"0\",grpc_response_status=\"\",response_flags=\"DC\""),
            "{lines:?}"
        );
        assert!(
            metrics
                .encode()
                .lines()
                .any(|l| l.starts_with("istio_request_bytes_sum{") && l.ends_with(" 3.0")),
            "{}",
            metrics.encode()
        );
    }

    /// Rule 5: kept series count like looked-up ones, however many a connection sees.
    #[test]
    fn a_connections_requests_count_in_their_series_past_the_ones_it_keeps() {
        let metrics = Arc::new(Metrics::new("c", 100));
        let conn = connection(&metrics);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Statuses 200..206, then 200 and 201 again: more kinds than a connection keeps.
        let statuses: Vec<u16> = (200..200 + CONNECTION_SERIES as u16 + 2)
            .chain([200, 200, 201])
            .collect();
        for &status in &statuses {
            let (_req, exchange) = conn.start(request(false));
            let mut resp = Response::new(Frames(vec![data("ok")].into()));
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            let mut body = exchange.respond(resp).into_body();
            rt.block_on(async { while body.frame().await.is_some() {} });
        }
        let text = metrics.encode();
        let count = |code: u16| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains(&format!("response_code=\"{code}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<u64>().unwrap())
        };
        assert_eq!(count(200), Some(3), "{text}");
        assert_eq!(count(201), Some(2), "{text}");
        for code in 202..200 + CONNECTION_SERIES as u16 + 2 {
            assert_eq!(count(code), Some(1), "{text}");
        }
        assert!(conn.series.lock().unwrap().len() <= CONNECTION_SERIES);
    }

    #[test]
    fn denied_flagged_and_upstream_travel_in_the_response() {
        let resp = denied(
            Response::new(()),
            "shop/deny rule 0".into(),
            ResponseFlags::None,
        );
        let o = resp.extensions().get::<Outcome>().unwrap();
        assert_eq!(o.policy.as_deref(), Some("shop/deny rule 0"));
        let mut resp = flagged(resp, ResponseFlags::NoHealthyUpstream);
        upstream(
            &mut resp,
            Upstream {
                identity: id("shop", "api"),
                workload: None,
            },
        );
        let o = resp.extensions().get::<Outcome>().unwrap();
        assert_eq!(o.flags, ResponseFlags::NoHealthyUpstream);
        assert_eq!(o.policy.as_deref(), Some("shop/deny rule 0"));
        assert_eq!(
            o.upstream.as_ref().map(|u| &u.identity),
            Some(&id("shop", "api"))
        );
    }
}
