//! The `envoyExtAuthzHttp` check: one plain HTTP/1.1 request per check, on a connection kept
//! per provider (idle ones are reused).
//!
//! Rules, in order:
//! 1. The check has the request's method and `pathPrefix` + its path and query; `Host` is the
//!    request's. Its body is what the provider is shown of the request's (`mod.rs` rule 6,
//!    with `x-envoy-auth-partial-body`), else none; `Content-Length` is that body's.
//! 2. Request headers matching `includeRequestHeadersInCheck` go along (the framing ones
//!    never), then `includeAdditionalHeadersInCheck`, which replace a same-named one.
//! 3. 200 allows: the answer's headers matching `headersToUpstreamOnAllow` replace the
//!    request's upstream, those matching `headersToDownstreamOnAllow` go to the client.
//! 4. A 5xx is a failed check (Istio's `failOpen` covers it); any other status denies with
//!    that status, the answer's body (at most [`MAX_DENY_BODY`] bytes) and its headers
//!    matching `headersToDownstreamOnDeny` (with `WWW-Authenticate` and `Location`, as Envoy
//!    adds them), or all of them but `Host` when that list is empty.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{
    Allowed, CheckError, CheckRequest, Decision, Denied, HeaderEdit, HeaderPattern, HttpSettings,
    Provider, any_matches, is_framing,
};

/// The most of a denial's body passed on to the client; past that the check failed.
pub const MAX_DENY_BODY: usize = 64 * 1024;

/// A provider's pooled HTTP/1.1 client.
pub(super) type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

pub(super) async fn check(
    provider: &Provider,
    settings: &HttpSettings,
    req: &CheckRequest<'_>,
) -> Result<Decision, CheckError> {
    let mut check = request(settings, req)?;
    // The client dials the URI's authority; the request keeps the original Host.
    let mut uri = check.uri().clone().into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(
        provider
            .address
            .parse()
            .map_err(|_| CheckError::Address(provider.address.clone()))?,
    );
    *check.uri_mut() = Uri::from_parts(uri).map_err(http::Error::from)?;
    let client = provider.http.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
    });
    let resp = client.request(check).await?;
    let status = resp.status();
    if status == StatusCode::OK {
        return Ok(Decision::Allow(allowed(settings, resp.headers())));
    }
    if status.is_server_error() {
        return Err(CheckError::ServerError(status));
    }
    let headers = denied_headers(settings, resp.headers());
    let body = Limited::new(resp.into_body(), MAX_DENY_BODY)
        .collect()
        .await
        .map_err(|_| CheckError::ServerError(status))?
        .to_bytes();
    Ok(Decision::Deny(Denied {
        status,
        headers,
        body,
    }))
}

