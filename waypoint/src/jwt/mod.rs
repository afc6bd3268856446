//! RequestAuthentication at the waypoint: a request's JWT checked against the target's rules
//! before policy decides, as Envoy's `jwt_authn` filter does for Istio.
//!
//! Rules, in order, per request at a target with rules (none: nothing happens):
//! 1. Headers the rules write (`outputPayloadToHeader`, `outputClaimToHeaders`) are removed
//!    from what the client sent, so only a verified token can set them (ours: Envoy leaves a
//!    client's copy when there is no token).
//! 2. The token is the first found at a rule's locations, rules in order ([`token`]). No token:
//!    the request goes on with no request principal; policy decides (Istio's `allow_missing`).
//! 3. A token that cannot be read, whose issuer no rule names, that is outside its `exp`/`nbf`
//!    (60 s of clock skew), has none of the rule's audiences (when it lists any; `http(s)://`
//!    and a trailing `/` ignored, as Envoy compares), or that no key of the rule verifies, is
//!    refused: 401 with Envoy's words for the cause, except audiences: 403, as Envoy answers;
//!    both challenge with `www-authenticate` naming the request's URI ([`challenge`]).
//!    With several rules for one issuer, the first that accepts the token wins.
//! 4. Keys: the rule's inline `jwks`, or its `jwksUri` through the shared [`KeyCache`] (a
//!    `kid` the set lacks asks for a refetch, rate-limited there), or with neither, the
//!    `jwks_uri` of the issuer's OpenID discovery document ([`document_uri`]), cached there too,
//!    and then its keys as a `jwksUri`'s. Keys that cannot be had (a fetch or the discovery
//!    failed, an issuer that makes no URL) refuse the token: 401 `Jwks remote fetch is failed`.
//! 5. Accepted: the policy view gets the principal `<iss>/<sub>`, the audiences, `azp` and the
//!    claims; the token's header is removed unless `forwardOriginalToken` (a query parameter or
//!    cookie stays, as with Envoy); the payload and claims are written where the rule says.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authz::http::JwtAuth;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use jsonwebtoken::Algorithm;

mod discovery;
mod fetch;
mod keys;
pub mod token;

pub use discovery::{DiscoveryError, WELL_KNOWN, document_uri, parse_document};
pub use fetch::{FetchError, FetchSettings, KeyCache, Unreadable};
pub use keys::{KeySet, KeysError, SignatureError};
pub use token::{FormatError, Location, Peeked, peek};

/// Envoy's default clock skew (rule 3).
const LEEWAY_SECS: f64 = 60.0;

/// Where a rule's keys come from (rule 4).
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(Arc<KeySet>),
    Remote {
        uri: Uri,
        timeout: Duration,
    },
    /// Neither `jwks` nor `jwksUri`: OpenID discovery. `document` is the issuer's discovery
    /// document URL ([`document_uri`]), `None` when the issuer makes none.
    Discovered {
        document: Option<Uri>,
        timeout: Duration,
    },
}

/// One `jwtRules` entry, checked at the config boundary.
#[derive(Debug, Clone)]
pub struct JwtRule {
    /// `<namespace>/<name>` of its RequestAuthentication, for logs.
    pub source: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// Never empty ([`Location::defaults`] when the rule names none).
    pub locations: Vec<Location>,
    pub output_payload_to_header: Option<HeaderName>,
    pub forward_original_token: bool,
    /// Header <- claim (a `.` path into nested objects).
    pub claim_to_headers: Vec<(HeaderName, String)>,
}

/// Why a token was refused (rule 3), with Envoy's status and body for each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("malformed token: {0}")]
    Format(#[from] FormatError),
    #[error("algorithm {0:?} is not supported")]
    Algorithm(String),
    #[error("issuer is not configured")]
    UnknownIssuer,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("audience not allowed")]
    Audience,
    #[error("no key matches the token's kid and alg")]
    NoKey,
    #[error("signature does not verify")]
    Signature,
    #[error("keys could not be fetched")]
    Fetch,
}

