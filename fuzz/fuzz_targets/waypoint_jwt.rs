//! The waypoint's RequestAuthentication before any key is trusted: a token found in a request
//! (`waypoint::jwt::Location::find` over a fuzzed `Authorization` header, query and cookie),
//! read (`peek`: header and claims), its claims checked against a rule (`check_claims`), made
//! the policy's identity (`auth`) and copied to headers (`claim_value`); and the same bytes as
//! a JSON Web Key Set (`KeySet::parse`) verifying the token, and as an OpenID discovery
//! document (`parse_document`); the claim path as an issuer to discover from
//! (`document_uri`).
//!
//! Input: `\0`-separated `Authorization` value, query string, `Cookie` value, a claim path,
//! then the rest as a key set.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use waypoint::jwt::{JwtRule, KeySet, KeySource, Location};

fn rule() -> &'static JwtRule {
    static R: OnceLock<JwtRule> = OnceLock::new();
    R.get_or_init(|| JwtRule {
        source: "shop/jwt".into(),
        issuer: "https://idp.test".into(),
        audiences: vec!["shop".into(), "https://api.test/".into()],
        keys: KeySource::Remote {
            uri: http::Uri::from_static("http://127.0.0.1:1/jwks"),
            timeout: Duration::from_secs(1),
        },
        locations: Location::defaults(),
        output_payload_to_header: None,
        forward_original_token: false,
        claim_to_headers: Vec::new(),
    })
}

fn locations() -> &'static [Location] {
    static L: OnceLock<Vec<Location>> = OnceLock::new();
    L.get_or_init(|| {
        let mut l = Location::defaults();
        l.push(Location::Cookie("session".into()));
        l.push(Location::Header {
            name: header::AUTHORIZATION,
            prefix: String::new(),
        });
        l
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\0');
    let (auth, query, cookie, claim, rest) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut headers = HeaderMap::new();
    for (name, value) in [(header::AUTHORIZATION, auth), (header::COOKIE, cookie)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let keys = KeySet::parse(rest).ok().map(Arc::new);
    // Whatever a discovery document says, a key set URI is http(s) with a host.
    if let Ok(uri) = waypoint::jwt::parse_document(rest) {
        assert!(matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some());
    }
    if let Some(uri) = waypoint::jwt::document_uri(claim) {
        assert!(uri.path().ends_with(waypoint::jwt::WELL_KNOWN));
    }
    for location in locations() {
        let Some(token) = location.find(&headers, Some(query)) else {
            continue;
        };
        assert!(!token.is_empty());
        let Ok(peeked) = waypoint::jwt::peek(token) else {
            continue;
        };
        let _ = waypoint::jwt::check_claims(rule(), &peeked, 1.0e9);
        let identity = waypoint::jwt::auth(&peeked);
        assert!(identity.principal.contains('/'));
        let _ = waypoint::jwt::claim_value(&peeked.claims, claim);
        if let (Some(keys), Ok(alg)) = (&keys, peeked.alg.parse()) {
            let _ = keys.verify(token, alg, peeked.kid.as_deref());
        }
    }
});
