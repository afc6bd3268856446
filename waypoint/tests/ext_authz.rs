//! AuthorizationPolicy CUSTOM at the waypoint, in process over real sockets: a client CONNECTs
//! over HBONE, the waypoint asks an external authorizer (an HTTP fixture or a gRPC fixture
//! serving `envoy.service.auth.v3.Authorization/Check`) about each request the CUSTOM policy
//! matches, and forwards what it allows to the endpoint with the authorizer's headers.
//!
//! Both fixtures decide by the request's `x-mode` header: `allow`, `deny`, or `slow` (answers
//! after a second, past the providers' 300 ms timeout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authz::http::HttpPolicies;
use bytes::Bytes;
use common::{Pki, http1, id, target};
use hbone::{ConnectHandler, H2Settings, InboundConnect, StreamIo};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proto::core::{HeaderValue as WireHeader, HeaderValueOption};
use proto::ext_authz::authorization_server::{Authorization, AuthorizationServer};
use proto::ext_authz::check_response::HttpResponse;
use proto::ext_authz::{CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waypoint::ext_authz::{BodyInCheck, HeaderPattern, HttpSettings, Protocol, Provider};
use waypoint::{Targets, Waypoint};

const VIP: &str = "10.96.0.30:80";
const TIMEOUT: Duration = Duration::from_millis(300);
// Endpoints' HBONE is on port 15008, so each test takes a loopback address of its own
// (127.80.0.0/24 is this file's).

/// CUSTOM for `/api/*`; `/health` is never checked.
const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: CUSTOM
  provider: {name: sample-ext-authz}
  rules:
  - to: [{operation: {paths: ["/api/*"]}}]
"#;

/// CUSTOM for TCP connections to port 9000 (no HTTP attributes: a connection can match).
const TCP_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-tcp, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: api}]
  action: CUSTOM
  provider: {name: sample-ext-authz}
  rules:
  - to: [{operation: {ports: ["9000"]}}]
"#;

fn policies() -> HttpPolicies {
    common::policies(&[POLICY, TCP_POLICY])
}

/// What an authorizer fixture saw.
#[derive(Default)]
struct Seen {
    checks: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    last: Mutex<Option<Check>>,
}

/// One check as the authorizer got it.
#[derive(Clone, Debug)]
struct Check {
    path: String,
    host: String,
    mode: String,
    /// Whether the request's `cookie` came along.
    cookie: bool,
    /// The source principal (gRPC only).
    principal: String,
    /// The request body shown, and `x-envoy-auth-partial-body`.
    body: Vec<u8>,
    partial: Option<String>,
}

fn mode(headers: &HeaderMap) -> String {
    headers
        .get("x-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// An `envoyExtAuthzHttp` authorizer.
async fn http_authorizer() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            let service = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                let s = s.clone();
                async move {
                    s.checks.fetch_add(1, Ordering::SeqCst);
                    let h = r.headers();
                    let host = h.get("host").unwrap().to_str().unwrap().to_string();
                    let mode = mode(h);
                    let mut check = Check {
                        path: r.uri().to_string(),
                        host,
                        mode: mode.clone(),
                        cookie: h.contains_key("cookie"),
                        principal: String::new(),
                        body: Vec::new(),
                        partial: header(h, "x-envoy-auth-partial-body"),
                    };
                    check.body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
                    *s.last.lock().unwrap() = Some(check);
                    let resp = match mode.as_str() {
                        "allow" => Response::builder()
                            .header("x-auth-user", "alice")
                            .header("x-trace", "t-1")
                            .header("x-not-listed", "dropped"),
                        "deny" => Response::builder()
                            .status(StatusCode::UNAUTHORIZED)
                            .header("x-reason", "bad-token")
                            .header("x-not-listed", "dropped"),
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            Response::builder()
                        }
                        _ => Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR),
                    };
                    let body = match mode.as_str() {
                        "deny" => "denied by the fixture",
                        _ => "",
                    };
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
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

struct GrpcAuthorizer(Arc<Seen>);

fn option(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(WireHeader {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: 0,
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        self.0.checks.fetch_add(1, Ordering::SeqCst);
        let attrs = request.into_inner().attributes.unwrap_or_default();
        let principal = attrs.source.map(|s| s.principal).unwrap_or_default();
        // A connection's check has no HTTP request: `web` is allowed, anyone else denied.
        let mode = match &attrs.request {
            None if principal.ends_with("/sa/web") => "allow".to_string(),
            None => "deny".to_string(),
            Some(_) => String::new(),
        };
        let http = attrs.request.and_then(|r| r.http).unwrap_or_default();
        let mode = http.headers.get("x-mode").cloned().unwrap_or(mode);
        *self.0.last.lock().unwrap() = Some(Check {
            path: http.path.clone(),
            host: http.host.clone(),
            mode: mode.clone(),
            cookie: http.headers.contains_key("cookie"),
            principal,
            body: match http.raw_body.is_empty() {
                true => http.body.clone().into_bytes(),
                false => http.raw_body.clone(),
            },
            partial: http.headers.get("x-envoy-auth-partial-body").cloned(),
        });
        let status = |code| {
            Some(proto::rpc::Status {
                code,
                ..Default::default()
            })
        };
        let answer = match mode.as_str() {
            "allow" => CheckResponse {
                status: status(0),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![option("x-auth-user", "bob")],
                    headers_to_remove: vec!["cookie".into()],
                    response_headers_to_add: vec![option("x-trace", "t-2")],
                })),
            },
            "deny" => CheckResponse {
                // PERMISSION_DENIED
                status: status(7),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(proto::types::HttpStatus { code: 401 }),
                    headers: vec![option("x-reason", "bad-token")],
                    body: "denied by the fixture".into(),
                })),
            },
            "slow" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                CheckResponse::default()
            }
            _ => return Err(tonic::Status::internal("unknown mode")),
        };
        Ok(tonic::Response::new(answer))
    }
}

