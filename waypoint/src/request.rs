//! HTTP inside one accepted stream: each request decided by policy, then proxied.
//!
//! Rules, per request:
//! 1. The policy view: source = the HBONE peer (its certificate's identity, its IP),
//!    destination = the address the client dialled, host/method/path/headers as sent, and the
//!    request principal of a JWT the target's RequestAuthentication accepted ([`crate::jwt`]:
//!    a token it refuses is answered 401, or 403 for its audience, before policy).
//! 2. A CUSTOM policy that matches asks its external authorizer first ([`crate::ext_authz`]):
//!    its denial (or a failed check, unless the provider fails open) is the answer, flagged
//!    `UAEX`; its allowance adds its headers and goes on to the DENY and ALLOW policies. A
//!    CUSTOM policy with no authorizer configured denies (fail closed), never waves through.
//!    An authorizer shown bodies waits for the body first ([`crate::request_body`]), at most
//!    the provider's timeout (then 408 `request timeout`): one over its limit, where it takes
//!    no partial body, is answered 413 `Payload Too Large`, as Envoy's buffer says it.
//! 3. Denied: 403 with Envoy's body `RBAC: access denied` (it names no policy; the access log
//!    does).
//!    Allowed, then rate limited (`ratelimit.rs`): 429 with Envoy's body
//!    `local_rate_limited` and the `x-ratelimit-limit`, `-remaining` (0) and `-reset` (whole
//!    seconds) headers.
//! 4. Allowed: hop-by-hop headers are dropped and the request goes to an endpoint over HBONE,
//!    as HTTP/2 on ports the service declares HTTP/2 (gRPC) and HTTP/1.1 elsewhere, whatever
//!    the client spoke (the request line or pseudo-headers are rewritten to match), over the
//!    waypoint's shared upstream connections ([`crate::upstream`]). Bodies stream both ways
//!    (a request's after the part an authorizer was shown, which goes first).
//! 5. No endpoint, or the upstream fails before a response: 503 `no healthy upstream` /
//!    `upstream connect error`, as Envoy says it.
//! 6. A WebSocket upgrade, allowed, goes upstream over HTTP/1.1 on a connection of its own;
//!    an endpoint's `101` switches both connections to a tunnel ([`crate::upgrade`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authz::http::{CustomCheck, Headers, HttpVerdict, JwtAuth};
use bytes::Bytes;
use hbone::PeerInfo;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::detect::Protocol;
use crate::ext_authz::{self, Allowed, BodyInCheck, Decision};
use crate::metrics::ResponseFlags;
use crate::proxy::{UpstreamError, Waypoint, authz_peer, source_ip};
use crate::ratelimit::Limited;
use crate::request_body::{Prefix, RequestBody};
use crate::targets::Resolved;
use crate::telemetry;
use crate::trace;
use crate::upgrade;
use crate::upstream::{ForwardError, Leased};

/// What a response carries: the upstream's body, or one of ours.
pub type Body = Either<Leased, Full<Bytes>>;

/// One downstream connection's state.
struct Conn {
    waypoint: Arc<Waypoint>,
    peer: Arc<PeerInfo>,
    /// The peer's identity as policies see it, made once per connection.
    who: authz::Peer,
    /// Its principal, made once: per-caller rate limits, the authorizer's check, spans.
    principal: String,
    resolved: Resolved,
    /// The upstream protocol (rule 4).
    upstream_h2: bool,
}