impl Failure {
    /// Envoy's status: 403 for audiences, 401 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Failure::Audience => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// Envoy's body (jwt_verify_lib's status strings).
    pub fn body(&self) -> &'static str {
        match self {
            Failure::Format(f) => match f {
                FormatError::Parts => {
                    "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
                }
                FormatError::Base64("header") => "Jwt header is an invalid Base64url encoded",
                FormatError::Base64(_) => "Jwt payload is an invalid Base64url encoded",
                FormatError::Json("header") => "Jwt header is an invalid JSON",
                FormatError::Json(_) => "Jwt payload is an invalid JSON",
                FormatError::ClaimType("alg") => {
                    "Jwt header [alg] field is required and must be a string"
                }
                FormatError::ClaimType("kid") => "Jwt header [kid] field is not a string",
                FormatError::ClaimType("aud") => {
                    "Jwt payload [aud] field is not a string or string list"
                }
                FormatError::ClaimType("nbf") => "Jwt payload [nbf] field is not an integer",
                FormatError::ClaimType(_) => "Jwt payload [exp] field is not an integer",
            },
            Failure::Algorithm(_) => "Jwt header [alg] is not supported",
            Failure::UnknownIssuer => "Jwt issuer is not configured",
            Failure::Expired => "Jwt is expired",
            Failure::NotYetValid => "Jwt not yet valid",
            Failure::Audience => "Audiences in Jwt are not allowed",
            Failure::NoKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Failure::Signature => "Jwt verification fails",
            Failure::Fetch => "Jwks remote fetch is failed",
        }
    }
}

/// Envoy's longest path in a challenge's realm.
const REALM_PATH_MAX: usize = 256;

/// Rule 3's `www-authenticate` for a refused token, as Envoy's `jwt_authn` writes it: the
/// request's URI as the realm (the waypoint serves plain HTTP inside HBONE, so `http`; the path
/// and query cut at 256 bytes) and the `invalid_token` error. `None` when the host or path
/// could not be a header value.
pub fn challenge(host: &str, path_and_query: &str) -> Option<HeaderValue> {
    let path = path_and_query
        .get(..REALM_PATH_MAX.min(path_and_query.len()))
        .unwrap_or(path_and_query);
    let value = format!("Bearer realm=\"http://{host}{path}\", error=\"invalid_token\"");
    HeaderValue::from_str(&value).ok()
}

/// A refusal with the rule it was checked against, for the log.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub failure: Failure,
    /// The RequestAuthentication whose rule refused it, when one was chosen.
    pub source: Option<String>,
}

/// Rules 1-5 for `req` at a target with `rules`: the identity for policy, or a refusal.
pub async fn authenticate<B>(
    cache: &KeyCache,
    rules: &[JwtRule],
    req: &mut Request<B>,
) -> Result<Option<JwtAuth>, Rejection> {
    if rules.is_empty() {
        return Ok(None);
    }
    // Rule 1.
    for rule in rules {
        if let Some(h) = &rule.output_payload_to_header {
            req.headers_mut().remove(h);
        }
        for (h, _) in &rule.claim_to_headers {
            req.headers_mut().remove(h);
        }
    }
    // Rule 2.
    let query = req.uri().query();
    let Some((token, location)) = rules.iter().flat_map(|r| &r.locations).find_map(|l| {
        l.find(req.headers(), query)
            .map(|t| (t.to_string(), l.clone()))
    }) else {
        return Ok(None);
    };
    let reject = |failure, source: Option<&str>| Rejection {
        failure,
        source: source.map(str::to_string),
    };
    let peeked = peek(&token).map_err(|e| reject(e.into(), None))?;
    let candidates = rules
        .iter()
        .filter(|r| Some(r.issuer.as_str()) == peeked.issuer() && r.locations.contains(&location));
    let mut last = None;
    for rule in candidates {
        match check(cache, rule, &token, &peeked).await {
            Ok(auth) => {
                apply_outputs(rule, &location, &peeked, req.headers_mut());
                return Ok(Some(auth));
            }
            Err(f) => last = Some(reject(f, Some(&rule.source))),
        }
    }
    Err(last.unwrap_or_else(|| reject(Failure::UnknownIssuer, None)))
}

/// Rules 3 and 4 for one rule whose issuer is the token's.
async fn check(
    cache: &KeyCache,
    rule: &JwtRule,
    token: &str,
    peeked: &Peeked<'_>,
) -> Result<JwtAuth, Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    check_claims(rule, peeked, now)?;
    let alg: Algorithm = peeked
        .alg
        .parse()
        .map_err(|_| Failure::Algorithm(peeked.alg.clone()))?;
    let kid = peeked.kid.as_deref();
    match &rule.keys {
        KeySource::Inline(keys) => verify(keys, token, alg, kid)?,
        KeySource::Remote { uri, timeout } => {
            remote(cache, uri, *timeout, token, alg, kid).await?;
        }
        KeySource::Discovered { document, timeout } => {
            let document = document.as_ref().ok_or(Failure::Fetch)?;
            let uri = cache
                .discovered(document, *timeout)
                .await
                .map_err(|_| Failure::Fetch)?;
            remote(cache, &uri, *timeout, token, alg, kid).await?;
        }
    }
    Ok(auth(peeked))
}

