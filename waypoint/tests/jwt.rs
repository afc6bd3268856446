//! RequestAuthentication at the waypoint, in process: a JWKS server (plain HTTP, keys made by
//! the test), tokens signed with them, and requests through the waypoint to an endpoint that
//! echoes the headers it received. Istio's semantics: a bad token is refused before policy
//! (401, 403 for its audience), no token leaves the decision to policy, and an accepted one is
//! the request principal `<iss>/<sub>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authz::http::HttpPolicies;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::{Pki, http1, id, target};
use hbone::{ConnectHandler, H2Settings, InboundConnect, StreamIo};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::net::TcpListener;
use waypoint::jwt::{
    FetchSettings, JwtRule, KeySet, KeySource, Location, WELL_KNOWN, document_uri,
};
use waypoint::{Targets, Waypoint};

const VIP: &str = "10.96.0.20:80";
const ISSUER: &str = "https://idp.test";
// Endpoints' HBONE is on port 15008, so each test takes a loopback address of its own
// (127.81.0.0/24 is this file's).

/// An ES256 key: its signing half and its JWK.
struct TestKey {
    kid: String,
    signing: EncodingKey,
    jwk: serde_json::Value,
}

impl TestKey {
    fn new(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        assert_eq!(
            (point.len(), point[0]),
            (65, 4),
            "an uncompressed P-256 point"
        );
        TestKey {
            kid: kid.into(),
            signing: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            }),
        }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"iss": ISSUER, "sub": sub, "aud": ["shop"], "exp": now() + 600, "team": "payments"})
}

/// Serves a JWKS that the test can change at any path, and an OpenID discovery document at
/// any path ending in `/.well-known/openid-configuration` (404 while there is none); records
/// the paths asked for.
struct JwksServer {
    body: Mutex<String>,
    discovery: Mutex<Option<String>>,
    paths: Mutex<Vec<String>>,
    addr: SocketAddr,
}

impl JwksServer {
    async fn start(body: String) -> Arc<JwksServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Arc::new(JwksServer {
            body: Mutex::new(body),
            discovery: Mutex::new(None),
            paths: Mutex::new(Vec::new()),
            addr: listener.local_addr().unwrap(),
        });
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let path = req.uri().path().to_string();
                        s.paths.lock().unwrap().push(path.clone());
                        let body = match path.ends_with(WELL_KNOWN) {
                            true => s.discovery.lock().unwrap().clone(),
                            false => Some(s.body.lock().unwrap().clone()),
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(
                            body.clone().unwrap_or_default(),
                        )));
                        if body.is_none() {
                            *resp.status_mut() = StatusCode::NOT_FOUND;
                        }
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        server
    }

    fn set(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    fn set_discovery(&self, doc: &str) {
        *self.discovery.lock().unwrap() = Some(doc.to_string());
    }

    fn uri(&self) -> http::Uri {
        format!("http://{}/jwks", self.addr).parse().unwrap()
    }

    /// Key set fetches.
    fn fetches(&self) -> usize {
        let paths = self.paths.lock().unwrap();
        paths.iter().filter(|p| !p.ends_with(WELL_KNOWN)).count()
    }

    /// Discovery document fetches, by path.
    fn discoveries(&self) -> Vec<String> {
        let paths = self.paths.lock().unwrap();
        paths
            .iter()
            .filter(|p| p.ends_with(WELL_KNOWN))
            .cloned()
            .collect()
    }
}

/// The destination: answers with the request headers the test looks at.
struct Echo;

impl ConnectHandler for Echo {
    async fn handle(self: Arc<Self>, req: InboundConnect) {
        let stream = req.responder.accept(HeaderMap::new()).unwrap();
        let service = hyper::service::service_fn(|r: Request<hyper::body::Incoming>| async move {
            let seen: Vec<String> = ["authorization", "x-jwt-payload", "x-sub", "x-team"]
                .iter()
                .map(|h| {
                    let v = r.headers().get(*h).map(|v| v.to_str().unwrap_or("?"));
                    format!("{h}={}", v.unwrap_or("-"))
                })
                .collect();
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(seen.join(" ")))))
        });
        let io = TokioIo::new(StreamIo::new(stream));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// `/public` for anyone, `/private` for alice's token only.