/// Rules 1-2.
fn request(
    settings: &HttpSettings,
    req: &CheckRequest<'_>,
) -> Result<Request<Full<Bytes>>, CheckError> {
    let path = format!("{}{}", settings.path_prefix, req.path);
    let body = req
        .body
        .as_ref()
        .map(|b| b.bytes.clone())
        .unwrap_or_default();
    let length = HeaderValue::from(body.len());
    let mut check = Request::builder()
        .method(req.method.clone())
        .uri(path)
        .body(Full::new(body))?;
    let headers = check.headers_mut();
    for (name, value) in req.headers {
        if any_matches(&settings.include_request_headers, name)
            && !is_framing(name)
            && name != header::HOST
        {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &settings.additional_headers {
        headers.insert(name.clone(), value.clone());
    }
    let host = HeaderValue::from_str(req.host).map_err(http::Error::from)?;
    headers.insert(header::HOST, host);
    headers.insert(header::CONTENT_LENGTH, length);
    if let Some(partial) = req.partial_body() {
        headers.insert(super::PARTIAL_BODY, HeaderValue::from_static(partial));
    }
    Ok(check)
}

/// Rule 3.
fn allowed(settings: &HttpSettings, answer: &HeaderMap) -> Allowed {
    fn pick<'a>(
        answer: &'a HeaderMap,
        patterns: &'a [HeaderPattern],
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
        answer
            .iter()
            .filter(move |(n, _)| any_matches(patterns, n) && !is_framing(n))
            .map(|(n, v)| (n.clone(), v.clone()))
    }
    Allowed {
        upstream: pick(answer, &settings.to_upstream_on_allow)
            .map(|(name, value)| HeaderEdit {
                name,
                value,
                append: false,
            })
            .collect(),
        remove_upstream: Vec::new(),
        downstream: pick(answer, &settings.to_downstream_on_allow).collect(),
    }
}

/// Rule 4's headers.
fn denied_headers(settings: &HttpSettings, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    answer
        .iter()
        .filter(|(n, _)| !is_framing(n) && *n != header::HOST)
        .filter(|(n, _)| {
            settings.to_downstream_on_deny.is_empty()
                || any_matches(&settings.to_downstream_on_deny, n)
                || *n == header::WWW_AUTHENTICATE
                || *n == header::LOCATION
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Version};

    fn settings() -> HttpSettings {
        let p = |s: &str| HeaderPattern::parse(s).unwrap();
        HttpSettings {
            path_prefix: "/check".into(),
            include_request_headers: vec![p("authorization"), p("x-user-*"), p("content-length")],
            additional_headers: vec![(
                HeaderName::from_static("x-from"),
                HeaderValue::from_static("waypoint"),
            )],
            to_upstream_on_allow: vec![p("x-auth-*")],
            to_downstream_on_deny: vec![p("x-reason")],
            to_downstream_on_allow: vec![p("x-trace")],
        }
    }

    fn check_request<'a>(
        method: &'a Method,
        path: &'a str,
        headers: &'a HeaderMap,
        body: Option<crate::request_body::Prefix>,
    ) -> CheckRequest<'a> {
        CheckRequest {
            method,
            path,
            host: "api.shop",
            headers,
            version: Version::HTTP_11,
            source: "10.0.0.1:0".parse().unwrap(),
            source_principal: String::new(),
            destination: "10.96.0.1:80".parse().unwrap(),
            destination_principal: String::new(),
            body,
        }
    }

    #[test]
    fn the_check_request_carries_only_what_is_configured() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer t"),
            ("x-user-id", "7"),
            ("x-from", "client"),
            ("cookie", "secret"),
            ("content-length", "12"),
            ("host", "api.shop"),
        ] {
            h.insert(n, HeaderValue::from_static(v));
        }
        let req = check_request(&Method::POST, "/pay?x=1", &h, None);
        let check = request(&settings(), &req).unwrap();
        assert_eq!(check.method(), Method::POST);
        assert_eq!(check.uri(), "/check/pay?x=1");
        let got: Vec<(String, String)> = check
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let want = [
            ("authorization", "Bearer t"),
            ("x-user-id", "7"),
            ("x-from", "waypoint"),
            ("host", "api.shop"),
            ("content-length", "0"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (n, v) in want {
            assert!(
                got.contains(&(n.to_string(), v.to_string())),
                "{n}: {got:?}"
            );
        }
    }

    #[test]
    fn a_shown_body_is_the_check_body() {
        let h = HeaderMap::new();
        let body = crate::request_body::Prefix {
            bytes: Bytes::from_static(b"{\"amount\":"),
            partial: true,
        };
        let req = check_request(&Method::PUT, "/", &h, Some(body));
        let check = request(&HttpSettings::default(), &req).unwrap();
        assert_eq!(check.headers()["content-length"], "10");
        assert_eq!(check.headers()[super::super::PARTIAL_BODY], "true");
    }

    #[test]
    fn answers_headers_are_picked_per_list() {
        let mut answer = HeaderMap::new();
        for (n, v) in [
            ("x-auth-user", "alice"),
            ("x-trace", "t1"),
            ("x-reason", "no"),
            ("content-length", "2"),
            ("host", "authz"),
            ("x-other", "o"),
        ] {
            answer.insert(n, HeaderValue::from_static(v));
        }
        let a = allowed(&settings(), &answer);
        assert_eq!(a.upstream.len(), 1);
        assert_eq!(a.upstream[0].name, "x-auth-user");
        assert_eq!(
            a.downstream,
            [(
                HeaderName::from_static("x-trace"),
                HeaderValue::from_static("t1")
            )]
        );
        let d = denied_headers(&settings(), &answer);
        assert_eq!(
            d,
            [(
                HeaderName::from_static("x-reason"),
                HeaderValue::from_static("no")
            )]
        );
        // No list: all but the framing ones and Host.
        let all = denied_headers(&HttpSettings::default(), &answer);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-auth-user", "x-trace", "x-reason", "x-other"]);
    }
}
