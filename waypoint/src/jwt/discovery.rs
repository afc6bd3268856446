//! OpenID Connect discovery: where a rule with neither `jwks` nor `jwksUri` finds its keys,
//! from its issuer, as Istio's `JwksResolver` does.
//!
//! Rules, in order:
//! 1. The discovery document is at the issuer, one trailing `/` removed, followed by
//!    `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4; Istio
//!    joins them the same way). An issuer that does not make an `http(s)` URL with a host
//!    (or has a query or fragment) has no document: its tokens are refused (Istio accepts
//!    the rule; its fetch fails).
//! 2. The document is a JSON object whose `jwks_uri` is a string; that string must be an
//!    `http(s)` URL with a host. Anything else is an error (not a panic): the issuer's tokens
//!    are refused.
//! 3. Fetching and caching the document, and then the keys at its `jwks_uri`, are
//!    [`super::fetch`]'s (the rule's timeout, 1 MiB, refresh and failure rules); this file
//!    only decides, it does no IO.

use http::Uri;

/// Rule 1's suffix.
pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// Why a discovery document gives no key set URI (rule 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("jwks_uri is missing or not a string")]
    NoJwksUri,
    #[error("jwks_uri {0:?} is not an http(s) URL")]
    NotHttp(String),
}

/// Rule 1: the discovery document's URL for `issuer`, `None` when it makes none.
pub fn document_uri(issuer: &str) -> Option<Uri> {
    let base = issuer.strip_suffix('/').unwrap_or(issuer);
    // An issuer has no query or fragment (Discovery 1.0, section 2): the suffix would land in it.
    http_url(&format!("{base}{WELL_KNOWN}"))
        .filter(|u| u.query().is_none() && u.path().ends_with(WELL_KNOWN))
}

/// Rule 2: the key set URI a discovery document names.
pub fn parse_document(text: &str) -> Result<Uri, DiscoveryError> {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| DiscoveryError::Json(e.to_string()))?;
    let uri = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or(DiscoveryError::NoJwksUri)?;
    http_url(uri).ok_or_else(|| DiscoveryError::NotHttp(uri.to_string()))
}

fn http_url(s: &str) -> Option<Uri> {
    let uri = s.parse::<Uri>().ok()?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some();
    ok.then_some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_at_the_issuer_as_istio_joins_them() {
        for (issuer, want) in [
            (
                "https://idp.test",
                Some("https://idp.test/.well-known/openid-configuration"),
            ),
            (
                "https://idp.test/",
                Some("https://idp.test/.well-known/openid-configuration"),
            ),
            (
                "https://idp.test/realms/shop",
                Some("https://idp.test/realms/shop/.well-known/openid-configuration"),
            ),
            // Only one slash goes, as Istio trims it.
            (
                "http://idp.test:8080/a//",
                Some("http://idp.test:8080/a//.well-known/openid-configuration"),
            ),
            ("https://idp.test?tenant=a", None),
            ("https://idp.test#a", None),
            ("testing@secure.istio.io", None),
            ("idp.test", None),
            ("ftp://idp.test", None),
            ("https://", None),
            ("https://idp test", None),
            ("", None),
        ] {
            let got = document_uri(issuer).map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{issuer:?}");
        }
    }

    #[test]
    fn the_document_must_name_an_http_key_set() {
        for (text, want) in [
            (
                r#"{"issuer": "https://idp.test", "jwks_uri": "https://idp.test/keys"}"#,
                Ok("https://idp.test/keys"),
            ),
            (
                r#"{"jwks_uri": "http://10.0.0.1:8080/certs"}"#,
                Ok("http://10.0.0.1:8080/certs"),
            ),
            (
                r#"{"issuer": "https://idp.test"}"#,
                Err(DiscoveryError::NoJwksUri),
            ),
            (r#"{"jwks_uri": 7}"#, Err(DiscoveryError::NoJwksUri)),
            (r#"{"jwks_uri": null}"#, Err(DiscoveryError::NoJwksUri)),
            (
                r#"{"jwks_uri": "file:///etc/keys"}"#,
                Err(DiscoveryError::NotHttp("file:///etc/keys".into())),
            ),
            (
                r#"{"jwks_uri": "/keys"}"#,
                Err(DiscoveryError::NotHttp("/keys".into())),
            ),
            (
                r#"{"jwks_uri": ""}"#,
                Err(DiscoveryError::NotHttp(String::new())),
            ),
        ] {
            let got = parse_document(text).map(|u| u.to_string());
            assert_eq!(got, want.map(str::to_string), "{text}");
        }
        for text in ["", "not json", "[]", r#""https://idp.test/keys""#, "{"] {
            assert!(
                matches!(parse_document(text), Err(DiscoveryError::Json(_))),
                "{text:?}"
            );
        }
    }
}
