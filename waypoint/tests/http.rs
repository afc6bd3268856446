//! The waypoint in process, over real sockets, TLS and HBONE: clients with their own
//! identities CONNECT to it for a service VIP; it decides each HTTP request with the service's
//! L7 policies and forwards what is allowed to the endpoint (an HBONE server standing in for
//! the destination ztunnel and its app), presenting its own identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authz::http::{HttpPolicies, HttpStringMatch, Operation, RateLimit, RateLimitPer};
use bytes::Bytes;
use common::{Pki, http1, id, request, status_and_body, target};
use hbone::{ConnectHandler, H2Settings, InboundConnect, SpiffeId, StreamIo};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waypoint::{Targets, Waypoint};

const VIP: &str = "10.96.0.20:80";
// Endpoints' HBONE is on port 15008, so each test takes a loopback address of its own
// (127.77.0.0/24 is this file's).

/// The seeds' payment policy, a scanner DENY, and health checks for anyone.
const POLICIES: &[&str] = &[
    r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/order-service", "cluster.local/ns/shop/sa/checkout-service"]}}]
    to: [{operation: {methods: ["POST"], paths: ["/api/v2/payments/process"]}}]
  - to: [{operation: {methods: ["GET"], paths: ["/health"]}}]
"#,
    r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-scanners, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: DENY
  rules:
  - when: [{key: "request.headers[User-Agent]", values: ["*sqlmap*", "*nmap*", "*nikto*"]}]
"#,
];

fn policies() -> HttpPolicies {
    common::policies(POLICIES)
}

/// The destination: answers every request with what it saw, counting CONNECTs. A request
/// with the query `hold` is answered only once `release` is notified.
struct Backend {
    connects: AtomicUsize,
    peers: std::sync::Mutex<Vec<String>>,
    release: tokio::sync::Notify,
}

impl ConnectHandler for Backend {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.peers
            .lock()
            .unwrap()
            .push(req.peer.identity.to_string());
        let authority = req.target.to_string();
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        let service = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
            let authority = authority.clone();
            let backend = self.clone();
            async move {
                if r.headers().contains_key("upgrade") {
                    return Ok(echo_upgrade(r));
                }
                if r.uri().query() == Some("hold") {
                    backend.release.notified().await;
                }
                let body = r.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                    "{authority} got {} bytes",
                    body.len()
                )))))
            }
        });
        let io = TokioIo::new(StreamIo::new(stream));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }
}

/// A WebSocket server's half of an upgrade (without the framing, which the waypoint does not
/// read): `101`, saying in `x-saw` which hop-by-hop headers arrived, then each read echoed
/// upper-cased.
fn echo_upgrade(mut r: Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let header = |n: &str| r.headers().get(n).map_or("-", |v| v.to_str().unwrap());
    let saw = format!(
        "{} {} {}",
        header("connection"),
        header("upgrade"),
        header("x-hop")
    );
    let upgraded = hyper::upgrade::on(&mut r);
    tokio::spawn(async move {
        let mut io = TokioIo::new(upgraded.await.unwrap());
        let mut buf = [0u8; 64];
        loop {
            let n = io.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = io.shutdown().await;
                break;
            }
            io.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
        }
    });
    // `?other`: a lenient server that switches to a protocol the client did not ask for.
    let protocol = match r.uri().query() {
        Some("other") => "h2c",
        _ => "websocket",
    };
    hyper::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", protocol)
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .header("x-saw", saw)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

struct Mesh {
    pki: Pki,
    waypoint: Arc<Waypoint>,
    waypoint_addr: SocketAddr,
    backend: Arc<Backend>,
    /// The waypoint's `serve`, which ends once it has drained.
    served: tokio::task::JoinHandle<()>,
}

impl Mesh {
    async fn start(name: &str, endpoint_ip: &str) -> Mesh {
        Mesh::start_with(name, endpoint_ip, Vec::new()).await
    }

