//! External authorization: what a CUSTOM AuthorizationPolicy asks before the request goes on,
//! as Envoy's `ext_authz` filter does for Istio's `envoyExtAuthzHttp` and `envoyExtAuthzGrpc`
//! extension providers.
//!
//! Rules, in order:
//! 1. The provider travels with the CUSTOM policy that names it (meshd resolved its service to
//!    an address); a CUSTOM policy without one denies what it matches (fail closed, in
//!    [`crate::request`]).
//! 2. One check per request, bounded by the provider's timeout (Istio's default: 10 minutes),
//!    connecting included. HTTP providers ([`http`]) get a request with the same method at
//!    `pathPrefix` + the original path (bodiless, unless rule 6); gRPC providers ([`grpc`])
//!    get `envoy.service.auth.v3.Authorization/Check`.
//! 3. Allowed (HTTP 200, gRPC status OK): the request continues to the DENY and ALLOW
//!    policies, carrying the headers the authorizer sent for the upstream; the headers it sent
//!    for the client are added to the response.
//! 4. Denied (any other HTTP status below 500; a gRPC status other than OK): the client gets
//!    the authorizer's status (403 when it named none), headers and body.
//! 5. The check failed (no connection, timeout, an HTTP 5xx, a gRPC error): allowed when the
//!    provider is `failOpen`, else the client gets `statusOnError` (403 unless set).
//! 6. A provider with `includeRequestBodyInCheck` is shown the request's body, up to
//!    `maxRequestBytes` ([`crate::request_body`]), with `x-envoy-auth-partial-body: true|false`
//!    among the check's headers (a request without body bytes: neither, as in Envoy). A
//!    longer body is cut there when `allowPartialMessage`, else the client gets 413 and no
//!    check is made (whatever `failOpen` says), as in Envoy. The body is waited for at most
//!    the provider's timeout (then 408), before the check's own.
//! 7. A TCP connection a CUSTOM policy matches is asked about as Envoy's network `ext_authz`
//!    filter asks, which Istio uses for it: gRPC providers only, a `CheckRequest` naming the
//!    source and destination peers and no HTTP request; OK lets the connection through to
//!    the DENY and ALLOW policies, anything else closes it, a failed check follows
//!    `failOpen`. An HTTP provider cannot be asked about a connection, which is therefore
//!    refused (fail closed).
//!
//! Telemetry marks both denials and failed checks `UAEX`.

mod grpc;
mod http;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use bytes::Bytes;

use crate::request_body::Prefix;

/// The header telling the authorizer whether it sees the whole body (rule 6), as Envoy names it.
pub const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// Istio's `includeRequestBodyInCheck` (rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyInCheck {
    /// More than 0.
    pub max_bytes: usize,
    pub allow_partial: bool,
    /// gRPC: the body goes in `raw_body`, not in `body` (which needs UTF-8).
    pub pack_as_bytes: bool,
}

/// Istio's default for a provider's `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A header name pattern as Istio's provider lists write them: `x-foo` (exact), `x-*`
/// (prefix), `*-id` (suffix); names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl HeaderPattern {
    /// Parses one entry; a bare `*` (presence) is refused, as Istio refuses it.
    pub fn parse(s: &str) -> Result<HeaderPattern, &'static str> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("an empty header name");
        }
        if s == "*" {
            return Err("`*` (presence) is not a header pattern");
        }
        if let Some(rest) = s.strip_suffix('*') {
            return Ok(HeaderPattern::Prefix(rest.to_string()));
        }
        if let Some(rest) = s.strip_prefix('*') {
            return Ok(HeaderPattern::Suffix(rest.to_string()));
        }
        Ok(HeaderPattern::Exact(s))
    }

    /// `name` as `http` gives it: already lower-case.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderPattern::Exact(s) => name == s,
            HeaderPattern::Prefix(s) => name.starts_with(s.as_str()),
            HeaderPattern::Suffix(s) => name.ends_with(s.as_str()),
        }
    }
}

fn any_matches(patterns: &[HeaderPattern], name: &HeaderName) -> bool {
    patterns.iter().any(|p| p.matches(name.as_str()))
}

/// What an `envoyExtAuthzHttp` provider adds to the common settings.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Prepended to the request's path; empty or starting with `/`.
    pub path_prefix: String,
    /// Request headers sent along (Host, Method, Path and Content-Length always are).
    pub include_request_headers: Vec<HeaderPattern>,
    /// Fixed headers added to every check, replacing a request header of that name.
    pub additional_headers: Vec<(HeaderName, HeaderValue)>,
    /// Which of the authorizer's headers go upstream on allow (none when empty).
    pub to_upstream_on_allow: Vec<HeaderPattern>,
    /// Which go to the client on deny (all but `Host` when empty, as Envoy does).
    pub to_downstream_on_deny: Vec<HeaderPattern>,
    /// Which go to the client on allow (none when empty).
    pub to_downstream_on_allow: Vec<HeaderPattern>,
}