/// Rule 4 for keys fetched from `uri`: a `kid` the set lacks asks for a refetch.
async fn remote(
    cache: &KeyCache,
    uri: &Uri,
    timeout: Duration,
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<(), Failure> {
    let keys = cache.keys(uri, timeout).await.map_err(|_| Failure::Fetch)?;
    let unknown_kid = kid.is_some_and(|k| !keys.has_kid(k));
    match verify(&keys, token, alg, kid) {
        Err(Failure::NoKey) if unknown_kid => {
            let fresh = cache
                .refetch(uri, timeout, &keys)
                .await
                .ok_or(Failure::NoKey)?;
            verify(&fresh, token, alg, kid)
        }
        other => other,
    }
}

fn verify(keys: &KeySet, token: &str, alg: Algorithm, kid: Option<&str>) -> Result<(), Failure> {
    keys.verify(token, alg, kid).map_err(|e| match e {
        SignatureError::NoKey => Failure::NoKey,
        SignatureError::Invalid => Failure::Signature,
    })
}

/// Rule 3's checks of the claims, at `now` (seconds since the epoch).
pub fn check_claims(rule: &JwtRule, peeked: &Peeked<'_>, now: f64) -> Result<(), Failure> {
    if peeked.issuer() != Some(rule.issuer.as_str()) {
        return Err(Failure::UnknownIssuer);
    }
    if peeked
        .time("exp")?
        .is_some_and(|exp| now > exp + LEEWAY_SECS)
    {
        return Err(Failure::Expired);
    }
    if peeked
        .time("nbf")?
        .is_some_and(|nbf| now + LEEWAY_SECS < nbf)
    {
        return Err(Failure::NotYetValid);
    }
    let audiences = peeked.audiences()?;
    if !rule.audiences.is_empty()
        && !audiences
            .iter()
            .any(|a| rule.audiences.iter().any(|want| same_audience(a, want)))
    {
        return Err(Failure::Audience);
    }
    Ok(())
}

/// Envoy's audience comparison: scheme and a trailing slash do not count.
fn same_audience(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        s.strip_suffix('/').unwrap_or(s)
    }
    norm(a) == norm(b)
}

/// Rule 5's identity.
pub fn auth(peeked: &Peeked<'_>) -> JwtAuth {
    let text = |claim: &str| peeked.claims.get(claim).and_then(|v| v.as_str());
    JwtAuth {
        principal: format!(
            "{}/{}",
            peeked.issuer().unwrap_or_default(),
            text("sub").unwrap_or_default()
        ),
        audiences: peeked.audiences().unwrap_or_default(),
        presenter: text("azp").map(str::to_string),
        claims: serde_json::Value::Object(peeked.claims.clone()),
    }
}

/// Rule 5's header changes.
fn apply_outputs(
    rule: &JwtRule,
    location: &Location,
    peeked: &Peeked<'_>,
    headers: &mut HeaderMap,
) {
    if let (false, Location::Header { name, .. }) = (rule.forward_original_token, location) {
        headers.remove(name);
    }
    if let Some(h) = &rule.output_payload_to_header {
        if let Ok(v) = HeaderValue::from_str(peeked.payload_segment) {
            headers.insert(h.clone(), v);
        }
    }
    for (h, claim) in &rule.claim_to_headers {
        if let Some(v) = claim_value(&peeked.claims, claim) {
            headers.insert(h.clone(), v);
        }
    }
}