    async fn start_with(name: &str, endpoint_ip: &str, rate_limits: Vec<RateLimit>) -> Mesh {
        let pki = Pki::new(name);
        let backend = Arc::new(Backend {
            connects: AtomicUsize::new(0),
            peers: Default::default(),
            release: Default::default(),
        });
        pki.backend(endpoint_ip, backend.clone()).await;
        let waypoint = Waypoint::new(
            pki.cert(&id("shop", "waypoint")),
            pki.roots.clone(),
            H2Settings::default(),
        );
        let vip = VIP.parse::<SocketAddr>().unwrap().ip();
        let mut api = target(
            "shop/api.shop.svc.cluster.local",
            vip,
            endpoint_ip,
            policies(),
        );
        api.rate_limits = rate_limits;
        waypoint.set_targets(Targets::new([api]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let waypoint_addr = listener.local_addr().unwrap();
        let serve = waypoint.clone().serve(listener);
        let served = tokio::spawn(async move { serve.await.unwrap() });
        Mesh {
            pki,
            waypoint,
            waypoint_addr,
            backend,
            served,
        }
    }

    /// An HBONE stream from `client` to the waypoint for `authority`.
    async fn connect(
        &self,
        client: &SpiffeId,
        authority: &str,
    ) -> Result<StreamIo, hbone::PoolError> {
        self.pki
            .connect(client, self.waypoint_addr, authority)
            .await
    }

    async fn http1(
        &self,
        client: &SpiffeId,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        http1(self.connect(client, VIP).await.unwrap()).await
    }
}

#[tokio::test]
async fn http1_requests_are_decided_one_by_one_and_forwarded() {
    let mesh = Mesh::start("http1", "127.77.0.2").await;
    let order = id("shop", "order-service");
    let mut send = mesh.http1(&order).await;
    type Row = (&'static str, &'static str, &'static str, StatusCode);
    let rows: &[Row] = &[
        ("POST", "/api/v2/payments/process", "curl/8", StatusCode::OK),
        (
            "GET",
            "/api/v2/payments/process",
            "curl/8",
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/api/v2/payments/refund",
            "curl/8",
            StatusCode::FORBIDDEN,
        ),
        ("GET", "/health", "curl/8", StatusCode::OK),
        ("GET", "/health", "sqlmap/1.7", StatusCode::FORBIDDEN),
        (
            "POST",
            "/api/v2/payments/process?x=1",
            "curl/8",
            StatusCode::OK,
        ),
    ];
    for (method, path, agent, want) in rows {
        let (status, body) =
            status_and_body(&mut send, request(method, path, agent, "card=4111")).await;
        assert_eq!(status, *want, "{method} {path} as {agent}: {body}");
        match *want {
            StatusCode::OK => assert_eq!(body, "127.77.0.2:8080 got 9 bytes", "{method} {path}"),
            _ => assert_eq!(body, "RBAC: access denied"),
        }
    }
    // One downstream connection, kept alive: one upstream stream, opened as the waypoint.
    assert_eq!(mesh.backend.connects.load(Ordering::SeqCst), 1);
    assert_eq!(
        mesh.backend.peers.lock().unwrap().as_slice(),
        ["spiffe://cluster.local/ns/shop/sa/waypoint"]
    );

    // Another caller: its own identity is what the waypoint sees.
    let web = id("shop", "web");
    let mut send = mesh.http1(&web).await;
    let (status, _) = status_and_body(
        &mut send,
        request("POST", "/api/v2/payments/process", "curl/8", ""),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "web may not process payments"
    );
    let (status, _) = status_and_body(&mut send, request("GET", "/health", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Waits until the waypoint holds `n` idle upstream HTTP/1.1 connections (a connection goes
/// back once the waypoint has sent the response's end, which the client may see first).
async fn idle_upstreams(mesh: &Mesh, n: usize) {
    for _ in 0..1000 {
        if mesh.waypoint.upstreams().counts() == (n, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mesh.waypoint.upstreams().counts(), (n, 0));
}

#[tokio::test]
async fn upstream_connections_are_shared_by_every_downstream_connection() {
    let mesh = Mesh::start("shared", "127.77.0.6").await;
    let order = id("shop", "order-service");
    let health = || request("GET", "/health", "curl/8", "");
    // Callers one after another, each on a connection of its own: one upstream connection
    // serves them all, idle between requests.
    for caller in ["order-service", "web", "checkout-service"] {
        let mut send = mesh.http1(&id("shop", caller)).await;
        let (status, body) = status_and_body(&mut send, health()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "127.77.0.6:8080 got 0 bytes")
        );
    }
    assert_eq!(mesh.backend.connects.load(Ordering::SeqCst), 1);
    idle_upstreams(&mesh, 1).await;

    // While a request holds that connection, another caller's gets a second one.
    let mut held = mesh.http1(&order).await;
    let held = tokio::spawn(async move {
        status_and_body(&mut held, request("GET", "/health?hold", "curl/8", "")).await
    });
    idle_upstreams(&mesh, 0).await;
    let mut other = mesh.http1(&id("shop", "web")).await;
    let (status, _) = status_and_body(&mut other, health()).await;
    assert_eq!(status, StatusCode::OK, "not queued behind the held request");
    assert_eq!(mesh.backend.connects.load(Ordering::SeqCst), 2);
    mesh.backend.release.notify_one();
    let (status, _) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // Both idle again, for whoever asks next.
    idle_upstreams(&mesh, 2).await;

    // Idle ones are closed after the idle timeout.
    let later = std::time::Instant::now() + waypoint::upstream::IDLE_TIMEOUT;
    mesh.waypoint
        .upstreams()
        .sweep(later, waypoint::upstream::IDLE_TIMEOUT);
    assert_eq!(mesh.waypoint.upstreams().counts(), (0, 0));
    let (status, _) = status_and_body(&mut other, health()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a new upstream connection after the sweep"
    );
    assert_eq!(mesh.backend.connects.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_per_stream() {
    let mesh = Mesh::start("http2", "127.77.0.3").await;
    let checkout = id("shop", "checkout-service");
    let io = TokioIo::new(mesh.connect(&checkout, VIP).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Concurrent requests on one connection.
    let mut tasks = Vec::new();
    for (method, path, want) in [
        ("POST", "/api/v2/payments/process", StatusCode::OK),
        ("DELETE", "/api/v2/payments/process", StatusCode::FORBIDDEN),
        ("GET", "/health", StatusCode::OK),
    ] {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://api.shop.svc.cluster.local{path}"))
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), want, "{method} {path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if want == StatusCode::OK {
                // Sent on as HTTP/1.1: the endpoint speaks only that.
                assert_eq!(&body[..], b"127.77.0.3:8080 got 1 bytes");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_target_the_waypoint_does_not_serve_is_refused() {
    let mesh = Mesh::start("unknown", "127.77.0.4").await;
    let err = mesh
        .connect(&id("shop", "order-service"), "10.96.0.99:80")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
    assert_eq!(mesh.backend.connects.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_rate_limited_caller_gets_429_then_recovers() {
    let health = Operation {
        methods: vec![HttpStringMatch::Istio(authz::StringMatch::Exact(
            "GET".into(),
        ))],
        paths: vec![HttpStringMatch::Istio(authz::StringMatch::Exact(
            "/health".into(),
        ))],
        ..Default::default()
    };
    let limit = RateLimit {
        source: "shop/health-per-client".into(),
        matches: vec![health],
        per: RateLimitPer::SourcePrincipal,
        max_tokens: 2,
        tokens_per_fill: 1,
        fill_interval: Duration::from_secs(1),
    };
    let mesh = Mesh::start_with("ratelimit", "127.77.0.5", vec![limit]).await;
    let order = id("shop", "order-service");
    let mut send = mesh.http1(&order).await;
    for _ in 0..2 {
        let (status, _) = status_and_body(&mut send, request("GET", "/health", "curl/8", "")).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A denied request takes no token; a request the limit does not match is not counted.
    let (status, _) = status_and_body(&mut send, request("GET", "/health", "nikto", "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = status_and_body(
        &mut send,
        request("POST", "/api/v2/payments/process", "curl/8", ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    send.ready().await.unwrap();
    let resp = send
        .send_request(request("GET", "/health", "curl/8", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header("x-ratelimit-reset").as_deref(), Some("1"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"local_rate_limited");

    // Another caller has its own bucket.
    let mut other = mesh.http1(&id("shop", "web")).await;
    let (status, _) = status_and_body(&mut other, request("GET", "/health", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);

    // One fill interval later the first caller has a token again, and only one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = status_and_body(&mut send, request("GET", "/health", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = status_and_body(&mut send, request("GET", "/health", "curl/8", "")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "local_rate_limited")
    );
}

/// Draining: readiness turns 503, an idle connection closes at once, the request under way
/// is answered (its connection closed after it), and a new connection is still served, one
/// request per HTTP connection.
#[tokio::test]
async fn draining_finishes_what_is_under_way_and_serves_latecomers_once() {
    let mesh = Mesh::start("drain", "127.77.0.9").await;
    let order = id("shop", "order-service");
    let mut idle = mesh.http1(&order).await;
    let (status, _) = status_and_body(&mut idle, request("GET", "/health", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);
    let mut busy = mesh.http1(&order).await;
    busy.ready().await.unwrap();
    let held = busy.send_request(request("GET", "/health?hold", "curl/8", ""));
    let held = tokio::spawn(held);
    // The held request has reached the backend once both CONNECTs are there.
    for _ in 0..100 {
        if mesh.backend.connects.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ready_addr = ready.local_addr().unwrap();
    tokio::spawn(waypoint::health::serve(ready, mesh.waypoint.clone()));
    let readiness = || async {
        let tcp = tokio::net::TcpStream::connect(ready_addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/healthz/ready")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send.send_request(req).await.unwrap().status()
    };
    assert_eq!(readiness().await, StatusCode::OK);

    mesh.waypoint.drain();
    assert!(mesh.waypoint.is_draining());
    assert_eq!(readiness().await, StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..250 {
        if idle.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(idle.is_closed(), "the idle connection closes");
    assert!(!held.is_finished(), "the held request is still under way");

    // A client that has not seen the waypoint go yet is served, once per HTTP connection.
    let mut late = mesh.http1(&order).await;
    late.ready().await.unwrap();
    let resp = late
        .send_request(request("GET", "/health", "curl/8", ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["connection"], "close");

    mesh.backend.release.notify_one();
    let resp = held.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["connection"],
        "close",
        "its connection ends after it"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"127.77.0.9:8080 got 0 bytes");
    assert!(
        !mesh.served.is_finished(),
        "serving goes on for the drain window"
    );
}

/// An HTTP/1.1 WebSocket handshake for `path` as `agent`.
fn websocket(path: &str, agent: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "api.shop.svc.cluster.local")
        .header("user-agent", agent)
        .header("connection", "Upgrade, x-hop")
        .header("x-hop", "1")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// WebSocket: the handshake is decided as any request is; allowed, the endpoint's `101` is
/// passed on and bytes flow both ways until the client closes, then the request is recorded
/// (status 101, the tunnel's bytes). Denied, the client's connection stays HTTP. Other
/// upgrades go on as plain requests.
#[tokio::test]
async fn websocket_upgrades_are_decided_then_spliced() {
    let mesh = Mesh::start("upgrade", "127.77.0.10").await;
    let web = id("shop", "web");
    let io = mesh.connect(&web, VIP).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());

    // Denied (a scanner's user agent): 403, and the connection goes on as HTTP.
    let (status, body) = status_and_body(&mut send, websocket("/health", "sqlmap/1.7")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    // Not a path `web` may use.
    let (status, _) = status_and_body(&mut send, websocket("/api/v2/payments/process", "ws")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `h2c` is not an upgrade the waypoint takes: a plain request, its upgrade dropped.
    let mut h2c = request("GET", "/health", "curl/8", "");
    h2c.headers_mut()
        .insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
    h2c.headers_mut().insert("upgrade", "h2c".parse().unwrap());
    h2c.headers_mut()
        .insert("http2-settings", "AAMAAABkAAQAAP__".parse().unwrap());
    let (status, body) = status_and_body(&mut send, h2c).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "127.77.0.10:8080 got 0 bytes")
    );

    // `websocket, h2c` is no WebSocket upgrade (Envoy matches the whole value): a plain
    // request.
    let mut listed = websocket("/health", "ws");
    listed
        .headers_mut()
        .insert("upgrade", "websocket, h2c".parse().unwrap());
    let (status, _) = status_and_body(&mut send, listed).await;
    assert_eq!(status, StatusCode::OK);
    // An endpoint that switches to another protocol than asked is refused: a tunnel would
    // carry requests no policy sees.
    let (status, body) = status_and_body(&mut send, websocket("/health?other", "ws")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream protocol error")
    );

    // Allowed: switched, with only the upgrade's own hop-by-hop headers carried.
    send.ready().await.unwrap();
    let mut resp = send.send_request(websocket("/health", "ws")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(resp.headers()["connection"], "upgrade");
    assert_eq!(
        resp.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(resp.headers()["x-saw"], "upgrade websocket -");
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    let mut buf = [0u8; 16];
    for word in [&b"ping"[..], b"again"] {
        io.write_all(word).await.unwrap();
        let mut got = Vec::new();
        while got.len() < word.len() {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the tunnel closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, word.to_ascii_uppercase());
    }
    let metrics = mesh.waypoint.metrics();
    assert!(
        !metrics.encode().contains("response_code=\"101\""),
        "recorded only when the tunnel ends"
    );
    io.shutdown().await.unwrap();
    assert_eq!(
        io.read(&mut buf).await.unwrap(),
        0,
        "the endpoint's side ends too"
    );
    drop(io);
    let mut text = String::new();
    for _ in 0..250 {
        text = metrics.encode();
        if text.contains("response_code=\"101\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = |metric: &str| {
        text.lines()
            .find(|l| l.starts_with(metric) && l.contains("response_code=\"101\""))
            .unwrap_or_else(|| panic!("no {metric} for the 101 in\n{text}"))
            .to_string()
    };
    assert!(line("istio_requests_total{").ends_with(" 1"), "{text}");
    // 9 bytes each way: the bytes moved are the request's and the response's.
    let sum = |m: &str| line(m).rsplit(' ').next().unwrap().to_string();
    assert_eq!(sum("istio_request_bytes_sum{"), "9.0");
    assert_eq!(sum("istio_response_bytes_sum{"), "9.0");
}
