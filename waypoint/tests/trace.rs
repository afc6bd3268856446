//! Tracing at the waypoint, in process: a request carrying a W3C trace context goes upstream
//! as a child of the caller's span (W3C and B3 headers), and the waypoint's span reaches a
//! Zipkin collector fixture speaking the real v2 JSON API; a new trace is started for a
//! request that has none.
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
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use waypoint::trace::Tracer;
use waypoint::{Targets, Waypoint};

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
        traced["tags"]["peer.principal"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert!(traced["duration"].as_u64().unwrap() > 0);
    let other = spans.iter().find(|s| s["traceId"] != trace).unwrap();
    assert!(other.get("parentId").is_none(), "{other}");
}
