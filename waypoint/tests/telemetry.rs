//! The waypoint's telemetry in process, over real sockets, TLS and HBONE, read the way an
//! operator reads it: Prometheus text from the metrics port, JSON from the admin port, and
//! the access log. Clients with their own identities send requests through the waypoint to
//! an HBONE endpoint standing in for the destination; every count is asserted exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authz::http::{HttpPolicies, HttpStringMatch, Operation, RateLimit, RateLimitPer};
use bytes::Bytes;
use common::{Pki, http1, id, request, status_and_body as send};
use hbone::{ConnectHandler, H2Settings, InboundConnect, SpiffeId, StreamIo};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::workload::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt;
use waypoint::admin::{Admin, LogControl, ReloadableFilter};
use waypoint::metrics::Metrics;
use waypoint::{Target, Targets, Waypoint};

// Endpoints' HBONE is on port 15008, so each test takes a loopback address of its own
// (127.82.0.0/24 is this file's).
const HTTP_VIP: &str = "10.96.0.20:80";
const TCP_VIP: &str = "10.96.0.30:9000";
const EMPTY_VIP: &str = "10.96.0.40:80";
/// No policies: everything is allowed.
const OPEN_VIP: &str = "10.96.0.50:80";

const POLICIES: &[&str] = &[
    r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/order-service"]}}]
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
  - when: [{key: "request.headers[User-Agent]", values: ["*sqlmap*"]}]
"#,
];

fn policies() -> HttpPolicies {
    common::policies(POLICIES)
}

/// The destination: HTTP/1.1 answering with what it saw (`/slow` after a long wait), or, on
/// port 9000, a TCP echo.
struct Backend;

impl ConnectHandler for Backend {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        let authority = req.target.to_string();
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        let io = StreamIo::new(stream);
        if authority.ends_with(":9000") {
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
            return;
        }
        let service = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
            let authority = authority.clone();
            async move {
                if r.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let body = r.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                    "{authority} got {} bytes",
                    body.len()
                )))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await;
    }
}

/// Log lines written while a test runs (its subscriber is the test thread's default).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Mesh {
    pki: Pki,
    waypoint: Arc<Waypoint>,
    waypoint_addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: Arc<Notify>,
    logs: Captured,
    /// Keeps the capturing subscriber installed for the test (current-thread runtime).
    _subscriber: tracing::subscriber::DefaultGuard,
}

fn target(key: &str, vip: &str, endpoint_ip: &str, policies: HttpPolicies) -> Target {
    let vip: SocketAddr = vip.parse().unwrap();
    common::target(key, vip.ip(), endpoint_ip, policies)
}

