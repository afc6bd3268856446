//! The waypoint's HTTP request path before any upstream: the first bytes of a stream
//! classified (`waypoint::detect::classify`), then a request whose method, host, path and
//! headers come from the input decided by L7 policies covering every match kind, and its
//! trace context read (`waypoint::trace::extract`: `traceparent`, B3).
//!
//! Input: a stream prefix, then `\0`-separated method, host, path and `name:value` headers.
#![no_main]

use std::sync::OnceLock;

use authz::http::{HttpPolicies, Request};
use libfuzzer_sys::fuzz_target;

const POLICIES: &[&str] = &[
    r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow", "namespace": "shop"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "api"}],
          "rules": [{"from": [{"source": {"principals": ["*/sa/order-service"], "notRequestPrincipals": ["*"]}}],
                     "to": [{"operation": {"methods": ["POST"], "paths": ["/api/*", "*.json", "*"], "hosts": ["*.shop.svc*", "API"]}}],
                     "when": [{"key": "request.headers[x-id]", "values": ["a*", "*b", "*c*", "d"]},
                              {"key": "request.auth.claims[groups][0]", "notValues": ["x"]}]}]}}"#,
    r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "action": "DENY",
          "rules": [{"when": [{"key": "request.headers[User-Agent]", "values": ["*sqlmap*", "*nmap*"]}]}]}}"#,
];

fn policies() -> &'static HttpPolicies {
    static P: OnceLock<HttpPolicies> = OnceLock::new();
    P.get_or_init(|| {
        POLICIES
            .iter()
            .filter_map(|y| authz::translate::http_authorization_policy(*y, "istio-system").ok())
            .map(|t| t.policy)
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let cut = data.len().min(32);
    let _ = waypoint::detect::classify(&data[..cut], data.len() < 32);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let (method, host, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let headers: Vec<(&str, &str)> = parts.filter_map(|h| h.split_once(':')).collect();
    let dst = "10.96.0.20:80"
        .parse()
        .unwrap_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut req = Request::new([10, 0, 0, 1].into(), dst, method, host, path);
    req.headers = &headers;
    let _ = policies().custom(&req);
    let _ = policies().decide(&req).verdict.to_string();
    let mut map = http::HeaderMap::new();
    for (name, value) in &headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            map.append(n, v);
        }
    }
    let _ = waypoint::trace::extract(&map);
});