#[derive(Debug, Clone)]
pub enum Protocol {
    Http(HttpSettings),
    Grpc,
}

/// One extension provider, as a CUSTOM policy carries it (rule 1).
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub protocol: Protocol,
    /// `host:port`, dialled in plaintext.
    pub address: String,
    pub timeout: Duration,
    pub fail_open: bool,
    pub status_on_error: StatusCode,
    /// `None`: checks carry no body (rule 6).
    pub body: Option<BodyInCheck>,
    /// The gRPC channel, made on first use (it needs the runtime) and then shared by every
    /// check of this provider: one HTTP/2 connection, redialled when it breaks.
    channel: OnceLock<tonic::transport::Channel>,
    /// The HTTP client, made on first use: idle connections are kept for the next checks.
    http: OnceLock<http::Client>,
    /// The second (since the epoch) of the last failed check logged: one line a second at
    /// most, so an authorizer outage under load does not flood the log.
    last_logged: AtomicU64,
}

impl Provider {
    pub fn new(
        name: String,
        protocol: Protocol,
        address: String,
        timeout: Duration,
        fail_open: bool,
        status_on_error: StatusCode,
    ) -> Provider {
        Provider {
            name,
            protocol,
            address,
            timeout,
            fail_open,
            status_on_error,
            body: None,
            channel: OnceLock::new(),
            http: OnceLock::new(),
            last_logged: AtomicU64::new(0),
        }
    }

    /// Rule 6: this provider is shown request bodies.
    pub fn with_body(mut self, body: Option<BodyInCheck>) -> Provider {
        self.body = body;
        self
    }

    /// Logs a failed check (rule 5) of a `what` ("request", "TCP connection"), once a second
    /// at most, so an authorizer outage under load does not flood the log.
    pub fn warn_failed(&self, e: &CheckError, what: &str) {
        if self.log_failure_now() {
            tracing::warn!(
                provider = %self.name,
                address = %self.address,
                fail_open = self.fail_open,
                error = %e,
                source = ?std::error::Error::source(e),
                of = what,
                "external authorization check failed (logged once a second at most)"
            );
        }
    }

    /// Whether a failed check should be logged now (at most one a second).
    pub fn log_failure_now(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_logged.swap(now, Ordering::Relaxed) != now
    }
}

/// What the authorizer is told about one request.
#[derive(Debug)]
pub struct CheckRequest<'a> {
    pub method: &'a Method,
    /// Path and query, as received.
    pub path: &'a str,
    /// `Host` or `:authority`.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub version: Version,
    /// The HBONE peer and its SPIFFE identity.
    pub source: SocketAddr,
    pub source_principal: String,
    /// The address the client dialled, and the waypoint's identity.
    pub destination: SocketAddr,
    pub destination_principal: String,
    /// Rule 6: what of the body the provider is shown.
    pub body: Option<Prefix>,
}

impl CheckRequest<'_> {
    /// Rule 6's header value, when a body is shown.
    fn partial_body(&self) -> Option<&'static str> {
        self.body
            .as_ref()
            .map(|b| if b.partial { "true" } else { "false" })
    }
}

/// One header the authorizer wants set on the request upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// Add beside an existing value instead of replacing it.
    pub append: bool,
}

/// What the authorizer allowed the request with (rule 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub upstream: Vec<HeaderEdit>,
    pub remove_upstream: Vec<HeaderName>,
    /// Set on the response to the client.
    pub downstream: Vec<(HeaderName, HeaderValue)>,
}

impl Allowed {
    /// Applies the upstream edits to a request's headers. `Host` stays as the client sent it:
    /// an authorizer neither removes it (as in Envoy) nor rewrites it.
    pub fn edit_request(&self, headers: &mut HeaderMap) {
        for name in &self.remove_upstream {
            if name != ::http::header::HOST {
                headers.remove(name);
            }
        }
        for e in self
            .upstream
            .iter()
            .filter(|e| e.name != ::http::header::HOST)
        {
            if e.append {
                headers.append(e.name.clone(), e.value.clone());
            } else {
                headers.insert(e.name.clone(), e.value.clone());
            }
        }
    }

