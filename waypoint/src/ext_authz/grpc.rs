//! The `envoyExtAuthzGrpc` check: `envoy.service.auth.v3.Authorization/Check` over one shared
//! plaintext HTTP/2 channel per provider.
//!
//! Rules, in order:
//! 1. The `CheckRequest` names the source (the HBONE peer's address and SPIFFE identity), the
//!    destination (the address the client dialled, the waypoint's identity) and, for a
//!    request (not a TCP connection: `mod.rs` rule 7), the HTTP request: id
//!    (`x-request-id`), method, path, host, scheme `http`, protocol, and every header
//!    (lower-case, repeated ones joined with `,`; `:authority`, `:method`, `:path` included,
//!    as Envoy sends them).
//! 2. Status code 0 (or no status) allows: `ok_response.headers` go upstream (replacing,
//!    unless `append` says otherwise), `headers_to_remove` are removed (never `Host`), and
//!    `response_headers_to_add` go to the client.
//! 3. Any other code denies with `denied_response`: its status (403 when unset), headers and
//!    body.
//! 4. A gRPC error is a failed check. Headers the authorizer names that are not valid HTTP
//!    are skipped.
//! 5. A body shown to the provider (`mod.rs` rule 6) goes in `raw_body` when it packs bytes,
//!    else in `body`, where a body that is not UTF-8 has its bad sequences replaced (U+FFFD):
//!    the field is a protobuf string.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::{HeaderName, HeaderValue, StatusCode, Version};
use proto::core::{Address, HeaderValueOption, SocketAddress, address, socket_address};
use proto::ext_authz::attribute_context::{HttpRequest, Peer, Request as Attributes};
use proto::ext_authz::authorization_client::AuthorizationClient;
use proto::ext_authz::check_response::HttpResponse;
use proto::ext_authz::{AttributeContext, CheckResponse};
use tonic::transport::{Channel, Endpoint};

use super::{
    Allowed, CheckError, CheckRequest, ConnectionCheck, Decision, Denied, HeaderEdit, Provider,
    is_framing,
};

pub(super) async fn check(
    provider: &Provider,
    req: &CheckRequest<'_>,
) -> Result<Decision, CheckError> {
    let mut client = AuthorizationClient::new(channel(provider)?);
    let mut call = tonic::Request::new(proto::ext_authz::CheckRequest {
        attributes: Some(attributes(
            req,
            provider.body.is_some_and(|b| b.pack_as_bytes),
        )),
    });
    call.set_timeout(provider.timeout);
    let answer = client.check(call).await?.into_inner();
    Ok(decision(answer))
}

/// `mod.rs` rule 7: a connection's check names its peers only.
pub(super) async fn check_connection(
    provider: &Provider,
    conn: &ConnectionCheck,
) -> Result<bool, CheckError> {
    let mut client = AuthorizationClient::new(channel(provider)?);
    let mut call = tonic::Request::new(proto::ext_authz::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(conn.source, &conn.source_principal)),
            destination: Some(peer(conn.destination, &conn.destination_principal)),
            request: None,
        }),
    });
    call.set_timeout(provider.timeout);
    let answer = client.check(call).await?.into_inner();
    Ok(matches!(decision(answer), Decision::Allow(_)))
}

/// The provider's channel, made on first use.
fn channel(provider: &Provider) -> Result<Channel, CheckError> {
    if let Some(c) = provider.channel.get() {
        return Ok(c.clone());
    }
    let endpoint = Endpoint::from_shared(format!("http://{}", provider.address))
        .map_err(|_| CheckError::Address(provider.address.clone()))?
        .connect_timeout(provider.timeout);
    let made = endpoint.connect_lazy();
    Ok(provider.channel.get_or_init(|| made).clone())
}

fn peer(addr: SocketAddr, principal: &str) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                protocol: socket_address::Protocol::Tcp as i32,
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
            })),
        }),
        service: String::new(),
        principal: principal.to_string(),
    }
}

/// Rule 1.
fn attributes(req: &CheckRequest<'_>, pack_as_bytes: bool) -> AttributeContext {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in req.headers {
        let Ok(value) = value.to_str() else { continue };
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    headers.insert(":authority".into(), req.host.to_string());
    headers.insert(":method".into(), req.method.as_str().to_string());
    headers.insert(":path".into(), req.path.to_string());
    if let Some(partial) = req.partial_body() {
        headers.insert(super::PARTIAL_BODY.into(), partial.into());
    }
    // Rule 5.
    let (body, raw_body) = match &req.body {
        Some(b) if pack_as_bytes => (String::new(), b.bytes.to_vec()),
        Some(b) => (String::from_utf8_lossy(&b.bytes).into_owned(), Vec::new()),
        None => (String::new(), Vec::new()),
    };
    let id = req
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let size = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
        .unwrap_or(-1);
    let protocol = match req.version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    };
    AttributeContext {
        source: Some(peer(req.source, &req.source_principal)),
        destination: Some(peer(req.destination, &req.destination_principal)),
        request: Some(Attributes {
            time: None,
            http: Some(HttpRequest {
                id,
                method: req.method.as_str().to_string(),
                headers,
                path: req.path.to_string(),
                host: req.host.to_string(),
                scheme: "http".into(),
                query: String::new(),
                fragment: String::new(),
                size,
                protocol: protocol.into(),
                body,
                raw_body,
            }),
        }),
    }
}

