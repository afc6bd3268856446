//! Tracing at the waypoint, in process: a request carrying a W3C trace context goes upstream
//! as a child of the caller's span (W3C and B3 headers), and the waypoint's span reaches a
//! Zipkin collector fixture speaking the real v2 JSON API, or an OTLP collector fixture
//! serving the real `TraceService/Export` over gRPC; a new trace is started for a request
//! that has none. meshd's Tracing pushes, through the waypoint's `TracingControl`, move export
//! from the flags' Zipkin to OTLP and back, a bad push is refused, and sampling 0 starts no
//! sampled trace but honours a caller's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Pki, http1, id, target};
use hbone::{ConnectHandler, H2Settings, InboundConnect, StreamIo};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proto::otlp::collector::trace_service_server::{TraceService, TraceServiceServer};
use proto::otlp::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use proto::waypoint::tracing::Exporter as WireExporter;
use tokio::net::TcpListener;
use waypoint::trace::{Exporter, Identity, Settings, Tracer, TracingControl};
use waypoint::{Targets, Waypoint};
use xds_client::Changes;

const VIP: &str = "10.96.0.20:80";

/// The destination: answers with the trace headers it was sent.
struct Backend;

impl ConnectHandler for Backend {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        let service = hyper::service::service_fn(|r: Request<hyper::body::Incoming>| async move {
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let body = format!(
                "{} {} {}",
                h("traceparent"),
                h("x-b3-spanid"),
                h("x-b3-parentspanid")
            );
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
        });
        let io = TokioIo::new(StreamIo::new(stream));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// A Zipkin collector: `POST /api/v2/spans` with a JSON array of spans.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let seen = spans.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            assert_eq!(r.uri().path(), "/api/v2/spans");
                            assert_eq!(r.method(), http::Method::POST);
                            let body = r.into_body().collect().await.unwrap().to_bytes();
                            let batch: Vec<serde_json::Value> =
                                serde_json::from_slice(&body).unwrap();
                            seen.lock().unwrap().extend(batch);
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = StatusCode::ACCEPTED;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

#[tokio::test]
async fn a_traced_request_continues_its_trace_and_its_span_is_exported() {
    let pki = Pki::new("trace");
    pki.backend("127.79.0.2", Arc::new(Backend)).await;
    let (zipkin, spans) = collector().await;
    let waypoint = Waypoint::new(
        pki.cert(&id("shop", "waypoint")),
        pki.roots.clone(),
        H2Settings::default(),
    );
    // 100%: the request without a context is sampled too.
    waypoint.set_tracer(Tracer::zipkin(zipkin, 100.0, "waypoint.shop".into()));
    let vip = VIP.parse::<SocketAddr>().unwrap().ip();
    let api = target(
        "shop/api.shop.svc.cluster.local",
        vip,
        "127.79.0.2",
        Default::default(),
    );
    waypoint.set_targets(Targets::new([api]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(waypoint.serve(listener));

    let io = pki.connect(&id("shop", "web"), addr, VIP).await.unwrap();
    let mut send = http1(io).await;
    let get = |traceparent: Option<&str>| {
        let mut b = Request::builder()
            .uri("/orders?id=7")
            .header("host", "api.shop.svc.cluster.local");
        if let Some(tp) = traceparent {
            b = b.header("traceparent", tp);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let resp = send
        .send_request(get(Some(&format!("00-{trace}-{caller}-01"))))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8(seen.to_vec()).unwrap();
    let mut parts = seen.split(' ');
    let (tp, b3_span, b3_parent) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    // Same trace, a span of the waypoint's own, the caller's as its parent.
    let ours = tp
        .strip_prefix(&format!("00-{trace}-"))
        .and_then(|r| r.strip_suffix("-01"))
        .unwrap_or_else(|| panic!("{tp}"));
    assert_ne!(ours, caller);
    assert_eq!(b3_span, ours);
    assert_eq!(b3_parent, caller);

    // A request with no context starts a trace.
    send.ready().await.unwrap();
    let resp = send.send_request(get(None)).await.unwrap();
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let fresh = String::from_utf8(seen.to_vec()).unwrap();
    assert!(
        fresh.starts_with("00-") && !fresh.contains(trace),
        "{fresh}"
    );

    // Both spans reach the collector within the exporter's flush interval.
    for _ in 0..40 {
        if spans.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let traced = spans
        .iter()
        .find(|s| s["traceId"] == trace)
        .unwrap_or_else(|| panic!("{spans:?}"));
    assert_eq!(traced["id"], ours);
    assert_eq!(traced["parentId"], caller);
    assert_eq!(traced["kind"], "SERVER");
    assert_eq!(traced["localEndpoint"]["serviceName"], "waypoint.shop");
    assert_eq!(traced["tags"]["http.method"], "GET");
    assert_eq!(traced["tags"]["http.status_code"], "200");
    assert_eq!(traced["tags"]["http.url"], "/orders?id=7");
    assert_eq!(
        traced["tags"]["upstream_cluster"],
        "inbound-vip|80|http|api.shop.svc.cluster.local"
    );
    assert_eq!(
        traced["tags"]["peer.principal"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert!(traced["duration"].as_u64().unwrap() > 0);
    let other = spans.iter().find(|s| s["traceId"] != trace).unwrap();
    assert!(other.get("parentId").is_none(), "{other}");
}

/// An OTLP/gRPC collector: each span received, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Otlp(Arc<Mutex<Vec<(String, proto::otlp::trace::Span)>>>);

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                seen.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn otlp_collector() -> (SocketAddr, Otlp) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let otlp = Otlp::default();
    let server = TraceServiceServer::new(otlp.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let server = server.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(server))
                    .await;
            });
        }
    });
    (addr, otlp)
}

/// A waypoint serving `api` (its endpoint's HBONE at `backend_ip`) with tracing run by a
/// `TracingControl` from `flags`, and a client's HTTP/1.1 connection to it.
async fn traced_waypoint(
    name: &str,
    backend_ip: &str,
    flags: Option<Settings>,
) -> (
    TracingControl,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let pki = Pki::new(name);
    pki.backend(backend_ip, Arc::new(Backend)).await;
    let waypoint = Waypoint::new(
        pki.cert(&id("shop", "waypoint")),
        pki.roots.clone(),
        H2Settings::default(),
    );
    let identity = Identity {
        service: "waypoint.shop".into(),
        node_id: "router~10.0.0.9~waypoint-0.shop~shop.svc.cluster.local".into(),
    };
    let control = TracingControl::new(waypoint.clone(), flags, identity);
    let vip = VIP.parse::<SocketAddr>().unwrap().ip();
    let api = target(
        "shop/api.shop.svc.cluster.local",
        vip,
        backend_ip,
        Default::default(),
    );
    waypoint.set_targets(Targets::new([api]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(waypoint.serve(listener));
    let io = pki.connect(&id("shop", "web"), addr, VIP).await.unwrap();
    (control, http1(io).await)
}

/// Sends GET /orders (with `traceparent` if given); the traceparent the backend saw.
async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    traceparent: Option<&str>,
) -> String {
    let mut b = Request::builder()
        .uri("/orders")
        .header("host", "api.shop.svc.cluster.local");
    if let Some(tp) = traceparent {
        b = b.header("traceparent", tp);
    }
    send.ready().await.unwrap();
    let resp = send
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8(seen.to_vec()).unwrap();
    seen.split(' ').next().unwrap().to_string()
}

/// The span id the waypoint named upstream in `traceparent`.
fn span_of(traceparent: &str) -> String {
    traceparent.split('-').nth(2).unwrap().to_string()
}

/// Waits (up to the exporter's flush interval, with margin) until `count()` reaches `n`.
async fn until(n: usize, count: impl Fn() -> usize) {
    for _ in 0..40 {
        if count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn push(t: proto::waypoint::Tracing) -> Changes<proto::waypoint::Tracing> {
    Changes {
        upserts: vec![(proto::WAYPOINT_TRACING_NAME.to_string(), t)],
        removed: vec![],
    }
}

fn otlp_tracing(addr: SocketAddr, sampling: f64) -> proto::waypoint::Tracing {
    proto::waypoint::Tracing {
        exporter: WireExporter::OtlpGrpc as i32,
        address: addr.to_string(),
        sampling,
        max_tag_length: 0,
        provider: "otel".into(),
        otlp_http: None,
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// The flags' Zipkin first; meshd's OTLP push moves export there (the span carrying the
/// caller's trace and parent); a bad push is refused and OTLP stays; the resource removed
/// goes back to the flags' Zipkin.
#[tokio::test]
async fn meshd_tracing_moves_export_from_zipkin_to_otlp_and_back() {
    let (zipkin, zipkin_spans) = collector().await;
    let (otlp_addr, otlp) = otlp_collector().await;
    let flags = Settings {
        exporter: Exporter::Zipkin(zipkin),
        sampling: 100.0,
        max_tag_length: 256,
    };
    let (mut control, mut send) = traced_waypoint("trace-switch", "127.79.0.3", Some(flags)).await;
    let incoming = format!("00-{TRACE}-{CALLER}-01");

    let first = span_of(&get(&mut send, Some(&incoming)).await);
    until(1, || zipkin_spans.lock().unwrap().len()).await;
    assert_eq!(zipkin_spans.lock().unwrap()[0]["id"], first.as_str());

    let rejected = control.on_changes(push(otlp_tracing(otlp_addr, 100.0)));
    assert!(rejected.is_empty(), "{rejected:?}");
    let upstream = get(&mut send, Some(&incoming)).await;
    assert!(upstream.starts_with(&format!("00-{TRACE}-")), "{upstream}");
    let ours = span_of(&upstream);
    until(1, || otlp.0.lock().unwrap().len()).await;
    {
        let spans = otlp.0.lock().unwrap();
        assert_eq!(spans.len(), 1, "{spans:?}");
        let (service, s) = &spans[0];
        assert!(service.contains("waypoint.shop"), "{service}");
        assert_eq!(hex(&s.trace_id), TRACE);
        assert_eq!(hex(&s.parent_span_id), CALLER);
        assert_eq!(hex(&s.span_id), ours);
        assert_eq!(s.kind, proto::otlp::trace::span::SpanKind::Server as i32);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
        let attr = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| panic!("no {k} in {:?}", s.attributes))
        };
        assert!(attr("http.method").contains("GET"));
        assert!(attr("http.url").contains("/orders"));
        assert!(attr("http.status_code").contains("IntValue(200)"));
        assert!(
            attr("upstream_cluster").contains("inbound-vip|80|http|api.shop.svc.cluster.local"),
            "{}",
            attr("upstream_cluster")
        );
        assert!(attr("node_id").contains("router~10.0.0.9~waypoint-0.shop"));
    }
    assert_eq!(zipkin_spans.lock().unwrap().len(), 1, "Zipkin got no more");

    // A bad push: NACKed, OTLP stays.
    let mut bad = otlp_tracing(otlp_addr, 100.0);
    bad.address = "otel-collector:4317".into();
    let rejected = control.on_changes(push(bad));
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].reason.contains("address"), "{rejected:?}");
    get(&mut send, Some(&incoming)).await;
    until(2, || otlp.0.lock().unwrap().len()).await;
    assert_eq!(otlp.0.lock().unwrap().len(), 2);

    // Removed: the flags again.
    let rejected = control.on_changes(Changes {
        upserts: vec![],
        removed: vec![proto::WAYPOINT_TRACING_NAME.to_string()],
    });
    assert!(rejected.is_empty());
    let back = span_of(&get(&mut send, Some(&incoming)).await);
    until(2, || zipkin_spans.lock().unwrap().len()).await;
    let z = zipkin_spans.lock().unwrap().clone();
    assert_eq!(z.len(), 2, "{z:?}");
    assert_eq!(z[1]["id"], back.as_str());
    assert_eq!(otlp.0.lock().unwrap().len(), 2, "OTLP got no more");
}

/// Sampling 0: a request without a context starts an unsampled trace (told upstream, never
/// exported); a caller's sampled context is still honoured and exported.
#[tokio::test]
async fn sampling_zero_starts_nothing_sampled_but_honours_the_caller() {
    let (otlp_addr, otlp) = otlp_collector().await;
    let (mut control, mut send) = traced_waypoint("trace-sampling", "127.79.0.4", None).await;
    assert!(
        control
            .on_changes(push(otlp_tracing(otlp_addr, 0.0)))
            .is_empty()
    );

    for _ in 0..5 {
        let fresh = get(&mut send, None).await;
        assert!(
            fresh.starts_with("00-") && fresh.ends_with("-00"),
            "{fresh}"
        );
    }
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    let ours = span_of(&get(&mut send, Some(&incoming)).await);
    // The unsampled requests came first: had any been queued, it would arrive no later.
    until(1, || otlp.0.lock().unwrap().len()).await;
    let spans = otlp.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(hex(&spans[0].1.trace_id), TRACE);
    assert_eq!(hex(&spans[0].1.span_id), ours);
}

/// Exporter NONE (meshd could not resolve the collector): tracing off, no headers added.
#[tokio::test]
async fn exporter_none_turns_tracing_off() {
    let (zipkin, zipkin_spans) = collector().await;
    let flags = Settings {
        exporter: Exporter::Zipkin(zipkin),
        sampling: 100.0,
        max_tag_length: 256,
    };
    let (mut control, mut send) = traced_waypoint("trace-off", "127.79.0.5", Some(flags)).await;
    let off = proto::waypoint::Tracing {
        exporter: WireExporter::None as i32,
        ..Default::default()
    };
    assert!(control.on_changes(push(off)).is_empty());
    assert_eq!(get(&mut send, None).await, "", "no trace context made up");
    // The caller's context passes untouched, and nothing is exported.
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    assert_eq!(get(&mut send, Some(&incoming)).await, incoming);
    assert!(zipkin_spans.lock().unwrap().is_empty());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One OTLP/HTTP export as the collector got it.
struct HttpExport {
    path: String,
    content_type: String,
    api_key: String,
    spans: Vec<proto::otlp::trace::Span>,
}

/// An OTLP/HTTP collector: each export received.
#[derive(Clone, Default)]
struct OtlpHttpSeen(Arc<Mutex<Vec<HttpExport>>>);

async fn otlp_http_collector() -> (SocketAddr, OtlpHttpSeen) {
    use prost::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = OtlpHttpSeen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let s = s.clone();
            let service = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                let s = s.clone();
                async move {
                    let h = |n: &str| {
                        r.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    let (path, kind, key) = (
                        r.uri().path().to_string(),
                        h("content-type"),
                        h("x-api-key"),
                    );
                    let body = r.into_body().collect().await.unwrap().to_bytes();
                    let req = ExportTraceServiceRequest::decode(body).unwrap();
                    let spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|rs| rs.scope_spans)
                        .flat_map(|ss| ss.spans)
                        .collect();
                    s.0.lock().unwrap().push(HttpExport {
                        path,
                        content_type: kind,
                        api_key: key,
                        spans,
                    });
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer))))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// meshd's OTLP/HTTP Tracing: spans POSTed as protobuf to the provider's path with its
/// headers; a bad header is refused and the last good stays.
#[tokio::test]
async fn meshd_tracing_exports_over_otlp_http() {
    use proto::waypoint::tracing::{Header, OtlpHttp};
    let (addr, seen) = otlp_http_collector().await;
    let (mut control, mut send) = traced_waypoint("trace-http", "127.79.0.6", None).await;
    let tracing = |name: &str| proto::waypoint::Tracing {
        exporter: WireExporter::OtlpHttp as i32,
        address: addr.to_string(),
        sampling: 100.0,
        max_tag_length: 0,
        provider: "otel-http".into(),
        otlp_http: Some(OtlpHttp {
            path: "/otlp/v1/traces".into(),
            timeout_ms: 2000,
            headers: vec![Header {
                name: name.into(),
                value: "k1".into(),
            }],
        }),
    };
    assert!(control.on_changes(push(tracing("x-api-key"))).is_empty());
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    let ours = span_of(&get(&mut send, Some(&incoming)).await);
    until(1, || seen.0.lock().unwrap().len()).await;
    {
        let exports = seen.0.lock().unwrap();
        assert_eq!(exports.len(), 1);
        let HttpExport {
            path,
            content_type,
            api_key,
            spans,
        } = &exports[0];
        assert_eq!(path, "/otlp/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        assert_eq!(api_key, "k1");
        assert_eq!(spans.len(), 1);
        assert_eq!(hex(&spans[0].trace_id), TRACE);
        assert_eq!(hex(&spans[0].parent_span_id), CALLER);
        assert_eq!(hex(&spans[0].span_id), ours);
    }
    let rejected = control.on_changes(push(tracing("bad name")));
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].reason.contains("otlp_http.headers"),
        "{rejected:?}"
    );
    get(&mut send, Some(&incoming)).await;
    until(2, || seen.0.lock().unwrap().len()).await;
    assert_eq!(
        seen.0.lock().unwrap().len(),
        2,
        "the last good exporter stays"
    );
}

/// An exiting waypoint sends the spans its exporter holds without waiting for the next
/// flush: `flush_tracing` returns once they are at the collector.
#[tokio::test]
async fn flushing_sends_the_held_spans_at_once() {
    let (zipkin, zipkin_spans) = collector().await;
    let flags = Settings {
        exporter: Exporter::Zipkin(zipkin),
        sampling: 100.0,
        max_tag_length: 256,
    };
    let (control, mut send) = traced_waypoint("trace-flush", "127.79.0.7", Some(flags)).await;
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    let ours = span_of(&get(&mut send, Some(&incoming)).await);
    assert!(
        zipkin_spans.lock().unwrap().is_empty(),
        "held until the next flush"
    );
    let started = std::time::Instant::now();
    control
        .waypoint()
        .flush_tracing(Duration::from_secs(5))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let spans = zipkin_spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["id"], ours.as_str());
    assert!(
        control.waypoint().tracer().is_none(),
        "tracing is off after"
    );
}