impl Mesh {
    async fn start(name: &str, endpoint_ip: &str, max_series: usize) -> Mesh {
        let logs = Captured::default();
        let (filter, control) = ReloadableFilter::new("info");
        let writer = logs.clone();
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        let guard = tracing::subscriber::set_default(subscriber);

        let pki = Pki::new(&format!("tel-{name}"));
        pki.backend(endpoint_ip, Arc::new(Backend)).await;

        let metrics = Arc::new(Metrics::new("test-cluster", max_series));
        let waypoint = Waypoint::with_metrics(
            pki.cert(&id("shop", "waypoint")),
            pki.roots.clone(),
            H2Settings::default(),
            metrics,
        );
        let mut tcp_target = target(
            "shop/echo.shop.svc.cluster.local",
            TCP_VIP,
            endpoint_ip,
            HttpPolicies::new(),
        );
        tcp_target.ports = [(9000, 9000)].into();
        let mut open_target = target(
            "shop/open.shop.svc.cluster.local",
            OPEN_VIP,
            endpoint_ip,
            HttpPolicies::new(),
        );
        // One request to /limited per hour.
        open_target.rate_limits = vec![RateLimit {
            source: "shop/limited".into(),
            matches: vec![Operation {
                paths: vec![HttpStringMatch::Istio(authz::StringMatch::Exact(
                    "/limited".into(),
                ))],
                ..Default::default()
            }],
            per: RateLimitPer::Route,
            max_tokens: 1,
            tokens_per_fill: 1,
            fill_interval: Duration::from_secs(3600),
        }];
        waypoint.set_targets(Targets::new([
            target(
                "shop/api.shop.svc.cluster.local",
                HTTP_VIP,
                endpoint_ip,
                policies(),
            ),
            tcp_target,
            target(
                "shop/empty.shop.svc.cluster.local",
                EMPTY_VIP,
                "",
                HttpPolicies::new(),
            ),
            open_target,
        ]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let waypoint_addr = listener.local_addr().unwrap();
        tokio::spawn(waypoint.clone().serve(listener));

        let shutdown = Arc::new(Notify::new());
        let admin = Arc::new(Admin {
            waypoint: waypoint.clone(),
            logs: control as Arc<dyn LogControl>,
            shutdown: shutdown.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = listener.local_addr().unwrap();
        tokio::spawn(waypoint::admin::serve(listener, move |req| {
            admin.clone().handle(req)
        }));
        let m = waypoint.metrics().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        tokio::spawn(waypoint::admin::serve(listener, move |req| {
            waypoint::admin::metrics(m.clone(), req)
        }));
        Mesh {
            pki,
            waypoint,
            waypoint_addr,
            admin_addr,
            metrics_addr,
            shutdown,
            logs,
            _subscriber: guard,
        }
    }

    /// An HBONE stream from `client` to the waypoint for `authority`.
    async fn connect(&self, client: &SpiffeId, authority: &str) -> StreamIo {
        let io = self
            .pki
            .connect(client, self.waypoint_addr, authority)
            .await;
        io.unwrap()
    }

    async fn http1(
        &self,
        client: &SpiffeId,
        vip: &str,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        http1(self.connect(client, vip).await).await
    }

    async fn scrape(&self) -> String {
        let (status, body) = plain(self.metrics_addr, "GET", "/stats/prometheus").await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Scrapes until `metric` (summed over series matching `labels`) reaches `want`, then
    /// returns the scrape; records land when a response ends, just after the client sees it.
    async fn scrape_until(&self, metric: &str, labels: &[(&str, &str)], want: f64) -> String {
        for _ in 0..200 {
            let text = self.scrape().await;
            if sum(&text, metric, labels) >= want {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = self.scrape().await;
        panic!("{metric} {labels:?} never reached {want}:\n{text}");
    }
}

/// A plain HTTP/1.1 request to an operational port.
async fn plain(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The sum of `metric`'s samples whose labels include all of `labels`.
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn allowed_and_denied_requests_are_counted_exactly() {
    let mesh = Mesh::start("counts", "127.82.0.2", 1000).await;
    let order = id("shop", "order-service");
    let mut c = mesh.http1(&order, HTTP_VIP).await;
    const ALLOWED: usize = 3;
    let mut ok_body = String::new();
    for _ in 0..ALLOWED {
        let (status, body) = send(
            &mut c,
            request("POST", "/api/v2/payments/process", "curl/8", "card=4111"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ok_body = body;
    }
    // Denied twice: no ALLOW rule matches, then a DENY policy does.
    let (status, _) = send(
        &mut c,
        request("GET", "/api/v2/payments/process", "curl/8", ""),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&mut c, request("GET", "/health", "sqlmap/1.7", "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // No endpoint at all.
    let mut empty = mesh.http1(&order, EMPTY_VIP).await;
    let (status, body) = send(&mut empty, request("GET", "/", "curl/8", "")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );

    let text = mesh
        .scrape_until("istio_requests_total", &[("reporter", "waypoint")], 6.0)
        .await;
    let who = [
        ("reporter", "waypoint"),
        ("source_workload", "unknown"),
        ("source_canonical_revision", "latest"),
        ("source_workload_namespace", "shop"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/order-service",
        ),
        ("destination_service_namespace", "shop"),
        ("destination_cluster", "test-cluster"),
        ("request_protocol", "http"),
        ("grpc_response_status", ""),
        ("connection_security_policy", "mutual_tls"),
    ];
    let api = [
        ("destination_service", "api.shop.svc.cluster.local"),
        ("destination_service_name", "api"),
    ];
    let ok: Vec<(&str, &str)> = who
        .iter()
        .chain(&api)
        .copied()
        .chain([
            (
                "destination_principal",
                "spiffe://cluster.local/ns/shop/sa/api",
            ),
            ("destination_workload_namespace", "shop"),
            ("response_code", "200"),
            ("response_flags", "-"),
        ])
        .collect();
    let denied: Vec<(&str, &str)> = who
        .iter()
        .chain(&api)
        .copied()
        .chain([
            ("destination_principal", "unknown"),
            ("response_code", "403"),
            ("response_flags", "-"),
        ])
        .collect();
    let no_endpoint: Vec<(&str, &str)> = who
        .iter()
        .copied()
        .chain([
            ("destination_service", "empty.shop.svc.cluster.local"),
            ("response_code", "503"),
            ("response_flags", "UH"),
        ])
        .collect();
    let n = ALLOWED as f64;
    assert_eq!(sum(&text, "istio_requests_total", &ok), n, "{text}");
    assert_eq!(sum(&text, "istio_requests_total", &denied), 2.0, "{text}");
    assert_eq!(
        sum(&text, "istio_requests_total", &no_endpoint),
        1.0,
        "{text}"
    );
    assert_eq!(sum(&text, "istio_requests_total", &[]), 6.0, "{text}");
    // One series per outcome, no more.
    let series = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .count();
    assert_eq!(series, 3, "{text}");

    // Histograms: one sample per request; bytes as the bodies were.
    for h in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        assert_eq!(sum(&text, &format!("{h}_count"), &ok), n, "{h}\n{text}");
        assert_eq!(sum(&text, &format!("{h}_count"), &denied), 2.0, "{h}");
        let mut all = ok.clone();
        all.push(("le", "+Inf"));
        assert_eq!(sum(&text, &format!("{h}_bucket"), &all), n, "{h}");
    }
    assert_eq!(
        sum(&text, "istio_request_bytes_sum", &ok),
        n * "card=4111".len() as f64
    );
    assert_eq!(
        sum(&text, "istio_response_bytes_sum", &ok),
        n * ok_body.len() as f64
    );
    assert_eq!(sum(&text, "istio_request_bytes_sum", &denied), 0.0);
    assert_eq!(
        sum(&text, "istio_response_bytes_sum", &denied),
        2.0 * "RBAC: access denied".len() as f64
    );
    // Envoy's bucket bounds.
    let mut small = ok.clone();
    small.push(("le", "10.0"));
    assert_eq!(sum(&text, "istio_request_bytes_bucket", &small), n);
    small.pop();
    small.push(("le", "5.0"));
    assert_eq!(sum(&text, "istio_request_bytes_bucket", &small), 0.0);

    // The access log: one line per request, denials naming what decided them.
    let logs = mesh.logs.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("access") && l.contains("request complete"))
        .collect();
    assert_eq!(lines.len(), 6, "{logs}");
    assert!(
        lines.iter().any(|l| l.contains("status=403")
            && l.contains("path=/health")
            && l.contains("shop/no-scanners rule 0")),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=403") && l.contains("no ALLOW policy matched")),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l.contains("status=200")
            && l.contains("method=POST")
            && l.contains("bytes_received=9")
            && l.contains("dst.identity=spiffe://cluster.local/ns/shop/sa/api")
            && l.contains("src.identity=spiffe://cluster.local/ns/shop/sa/order-service")),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=503") && l.contains("response_flags=UH")),
        "{logs}"
    );
}

#[tokio::test]
async fn a_tcp_stream_is_counted_with_its_bytes() {
    let mesh = Mesh::start("tcp", "127.82.0.3", 1000).await;
    let mut io = mesh.connect(&id("shop", "batch"), TCP_VIP).await;
    let payload = b"\x00\x01opaque bytes, not HTTP";
    io.write_all(payload).await.unwrap();
    let mut echoed = vec![0; payload.len()];
    io.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, payload);
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    let labels = [
        ("reporter", "waypoint"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/batch",
        ),
        ("destination_service", "echo.shop.svc.cluster.local"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/shop/sa/api",
        ),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let text = mesh
        .scrape_until("istio_tcp_connections_closed_total", &labels, 1.0)
        .await;
    let len = payload.len() as f64;
    assert_eq!(
        sum(&text, "istio_tcp_connections_opened_total", &labels),
        1.0
    );
    assert_eq!(
        sum(&text, "istio_tcp_connections_closed_total", &labels),
        1.0
    );
    assert_eq!(sum(&text, "istio_tcp_received_bytes_total", &labels), len);
    assert_eq!(sum(&text, "istio_tcp_sent_bytes_total", &labels), len);
    assert_eq!(sum(&text, "istio_requests_total", &[]), 0.0, "{text}");
    let logs = mesh.logs.text();
    assert!(
        logs.lines().any(
            |l| l.contains("connection complete") && l.contains("protocol=\"tcp\"")
                || l.contains("connection complete") && l.contains("protocol=tcp")
        ),
        "{logs}"
    );

    // A TCP stream to a target whose policies need HTTP attributes is denied, and counted.
    let mut io = mesh.connect(&id("shop", "batch"), HTTP_VIP).await;
    io.write_all(payload).await.unwrap();
    let mut rest = Vec::new();
    let _ = io.read_to_end(&mut rest).await;
    let denied = [
        ("destination_service", "api.shop.svc.cluster.local"),
        ("request_protocol", "tcp"),
        ("destination_principal", "unknown"),
    ];
    let text = mesh
        .scrape_until("istio_tcp_connections_closed_total", &denied, 1.0)
        .await;
    assert_eq!(
        sum(&text, "istio_tcp_connections_opened_total", &denied),
        1.0
    );
    assert_eq!(sum(&text, "istio_tcp_received_bytes_total", &denied), 0.0);
}

#[tokio::test]
async fn admin_dumps_config_explains_changes_logging_and_quits() {
    let mesh = Mesh::start("admin", "127.82.0.4", 1000).await;
    let (status, dump) = plain(mesh.admin_addr, "GET", "/config_dump").await;
    assert_eq!(status, StatusCode::OK);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["identity"],
        "spiffe://cluster.local/ns/shop/sa/waypoint"
    );
    let api = dump["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "shop/api.shop.svc.cluster.local")
        .expect("the api target");
    assert_eq!(api["vips"][0], "10.96.0.20");
    assert_eq!(
        api["endpoints"][0]["identity"],
        "spiffe://cluster.local/ns/shop/sa/api"
    );
    let names: Vec<&str> = api["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"payments") && names.contains(&"no-scanners"),
        "{names:?}"
    );
    // Tracing: off, then what the tracer in use was made with.
    assert!(dump["tracing"].is_null(), "{}", dump["tracing"]);
    let settings = waypoint::trace::Settings {
        exporter: waypoint::trace::Exporter::OtlpGrpc("127.0.0.1:4317".parse().unwrap()),
        sampling: 5.0,
        max_tag_length: 128,
    };
    mesh.waypoint
        .set_tracer(waypoint::trace::Tracer::new(settings, Default::default()));
    let (_, dump) = plain(mesh.admin_addr, "GET", "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["tracing"],
        serde_json::json!({
            "exporter": "otlp_grpc",
            "collector": "127.0.0.1:4317",
            "sampling": 5.0,
            "maxTagLength": 128,
        })
    );

    // /explain: the same decisions the data path makes, table-driven.
    let order = "spiffe%3A%2F%2Fcluster.local%2Fns%2Fshop%2Fsa%2Forder-service";
    let rows = [
        (
            format!(
                "dst={HTTP_VIP}&method=POST&path=/api/v2/payments/process&src_identity={order}"
            ),
            "allow",
            "shop/payments",
        ),
        (
            format!(
                "dst={HTTP_VIP}&method=POST&path=/api/v2/payments/process&src_principal=cluster.local/ns/shop/sa/order-service"
            ),
            "allow",
            "shop/payments",
        ),
        (
            format!("dst={HTTP_VIP}&method=GET&path=/health&header=User-Agent:sqlmap/1"),
            "deny",
            "shop/no-scanners",
        ),
        (
            format!(
                "dst={HTTP_VIP}&method=POST&path=/api/v2/payments/process&src_namespace=shop&src_service_account=web"
            ),
            "deny",
            "",
        ),
    ];
    for (q, verdict, by) in rows {
        let (status, body) = plain(mesh.admin_addr, "GET", &format!("/explain?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["verdict"], verdict, "{q}: {body}");
        if by.is_empty() {
            assert!(v["decidedBy"].is_null(), "{q}: {body}");
        } else {
            assert_eq!(v["decidedBy"]["policy"], by, "{q}: {body}");
        }
    }
    let (status, _) = plain(mesh.admin_addr, "GET", "/explain?dst=10.1.1.1:80").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // /logging: the filter changes at run time.
    assert!(!tracing::enabled!(tracing::Level::DEBUG));
    let (status, level) = plain(mesh.admin_addr, "GET", "/logging").await;
    assert_eq!((status, level.as_str()), (StatusCode::OK, "info\n"));
    let (status, level) = plain(mesh.admin_addr, "POST", "/logging?level=debug").await;
    assert_eq!((status, level.as_str()), (StatusCode::OK, "debug\n"));
    assert!(tracing::enabled!(tracing::Level::DEBUG));
    let (_, level) = plain(mesh.admin_addr, "GET", "/logging").await;
    assert_eq!(level, "debug\n");
    let (status, _) = plain(
        mesh.admin_addr,
        "POST",
        "/logging?level=%5Bnot%20a%20filter",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, level) = plain(mesh.admin_addr, "GET", "/logging").await;
    assert_eq!(level, "debug\n", "a bad filter leaves the last good one");
    let (status, _) = plain(mesh.admin_addr, "GET", "/quitquitquit").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // /quitquitquit: the binary's shutdown is notified.
    let (status, _) = plain(mesh.admin_addr, "POST", "/quitquitquit").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(1), mesh.shutdown.notified())
        .await
        .expect("shutdown notified");
    let (status, _) = plain(mesh.metrics_addr, "GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_series_cap_holds() {
    const CAP: usize = 2;
    let mesh = Mesh::start("cap", "127.82.0.5", CAP).await;
    let callers = ["a", "b", "c", "d", "e"];
    for sa in callers {
        let mut c = mesh.http1(&id("shop", sa), HTTP_VIP).await;
        let (status, _) = send(&mut c, request("GET", "/health", "curl/8", "")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let text = mesh
        .scrape_until("istio_requests_total", &[], callers.len() as f64)
        .await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(series.len(), CAP + 1, "cap plus the overflow set: {text}");
    assert_eq!(
        sum(
            &text,
            "istio_requests_total",
            &[("source_principal", "unknown")]
        ),
        (callers.len() - CAP) as f64
    );
    assert_eq!(
        sum(
            &text,
            "waypoint_metric_series_overflow_total",
            &[("kind", "http")]
        ),
        (callers.len() - CAP) as f64
    );
    assert_eq!(
        sum(&text, "istio_request_duration_milliseconds_count", &[]),
        callers.len() as f64
    );
    let logs = mesh.logs.text();
    assert_eq!(
        logs.matches("metric series cap reached").count(),
        1,
        "logged once: {logs}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_response_is_dc() {
    let mesh = Mesh::start("dc", "127.82.0.6", 1000).await;
    let io = TokioIo::new(mesh.connect(&id("shop", "web"), OPEN_VIP).await);
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("http://open.shop.svc.cluster.local/slow")
        .body(Full::new(Bytes::new()))
        .unwrap();
    // Given up on: the client resets the stream, and the waypoint drops the request.
    let waited = tokio::time::timeout(Duration::from_millis(300), send.send_request(req)).await;
    assert!(waited.is_err(), "/slow answered early");
    let left = [
        ("destination_service", "open.shop.svc.cluster.local"),
        ("source_principal", "spiffe://cluster.local/ns/shop/sa/web"),
        ("response_code", "0"),
        ("response_flags", "DC"),
    ];
    let text = mesh.scrape_until("istio_requests_total", &left, 1.0).await;
    assert_eq!(sum(&text, "istio_requests_total", &[]), 1.0, "{text}");
    assert_eq!(
        sum(&text, "istio_request_duration_milliseconds_count", &left),
        1.0
    );
    let logs = mesh.logs.text();
    assert!(
        logs.lines().any(|l| l.contains("request complete")
            && l.contains("path=/slow")
            && l.contains("status=0")
            && l.contains("response_flags=DC")),
        "{logs}"
    );
}

#[tokio::test]
async fn a_rate_limited_request_is_counted_with_rl() {
    let mesh = Mesh::start("ratelimit", "127.82.0.7", 100).await;
    let mut c = mesh.http1(&id("shop", "web"), OPEN_VIP).await;
    let (status, _) = send(&mut c, request("GET", "/limited", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&mut c, request("GET", "/limited", "curl/8", "")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "local_rate_limited")
    );
    let text = mesh.scrape_until("istio_requests_total", &[], 2.0).await;
    let limited = [("response_code", "429"), ("response_flags", "RL")];
    assert_eq!(sum(&text, "istio_requests_total", &limited), 1.0, "{text}");
    assert_eq!(
        sum(
            &text,
            "istio_requests_total",
            &[("response_code", "200"), ("response_flags", "-")]
        ),
        1.0,
        "{text}"
    );
    let logs = mesh.logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("request complete") && l.contains("status=429"))
        .unwrap_or_else(|| panic!("no 429 access line: {logs}"));
    assert!(
        line.contains("shop/limited") && line.contains("RL"),
        "{line}"
    );
}

/// An `Address` resource for one workload, as meshd sends it.
fn workload_address(uid: &str, ip: &str, ns: &str, sa: &str, name: &str) -> (String, Address) {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let w = proto::workload::Workload {
        uid: uid.into(),
        name: format!("{name}-5d8f-x2x"),
        namespace: ns.into(),
        addresses: vec![ip.octets().to_vec()],
        trust_domain: "cluster.local".into(),
        service_account: sa.into(),
        workload_name: name.into(),
        canonical_name: name.into(),
        canonical_revision: "v3".into(),
        cluster_id: "test-cluster".into(),
        ..Default::default()
    };
    let address = Address {
        r#type: Some(proto::workload::address::Type::Workload(w)),
    };
    (uid.into(), address)
}

/// Workloads the waypoint learned from `Address` resources name both ends of a request, but
/// only a peer whose certificate proves the identity the workload at its address has.
#[tokio::test]
async fn known_workloads_name_the_source_and_destination() {
    let endpoint_ip = "127.82.0.8";
    let mesh = Mesh::start("peers", endpoint_ip, 1000).await;
    // Clients dial the waypoint from 127.0.0.1: that address is `order-service`'s pod.
    let rejected = mesh.waypoint.peers().apply(
        &[
            workload_address("uid-order", "127.0.0.1", "shop", "order-service", "order"),
            workload_address("uid-api", endpoint_ip, "shop", "api", "api-v3"),
        ],
        &[],
    );
    assert!(rejected.is_empty(), "{rejected:?}");

    let order = id("shop", "order-service");
    let mut c = mesh.http1(&order, OPEN_VIP).await;
    let (status, body) = send(&mut c, request("GET", "/", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Another identity from the same address is not order-service's pod.
    let mut other = mesh.http1(&id("shop", "checkout-service"), OPEN_VIP).await;
    let (status, body) = send(&mut other, request("GET", "/", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let destination = [
        ("destination_workload", "api-v3"),
        ("destination_canonical_service", "api-v3"),
        ("destination_canonical_revision", "v3"),
        ("destination_workload_namespace", "shop"),
    ];
    let known: Vec<(&str, &str)> = [
        ("source_workload", "order"),
        ("source_canonical_service", "order"),
        ("source_canonical_revision", "v3"),
        ("source_workload_namespace", "shop"),
        ("source_cluster", "test-cluster"),
        ("source_app", "unknown"),
    ]
    .into_iter()
    .chain(destination)
    .collect();
    let unproven: Vec<(&str, &str)> = [
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/checkout-service",
        ),
        ("source_workload", "unknown"),
        ("source_canonical_revision", "latest"),
        ("source_cluster", "unknown"),
    ]
    .into_iter()
    .chain(destination)
    .collect();
    let text = mesh
        .scrape_until("istio_requests_total", &[("reporter", "waypoint")], 2.0)
        .await;
    assert_eq!(sum(&text, "istio_requests_total", &known), 1.0, "{text}");
    assert_eq!(sum(&text, "istio_requests_total", &unproven), 1.0, "{text}");

    // Removed: the names go with it; the next connection's requests are unknown again.
    mesh.waypoint
        .peers()
        .apply(&[], &["uid-order".to_string(), "uid-api".to_string()]);
    let mut c = mesh.http1(&order, OPEN_VIP).await;
    let (status, _) = send(&mut c, request("GET", "/", "curl/8", "")).await;
    assert_eq!(status, StatusCode::OK);
    let gone = [
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/order-service",
        ),
        ("source_workload", "unknown"),
        ("destination_workload", "unknown"),
    ];
    let text = mesh.scrape_until("istio_requests_total", &gone, 1.0).await;
    assert_eq!(sum(&text, "istio_requests_total", &known), 1.0, "{text}");
}