    /// Applies the client-side headers to a response's.
    pub fn edit_response(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.downstream {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The authorizer's denial (rule 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denied),
}

/// Why a check failed (rule 5).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting included.
    #[error("HTTP exchange with the authorizer")]
    Http(#[from] hyper_util::client::legacy::Error),
    #[error("the authorizer answered {0}")]
    ServerError(StatusCode),
    #[error("the check request could not be made")]
    Request(#[from] ::http::Error),
    #[error("provider address {0:?} is not host:port")]
    Address(String),
    #[error("gRPC call failed")]
    Grpc(#[from] tonic::Status),
    #[error("an envoyExtAuthzHttp provider cannot check a TCP connection")]
    NotForConnections,
}

/// What the authorizer is told about a TCP connection (rule 7).
#[derive(Debug)]
pub struct ConnectionCheck {
    pub source: SocketAddr,
    pub source_principal: String,
    pub destination: SocketAddr,
    pub destination_principal: String,
}

/// Rule 7: whether `provider` lets the connection through; an `Err` is a failed check (rule 5),
/// or [`CheckError::NotForConnections`].
pub async fn check_connection(
    provider: &Provider,
    conn: &ConnectionCheck,
) -> Result<bool, CheckError> {
    if !matches!(provider.protocol, Protocol::Grpc) {
        return Err(CheckError::NotForConnections);
    }
    tokio::time::timeout(provider.timeout, grpc::check_connection(provider, conn))
        .await
        .map_err(|_| CheckError::Timeout(provider.timeout))?
}

/// Rules 2-4: asks `provider` about `req`; an `Err` is rule 5's failed check.
pub async fn check(provider: &Provider, req: &CheckRequest<'_>) -> Result<Decision, CheckError> {
    let asked = async {
        match &provider.protocol {
            Protocol::Http(settings) => http::check(provider, settings, req).await,
            Protocol::Grpc => grpc::check(provider, req).await,
        }
    };
    tokio::time::timeout(provider.timeout, asked)
        .await
        .map_err(|_| CheckError::Timeout(provider.timeout))?
}

/// Rule 5: what a failed check turns into.
pub fn on_error(provider: &Provider) -> Decision {
    match provider.fail_open {
        true => Decision::Allow(Allowed::default()),
        false => Decision::Deny(Denied {
            status: provider.status_on_error,
            headers: Vec::new(),
            body: Bytes::new(),
        }),
    }
}

/// Headers no authorizer may pass on: they describe one hop or one message's framing.
pub(crate) fn is_framing(name: &HeaderName) -> bool {
    use ::http::header;
    [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_patterns() {
        let rows: &[(&str, &str, bool)] = &[
            ("x-ext-authz", "x-ext-authz", true),
            ("X-Ext-Authz", "x-ext-authz", true),
            ("x-ext-authz", "x-ext-authz-2", false),
            ("x-*", "x-anything", true),
            ("x-*", "y-anything", false),
            ("*-id", "x-request-id", true),
            ("*-id", "x-request-ids", false),
        ];
        for (pattern, name, want) in rows {
            let p = HeaderPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(p.matches(name), *want, "{pattern} ~ {name}");
        }
        assert!(HeaderPattern::parse("*").is_err());
        assert!(HeaderPattern::parse(" ").is_err());
    }

    #[test]
    fn allowed_edits_replace_append_and_remove_but_keep_the_host() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api"));
        h.insert("x-user", HeaderValue::from_static("forged"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        let allowed = Allowed {
            upstream: vec![
                HeaderEdit {
                    name: HeaderName::from_static("x-user"),
                    value: HeaderValue::from_static("alice"),
                    append: false,
                },
                HeaderEdit {
                    name: HeaderName::from_static("x-tag"),
                    value: HeaderValue::from_static("b"),
                    append: true,
                },
                HeaderEdit {
                    name: HeaderName::from_static("host"),
                    value: HeaderValue::from_static("elsewhere"),
                    append: false,
                },
            ],
            remove_upstream: vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("host"),
            ],
            downstream: Vec::new(),
        };
        allowed.edit_request(&mut h);
        assert_eq!(h.get_all("x-user").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(h.get("authorization").is_none());
        assert_eq!(h.get("host").map(|v| v.as_bytes()), Some(&b"api"[..]));
    }

    #[test]
    fn failures_are_logged_once_a_second_at_most() {
        let p = Provider::new(
            "p".into(),
            Protocol::Grpc,
            "127.0.0.1:1".into(),
            DEFAULT_TIMEOUT,
            false,
            StatusCode::FORBIDDEN,
        );
        let logged = (0..100).filter(|_| p.log_failure_now()).count();
        // The second may turn over once during the loop.
        assert!((1..=2).contains(&logged), "{logged}");
    }

    #[test]
    fn a_failed_check_allows_only_when_fail_open() {
        let p = |fail_open| {
            Provider::new(
                "p".into(),
                Protocol::Grpc,
                "127.0.0.1:1".into(),
                DEFAULT_TIMEOUT,
                fail_open,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        };
        assert_eq!(on_error(&p(true)), Decision::Allow(Allowed::default()));
        match on_error(&p(false)) {
            Decision::Deny(d) => assert_eq!(d.status, StatusCode::SERVICE_UNAVAILABLE),
            other => panic!("{other:?}"),
        }
    }
}
