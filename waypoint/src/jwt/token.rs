//! Finding a token in a request, and reading its header and claims before any key is used.
//!
//! Rules, in order:
//! 1. A rule's locations are searched in the order Istio lists them: `fromHeaders`, then
//!    `fromParams`, then `fromCookies`; with none of them set, `Authorization: Bearer <token>`
//!    and the `access_token` query parameter (Istio's default).
//! 2. A header location takes the value after its prefix (the scheme of `Bearer ` ignoring
//!    ASCII case, as RFC 6750 reads it; any other prefix exactly), trimmed. A header present
//!    without the prefix, or an empty token, is no token: the request goes on without one.
//! 3. Query parameters and cookies are taken as sent (a JWT is base64url and dots: nothing to
//!    decode). The first match wins.
//! 4. A token is `header.payload.signature`, each base64url without padding (padding is
//!    tolerated, as Envoy does); the header and payload must be JSON objects. What this reads
//!    is only a selector (which rule, which key): nothing is trusted before the signature is
//!    checked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, header};

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header, with the prefix to strip from its value (`Bearer `), possibly empty.
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl Location {
    /// Rule 1's default: `Authorization: Bearer ` and `access_token`.
    pub fn defaults() -> Vec<Location> {
        vec![
            Location::Header {
                name: header::AUTHORIZATION,
                prefix: "Bearer ".to_string(),
            },
            Location::Param("access_token".to_string()),
        ]
    }

    /// The token at this location, if any (rules 2 and 3).
    pub fn find<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
        let token = match self {
            Location::Header { name, prefix } => headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| strip_prefix(v.trim(), prefix))?,
            Location::Param(name) => query?
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)?,
            Location::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim_matches('"'))?,
        };
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    }
}

/// Rule 2.
fn strip_prefix<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(value);
    }
    let head = value.get(..prefix.len())?;
    let matches = match prefix.eq_ignore_ascii_case("bearer ") {
        true => head.eq_ignore_ascii_case(prefix),
        false => head == prefix,
    };
    matches.then(|| &value[prefix.len()..])
}

/// Why a token cannot even be read (Envoy's `JwtBadFormat` family: 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not three dot-separated parts")]
    Parts,
    #[error("{0} is not base64url")]
    Base64(&'static str),
    #[error("{0} is not a JSON object")]
    Json(&'static str),
    #[error("claim {0} has the wrong type")]
    ClaimType(&'static str),
}

/// A token's parts, read but not verified (rule 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Peeked<'a> {
    /// The header's `alg`, as written.
    pub alg: String,
    pub kid: Option<String>,
    /// The payload segment as sent (base64url), for `outputPayloadToHeader`.
    pub payload_segment: &'a str,
    /// The payload, a JSON object.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Peeked<'_> {
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(|v| v.as_str())
    }

    /// A numeric date claim (`exp`, `nbf`): absent is `None`, anything but a number an error.
    pub fn time(&self, claim: &'static str) -> Result<Option<f64>, FormatError> {
        match self.claims.get(claim) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(FormatError::ClaimType(claim)),
        }
    }

    /// `aud` as a list: a string is one audience; absent is none.
    pub fn audiences(&self) -> Result<Vec<String>, FormatError> {
        match self.claims.get("aud") {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::String(s)) => Ok(vec![s.clone()]),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(FormatError::ClaimType("aud")),
            Some(_) => Err(FormatError::ClaimType("aud")),
        }
    }
}

/// Rule 4: the header's `alg` and `kid`, and the claims.
pub fn peek(token: &str) -> Result<Peeked<'_>, FormatError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FormatError::Parts);
    };
    let header: serde_json::Map<String, serde_json::Value> = json(header, "header")?;
    let claims = json(payload, "payload")?;
    let alg = header
        .get("alg")
        .and_then(|v| v.as_str())
        .ok_or(FormatError::ClaimType("alg"))?
        .to_string();
    let kid = match header.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(FormatError::ClaimType("kid")),
    };
    Ok(Peeked {
        alg,
        kid,
        payload_segment: payload,
        claims,
    })
}

