//! End to end, the waypoint: meshd serves a Gateway waypoint and the L7 policies attached to
//! it; the client's ztunnel sends traffic for the bound service (by its VIP, and by the pod's
//! IP) to the waypoint, which decides each HTTP request and forwards what it allows to the
//! server's ztunnel with its own identity. Everything configured by meshd only. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::mesh::{Binaries, wait_for_file};
use e2e::topology::{CLIENT_IP, Options, SERVER_IP, TwoWorkloads, VIP};

const T: Duration = Duration::from_secs(30);
const WAYPOINT_IP: &str = "10.244.0.30";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/demo/sa/waypoint";

fn pod(name: &str, sa: &str, node: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: demo
  labels: {{app: {name}{labels}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
status:
  phase: Running
  conditions: [{{type: Ready, status: \"True\"}}]
  podIP: {ip}
  podIPs: [{{ip: {ip}}}]
"
    )
}

/// The mesh: `server` (its Service and its pod) bound to waypoint `waypoint` (for services
/// and workloads), whose pod is outside ambient; policies on the waypoint: the client may GET
/// under /api/ only, and no scanner's user agent passes; /api/limited takes 2 requests, then
/// one a second, per caller. Tokens of the company issuer are checked (keys from
/// `jwks_uri`); /jwt/ is alice's only; /ns/demo/ is for namespace demo, /ns/other/ for
/// namespace other; the authorizer `sample-http` decides /ext/, the unreachable `down`
/// decides /down/.
fn manifests(jwks_uri: &str) -> String {
    let docs = [
        "apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
"
        .to_string(),
        pod("client", "client", "node-a", CLIENT_IP, ""),
        pod(
            "server",
            "server",
            "node-b",
            SERVER_IP,
            ", istio.io/use-waypoint: waypoint",
        ),
        pod(
            "waypoint-0",
            "waypoint",
            "node-a",
            WAYPOINT_IP,
            ", gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none",
        ),
        format!(
            "apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: demo
  labels: {{istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: {VIP}
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"
        ),
        "apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: demo
spec:
  clusterIP: 10.96.0.30
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
"
        .to_string(),
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: demo
  labels: {istio.io/waypoint-for: all}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"
        .to_string(),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: client-reads-api
  namespace: demo
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {methods: [GET], paths: [/api/*]}}]
"
        .to_string(),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-scanners
  namespace: demo
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - when: [{key: \"request.headers[User-Agent]\", values: [\"*sqlmap*\"]}]
"
        .to_string(),
        format!(
            "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: company-jwt
  namespace: demo
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  jwtRules:
  - issuer: {ISSUER}
    audiences: [payments]
    jwksUri: {jwks_uri}
"
        ),
        allow(
            "alice-only",
            "from: [{source: {requestPrincipals: [\"https://auth.example.com/alice\"]}}]",
            "/jwt/*",
        ),
        allow(
            "demo-only",
            "from: [{source: {namespaces: [demo]}}]",
            "/ns/demo/*",
        ),
        allow(
            "other-only",
            "from: [{source: {namespaces: [other]}}]",
            "/ns/other/*",
        ),
        allow(
            "authorizer-decides",
            "from: [{source: {namespaces: [demo]}}]",
            "/ext/*",
        ),
        allow(
            "down-decides",
            "from: [{source: {namespaces: [demo]}}]",
            "/down/*",
        ),
        custom("ext-authz", "sample-http", "/ext/*"),
        custom("ext-down", "down", "/down/*"),
        "apiVersion: policy.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata:
  name: limited
  namespace: demo
spec:
  targetRefs: [{kind: Service, group: \"\", name: server}]
  limits:
  - per: sourcePrincipal
    maxTokens: 2
    tokensPerFill: 1
    fillInterval: 1s
    match: [{paths: [/api/limited]}]
"
        .to_string(),
    ];
    docs.join("---\n")
}

const ISSUER: &str = "https://auth.example.com";
const AUTHORIZER_IP: &str = "10.244.0.3";

/// An AuthorizationPolicy on the waypoint: `action` (its spec lines after `targetRefs`, each
/// indented by two) and one rule (`rule`, the YAML after the list's `- `).
fn on_waypoint(name: &str, action: &str, rule: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: demo
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  {action}
  rules:
  - {rule}
"
    )
}

/// An ALLOW policy on the waypoint: `from` (a YAML rule key) for paths under `path`.
fn allow(name: &str, from: &str, path: &str) -> String {
    let rule = format!("{from}\n    to: [{{operation: {{paths: [\"{path}\"]}}}}]");
    on_waypoint(name, "action: ALLOW", &rule)
}

/// A CUSTOM policy on the waypoint: `provider` decides paths under `path`.
fn custom(name: &str, provider: &str, path: &str) -> String {
    let action = format!("action: CUSTOM\n  provider: {{name: {provider}}}");
    on_waypoint(
        name,
        &action,
        &format!("to: [{{operation: {{paths: [\"{path}\"]}}}}]"),
    )
}

/// Istio's MeshConfig: the two HTTP authorizers, both on the authorizer host (`down` at a
/// port nothing listens on, failing closed), and a Zipkin collector there too, starting no
/// trace of its own (sampling 0) so only callers' sampled traces are exported.
fn mesh_config() -> String {
    format!(
        "defaultConfig:
  tracing:
    sampling: 0
    zipkin: {{address: \"{AUTHORIZER_IP}:9411\"}}
extensionProviders:
- name: sample-http
  envoyExtAuthzHttp:
    service: {AUTHORIZER_IP}
    port: 9000
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
- name: down
  envoyExtAuthzHttp:
    service: {AUTHORIZER_IP}
    port: 9001
    timeout: 1s
"
    )
}

/// A signing key of the company issuer and its JWK.
struct Key {
    kid: &'static str,
    signing: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl Key {
    fn new(kid: &'static str) -> Key {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        Key {
            kid,
            signing: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    /// A token for `sub`, from `iss` to `aud`, expiring `ttl` seconds from now (negative:
    /// expired that long ago).
    fn token(&self, iss: &str, sub: &str, aud: &str, ttl: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({"iss": iss, "sub": sub, "aud": aud, "iat": now - 5, "exp": now + ttl});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }
}

#[test]
fn the_waypoint_decides_each_request_for_its_service() {
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
    let waypoint_bin = bins.waypoint().expect("waypoint binary").to_path_buf();
    let dir = std::env::temp_dir().join("e2e-waypoint-manifests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_uri = format!("http://{AUTHORIZER_IP}:9002/jwks");
    std::fs::write(dir.join("mesh.yaml"), manifests(&jwks_uri)).unwrap();
    let mesh_file = std::env::temp_dir().join("e2e-waypoint-mesh-config.yaml");
    std::fs::write(&mesh_file, mesh_config()).unwrap();
    let mut w = TwoWorkloads::start(
        "waypoint",
        bins,
        Options {
            meshd: Some(&dir),
            mesh_config: Some(&mesh_file),
            ..Options::default()
        },
    )
    .expect("topology: meshd and two ztunnels joining it");
    // The issuer's keys and the authorizer, on a host outside the mesh.
    let key = Key::new("k1");
    let jwks = w.mesh.dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [key.jwk]}).to_string()).unwrap();
    let authorizer = w.outsider.clone();
    w.serve(
        &authorizer,
        "ext-authz",
        &["ext-authz", "--listen", "0.0.0.0:9000"],
    )
    .expect("authorizer");
    let collector = w
        .mesh
        .spawn_app(
            &authorizer,
            "zipkin",
            &["record", "--listen", "0.0.0.0:9411"],
        )
        .expect("Zipkin collector");
    let jwks_arg = jwks.to_string_lossy().into_owned();
    w.serve(
        &authorizer,
        "jwks",
        &[
            "file-serve",
            "--listen",
            "0.0.0.0:9002",
            "--file",
            &jwks_arg,
        ],
    )
    .expect("JWKS server");
    w.serve(
        &w.server.clone(),
        "http",
        &["http-serve", "--listen", "0.0.0.0:8080"],
    )
    .expect("server app");

    // The waypoint: its own host, a token for its service account, Istio's settings.
    let host = w.net.host("waypoint", WAYPOINT_IP).expect("waypoint host");
    let meshd = w.meshd.as_ref().unwrap();
    let token = meshd.mint_token("demo/waypoint/waypoint-0").expect("token");
    let mut env = meshd.ztunnel_env("node-a", T).expect("meshd settings");
    env.retain(|(k, _)| *k != "AUTH_TOKEN");
    let log = w.mesh.dir.join("waypoint.log");
    let mut waypoint = host
        .command(&waypoint_bin)
        .envs(env)
        .env("AUTH_TOKEN", &token)
        .env("POD_NAME", "waypoint-0")
        .env("POD_NAMESPACE", "demo")
        .env("SERVICE_ACCOUNT", "waypoint")
        .env("INSTANCE_IP", WAYPOINT_IP)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("waypoint");
    let ready = wait_for_file(&log, "serving HBONE", T).expect("waypoint configured by meshd");
    // The service and, bound as a workload too, its pod.
    assert!(ready.contains("targets=2"), "{ready}");

    let request_with = |addr: &str, method: &str, path: &str, agent: &str, headers: &[String]| {
        let mut args = vec![
            "http",
            "--addr",
            addr,
            "--method",
            method,
            "--path",
            path,
            "--user-agent",
            agent,
        ];
        for h in headers {
            args.extend(["--header", h.as_str()]);
        }
        let out = w.mesh.run_app(&w.client, &args, T).expect("http");
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.trim().to_string(), body.to_string())
    };
    let request = |addr: &str, method: &str, path: &str, agent: &str| {
        request_with(addr, method, path, agent, &[])
    };
    let vip = format!("{VIP}:80");
    let pod = format!("{SERVER_IP}:8080");
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
    let rows: &[Row] = &[
        (&vip, "GET", "/api/orders", "curl/8", "200"),
        (&vip, "POST", "/api/orders", "curl/8", "403"),
        (&vip, "GET", "/admin", "curl/8", "403"),
        (&vip, "GET", "/api/orders", "sqlmap/1.7", "403"),
        // Around the VIP, straight to the pod: still through the waypoint.
        (&pod, "GET", "/api/orders", "curl/8", "200"),
        (&pod, "DELETE", "/api/orders", "curl/8", "403"),
    ];
    for (addr, method, path, agent, want) in rows {
        let (status, body) = request(addr, method, path, agent);
        assert_eq!(
            &status,
            want,
            "{method} {addr}{path} as {agent}: {body}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if *want == "200" {
            // The app got the request as sent (its server ztunnel delivers it locally).
            assert!(
                body.starts_with(&format!("{method} {path} from ")),
                "{body}"
            );
        } else {
            assert_eq!(body, "RBAC: access denied");
        }
    }
    // A rate limit: the burst, a 429, then a token a fill interval later.
    let limited = [("200", ""), ("200", ""), ("429", "local_rate_limited")];
    for (want, want_body) in limited {
        let (status, body) = request(&vip, "GET", "/api/limited", "curl/8");
        assert_eq!(status, want, "{body}");
        if !want_body.is_empty() {
            assert_eq!(body, want_body);
        }
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(request(&vip, "GET", "/api/limited", "curl/8").0, "200");

    // Every request above counted once in Istio's metrics, by outcome.
    let scrape = || {
        let out = host
            .command(env!("CARGO_BIN_EXE_meshapp"))
            .args([
                "http",
                "--addr",
                "127.0.0.1:15020",
                "--method",
                "GET",
                "--path",
                "/metrics",
            ])
            .output()
            .expect("scrape");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let count = |text: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let from_client = "source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"";
    let want = [
        (
            vec![
                "response_code=\"200\"",
                "response_flags=\"-\"",
                "destination_workload=\"server\"",
            ],
            5.0,
        ),
        (vec!["response_code=\"403\""], 4.0),
        (vec!["response_code=\"429\"", "response_flags=\"RL\""], 1.0),
    ];
    // Recorded as each response ends, just after the client has it.
    let mut text = scrape();
    for _ in 0..50 {
        if want.iter().all(|(l, n)| count(&text, l) == *n) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = scrape();
    }
    // The client's pod, named as meshd's Address resources name it (the waypoint watches
    // them as Istio's does).
    let client_workload = "source_workload=\"client\"";
    for (labels, n) in &want {
        let mut labels = labels.clone();
        labels.extend(["reporter=\"waypoint\"", from_client, client_workload]);
        assert_eq!(count(&text, &labels), *n, "{labels:?}\n{text}");
    }

    // Tokens (RequestAuthentication, keys fetched from the issuer's jwksUri), namespaces and
    // external authorizers, all as meshd configured them.
    let bearer = |t: String| vec![format!("Authorization: Bearer {t}")];
    let alice = key.token(ISSUER, "alice", "payments", 600);
    let rows: &[(&str, Vec<String>, &str)] = &[
        // No token: no request principal, so alice's path is closed; others are not.
        ("/jwt/pay", vec![], "403"),
        ("/api/orders", vec![], "200"),
        ("/jwt/pay", bearer(alice.clone()), "200"),
        (
            "/jwt/pay",
            bearer(key.token(ISSUER, "bob", "payments", 600)),
            "403",
        ),
        // A token that fails is refused whatever the path and the policies say (one for
        // another audience with 403, as Envoy answers it).
        (
            "/jwt/pay",
            bearer(key.token(ISSUER, "alice", "payments", -300)),
            "401",
        ),
        (
            "/jwt/pay",
            bearer(key.token("https://evil.example", "alice", "payments", 600)),
            "401",
        ),
        (
            "/jwt/pay",
            bearer(key.token(ISSUER, "alice", "billing", 600)),
            "403",
        ),
        (
            "/api/orders",
            bearer(Key::new("k1").token(ISSUER, "alice", "payments", 600)),
            "401",
        ),
        ("/api/orders", bearer("not.a.jwt".into()), "401"),
        // Namespace isolation: the client is in demo.
        ("/ns/demo/x", vec![], "200"),
        ("/ns/other/x", vec![], "403"),
        // The authorizer decides /ext/; an authorizer that cannot be reached fails closed.
        ("/ext/x", vec!["x-ext-authz: allow".into()], "200"),
        ("/ext/x", vec!["x-ext-authz: deny".into()], "403"),
        ("/ext/x", vec![], "403"),
        ("/down/x", vec!["x-ext-authz: allow".into()], "403"),
    ];
    for (path, headers, want) in rows {
        let (status, body) = request_with(&vip, "GET", path, "curl/8", headers);
        assert_eq!(
            &status,
            want,
            "GET {path} with {headers:?}: {body}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if *want == "200" {
            assert!(body.starts_with(&format!("GET {path} from ")), "{body}");
        }
        if path.starts_with("/ext/") && *want == "403" {
            assert!(
                body.starts_with("denied by ext_authz"),
                "the authorizer's answer: {body}"
            );
        }
    }

    // A caller's sampled trace: the waypoint's span, a child of the caller's, reaches the
    // collector meshd named (Zipkin v2 JSON).
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("traceparent: 00-{trace}-{parent}-01");
    let (status, _) = request_with(&vip, "GET", "/api/traced", "curl/8", &[traceparent]);
    assert_eq!(status, "200");
    let exported = wait_for_file(&collector, &format!("\"traceId\":\"{trace}\""), T)
        .expect("the span exported to the collector");
    let span = exported
        .lines()
        .find(|l| l.contains(trace))
        .unwrap_or_default();
    assert!(span.starts_with("POST /api/v2/spans "), "{span}");
    assert!(
        span.contains(&format!("\"parentId\":\"{parent}\"")),
        "{span}"
    );

    // The server's ztunnel saw the waypoint's identity (logged as each connection ends: the
    // waypoint keeps its upstream connections for reuse until it goes); the client's sent to
    // the waypoint.
    let _ = waypoint.kill();
    let _ = waypoint.wait();
    let inbound = w
        .zt_server
        .wait_for(&format!("src.identity={WAYPOINT_ID}"), T)
        .expect("server side: the waypoint's identity");
    assert!(inbound.contains("direction=\"inbound\""));
    w.zt_client
        .wait_for("dst.waypoint=", T)
        .expect("client side: sent to the waypoint");
}