/// An `envoyExtAuthzGrpc` authorizer.
async fn grpc_authorizer() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let server = AuthorizationServer::new(GrpcAuthorizer(seen.clone()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            s.connections.fetch_add(1, Ordering::SeqCst);
            let server = server.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(server))
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Http,
    Grpc,
}

fn provider(kind: Kind, addr: SocketAddr, fail_open: bool, status_on_error: u16) -> Provider {
    let p = |s: &str| HeaderPattern::parse(s).unwrap();
    let protocol = match kind {
        Kind::Http => Protocol::Http(HttpSettings {
            path_prefix: "/authz".into(),
            include_request_headers: vec![p("x-mode")],
            additional_headers: Vec::new(),
            to_upstream_on_allow: vec![p("x-auth-*")],
            to_downstream_on_deny: vec![p("x-reason")],
            to_downstream_on_allow: vec![p("x-trace")],
        }),
        Kind::Grpc => Protocol::Grpc,
    };
    Provider::new(
        "sample-ext-authz".into(),
        protocol,
        addr.to_string(),
        TIMEOUT,
        fail_open,
        StatusCode::from_u16(status_on_error).unwrap(),
    )
}

/// The destination: says which user the waypoint told it about, and whether a cookie came; on
/// port 9000, a TCP echo.
struct Backend;