fn json(
    segment: &str,
    what: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, FormatError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| FormatError::Base64(what))?;
    serde_json::from_slice(&bytes).map_err(|_| FormatError::Json(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn tokens_are_found_where_rules_say() {
        let bearer = Location::defaults().remove(0);
        let custom = Location::Header {
            name: HeaderName::from_static("x-jwt"),
            prefix: "Token ".into(),
        };
        let bare = Location::Header {
            name: HeaderName::from_static("x-jwt"),
            prefix: String::new(),
        };
        let param = Location::Param("access_token".into());
        let cookie = Location::Cookie("session".into());
        type Row = (
            &'static str,
            Location,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
            Option<&'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                "bearer",
                bearer.clone(),
                &[("authorization", "Bearer a.b.c")],
                None,
                Some("a.b.c"),
            ),
            (
                "scheme any case",
                bearer.clone(),
                &[("authorization", "bearer a.b.c")],
                None,
                Some("a.b.c"),
            ),
            (
                "padded",
                bearer.clone(),
                &[("authorization", "  Bearer  a.b.c ")],
                None,
                Some("a.b.c"),
            ),
            (
                "basic is not bearer",
                bearer.clone(),
                &[("authorization", "Basic dXNlcg==")],
                None,
                None,
            ),
            (
                "empty bearer",
                bearer.clone(),
                &[("authorization", "Bearer ")],
                None,
                None,
            ),
            (
                "second value",
                bearer.clone(),
                &[("authorization", "Basic x"), ("authorization", "Bearer t")],
                None,
                Some("t"),
            ),
            ("no header", bearer.clone(), &[], None, None),
            (
                "custom prefix is exact",
                custom.clone(),
                &[("x-jwt", "token a.b.c")],
                None,
                None,
            ),
            (
                "custom prefix",
                custom,
                &[("x-jwt", "Token a.b.c")],
                None,
                Some("a.b.c"),
            ),
            (
                "no prefix",
                bare,
                &[("x-jwt", "a.b.c")],
                None,
                Some("a.b.c"),
            ),
            (
                "param",
                param.clone(),
                &[],
                Some("x=1&access_token=a.b.c&y=2"),
                Some("a.b.c"),
            ),
            (
                "param name exact",
                param.clone(),
                &[],
                Some("my_access_token=a.b.c"),
                None,
            ),
            (
                "empty param",
                param.clone(),
                &[],
                Some("access_token="),
                None,
            ),
            ("no query", param, &[], None, None),
            (
                "cookie",
                cookie.clone(),
                &[("cookie", "a=1; session=a.b.c; b=2")],
                None,
                Some("a.b.c"),
            ),
            (
                "quoted cookie",
                cookie.clone(),
                &[("cookie", "session=\"a.b.c\"")],
                None,
                Some("a.b.c"),
            ),
            (
                "other cookie",
                cookie,
                &[("cookie", "sessionx=a.b.c")],
                None,
                None,
            ),
        ];
        for (name, location, hs, query, want) in rows {
            let h = headers(hs);
            assert_eq!(location.find(&h, query), want, "{name}");
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn tokens_are_read_before_they_are_trusted() {
        let header = b64(r#"{"alg":"ES256","kid":"k1"}"#);
        let payload = b64(r#"{"iss":"https://idp","sub":"u","aud":["a","b"],"exp":10,"nbf":1.5}"#);
        let token = format!("{header}.{payload}.sig");
        let p = peek(&token).expect("reads");
        assert_eq!((p.alg.as_str(), p.kid.as_deref()), ("ES256", Some("k1")));
        assert_eq!(p.issuer(), Some("https://idp"));
        assert_eq!(p.payload_segment, payload);
        assert_eq!(p.audiences().expect("aud"), ["a", "b"]);
        assert_eq!(p.time("exp"), Ok(Some(10.0)));
        assert_eq!(p.time("nbf"), Ok(Some(1.5)));

        let one_aud = format!("{header}.{}.s", b64(r#"{"aud":"a","exp":"soon"}"#));
        let p = peek(&one_aud).expect("reads");
        assert_eq!(p.audiences().expect("aud"), ["a"]);
        assert_eq!(p.time("exp"), Err(FormatError::ClaimType("exp")));
        assert_eq!(p.issuer(), None);

        let object = b64("{}");
        for (token, want) in [
            ("a.b".to_string(), FormatError::Parts),
            ("a.b.c.d".to_string(), FormatError::Parts),
            (format!("!.{object}.s"), FormatError::Base64("header")),
            (
                format!("{}.{object}.s", b64("[1]")),
                FormatError::Json("header"),
            ),
            (
                format!("{object}.{object}.s"),
                FormatError::ClaimType("alg"),
            ),
            (
                format!("{}.{object}.s", b64(r#"{"alg":"RS256","kid":7}"#)),
                FormatError::ClaimType("kid"),
            ),
            (
                format!("{header}.{}.s", b64("null")),
                FormatError::Json("payload"),
            ),
        ] {
            assert_eq!(peek(&token), Err(want), "{token}");
        }
        // Padding is tolerated.
        let padded = format!("{header}==.{payload}=.s");
        assert!(peek(&padded).is_ok());
    }
}