/// Serves HTTP on `io` until the client closes it, or after the request under way once the
/// waypoint drains (`proxy.rs` rule 5).
pub async fn serve<IO>(
    waypoint: Arc<Waypoint>,
    peer: Arc<PeerInfo>,
    resolved: Resolved,
    protocol: Protocol,
    io: IO,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream_h2 = resolved
        .target
        .h2_ports
        .contains(&resolved.addressed.port());
    let telemetry = Arc::new(telemetry::Connection::new(
        waypoint.metrics().clone(),
        &peer.identity,
        waypoint.source_workload(&peer).as_deref(),
        &resolved,
    ));
    let (draining, drained) = (waypoint.draining(), waypoint.is_draining());
    let conn = Arc::new(Conn {
        waypoint,
        who: authz_peer(&peer.identity),
        principal: peer.identity.to_string(),
        peer,
        resolved,
        upstream_h2,
    });
    let service = hyper::service::service_fn(move |req| {
        let (conn, telemetry) = (conn.clone(), telemetry.clone());
        async move {
            // Recorded when the response ends, or as `DC` if this is dropped first.
            let (req, exchange) = telemetry.start(req);
            let mut resp = conn.handle(req).await;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(pending) = resp.extensions_mut().remove::<upgrade::Pending>()
            {
                // Rule 6: recorded when the tunnel ends.
                let (resp, switched) = exchange.switch(resp);
                upgrade::splice(pending, switched);
                return Ok(resp);
            }
            Ok::<_, Infallible>(exchange.respond(resp))
        }
    });
    let io = TokioIo::new(io);
    // Draining (`proxy.rs` rule 5): the connection ends after the request it is serving; one
    // that starts while draining serves one HTTP/1.1 request (HTTP/2 as usual).
    let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let mut h1 = hyper::server::conn::http1::Builder::new();
    let served = match (protocol, drained) {
        (Protocol::Http2, false) => {
            let conn = h2.serve_connection(io, service);
            until_drained(conn, draining, |c| c.graceful_shutdown()).await
        }
        (Protocol::Http2, true) => h2.serve_connection(io, service).await,
        (_, false) => {
            let conn = h1.serve_connection(io, service).with_upgrades();
            until_drained(conn, draining, |c| c.graceful_shutdown()).await
        }
        (_, true) => {
            let conn = h1.keep_alive(false).serve_connection(io, service);
            conn.with_upgrades().await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Header access for policies (rule 1); names arrive lowercase, non-UTF-8 values are skipped.
struct HeaderView<'a>(&'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(f)
    }
}

/// Runs `conn` to its end, shutting it down gracefully once `draining` completes.
async fn until_drained<C: Future>(
    conn: C,
    draining: impl Future<Output = ()>,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    tokio::pin!(conn);
    // Biased: no random branch order to draw on every poll of a busy connection.
    tokio::select! {
        biased;
        out = conn.as_mut() => return out,
        () = draining => shutdown(conn.as_mut()),
    }
    conn.await
}

/// Rule 3's 429.
fn too_many(limited: &Limited) -> Response<Body> {
    let mut r = ours(StatusCode::TOO_MANY_REQUESTS, "local_rate_limited");
    let reset = limited.reset.as_secs() + u64::from(limited.reset.subsec_nanos() > 0);
    let h = r.headers_mut();
    h.insert("x-ratelimit-limit", limited.limit.into());
    h.insert("x-ratelimit-remaining", 0u32.into());
    h.insert("x-ratelimit-reset", reset.into());
    r
}

fn ours(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        body.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// The authorizer's denial as the client gets it.
fn from_authorizer(d: ext_authz::Denied) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(d.body)));
    *r.status_mut() = d.status;
    for (name, value) in d.headers {
        r.headers_mut().append(name, value);
    }
    r
}