impl ConnectHandler for Backend {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        let echo = req.target.to_string().ends_with(":9000");
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        if echo {
            let (mut r, mut w) = tokio::io::split(StreamIo::new(stream));
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
            return;
        }
        let service = hyper::service::service_fn(|r: Request<hyper::body::Incoming>| async move {
            let user = r
                .headers()
                .get_all("x-auth-user")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(",");
            let cookie = r.headers().contains_key("cookie");
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let mut answer = format!("user={user} cookie={cookie}");
            if !body.is_empty() {
                answer.push_str(&format!(" body={}", String::from_utf8_lossy(&body)));
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
        });
        let io = TokioIo::new(StreamIo::new(stream));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

struct Mesh {
    pki: Pki,
    waypoint_addr: SocketAddr,
}

impl Mesh {
    /// The waypoint serving `api`, whose CUSTOM policy asks `provider` (none: not configured).
    async fn start(name: &str, endpoint_ip: &str, provider: Option<Provider>) -> Mesh {
        let pki = Pki::new(&format!("ext-{name}"));
        pki.backend(endpoint_ip, Arc::new(Backend)).await;
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
        api.ports.insert(9000, 9000);
        api.ext_authz = provider
            .map(Arc::new)
            .into_iter()
            .flat_map(|p| ["shop/ext", "shop/ext-tcp"].map(|k| (k.to_string(), p.clone())))
            .collect();
        waypoint.set_targets(Targets::new([api]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let waypoint_addr = listener.local_addr().unwrap();
        tokio::spawn(waypoint.serve(listener));
        Mesh { pki, waypoint_addr }
    }

    async fn client(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let io = self
            .pki
            .connect(&id("shop", "web"), self.waypoint_addr, VIP)
            .await;
        http1(io.unwrap()).await
    }

    /// Opaque bytes through a TCP connection to port 9000 from `client`: what came back.
    async fn echo(&self, client: &str) -> Vec<u8> {
        let vip = VIP.replace(":80", ":9000");
        let mut io = self
            .pki
            .connect(&id("shop", client), self.waypoint_addr, &vip)
            .await
            .unwrap();
        let payload = b"\x00\x01opaque bytes, not HTTP";
        let mut back = Vec::new();
        let exchange = async {
            io.write_all(payload).await?;
            io.shutdown().await?;
            io.read_to_end(&mut back).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), exchange).await;
        back
    }

    /// One request on a fresh connection: status, body, and the response's headers.
    async fn get(&self, path: &str, mode: &str) -> (StatusCode, String, HeaderMap) {
        self.post(path, mode, "", false).await
    }

    /// As `get`, with a body (sent chunked, or with its length).
    async fn post(
        &self,
        path: &str,
        mode: &str,
        body: &'static str,
        chunked: bool,
    ) -> (StatusCode, String, HeaderMap) {
        let mut send = self.client().await;
        let mut req = Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .uri(path)
            .header("host", "api.shop.svc.cluster.local")
            .header("x-mode", mode)
            .header("cookie", "session=1")
            .header("x-auth-user", "forged");
        if chunked {
            req = req.header("transfer-encoding", "chunked");
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), headers)
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn an_allowing_authorizer_lets_the_request_through_with_its_headers() {
    for (i, kind) in [Kind::Http, Kind::Grpc].into_iter().enumerate() {
        let (addr, seen) = match kind {
            Kind::Http => http_authorizer().await,
            Kind::Grpc => grpc_authorizer().await,
        };
        let ip = format!("127.80.0.{}", 10 + i);
        let mesh = Mesh::start(
            &format!("allow-{i}"),
            &ip,
            Some(provider(kind, addr, false, 403)),
        )
        .await;
        let (status, body, headers) = mesh.get("/api/orders?id=1", "allow").await;
        assert_eq!(status, StatusCode::OK, "{kind:?}: {body}");
        let Check {
            path,
            host,
            mode,
            cookie,
            principal,
            ..
        } = seen.last.lock().unwrap().clone().unwrap();
        assert_eq!(host, "api.shop.svc.cluster.local", "{kind:?}");
        assert_eq!(mode, "allow", "{kind:?}");
        match kind {
            Kind::Http => {
                // The authorizer's user replaces the forged one; cookies were not asked for.
                assert_eq!(body, "user=alice cookie=true");
                assert_eq!(path, "/authz/api/orders?id=1");
                assert!(!cookie, "only the listed headers go to an HTTP authorizer");
                assert_eq!(header(&headers, "x-trace").as_deref(), Some("t-1"));
            }
            Kind::Grpc => {
                // ... and the gRPC authorizer removed the cookie.
                assert_eq!(body, "user=bob cookie=false");
                assert_eq!(path, "/api/orders?id=1");
                assert!(cookie, "a gRPC authorizer gets every header");
                assert_eq!(principal, "spiffe://cluster.local/ns/shop/sa/web");
                assert_eq!(header(&headers, "x-trace").as_deref(), Some("t-2"));
            }
        }

        // The next check goes over the same connection.
        let (status, _, _) = mesh.get("/api/orders?id=2", "allow").await;
        assert_eq!(status, StatusCode::OK, "{kind:?}");
        assert_eq!(seen.checks.load(Ordering::SeqCst), 2, "{kind:?}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "{kind:?}");

        // Outside the CUSTOM policy's paths nobody is asked.
        let before = seen.checks.load(Ordering::SeqCst);
        let (status, _, _) = mesh.get("/health", "deny").await;
        assert_eq!(status, StatusCode::OK, "{kind:?}");
        assert_eq!(seen.checks.load(Ordering::SeqCst), before, "{kind:?}");
    }
}

#[tokio::test]
async fn a_denying_authorizer_answers_the_client() {
    for (i, kind) in [Kind::Http, Kind::Grpc].into_iter().enumerate() {
        let (addr, _seen) = match kind {
            Kind::Http => http_authorizer().await,
            Kind::Grpc => grpc_authorizer().await,
        };
        let ip = format!("127.80.0.{}", 20 + i);
        let mesh = Mesh::start(
            &format!("deny-{i}"),
            &ip,
            Some(provider(kind, addr, true, 403)),
        )
        .await;
        let (status, body, headers) = mesh.get("/api/orders", "deny").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind:?}");
        assert_eq!(body, "denied by the fixture", "{kind:?}");
        assert_eq!(
            header(&headers, "x-reason").as_deref(),
            Some("bad-token"),
            "{kind:?}"
        );
        assert_eq!(header(&headers, "x-not-listed"), None, "{kind:?}");
    }
}

#[tokio::test]
async fn a_failed_check_follows_fail_open_and_status_on_error() {
    let mut n = 30;
    for kind in [Kind::Http, Kind::Grpc] {
        let (addr, _seen) = match kind {
            Kind::Http => http_authorizer().await,
            Kind::Grpc => grpc_authorizer().await,
        };
        let down = closed_port().await;
        // (authorizer, mode, fail open, status on error, want)
        let rows = [
            (addr, "slow", true, 403, StatusCode::OK),
            (addr, "slow", false, 503, StatusCode::SERVICE_UNAVAILABLE),
            (down, "allow", true, 403, StatusCode::OK),
            (down, "allow", false, 403, StatusCode::FORBIDDEN),
        ];
        for (authorizer, mode, fail_open, on_error, want) in rows {
            n += 1;
            let ip = format!("127.80.0.{n}");
            let p = provider(kind, authorizer, fail_open, on_error);
            let mesh = Mesh::start(&format!("fail-{n}"), &ip, Some(p)).await;
            let started = std::time::Instant::now();
            let (status, body, _) = mesh.get("/api/orders", mode).await;
            let row = format!("{kind:?} {mode} fail_open={fail_open} on_error={on_error}");
            assert_eq!(status, want, "{row}: {body}");
            if want == StatusCode::OK {
                assert_eq!(body, "user=forged cookie=true", "{row}: sent on untouched");
            }
            assert!(
                started.elapsed() < Duration::from_millis(900),
                "{row}: the timeout held"
            );
        }
    }
}

#[tokio::test]
async fn a_custom_policy_without_a_provider_denies() {
    let mesh = Mesh::start("none", "127.80.0.50", None).await;
    let (status, body, _) = mesh.get("/api/orders", "allow").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "RBAC: access denied");
    let (status, _, _) = mesh.get("/health", "allow").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_is_shown_to_the_authorizer_up_to_its_limit() {
    for (i, kind) in [Kind::Http, Kind::Grpc].into_iter().enumerate() {
        let (addr, seen) = match kind {
            Kind::Http => http_authorizer().await,
            Kind::Grpc => grpc_authorizer().await,
        };
        let shown = |allow_partial| {
            provider(kind, addr, false, 403).with_body(Some(BodyInCheck {
                max_bytes: 8,
                allow_partial,
                // gRPC: as bytes (raw_body); the text form is the unit tests'.
                pack_as_bytes: matches!(kind, Kind::Grpc),
            }))
        };
        let ip = format!("127.80.0.{}", 60 + i);
        let mesh = Mesh::start(&format!("body-{i}"), &ip, Some(shown(true))).await;
        // (body, chunked, what the authorizer sees, partial)
        let rows = [
            ("0123", false, "0123", "false"),
            ("01234567", true, "01234567", "false"),
            ("0123456789", false, "01234567", "true"),
            ("0123456789", true, "01234567", "true"),
        ];
        for (sent, chunked, want, partial) in rows {
            let row = format!("{kind:?} {sent:?} chunked={chunked}");
            let (status, body, _) = mesh.post("/api/pay", "allow", sent, chunked).await;
            assert_eq!(status, StatusCode::OK, "{row}: {body}");
            assert!(
                body.ends_with(&format!(" body={sent}")),
                "{row}: upstream got {body}"
            );
            let check = seen.last.lock().unwrap().clone().unwrap();
            assert_eq!(String::from_utf8_lossy(&check.body), want, "{row}");
            assert_eq!(check.partial.as_deref(), Some(partial), "{row}");
        }
        // A request without a body: the check has none, nor the flag (as in Envoy).
        let (status, _, _) = mesh.get("/api/pay", "allow").await;
        assert_eq!(status, StatusCode::OK, "{kind:?}");
        let check = seen.last.lock().unwrap().clone().unwrap();
        assert_eq!((check.body.len(), check.partial.as_deref()), (0, None));

        // No partial bodies: a longer one is refused without a check, declared or not.
        let ip = format!("127.80.0.{}", 62 + i);
        let mesh = Mesh::start(&format!("whole-{i}"), &ip, Some(shown(false))).await;
        let before = seen.checks.load(Ordering::SeqCst);
        for chunked in [false, true] {
            let (status, body, _) = mesh.post("/api/pay", "allow", "0123456789", chunked).await;
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{kind:?} chunked={chunked}"
            );
            assert_eq!(body, "Payload Too Large");
        }
        assert_eq!(
            seen.checks.load(Ordering::SeqCst),
            before,
            "{kind:?}: nobody asked"
        );
        let (status, body, _) = mesh.post("/api/pay", "allow", "01234567", true).await;
        assert_eq!(status, StatusCode::OK, "{kind:?}: at the limit: {body}");
    }
}

#[tokio::test]
async fn a_tcp_connection_is_asked_about_by_a_grpc_authorizer() {
    let (grpc, seen) = grpc_authorizer().await;
    let (http, http_seen) = http_authorizer().await;
    let down = closed_port().await;
    let sent = b"\x00\x01opaque bytes, not HTTP".to_vec();
    // (provider, client, let through)
    let rows = [
        (provider(Kind::Grpc, grpc, false, 403), "web", true),
        (provider(Kind::Grpc, grpc, false, 403), "batch", false),
        // An HTTP authorizer cannot answer for a connection: refused, fail open or not.
        (provider(Kind::Http, http, true, 403), "web", false),
        (provider(Kind::Grpc, down, true, 403), "web", true),
        (provider(Kind::Grpc, down, false, 403), "web", false),
    ];
    for (n, (p, client, through)) in rows.into_iter().enumerate() {
        let row = format!("{:?} {client} fail_open={}", p.address, p.fail_open);
        let mesh = Mesh::start(
            &format!("tcp-{n}"),
            &format!("127.80.0.{}", 70 + n),
            Some(p),
        )
        .await;
        let back = mesh.echo(client).await;
        assert_eq!(back == sent, through, "{row}: got {back:?}");
        assert!(through || back.is_empty(), "{row}: nothing gets through");
    }
    let last = seen.last.lock().unwrap().clone().unwrap();
    assert_eq!(last.principal, "spiffe://cluster.local/ns/shop/sa/batch");
    assert_eq!(
        (last.path.as_str(), last.host.as_str()),
        ("", ""),
        "no HTTP request"
    );
    assert_eq!(seen.checks.load(Ordering::SeqCst), 2);
    assert_eq!(http_seen.checks.load(Ordering::SeqCst), 0);
}

/// A client that stops sending its body: the check is not made, and it gets 408 once the
/// provider's timeout has passed.
#[tokio::test]
async fn a_body_that_does_not_come_times_out() {
    let (addr, seen) = grpc_authorizer().await;
    let p = provider(Kind::Grpc, addr, true, 403).with_body(Some(BodyInCheck {
        max_bytes: 8,
        allow_partial: false,
        pack_as_bytes: false,
    }));
    let mesh = Mesh::start("body-late", "127.80.0.80", Some(p)).await;
    let mut io = mesh
        .pki
        .connect(&id("shop", "web"), mesh.waypoint_addr, VIP)
        .await
        .unwrap();
    io.write_all(
        b"POST /api/pay HTTP/1.1\r\nhost: api.shop.svc.cluster.local\r\nx-mode: allow\r\n\
          content-length: 6\r\n\r\n01",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= TIMEOUT - Duration::from_millis(50),
        "{answer}"
    );
    assert_eq!(
        seen.checks.load(Ordering::SeqCst),
        0,
        "fail open or not: no check"
    );
}
