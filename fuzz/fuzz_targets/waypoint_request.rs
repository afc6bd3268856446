//! The waypoint's HTTP request path through hyper, as a client drives it: the input is what
//! arrives on one HBONE stream, classified (`waypoint::detect::classify`) and served by
//! `waypoint::request::serve` (HTTP/1.1 or HTTP/2 prior knowledge, parsed by hyper) against a
//! target with L7 policies of every match kind, a RequestAuthentication with an inline key and
//! no endpoint, so that whatever is allowed ends at `no healthy upstream` without a network.
//! Whatever the bytes, the waypoint answers or closes; it never panics or hangs.
//!
//! Input: the client's bytes (written, then the stream is closed for writing).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use hbone::{CertHandle, FileCa, H2Settings, PeerInfo, TrustRoots};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::detect::{Protocol, classify};
use waypoint::jwt::{JwtRule, KeySet, KeySource, Location};
use waypoint::targets::Resolved;
use waypoint::{Target, Waypoint};

const POLICIES: &[&str] = &[
    r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow", "namespace": "shop"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "api"}],
          "rules": [{"from": [{"source": {"principals": ["*/sa/order-service"], "notRequestPrincipals": ["x/*"]}}],
                     "to": [{"operation": {"methods": ["POST", "GET"], "paths": ["/api/*", "*.json"], "hosts": ["*.shop.svc*", "10.96.0.20*"]}}],
                     "when": [{"key": "request.headers[x-id]", "notValues": ["a*", "*b"]},
                              {"key": "request.auth.claims[groups]", "notValues": ["x"]}]}]}}"#,
    r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "action": "DENY",
          "rules": [{"when": [{"key": "request.headers[User-Agent]", "values": ["*sqlmap*", "*nmap*"]}]}]}}"#,
];

struct World {
    runtime: tokio::runtime::Runtime,
    waypoint: Arc<Waypoint>,
    peer: Arc<PeerInfo>,
    target: Arc<Target>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mesh-fuzz-wp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = FileCa::generate(&dir, "fuzz").expect("generate the fuzz CA");
        let _ = std::fs::remove_dir_all(&dir);
        let id = |sa: &str| {
            format!("spiffe://cluster.local/ns/shop/sa/{sa}")
                .parse()
                .expect("a SPIFFE ID")
        };
        let cert = ca
            .issue(&id("waypoint"), Duration::from_secs(3600))
            .expect("issue");
        let cert = CertHandle::new(cert).expect("certificate");
        let roots = TrustRoots::new(ca.roots()).expect("roots");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let waypoint = Waypoint::new(cert, roots, H2Settings::default());
        let policies = POLICIES
            .iter()
            .filter_map(|y| authz::translate::http_authorization_policy(*y, "istio-system").ok())
            .map(|t| t.policy)
            .collect();
        let target = Arc::new(Target {
            key: "shop/api.shop.svc.cluster.local".into(),
            namespace: "shop".into(),
            vips: vec![[10, 96, 0, 20].into()],
            ports: [(80, 8080)].into(),
            h2_ports: Default::default(),
            endpoints: Vec::new(),
            policies,
            rate_limits: Vec::new(),
            jwt: vec![rule()],
            ext_authz: Default::default(),
        });
        let peer = Arc::new(PeerInfo {
            identity: id("order-service"),
            remote: SocketAddr::from(([10, 0, 0, 1], 40000)),
            local: SocketAddr::from(([10, 0, 0, 30], 15008)),
        });
        World {
            runtime,
            waypoint,
            peer,
            target,
        }
    })
}

/// A rule with an inline P-256 key: tokens are read and checked, none verifies by chance.
fn rule() -> JwtRule {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let point = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "k1", "x": "{}", "y": "{}"}}]}}"#,
        b64(point.get(1..33).unwrap_or_default()),
        b64(point.get(33..).unwrap_or_default()),
    );
    JwtRule {
        source: "shop/jwt".into(),
        issuer: "https://idp.test".into(),
        audiences: vec!["shop".into()],
        keys: KeySource::Inline(Arc::new(KeySet::parse(&jwks).expect("the key set"))),
        locations: Location::defaults(),
        output_payload_to_header: Some(http::HeaderName::from_static("x-jwt-payload")),
        forward_original_token: false,
        claim_to_headers: vec![(http::HeaderName::from_static("x-sub"), "sub".into())],
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let protocol = match classify(&data[..data.len().min(32)], true) {
        Some(Protocol::Http2) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let resolved = Resolved {
        target: w.target.clone(),
        addressed: SocketAddr::from(([10, 96, 0, 20], 80)),
        pinned: None,
    };
    let (mut client, server) = tokio::io::duplex(16 * 1024);
    w.runtime.block_on(async {
        let serve = waypoint::request::serve(
            w.waypoint.clone(),
            w.peer.clone(),
            resolved,
            protocol,
            server,
        );
        let drive = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            // Responses are read (and dropped) so that the server is never blocked writing.
            let mut sink = [0u8; 4096];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let both = async { tokio::join!(serve, drive) };
        // A request the waypoint waits on forever would be a hang: the timeout makes it a
        // finding of its own (libFuzzer's -timeout), not a stuck input.
        let _ = tokio::time::timeout(Duration::from_secs(10), both).await;
    });
});