/// A claim as a header value: strings as they are, numbers and booleans printed; objects,
/// lists and absent claims give no header (as Istio documents). `a.b` reads nested objects.
pub fn claim_value(
    claims: &serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<HeaderValue> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for p in parts {
        value = value.as_object()?.get(p)?;
    }
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_challenge_names_the_uri_as_envoy_does() {
        let c = challenge("api.shop", "/pay?x=1").unwrap();
        assert_eq!(
            c,
            "Bearer realm=\"http://api.shop/pay?x=1\", error=\"invalid_token\""
        );
        // The path and query are cut at 256 bytes.
        let long = format!("/{}", "a".repeat(300));
        let c = challenge("h", &long).unwrap();
        let want = format!(
            "Bearer realm=\"http://h{}\", error=\"invalid_token\"",
            &long[..256]
        );
        assert_eq!(c.to_str().unwrap(), want);
        // Nothing that could not be a header value.
        assert_eq!(challenge("bad\nhost", "/"), None);
    }

    fn rule(audiences: &[&str]) -> JwtRule {
        JwtRule {
            source: "shop/jwt".into(),
            issuer: "https://idp".into(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            keys: KeySource::Remote {
                uri: Uri::from_static("http://idp/jwks"),
                timeout: Duration::from_secs(1),
            },
            locations: Location::defaults(),
            output_payload_to_header: None,
            forward_original_token: false,
            claim_to_headers: Vec::new(),
        }
    }

    fn token(claims: &serde_json::Value) -> String {
        let part = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", part(&json!({"alg": "RS256"})), part(claims))
    }

    #[test]
    fn claims_are_checked_as_envoy_does() {
        const NOW: f64 = 1_000_000.0;
        type Row = (
            &'static str,
            &'static [&'static str],
            serde_json::Value,
            Result<(), Failure>,
        );
        let rows: Vec<Row> = vec![
            (
                "plain",
                &[],
                json!({"iss": "https://idp", "exp": NOW + 1.0}),
                Ok(()),
            ),
            ("no exp", &[], json!({"iss": "https://idp"}), Ok(())),
            (
                "other issuer",
                &[],
                json!({"iss": "https://evil"}),
                Err(Failure::UnknownIssuer),
            ),
            (
                "no issuer",
                &[],
                json!({"sub": "x"}),
                Err(Failure::UnknownIssuer),
            ),
            (
                "expired within skew",
                &[],
                json!({"iss": "https://idp", "exp": NOW - 59.0}),
                Ok(()),
            ),
            (
                "expired",
                &[],
                json!({"iss": "https://idp", "exp": NOW - 61.0}),
                Err(Failure::Expired),
            ),
            (
                "early within skew",
                &[],
                json!({"iss": "https://idp", "nbf": NOW + 59.0}),
                Ok(()),
            ),
            (
                "early",
                &[],
                json!({"iss": "https://idp", "nbf": NOW + 61.0}),
                Err(Failure::NotYetValid),
            ),
            (
                "exp not a number",
                &[],
                json!({"iss": "https://idp", "exp": "later"}),
                Err(Failure::Format(FormatError::ClaimType("exp"))),
            ),
            (
                "any audience when none listed",
                &[],
                json!({"iss": "https://idp", "aud": "x"}),
                Ok(()),
            ),
            (
                "listed audience",
                &["shop"],
                json!({"iss": "https://idp", "aud": ["bank", "shop"]}),
                Ok(()),
            ),
            (
                "scheme and slash ignored",
                &["https://shop.test/"],
                json!({"iss": "https://idp", "aud": "http://shop.test"}),
                Ok(()),
            ),
            (
                "other audience",
                &["shop"],
                json!({"iss": "https://idp", "aud": "bank"}),
                Err(Failure::Audience),
            ),
            (
                "no audience",
                &["shop"],
                json!({"iss": "https://idp"}),
                Err(Failure::Audience),
            ),
            (
                "audience not strings",
                &["shop"],
                json!({"iss": "https://idp", "aud": [1]}),
                Err(Failure::Format(FormatError::ClaimType("aud"))),
            ),
        ];
        for (name, audiences, claims, want) in rows {
            let t = token(&claims);
            let peeked = peek(&t).expect("reads");
            assert_eq!(check_claims(&rule(audiences), &peeked, NOW), want, "{name}");
        }
    }

    #[test]
    fn identity_and_claim_headers() {
        let t = token(&json!({
            "iss": "https://idp", "sub": "alice", "aud": "shop", "azp": "web",
            "n": 7, "ok": true, "list": ["a"], "org": {"team": "payments", "bad": "a\nb"},
        }));
        let peeked = peek(&t).expect("reads");
        let a = auth(&peeked);
        assert_eq!(a.principal, "https://idp/alice");
        assert_eq!(a.audiences, ["shop"]);
        assert_eq!(a.presenter.as_deref(), Some("web"));
        assert_eq!(a.claims["org"]["team"], "payments");
        for (path, want) in [
            ("sub", Some("alice")),
            ("n", Some("7")),
            ("ok", Some("true")),
            ("org.team", Some("payments")),
            ("list", None),
            ("org", None),
            ("org.bad", None),
            ("org.team.x", None),
            ("missing", None),
            ("", None),
        ] {
            let got = claim_value(&peeked.claims, path);
            assert_eq!(got.as_ref().and_then(|v| v.to_str().ok()), want, "{path}");
        }
        // No subject: the issuer alone, as Istio forms it.
        let t = token(&json!({"iss": "https://idp"}));
        assert_eq!(auth(&peek(&t).expect("reads")).principal, "https://idp/");
    }

    #[test]
    fn failures_answer_as_envoy() {
        assert_eq!(Failure::Audience.status(), http::StatusCode::FORBIDDEN);
        for f in [
            Failure::Signature,
            Failure::Expired,
            Failure::UnknownIssuer,
            Failure::Fetch,
            Failure::Format(FormatError::Parts),
        ] {
            assert_eq!(f.status(), http::StatusCode::UNAUTHORIZED, "{f}");
        }
        assert_eq!(Failure::Signature.body(), "Jwt verification fails");
        assert_eq!(
            Failure::UnknownIssuer.body(),
            "Jwt issuer is not configured"
        );
    }
}