fn policies() -> HttpPolicies {
    let yaml = format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: jwt, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: api}}]
  action: ALLOW
  rules:
  - to: [{{operation: {{paths: ["/public"]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
    to: [{{operation: {{paths: ["/private"]}}}}]
"#
    );
    [
        authz::translate::http_authorization_policy(&yaml, "istio-system")
            .unwrap()
            .policy,
    ]
    .into_iter()
    .collect()
}

fn rule(keys: KeySource) -> JwtRule {
    JwtRule {
        source: "shop/jwt".into(),
        issuer: ISSUER.into(),
        audiences: vec!["shop".into()],
        keys,
        locations: Location::defaults(),
        output_payload_to_header: Some(http::HeaderName::from_static("x-jwt-payload")),
        forward_original_token: false,
        claim_to_headers: vec![
            (http::HeaderName::from_static("x-sub"), "sub".into()),
            (http::HeaderName::from_static("x-team"), "team".into()),
        ],
    }
}

struct Mesh {
    pki: Pki,
    waypoint_addr: SocketAddr,
}

impl Mesh {
    async fn start(name: &str, endpoint_ip: &str, jwt: Vec<JwtRule>, fetch: FetchSettings) -> Mesh {
        let pki = Pki::new(&format!("jwt-{name}"));
        pki.backend(endpoint_ip, Arc::new(Echo)).await;
        let waypoint = Waypoint::with_jwks(
            pki.cert(&id("shop", "waypoint")),
            pki.roots.clone(),
            H2Settings::default(),
            fetch,
        );
        let vip = VIP.parse::<SocketAddr>().unwrap().ip();
        let mut api = target(
            "shop/api.shop.svc.cluster.local",
            vip,
            endpoint_ip,
            policies(),
        );
        api.jwt = jwt;
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
}

async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let (status, body, _) = get_challenged(send, path, token).await;
    (status, body)
}

/// As [`get`], with the response's `www-authenticate`.
async fn get_challenged(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut req = Request::builder()
        .uri(path)
        .header("host", "api.shop.svc.cluster.local")
        // A client cannot set what only a verified token may.
        .header("x-sub", "mallory");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send.ready().await.unwrap();
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        challenge,
    )
}

#[tokio::test]
async fn tokens_are_checked_before_policy_decides() {
    let key = TestKey::new("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let timeout = Duration::from_secs(5);
    let jwt = vec![rule(KeySource::Remote {
        uri: server.uri(),
        timeout,
    })];
    let mesh = Mesh::start("decide", "127.81.0.2", jwt, FetchSettings::default()).await;
    let mut send = mesh.client().await;

    let forger = TestKey::new("k1");
    let alice = key.sign(&claims("alice"));
    let bob = key.sign(&claims("bob"));
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 3600);
    let mut other_issuer = claims("alice");
    other_issuer["iss"] = json!("https://evil.test");
    let mut other_audience = claims("alice");
    other_audience["aud"] = json!("https://bank.test/");
    let mut no_audience = claims("alice");
    no_audience.as_object_mut().unwrap().remove("aud");

    type Row = (
        &'static str,
        &'static str,
        Option<String>,
        StatusCode,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            "valid, principal allowed",
            "/private",
            Some(alice.clone()),
            StatusCode::OK,
            "",
        ),
        (
            "valid, other principal",
            "/private",
            Some(bob),
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
        ),
        ("no token, open path", "/public", None, StatusCode::OK, ""),
        (
            "no token, principal needed",
            "/private",
            None,
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
        ),
        (
            "forged signature",
            "/public",
            Some(forger.sign(&claims("alice"))),
            StatusCode::UNAUTHORIZED,
            "Jwt verification fails",
        ),
        (
            "expired",
            "/public",
            Some(key.sign(&expired)),
            StatusCode::UNAUTHORIZED,
            "Jwt is expired",
        ),
        (
            "not yet valid",
            "/public",
            Some(key.sign(&early)),
            StatusCode::UNAUTHORIZED,
            "Jwt not yet valid",
        ),
        (
            "unknown issuer",
            "/public",
            Some(key.sign(&other_issuer)),
            StatusCode::UNAUTHORIZED,
            "Jwt issuer is not configured",
        ),
        (
            "wrong audience",
            "/public",
            Some(key.sign(&other_audience)),
            StatusCode::FORBIDDEN,
            "Audiences in Jwt are not allowed",
        ),
        (
            "no audience",
            "/public",
            Some(key.sign(&no_audience)),
            StatusCode::FORBIDDEN,
            "Audiences in Jwt are not allowed",
        ),
        (
            "not a JWT",
            "/public",
            Some("opaque-token".into()),
            StatusCode::UNAUTHORIZED,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    for (name, path, token, want, body) in rows {
        let (status, got, challenge) = get_challenged(&mut send, path, token.as_deref()).await;
        assert_eq!(status, want, "{name}: {got}");
        if want != StatusCode::OK {
            assert_eq!(got, body, "{name}");
        }
        // A refused token is challenged as Envoy does, naming the URI asked for; a policy's
        // denial is not.
        let refused = body.starts_with("Jwt") || body.starts_with("Audiences");
        let want_challenge = refused.then(|| {
            format!(
                "Bearer realm=\"http://api.shop.svc.cluster.local{path}\", error=\"invalid_token\""
            )
        });
        assert_eq!(challenge, want_challenge, "{name}");
    }

    // What the endpoint sees: no token (not forwarded), the payload, the claims the rule
    // names, and never the client's own x-sub.
    let payload = alice.split('.').nth(1).unwrap();
    let (_, seen) = get(&mut send, "/private", Some(&alice)).await;
    assert_eq!(
        seen,
        format!("authorization=- x-jwt-payload={payload} x-sub=alice x-team=payments")
    );
    let (_, seen) = get(&mut send, "/public", None).await;
    assert_eq!(seen, "authorization=- x-jwt-payload=- x-sub=- x-team=-");
    // One fetch served every request.
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn rotated_keys_are_fetched_for_an_unknown_kid() {
    let (old, new) = (TestKey::new("k1"), TestKey::new("k2"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let uri = server.uri();
    let timeout = Duration::from_secs(5);
    let jwt = vec![rule(KeySource::Remote { uri, timeout })];
    let fetch = FetchSettings {
        refresh: Duration::from_secs(1200),
        min_refetch: Duration::ZERO,
    };
    let mesh = Mesh::start("rotate", "127.81.0.3", jwt, fetch).await;
    let mut send = mesh.client().await;

    let (status, _) = get(&mut send, "/private", Some(&old.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.fetches(), 1);

    // The issuer rotates: a token of the new key makes the waypoint fetch again.
    server.set(jwks(&[&new]));
    let (status, body) = get(&mut send, "/private", Some(&new.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.fetches(), 2);
    // The old key is gone from the set: its tokens no longer verify.
    let (status, body) = get(&mut send, "/private", Some(&old.sign(&claims("alice")))).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            "Jwks doesn't have key to match kid or alg from Jwt"
        )
    );
}

#[tokio::test]
async fn stale_keys_serve_while_a_background_refresh_replaces_them() {
    let (old, new) = (TestKey::new("k1"), TestKey::new("k2"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let timeout = Duration::from_secs(5);
    let jwt = vec![rule(KeySource::Remote {
        uri: server.uri(),
        timeout,
    })];
    // Every set is stale at once, so each request starts a refresh behind it.
    let fetch = FetchSettings {
        refresh: Duration::ZERO,
        min_refetch: Duration::ZERO,
    };
    let mesh = Mesh::start("refresh", "127.81.0.6", jwt, fetch).await;
    let mut send = mesh.client().await;
    let (status, _) = get(&mut send, "/private", Some(&old.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.fetches(), 1);

    // The issuer drops the old key; a request with it is still served from the stale set
    // while the refresh runs behind it.
    server.set(jwks(&[&new]));
    let (status, _) = get(&mut send, "/public", Some(&old.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..100 {
        if server.fetches() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.fetches() >= 2, "the refresh ran");
    // Once it has, the new key's tokens verify.
    let (status, body) = get(&mut send, "/private", Some(&new.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let (old, new) = (TestKey::new("k1"), TestKey::new("k2"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let timeout = Duration::from_secs(5);
    let jwt = vec![rule(KeySource::Remote {
        uri: server.uri(),
        timeout,
    })];
    let mesh = Mesh::start("ratelimit", "127.81.0.4", jwt, FetchSettings::default()).await;
    let mut send = mesh.client().await;

    let (status, _) = get(&mut send, "/private", Some(&old.sign(&claims("alice")))).await;
    assert_eq!(status, StatusCode::OK);
    server.set(jwks(&[&old, &new]));
    // Within 30 s of the last fetch, a made-up (or new) kid costs no fetch.
    for _ in 0..3 {
        let (status, _) = get(&mut send, "/private", Some(&new.sign(&claims("alice")))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_jwks_server_that_is_down_refuses_tokens_only() {
    let key = TestKey::new("k1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead: http::Uri = format!("http://{}/jwks", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let jwt = vec![rule(KeySource::Remote {
        uri: dead,
        timeout: Duration::from_secs(2),
    })];
    let mesh = Mesh::start("down", "127.81.0.5", jwt, FetchSettings::default()).await;
    let mut send = mesh.client().await;
    let (status, body) = get(&mut send, "/public", Some(&key.sign(&claims("alice")))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwks remote fetch is failed")
    );
    let (status, _) = get(&mut send, "/public", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A rule with neither `jwks` nor `jwksUri`, for `issuer`.
fn discovered(issuer: &str, min_refetch: Duration) -> (JwtRule, FetchSettings) {
    let keys = KeySource::Discovered {
        document: document_uri(issuer),
        timeout: Duration::from_secs(5),
    };
    let rule = JwtRule {
        issuer: issuer.into(),
        ..rule(keys)
    };
    let fetch = FetchSettings {
        refresh: Duration::from_secs(1200),
        min_refetch,
    };
    (rule, fetch)
}

fn claims_of(issuer: &str, sub: &str) -> serde_json::Value {
    let mut c = claims(sub);
    c["iss"] = json!(issuer);
    c
}

#[tokio::test]
async fn keys_are_found_by_openid_discovery_from_the_issuer() {
    let key = TestKey::new("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    // A trailing slash is not doubled (Istio trims it before the well-known path).
    let issuer = format!("http://{}/realms/shop/", server.addr);
    server.set_discovery(
        &json!({"issuer": issuer, "jwks_uri": format!("http://{}/protocol/certs", server.addr)})
            .to_string(),
    );
    let (jwt, fetch) = discovered(&issuer, Duration::from_secs(30));
    let mesh = Mesh::start("discover", "127.81.0.7", vec![jwt], fetch).await;
    let mut send = mesh.client().await;

    let alice = key.sign(&claims_of(&issuer, "alice"));
    let (status, seen) = get(&mut send, "/public", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert!(
        seen.contains("x-sub=alice"),
        "the token was accepted: {seen}"
    );
    let forged = TestKey::new("k1").sign(&claims_of(&issuer, "alice"));
    let (status, body) = get(&mut send, "/public", Some(&forged)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt verification fails")
    );
    let (status, _) = get(&mut send, "/public", None).await;
    assert_eq!(status, StatusCode::OK);
    // One discovery at the issuer's well-known path, one key fetch at the URI it named; both
    // cached for the requests after.
    assert_eq!(
        server.discoveries(),
        ["/realms/shop/.well-known/openid-configuration"]
    );
    assert_eq!(
        server.paths.lock().unwrap().last().unwrap(),
        "/protocol/certs"
    );
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn rotated_keys_are_fetched_again_from_the_discovered_uri() {
    let (old, new) = (TestKey::new("k1"), TestKey::new("k2"));
    let server = JwksServer::start(jwks(&[&old])).await;
    let issuer = format!("http://{}", server.addr);
    server.set_discovery(&json!({"jwks_uri": format!("{issuer}/keys")}).to_string());
    let (jwt, fetch) = discovered(&issuer, Duration::ZERO);
    let mesh = Mesh::start("discover-rotate", "127.81.0.8", vec![jwt], fetch).await;
    let mut send = mesh.client().await;

    let (status, _) = get(
        &mut send,
        "/public",
        Some(&old.sign(&claims_of(&issuer, "a"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.set(jwks(&[&new]));
    let (status, body) = get(
        &mut send,
        "/public",
        Some(&new.sign(&claims_of(&issuer, "a"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(
        &mut send,
        "/public",
        Some(&old.sign(&claims_of(&issuer, "a"))),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            "Jwks doesn't have key to match kid or alg from Jwt"
        )
    );
    // The keys were fetched again from the discovered URI; the document was not.
    assert_eq!(server.fetches(), 3);
    assert_eq!(server.discoveries(), ["/.well-known/openid-configuration"]);
}

#[tokio::test]
async fn failed_discovery_refuses_that_issuers_tokens_only() {
    let key = TestKey::new("k1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    // Each case is an issuer of its own with its own server (None: no server, the issuer
    // as it is); all are rules of one target, beside one that works.
    let cases: Vec<(&str, Option<Option<String>>)> = vec![
        ("works", Some(Some(String::new()))),
        ("no jwks_uri", Some(Some(r#"{"issuer": "x"}"#.into()))),
        (
            "jwks_uri not a string",
            Some(Some(r#"{"jwks_uri": 7}"#.into())),
        ),
        ("bad JSON", Some(Some(r#"{"jwks_uri": "#.into()))),
        ("a JSON list", Some(Some("[]".into()))),
        (
            "jwks_uri not http(s)",
            Some(Some(r#"{"jwks_uri": "file:///etc/keys"}"#.into())),
        ),
        (
            "relative jwks_uri",
            Some(Some(r#"{"jwks_uri": "/keys"}"#.into())),
        ),
        ("no document (404)", Some(None)),
        (
            "discovered keys down",
            Some(Some(
                json!({"jwks_uri": format!("{dead}/keys")}).to_string(),
            )),
        ),
        ("server down", None),
        ("issuer not a URL", None),
    ];
    let mut rules = Vec::new();
    let mut issuers = Vec::new();
    let mut servers = Vec::new();
    for (name, doc) in &cases {
        let issuer = match (name, doc) {
            (_, Some(doc)) => {
                let server = JwksServer::start(jwks(&[&key])).await;
                let issuer = format!("http://{}", server.addr);
                match doc.as_deref() {
                    Some("") => server
                        .set_discovery(&json!({"jwks_uri": format!("{issuer}/keys")}).to_string()),
                    Some(doc) => server.set_discovery(doc),
                    None => {}
                }
                servers.push(server);
                issuer
            }
            (&"server down", None) => dead.clone(),
            _ => "testing@secure.istio.io".to_string(),
        };
        rules.push(discovered(&issuer, Duration::from_secs(30)).0);
        issuers.push(issuer);
    }
    let mesh = Mesh::start(
        "discover-fail",
        "127.81.0.9",
        rules,
        FetchSettings::default(),
    )
    .await;
    let mut send = mesh.client().await;
    for ((name, _), issuer) in cases.iter().zip(&issuers) {
        let token = key.sign(&claims_of(issuer, "alice"));
        // Twice: a failure is not cached as success, nor does it panic on the second try.
        for _ in 0..2 {
            let (status, body) = get(&mut send, "/public", Some(&token)).await;
            match *name {
                "works" => assert_eq!(status, StatusCode::OK, "{name}: {body}"),
                _ => assert_eq!(
                    (status, body.as_str()),
                    (StatusCode::UNAUTHORIZED, "Jwks remote fetch is failed"),
                    "{name}"
                ),
            }
        }
    }
    // Every server was asked for its document; requests without a token are unaffected.
    for server in &servers {
        assert!(!server.discoveries().is_empty());
    }
    let (status, _) = get(&mut send, "/public", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// The check itself, without sockets: inline keys, other token locations, forwarding.
#[tokio::test]
async fn locations_and_outputs() {
    let key = TestKey::new("k1");
    let keys = Arc::new(KeySet::parse(&jwks(&[&key])).unwrap());
    let cache = waypoint::jwt::KeyCache::new(FetchSettings::default());
    let token = key.sign(&claims("alice"));
    let base = JwtRule {
        audiences: vec![],
        output_payload_to_header: None,
        claim_to_headers: vec![],
        ..rule(KeySource::Inline(keys))
    };
    let custom = JwtRule {
        locations: vec![
            Location::Header {
                name: http::HeaderName::from_static("x-token"),
                prefix: String::new(),
            },
            Location::Cookie("session".into()),
        ],
        forward_original_token: true,
        ..base.clone()
    };
    struct Case {
        name: &'static str,
        rule: JwtRule,
        uri: String,
        headers: Vec<(&'static str, String)>,
        principal: Option<&'static str>,
        kept: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "default header, removed",
            rule: base.clone(),
            uri: "/".into(),
            headers: vec![("authorization", format!("Bearer {token}"))],
            principal: Some("https://idp.test/alice"),
            kept: None,
        },
        Case {
            name: "default query parameter",
            rule: base.clone(),
            uri: format!("/x?a=1&access_token={token}"),
            headers: vec![],
            principal: Some("https://idp.test/alice"),
            kept: None,
        },
        Case {
            name: "the default header is not a custom rule's",
            rule: custom.clone(),
            uri: "/".into(),
            headers: vec![("authorization", format!("Bearer {token}"))],
            principal: None,
            kept: None,
        },
        Case {
            name: "custom header, forwarded",
            rule: custom.clone(),
            uri: "/".into(),
            headers: vec![("x-token", token.clone())],
            principal: Some("https://idp.test/alice"),
            kept: Some("x-token"),
        },
        Case {
            name: "cookie",
            rule: custom,
            uri: "/".into(),
            headers: vec![("cookie", format!("a=b; session={token}"))],
            principal: Some("https://idp.test/alice"),
            kept: None,
        },
    ];
    for c in cases {
        let mut req = Request::builder().uri(&c.uri);
        for (n, v) in &c.headers {
            req = req.header(*n, v);
        }
        let mut req = req.body(()).unwrap();
        let auth = waypoint::jwt::authenticate(&cache, std::slice::from_ref(&c.rule), &mut req)
            .await
            .unwrap();
        let principal = auth.as_ref().map(|a| a.principal.as_str());
        assert_eq!(principal, c.principal, "{}", c.name);
        if let Some(a) = auth {
            assert_eq!(a.audiences, ["shop"]);
            assert_eq!(a.claims["team"], "payments");
        }
        if let Some(h) = c.kept {
            assert!(req.headers().contains_key(h), "{}", c.name);
        }
        if c.name.starts_with("default header") {
            assert!(!req.headers().contains_key("authorization"), "{}", c.name);
        }
    }
}

/// meshd's JwtRule at the config boundary: a usable rule is kept with Istio's default
/// locations; a bad one rejects the target (the NACK names the field) and the last good
/// version stays.
#[test]
fn rules_are_checked_at_the_config_boundary() {
    use proto::waypoint as wire;
    use waypoint::config::Store;
    const NAME: &str = "shop/api.shop.svc.cluster.local";
    let target = |rules: Vec<wire::JwtRule>| wire::Target {
        name: "api.shop.svc.cluster.local".into(),
        namespace: "shop".into(),
        vips: vec!["10.96.0.20".into()],
        jwt_rules: rules,
        ..Default::default()
    };
    let good = wire::JwtRule {
        source: "shop/jwt".into(),
        issuer: ISSUER.into(),
        jwks_uri: "https://idp.test/jwks".into(),
        timeout_ms: 1500,
        ..Default::default()
    };
    let mut store = Store::default();
    store
        .apply_target(NAME, &target(vec![good.clone()]))
        .unwrap();
    let rules = |store: &Store| {
        let snapshot = store.snapshot();
        let t = snapshot.resolve(VIP.parse().unwrap()).unwrap();
        t.target.jwt.clone()
    };
    let kept = rules(&store);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].locations, Location::defaults());
    assert!(matches!(
        &kept[0].keys,
        KeySource::Remote { uri, timeout } if uri == "https://idp.test/jwks" && *timeout == Duration::from_millis(1500)
    ));

    let key = TestKey::new("k1");
    let cases: Vec<(wire::JwtRule, &str, &str)> = vec![
        (
            wire::JwtRule { issuer: String::new(), ..good.clone() },
            "jwt_rules[0].issuer",
            "required",
        ),
        (
            wire::JwtRule { jwks_uri: "ftp://idp.test/keys".into(), ..good.clone() },
            "jwt_rules[0].jwks_uri",
            "\"ftp://idp.test/keys\" is not an http(s) URL",
        ),
        (
            wire::JwtRule { jwks: "{\"keys\": [{\"kty\": \"EC\"}]}".into(), ..good.clone() },
            "jwt_rules[0].jwks",
            "not a JSON Web Key Set",
        ),
        (
            wire::JwtRule {
                jwks: json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "use": "enc"}]}).to_string(),
                ..good.clone()
            },
            "jwt_rules[0].jwks",
            "no usable key among 1",
        ),
        (
            wire::JwtRule {
                from_headers: vec![wire::JwtHeader { name: "bad header".into(), prefix: String::new() }],
                ..good.clone()
            },
            "jwt_rules[0].from_headers[0].name",
            "\"bad header\" is not a header name",
        ),
        (
            wire::JwtRule {
                output_claim_to_headers: vec![wire::ClaimToHeader { header: "x-sub".into(), claim: String::new() }],
                ..good.clone()
            },
            "jwt_rules[0].output_claim_to_headers[0].claim",
            "required",
        ),
    ];
    for (bad, field, reason) in cases {
        let err = store
            .apply_target(NAME, &target(vec![good.clone(), bad.clone()]))
            .map(|_| ())
            .unwrap_err();
        let field = field.replacen("[0]", "[1]", 1);
        assert_eq!(
            (err.field.as_str(), err.resource.as_str()),
            (field.as_str(), NAME),
            "{bad:?}"
        );
        assert!(
            err.reason.starts_with(reason),
            "{}: {}",
            err.field,
            err.reason
        );
        // The last good version still serves.
        assert_eq!(rules(&store).len(), 1);
    }
    // Neither jwks nor jwks_uri: OpenID discovery from the issuer, with the rule's timeout; an
    // issuer that makes no discovery URL is kept too (its tokens are refused).
    for (issuer, want) in [
        (
            "https://idp.test/",
            Some("https://idp.test/.well-known/openid-configuration"),
        ),
        ("testing@secure.istio.io", None),
    ] {
        let discover = wire::JwtRule {
            issuer: issuer.into(),
            jwks_uri: String::new(),
            ..good.clone()
        };
        store.apply_target(NAME, &target(vec![discover])).unwrap();
        assert!(
            matches!(
                &rules(&store)[0].keys,
                KeySource::Discovered { document, timeout }
                    if document.as_ref().map(|d| d.to_string()).as_deref() == want
                        && *timeout == Duration::from_millis(1500)
            ),
            "{issuer}"
        );
    }
    // An inline set with a usable key is taken as it is.
    let inline = wire::JwtRule {
        jwks: jwks(&[&key]),
        jwks_uri: String::new(),
        ..good
    };
    store.apply_target(NAME, &target(vec![inline])).unwrap();
    assert!(matches!(&rules(&store)[0].keys, KeySource::Inline(k) if k.len() == 1));
}