/// One `HeaderValueOption` as HTTP, or `None` when it is not valid HTTP (rule 4).
fn header(o: &HeaderValueOption) -> Option<HeaderEdit> {
    let h = o.header.as_ref()?;
    let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
    let value = match h.value.is_empty() && !h.raw_value.is_empty() {
        true => HeaderValue::from_bytes(&h.raw_value).ok()?,
        false => HeaderValue::from_str(&h.value).ok()?,
    };
    if is_framing(&name) {
        return None;
    }
    Some(HeaderEdit {
        name,
        value,
        append: o.append.as_ref().is_some_and(|a| *a),
    })
}

fn pairs(options: &[HeaderValueOption]) -> Vec<(HeaderName, HeaderValue)> {
    options
        .iter()
        .filter_map(header)
        .map(|e| (e.name, e.value))
        .collect()
}

/// Rules 2-3.
fn decision(answer: CheckResponse) -> Decision {
    let code = answer.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let ok = match answer.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok,
            _ => Default::default(),
        };
        return Decision::Allow(Allowed {
            upstream: ok.headers.iter().filter_map(header).collect(),
            remove_upstream: ok
                .headers_to_remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            downstream: pairs(&ok.response_headers_to_add),
        });
    }
    let denied = match answer.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d,
        _ => Default::default(),
    };
    let status = denied
        .status
        .as_ref()
        .and_then(|s| u16::try_from(s.code).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    Decision::Deny(Denied {
        status,
        headers: pairs(&denied.headers),
        body: denied.body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use proto::core::HeaderValue as WireHeader;
    use proto::ext_authz::{DeniedHttpResponse, OkHttpResponse};
    use proto::rpc::Status;
    use proto::types::HttpStatus;

    /// The value the authorizer is sent for `name`.
    fn joined(h: &HeaderMap, name: &str) -> Option<String> {
        let req = CheckRequest {
            method: &http::Method::GET,
            path: "/",
            host: "h",
            headers: h,
            version: Version::HTTP_11,
            source: SocketAddr::from(([127, 0, 0, 1], 1)),
            source_principal: String::new(),
            destination: SocketAddr::from(([127, 0, 0, 1], 2)),
            destination_principal: String::new(),
            body: None,
        };
        attributes(&req, false)
            .request?
            .http?
            .headers
            .get(name)
            .cloned()
    }

    fn option(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(WireHeader {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append,
            append_action: 0,
        }
    }

    #[test]
    fn a_body_goes_as_text_or_as_bytes() {
        let h = HeaderMap::new();
        let shown = |bytes: &'static [u8], partial, pack| {
            let req = CheckRequest {
                method: &http::Method::POST,
                path: "/",
                host: "h",
                headers: &h,
                version: Version::HTTP_11,
                source: SocketAddr::from(([127, 0, 0, 1], 1)),
                source_principal: String::new(),
                destination: SocketAddr::from(([127, 0, 0, 1], 2)),
                destination_principal: String::new(),
                body: Some(crate::request_body::Prefix {
                    bytes: bytes::Bytes::from_static(bytes),
                    partial,
                }),
            };
            let http = attributes(&req, pack).request.unwrap().http.unwrap();
            let flag = http.headers.get(super::super::PARTIAL_BODY).cloned();
            (http.body, http.raw_body, flag)
        };
        assert_eq!(
            shown(b"hi", false, false),
            ("hi".into(), Vec::new(), Some("false".into()))
        );
        assert_eq!(
            shown(b"hi", true, true),
            (String::new(), b"hi".to_vec(), Some("true".into()))
        );
        assert_eq!(shown(b"\xffa", false, false).0, "\u{fffd}a", "rule 5");
        assert_eq!(
            joined(&h, super::super::PARTIAL_BODY),
            None,
            "no body, no flag"
        );
    }

    #[test]
    fn repeated_headers_are_joined_and_pseudo_headers_added() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        assert_eq!(joined(&h, "x-a").as_deref(), Some("1,2"));
        assert_eq!(joined(&h, ":path").as_deref(), Some("/"));
        assert_eq!(joined(&h, ":authority").as_deref(), Some("h"));
    }

    #[test]
    fn ok_allows_with_its_headers() {
        let d = decision(CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    option("x-user", "alice", None),
                    option("x-tag", "b", Some(true)),
                    option("bad header", "x", None),
                    option("content-length", "9", None),
                ],
                headers_to_remove: vec!["authorization".into()],
                response_headers_to_add: vec![option("x-trace", "t", None)],
            })),
        });
        let Decision::Allow(a) = d else {
            panic!("{d:?}")
        };
        let up: Vec<(&str, bool)> = a
            .upstream
            .iter()
            .map(|e| (e.name.as_str(), e.append))
            .collect();
        assert_eq!(up, [("x-user", false), ("x-tag", true)]);
        assert_eq!(a.remove_upstream, ["authorization"]);
        assert_eq!(a.downstream.len(), 1);
        // No status at all is OK too.
        assert!(matches!(
            decision(CheckResponse::default()),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn a_non_ok_code_denies_with_the_denied_response() {
        let denied = |status: Option<i32>| CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: status.map(|code| HttpStatus { code }),
                headers: vec![option("x-reason", "nope", None)],
                body: "go away".into(),
            })),
        };
        let rows = [
            (Some(401), StatusCode::UNAUTHORIZED),
            (None, StatusCode::FORBIDDEN),
            (Some(0), StatusCode::FORBIDDEN),
            (Some(70000), StatusCode::FORBIDDEN),
        ];
        for (given, want) in rows {
            let Decision::Deny(d) = decision(denied(given)) else {
                panic!("{given:?} allowed")
            };
            assert_eq!(d.status, want, "{given:?}");
            assert_eq!(&d.body[..], b"go away");
            assert_eq!(d.headers[0].0, "x-reason");
        }
    }
}
