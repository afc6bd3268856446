//! What the policies see of one HTTP request: borrowed from the proxy, nothing copied.
//!
//! Rules, in order:
//! 1. The proxy fills a [`Request`]; `remote_ip` is the original client (what the waypoint
//!    trusts of `X-Forwarded-For` or PROXY protocol), and defaults to `source_ip`.
//! 2. Addresses compare as IPv4 when IPv4-mapped, as at L4.
//! 3. Paths and hosts are normalised once per evaluation: the path loses its `?query` (and any
//!    `#fragment`), the host keeps a port-less twin for host matching.
//! 4. Headers are read through [`Headers`], so a proxy lends its own map.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::Peer;

/// Read access to a request's headers.
///
/// `name` is lowercase; implementations compare names ignoring ASCII case. Values that are not
/// UTF-8 are skipped (a positive match on them fails, a `not` match passes). For
/// `http::HeaderMap`: `self.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(f)`.
pub trait Headers {
    /// Whether `f` returns true for any value of header `name` (stop at the first).
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// No headers.
impl Headers for () {
    fn any_value(&self, _: &str, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

/// Name/value pairs; a name may repeat.
impl<N: AsRef<str>, V: AsRef<str>> Headers for [(N, V)] {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter()
            .any(|(n, v)| n.as_ref().eq_ignore_ascii_case(name) && f(v.as_ref()))
    }
}

impl<N: AsRef<str>, V: AsRef<str>, const K: usize> Headers for [(N, V); K] {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_value(name, f)
    }
}

impl<N: AsRef<str>, V: AsRef<str>> Headers for Vec<(N, V)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().any_value(name, f)
    }
}

/// A validated JWT, as the waypoint's request authentication produced it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwtAuth {
    /// `iss/sub`.
    pub principal: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The payload, for `request.auth.claims[…]`.
    pub claims: serde_json::Value,
}

/// One HTTP request at the waypoint.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The direct peer (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`).
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// The peer's verified identity; `None` without mTLS.
    pub peer: Option<&'a Peer>,
    /// `:authority` / `Host`, possibly with `:port`.
    pub host: &'a str,
    pub method: &'a str,
    /// As sent: may carry `?query`.
    pub path: &'a str,
    pub headers: &'a dyn Headers,
    /// The TLS server name, when the request came over TLS with SNI.
    pub sni: Option<&'a str>,
    pub jwt: Option<&'a JwtAuth>,
}

impl<'a> Request<'a> {
    /// A request without identity, headers, SNI or JWT; `remote_ip` = `source_ip`.
    pub fn new(
        source_ip: IpAddr,
        destination: SocketAddr,
        method: &'a str,
        host: &'a str,
        path: &'a str,
    ) -> Self {
        Request {
            source_ip,
            remote_ip: source_ip,
            destination_ip: destination.ip(),
            destination_port: destination.port(),
            peer: None,
            host,
            method,
            path,
            headers: &(),
            sni: None,
            jwt: None,
        }
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("source_ip", &self.source_ip)
            .field("remote_ip", &self.remote_ip)
            .field("destination_ip", &self.destination_ip)
            .field("destination_port", &self.destination_port)
            .field("peer", &self.peer)
            .field("host", &self.host)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("sni", &self.sni)
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

/// A request normalised once per evaluation (rules 2 and 3).
pub(super) struct Attrs<'a> {
    pub req: &'a Request<'a>,
    pub source_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    /// The path without query or fragment.
    pub path: &'a str,
    /// The host without `:port`; equal to `req.host` when it has none.
    pub host_no_port: &'a str,
}

impl<'a> Attrs<'a> {
    pub fn new(req: &'a Request<'a>) -> Self {
        Attrs {
            req,
            source_ip: req.source_ip.to_canonical(),
            remote_ip: req.remote_ip.to_canonical(),
            destination_ip: req.destination_ip.to_canonical(),
            path: req.path.split(['?', '#']).next().unwrap_or_default(),
            host_no_port: strip_port(req.host),
        }
    }
}

/// `host:80` → `host`, `[::1]:80` → `[::1]`; a bare IPv6 address is left alone.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts_only() {
        for (host, want) in [
            ("shop.example.com", "shop.example.com"),
            ("shop.example.com:8080", "shop.example.com"),
            ("shop.example.com:", "shop.example.com:"),
            ("shop.example.com:http", "shop.example.com:http"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
            ("fe80::1:80", "fe80::1:80"),
        ] {
            assert_eq!(strip_port(host), want, "{host}");
        }
    }

    #[test]
    fn header_names_ignore_case_and_repeat() {
        let h = [("X-Id", "a"), ("x-id", "b"), ("other", "c")];
        let mut seen = Vec::new();
        assert!(!h.any_value("x-id", &mut |v| {
            seen.push(v.to_string());
            false
        }));
        assert_eq!(seen, ["a", "b"]);
        assert!(h.any_value("x-id", &mut |v| v == "b"));
        assert!(!().any_value("x-id", &mut |_| true));
    }
}