impl Conn {
    /// The request, traced when tracing is on (`trace.rs`).
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let Some(tracer) = self.waypoint.tracer() else {
            return self.respond(req).await;
        };
        let Some(span) = tracer.start(req.headers()) else {
            return self.respond(req).await;
        };
        span.inject(req.headers_mut());
        if !span.sampled {
            return self.respond(req).await;
        }
        let (method, url) = (req.method().to_string(), req.uri().to_string());
        let resp = self.respond(req).await;
        let done = trace::Finished {
            method,
            url,
            status: resp.status().as_u16(),
            peer: self.principal.clone(),
            target: self.resolved.target.key.clone(),
            upstream_cluster: self.resolved.upstream_cluster(),
        };
        tracer.finish(span, done);
        resp
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let mut req = req.map(RequestBody::new);
        let rules = &self.resolved.target.jwt;
        let jwt = match crate::jwt::authenticate(self.waypoint.jwks(), rules, &mut req).await {
            Ok(jwt) => jwt,
            Err(r) => {
                // The access log names the RequestAuthentication and why.
                let why = format!(
                    "RequestAuthentication {}: {}",
                    r.source.as_deref().unwrap_or("-"),
                    r.failure
                );
                let mut refused = ours(r.failure.status(), r.failure.body());
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                if let Some(c) = crate::jwt::challenge(host(&req), path) {
                    refused.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                }
                return telemetry::denied(refused, why, ResponseFlags::None);
            }
        };
        // Rule 2.
        let mut allowed_by_authorizer = None;
        if let Some(check) = self.custom(&req, jwt.as_ref()) {
            let provider = self.resolved.target.ext_authz.get(&*check.policy);
            let body = match provider.and_then(|p| p.body.map(|b| (b, p.timeout))) {
                Some((settings, within)) => {
                    let read = self.read_for_check(&mut req, settings, within, &check);
                    match Box::pin(read).await {
                        // As Envoy: no body bytes, no body (nor its partial flag) in the check.
                        Ok(body) => Some(body).filter(|b| !b.bytes.is_empty()),
                        Err(refused) => return refused,
                    }
                }
                None => None,
            };
            let view = self.check_request(&req, body);
            // Boxed: only requests a CUSTOM policy matches carry the check's future.
            match Box::pin(self.ask(&check, &view)).await {
                Ok(allowed) => {
                    allowed.edit_request(req.headers_mut());
                    allowed_by_authorizer = Some(allowed);
                }
                Err(denied) => return denied,
            }
        }
        let verdict = self.decide(&req, jwt.as_ref());
        if let HttpVerdict::Denied { by, .. } = &verdict {
            // The access log names the deciding policy.
            let policy = match by {
                Some(by) => by.to_string(),
                None => verdict.to_string(),
            };
            let denied = ours(StatusCode::FORBIDDEN, "RBAC: access denied");
            return telemetry::denied(denied, policy, ResponseFlags::None);
        }
        if let Err(limited) = self.rate_limit(&req) {
            // The access log names the limit where it names a deciding policy.
            let source = limited.source.clone();
            return telemetry::denied(too_many(&limited), source, ResponseFlags::RateLimited);
        }
        let mut resp = self.proxy(req).await;
        if let Some(allowed) = allowed_by_authorizer {
            allowed.edit_response(resp.headers_mut());
        }
        resp
    }

    /// What the authorizer is told about `req` (parts only: the request's body is not `Sync`,
    /// and this is held across the check).
    fn check_request<'a>(
        &'a self,
        req: &'a Request<RequestBody>,
        body: Option<Prefix>,
    ) -> ext_authz::CheckRequest<'a> {
        ext_authz::CheckRequest {
            method: req.method(),
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            host: host(req),
            headers: req.headers(),
            version: req.version(),
            source: self.peer.remote,
            source_principal: self.principal.clone(),
            destination: self.resolved.addressed,
            destination_principal: self.waypoint.identity().to_string(),
            body,
        }
    }

    /// Rule 2: the body an authorizer is shown, waited for at most `within` (the provider's
    /// timeout); `Err` is the response that ends the request.
    async fn read_for_check(
        &self,
        req: &mut Request<RequestBody>,
        settings: BodyInCheck,
        within: Duration,
        check: &CustomCheck,
    ) -> Result<Prefix, Response<Body>> {
        let too_large = || {
            let policy = format!(
                "{check}: body over includeRequestBodyInCheck.maxRequestBytes ({})",
                settings.max_bytes
            );
            let refused = ours(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
            telemetry::denied(refused, policy, ResponseFlags::None)
        };
        if !settings.allow_partial && req.body().declared_over(settings.max_bytes) {
            return Err(too_large());
        }
        let read = req
            .body_mut()
            .read_prefix(settings.max_bytes, settings.allow_partial);
        let Ok(read) = tokio::time::timeout(within, read).await else {
            let policy = format!("{check}: request body not received within {within:?}");
            let late = ours(StatusCode::REQUEST_TIMEOUT, "request timeout");
            return Err(telemetry::denied(late, policy, ResponseFlags::None));
        };
        match read {
            Ok(body) if body.partial && !settings.allow_partial => Err(too_large()),
            Ok(body) => Ok(body),
            Err(e) => {
                tracing::debug!(error = %e, "request body failed while read for a check");
                let bad = ours(StatusCode::BAD_REQUEST, "bad request");
                Err(telemetry::flagged(
                    bad,
                    ResponseFlags::DownstreamConnectionTermination,
                ))
            }
        }
    }

    /// Rule 2: the CUSTOM policy's authorizer; `Err` is the response that ends the request.
    async fn ask(
        &self,
        check: &CustomCheck,
        view: &ext_authz::CheckRequest<'_>,
    ) -> Result<Allowed, Response<Body>> {
        let uaex = ResponseFlags::UnauthorizedExternalService;
        let Some(provider) = self.resolved.target.ext_authz.get(&*check.policy) else {
            let policy = format!("{check}: no external authorizer configured");
            let denied = ours(StatusCode::FORBIDDEN, "RBAC: access denied");
            return Err(telemetry::denied(denied, policy, uaex));
        };
        let decision = match ext_authz::check(provider, view).await {
            Ok(d) => d,
            Err(e) => {
                provider.warn_failed(&e, "request");
                ext_authz::on_error(provider)
            }
        };
        match decision {
            Decision::Allow(allowed) => Ok(allowed),
            Decision::Deny(denied) => Err(telemetry::denied(
                from_authorizer(denied),
                check.to_string(),
                uaex,
            )),
        }
    }

    /// Rules 4-6: the allowed request, upstream.
    async fn proxy(&self, mut req: Request<RequestBody>) -> Response<Body> {
        // Rule 6: the client's half of an upgrade, taken before the request goes on.
        let downstream = match upgrade::requested(&req) {
            true => req.extensions_mut().remove::<OnUpgrade>(),
            false => None,
        };
        strip_hop_by_hop(req.headers_mut());
        let upgrading = downstream.is_some();
        let h2 = self.upstream_h2 && !upgrading;
        if upgrading {
            upgrade::keep(req.headers_mut());
        }
        if let Err(e) = to_version(&mut req, h2) {
            tracing::info!(target = %self.resolved.addressed, error = %e, "request cannot be forwarded");
            let bad = ours(StatusCode::BAD_REQUEST, "bad request");
            return telemetry::flagged(bad, ResponseFlags::DownstreamProtocolError);
        }
        match self.forward(req, upgrading).await {
            Ok(mut resp) => {
                let answer = upgrade::answer(upgrading, &resp);
                strip_hop_by_hop(resp.headers_mut());
                match (answer, downstream) {
                    (upgrade::Answer::Switched, Some(downstream)) => {
                        upgrade::keep(resp.headers_mut());
                        let upstream = hyper::upgrade::on(&mut resp);
                        let pending = upgrade::Pending {
                            downstream,
                            upstream,
                        };
                        resp.extensions_mut().insert(pending);
                    }
                    (upgrade::Answer::Plain, _) => {}
                    _ => {
                        let status = resp.status();
                        tracing::info!(target = %self.resolved.addressed, %status,
                                       "upstream switched protocols unasked; refused");
                        let bad = ours(StatusCode::BAD_GATEWAY, "upstream protocol error");
                        return telemetry::flagged(bad, ResponseFlags::UpstreamProtocolError);
                    }
                }
                resp.map(Either::Left)
            }
            Err(e) => {
                tracing::info!(target = %self.resolved.addressed, error = %e, "upstream failed");
                let (body, flags) = match e {
                    ForwardError::Upstream(UpstreamError::NoEndpoint(_)) => {
                        ("no healthy upstream", ResponseFlags::NoHealthyUpstream)
                    }
                    _ => (
                        "upstream connect error",
                        ResponseFlags::UpstreamConnectionFailure,
                    ),
                };
                telemetry::flagged(ours(StatusCode::SERVICE_UNAVAILABLE, body), flags)
            }
        }
    }

    /// Rule 1: `f` over the request as policies see it.
    fn with_view<R>(
        &self,
        req: &Request<RequestBody>,
        jwt: Option<&JwtAuth>,
        f: impl FnOnce(&authz::http::Request<'_>) -> R,
    ) -> R {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let headers = HeaderView(req.headers());
        let mut view = authz::http::Request::new(
            source_ip(&self.peer),
            self.resolved.addressed,
            req.method().as_str(),
            host(req),
            path,
        );
        view.peer = Some(&self.who);
        view.headers = &headers;
        view.jwt = jwt;
        f(&view)
    }

    /// Rule 2: the CUSTOM policy to ask, if one matches.
    fn custom(&self, req: &Request<RequestBody>, jwt: Option<&JwtAuth>) -> Option<CustomCheck> {
        self.with_view(req, jwt, |v| self.resolved.target.policies.custom(v))
    }

    /// The DENY/ALLOW verdict.
    fn decide(&self, req: &Request<RequestBody>, jwt: Option<&JwtAuth>) -> HttpVerdict {
        self.with_view(req, jwt, |v| {
            self.resolved.target.policies.decide(v).verdict
        })
    }

    /// Rule 3, rate limits.
    fn rate_limit(&self, req: &Request<RequestBody>) -> Result<(), Limited> {
        let limits = &self.resolved.target.rate_limits;
        if limits.is_empty() {
            return Ok(());
        }
        self.with_view(req, None, |view| {
            self.waypoint.limiter.check(
                &self.resolved.target.key,
                limits.iter().filter(|l| l.applies(view)),
                &self.principal,
                Instant::now(),
            )
        })
    }

    /// `upgrade`: over a connection of its own (rule 6), else a shared one.
    async fn forward(
        &self,
        req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<Response<Leased>, ForwardError> {
        // In flight until the response head arrives (least request's count).
        let (endpoint, port, _in_flight) = self.waypoint.pick(&self.resolved)?;
        let req = telemetry::count_request(req);
        let upstreams = self.waypoint.upstreams();
        let w = &*self.waypoint;
        let mut resp = match upgrade {
            true => upstreams.send_upgrade(w, &endpoint, port, req).await?,
            false => {
                upstreams
                    .send(w, &endpoint, port, self.upstream_h2, req)
                    .await?
            }
        };
        telemetry::upstream(&mut resp, self.waypoint.upstream_of(&endpoint));
        Ok(resp)
    }
}

/// `:authority`, else `Host`.
fn host<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
        .unwrap_or_default()
}

/// Rewrites a request for the upstream protocol: HTTP/2 takes scheme and authority in the
/// URI (from `Host` when the client spoke HTTP/1.1), HTTP/1.1 an origin-form target and a
/// `Host` header (from `:authority` when the client spoke HTTP/2).
fn to_version<B>(req: &mut Request<B>, h2: bool) -> Result<(), http::Error> {
    let path = |req: &Request<B>| {
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
    };
    if h2 {
        *req.version_mut() = http::Version::HTTP_2;
        if req.uri().authority().is_none() {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string();
            *req.uri_mut() = http::Uri::builder()
                .scheme("http")
                .authority(host)
                .path_and_query(path(req))
                .build()?;
        }
        req.headers_mut().remove(header::HOST);
    } else {
        *req.version_mut() = http::Version::HTTP_11;
        if let Some(authority) = req.uri().authority().cloned() {
            if !req.headers().contains_key(header::HOST) {
                let host = http::HeaderValue::from_str(authority.as_str())?;
                req.headers_mut().insert(header::HOST, host);
            }
            *req.uri_mut() = http::Uri::from(path(req));
        }
    }
    Ok(())
}

/// RFC 9110 7.6.1: `Connection` and what it names, and the fixed hop-by-hop set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them (what `Connection` names needs a `Connection`): one
    // pass over the names instead of a lookup for each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    // `te: trailers` is end to end in practice: gRPC needs it over HTTP/2.
    if headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(n);
    }
    headers.remove("keep-alive");
}

/// The fixed hop-by-hop set, and `te` (see [`strip_hop_by_hop`]).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        /// (headers sent, names left)
        type Row = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let rows: &[Row] = &[
            // (headers sent, names left)
            (
                &[("user-agent", "x"), ("accept", "*/*")],
                &["user-agent", "accept"],
            ),
            (
                &[
                    ("connection", "keep-alive, x-hop"),
                    ("x-hop", "1"),
                    ("x-end", "2"),
                ],
                &["x-end"],
            ),
            (
                &[("keep-alive", "timeout=5"), ("accept", "*/*")],
                &["accept"],
            ),
            (&[("te", "trailers"), ("upgrade", "h2c")], &["te"]),
            (&[("te", "gzip"), ("transfer-encoding", "chunked")], &[]),
            (
                &[
                    ("proxy-authorization", "x"),
                    ("proxy-authenticate", "y"),
                    ("trailer", "z"),
                ],
                &[],
            ),
        ];
        for (sent, left) in rows {
            let mut h = HeaderMap::new();
            for (n, v) in *sent {
                h.append(
                    HeaderName::from_static(n),
                    http::HeaderValue::from_static(v),
                );
            }
            strip_hop_by_hop(&mut h);
            let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
            let mut want = left.to_vec();
            names.sort();
            want.sort();
            assert_eq!(names, want, "{sent:?}");
        }
    }

    #[test]
    fn requests_are_rewritten_for_the_upstream_version() {
        // HTTP/1.1 in, HTTP/2 out: scheme and authority from Host.
        let mut r = Request::builder()
            .uri("/a?b=1")
            .header("host", "api.shop:8080")
            .body(())
            .unwrap();
        to_version(&mut r, true).unwrap();
        assert_eq!(r.uri().to_string(), "http://api.shop:8080/a?b=1");
        assert!(r.headers().get("host").is_none());
        assert_eq!(r.version(), http::Version::HTTP_2);
        // HTTP/2 in, HTTP/1.1 out: origin form and a Host header.
        let mut r = Request::builder()
            .uri("http://api.shop/a?b=1")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        to_version(&mut r, false).unwrap();
        assert_eq!(r.uri().to_string(), "/a?b=1");
        assert_eq!(r.headers()["host"], "api.shop");
        assert_eq!(r.version(), http::Version::HTTP_11);
        // HTTP/1.1 both ways: as it came.
        let mut r = Request::builder().uri("/x").body(()).unwrap();
        to_version(&mut r, false).unwrap();
        assert_eq!(r.uri().to_string(), "/x");
    }
}
