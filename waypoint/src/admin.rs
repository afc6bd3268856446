//! The operational endpoints: admin on 127.0.0.1:15000 and metrics on 15020, as Istio's
//! proxies serve them (readiness on 15021 is [`crate::health`]).
//!
//! | port | path | method | what |
//! |---|---|---|---|
//! | admin | `/config_dump` | GET | identity, targets (addresses, ports, endpoints) and their policies, tracing (exporter, collector, sampling), and the count of workloads known, as JSON |
//! | admin | `/logging` | GET, POST `?level=<filter>` | show or change the log filter at run time |
//! | admin | `/explain` | GET | which policy decides a described request, without sending it |
//! | admin | `/quitquitquit` | POST | graceful exit |
//! | metrics | `/metrics`, `/stats/prometheus` | GET | the Prometheus text exposition |
//!
//! `/explain` takes `dst` (`<ip>:<port>`, as a client's CONNECT names it), `method`, `host`,
//! `path`, repeated `header=<name>:<value>`, `src_ip`, and the source: `src_identity`
//! (`spiffe://...`) or `src_principal` (`cluster.local/ns/<ns>/sa/<sa>`, as policies write it),
//! or `src_namespace` with `src_service_account` (and `src_trust_domain`, default
//! `cluster.local`), or none for no identity. It runs the target's policies through
//! the same `authz::http` calls the data path makes.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use authz::http::{Headers, HttpVerdict};
use bytes::Bytes;
use hbone::SpiffeId;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

use crate::metrics::Metrics;
use crate::proxy::{Waypoint, authz_peer};

pub type Body = Full<Bytes>;

/// Changes and reports the log filter.
pub trait LogControl: Send + Sync {
    fn current(&self) -> String;
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// A [`LogControl`] over a `tracing_subscriber` reload handle.
pub struct ReloadableFilter<S> {
    handle: tracing_subscriber::reload::Handle<EnvFilter, S>,
    /// The filter as last set, for `GET /logging`; set only after the reload succeeded.
    current: Mutex<String>,
}

impl<S: 'static> ReloadableFilter<S> {
    /// A reloadable filter starting at `initial` (`info` if it does not parse), and the layer
    /// to install it with.
    pub fn new(initial: &str) -> (tracing_subscriber::reload::Layer<EnvFilter, S>, Arc<Self>) {
        let (filter, current) = match EnvFilter::try_new(initial) {
            Ok(f) => (f, initial.to_string()),
            Err(_) => (EnvFilter::new("info"), "info".to_string()),
        };
        let (layer, handle) = tracing_subscriber::reload::Layer::new(filter);
        let control = Arc::new(ReloadableFilter {
            handle,
            current: Mutex::new(current),
        });
        (layer, control)
    }
}

impl<S: 'static> LogControl for ReloadableFilter<S> {
    fn current(&self) -> String {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed =
            EnvFilter::try_new(filter).map_err(|e| format!("bad log filter {filter:?}: {e}"))?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = filter.to_string();
        tracing::info!(filter, "log filter changed");
        Ok(())
    }
}

/// Serves `handler` over HTTP/1.1 on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection failed");
            }
        });
    }
}

/// The metrics port's handler.
pub async fn metrics(metrics: Arc<Metrics>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics" | "/stats/prometheus") => {
            let mut r = text(StatusCode::OK, metrics.encode());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The decoded query parameters (`+` and `%XX`), in order.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin port's state.
pub struct Admin {
    pub waypoint: Arc<Waypoint>,
    pub logs: Arc<dyn LogControl>,
    /// Notified by `/quitquitquit`; the binary drains, then exits.
    pub shutdown: Arc<Notify>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => text(
                StatusCode::OK,
                "/config_dump\n/logging\n/explain?dst=&method=&host=&path=&src_identity=\n/quitquitquit (POST)\n",
            ),
            (&Method::GET, "/config_dump") => json(StatusCode::OK, &self.config_dump()),
            (&Method::GET, "/logging") => {
                text(StatusCode::OK, format!("{}\n", self.logs.current()))
            }
            (&Method::POST, "/logging") => {
                let level = query(&req)
                    .into_iter()
                    .find(|(k, _)| k == "level")
                    .map(|(_, v)| v);
                match level {
                    None => text(StatusCode::BAD_REQUEST, "missing ?level=<filter>\n"),
                    Some(l) => match self.logs.set(&l) {
                        Ok(()) => text(StatusCode::OK, format!("{}\n", self.logs.current())),
                        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    },
                }
            }
            (&Method::GET, "/explain") => match self.explain(&query(&req)) {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => json(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            (&Method::POST, "/quitquitquit") => {
                self.shutdown.notify_one();
                text(StatusCode::OK, "shutting down\n")
            }
            (_, "/logging" | "/quitquitquit" | "/config_dump" | "/explain") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn config_dump(&self) -> Value {
        let targets: Vec<Value> = self
            .waypoint
            .targets()
            .iter()
            .map(|t| {
                let policies: Vec<Value> = t
                    .policies
                    .iter()
                    .map(|p| {
                        serde_json::to_value(p)
                            .unwrap_or_else(|e| json!({ "error": e.to_string() }))
                    })
                    .collect();
                json!({
                    "key": t.key,
                    "namespace": t.namespace,
                    "vips": t.vips,
                    "ports": t.ports,
                    "h2Ports": t.h2_ports,
                    "endpoints": t.endpoints.iter().map(|e| json!({
                        "address": e.ip,
                        "identity": e.identity.to_string(),
                        "healthy": e.healthy,
                    })).collect::<Vec<_>>(),
                    "policies": policies,
                })
            })
            .collect();
        // Whichever won, meshd's Tracing or the flags; null when tracing is off.
        let tracing = self
            .waypoint
            .tracer()
            .and_then(|t| t.settings().cloned())
            .map(|s| {
                json!({
                    "exporter": s.exporter.kind(),
                    "collector": s.exporter.collector().to_string(),
                    "sampling": s.sampling,
                    "maxTagLength": s.max_tag_length,
                })
            });
        json!({
            "identity": self.waypoint.identity().to_string(),
            "targets": targets,
            "tracing": tracing,
            // How many workloads name peers in metrics (`peers.rs`); not listed, there may
            // be thousands.
            "workloads": self.waypoint.peers().len(),
        })
    }

    /// The decision for a request described by query parameters, without sending it.
    fn explain(&self, q: &[(String, String)]) -> Result<Value, String> {
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        // Istio writes principals without the scheme (`cluster.local/ns/a/sa/b`).
        let principal = get("src_principal").map(|p| match p.starts_with("spiffe://") {
            true => p.to_string(),
            false => format!("spiffe://{p}"),
        });
        let identity: Option<SpiffeId> = match (
            get("src_identity").or(principal.as_deref()),
            get("src_namespace"),
            get("src_service_account"),
        ) {
            (Some(id), _, _) => Some(id.parse().map_err(|e| format!("src_identity: {e}"))?),
            (None, Some(ns), Some(sa)) => Some(
                SpiffeId::new(
                    get("src_trust_domain").unwrap_or(hbone::DEFAULT_TRUST_DOMAIN),
                    ns,
                    sa,
                )
                .map_err(|e| format!("source: {e}"))?,
            ),
            (None, None, None) => None,
            _ => {
                return Err(
                    "give src_identity (or src_principal), or both src_namespace and src_service_account".into(),
                );
            }
        };
        let src_ip: IpAddr = match get("src_ip") {
            Some(ip) => ip.parse().map_err(|e| format!("src_ip {ip:?}: {e}"))?,
            None => Ipv4Addr::UNSPECIFIED.into(),
        };
        let dst: SocketAddr = get("dst")
            .ok_or("dst (<ip>:<port>) is needed")?
            .parse()
            .map_err(|e| format!("dst: {e}"))?;
        let resolved = self
            .waypoint
            .targets()
            .resolve(dst)
            .ok_or_else(|| format!("{dst} is not a target of this waypoint"))?;
        let method = get("method").unwrap_or("GET");
        let path = get("path").unwrap_or("/");
        let host = get("host").unwrap_or_default();
        let headers: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k == "header")
            .filter_map(|(_, v)| v.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header_view = QueryHeaders(&headers);
        let who = identity.as_ref().map(authz_peer);
        let mut request = authz::http::Request::new(src_ip, dst, method, host, path);
        request.peer = who.as_ref();
        request.headers = &header_view;
        let policies = &resolved.target.policies;
        let custom = policies.custom(&request);
        let decision = policies.decide(&request);
        let provider = custom
            .as_ref()
            .and_then(|c| resolved.target.ext_authz.get(&*c.policy));
        let (verdict, decided_by) = match (&custom, &decision.verdict) {
            // The authorizer decides first; without one the request is denied.
            (Some(c), _) if provider.is_some() => (
                "ask external authorizer",
                json!({ "custom": c.to_string() }),
            ),
            (Some(c), _) => ("deny", json!({ "custom": c.to_string() })),
            (None, HttpVerdict::Allowed { by }) => (
                "allow",
                by.as_ref().map_or(
                    Value::Null,
                    |r| json!({ "policy": r.policy.as_ref(), "rule": r.rule }),
                ),
            ),
            (None, HttpVerdict::Denied { by, .. }) => (
                "deny",
                by.as_ref().map_or(
                    Value::Null,
                    |r| json!({ "policy": r.policy.as_ref(), "rule": r.rule }),
                ),
            ),
        };
        let reason = match (&custom, provider) {
            (Some(c), Some(p)) => format!(
                "{c}: {} at {} decides first; if it allows: {}",
                p.name, p.address, decision.verdict
            ),
            (Some(c), None) => format!("{c}: no external authorizer is configured (fail closed)"),
            (None, _) => decision.verdict.to_string(),
        };
        let audited: Vec<String> = decision.audited.iter().map(|r| r.to_string()).collect();
        let dry_run: Vec<Value> = decision
            .dry_run
            .iter()
            .map(|d| {
                json!({
                    "policy": d.policy.to_string(),
                    "rule": d.rule,
                    "wouldBe": match d.outcome {
                        authz::DryRunOutcome::WouldAllow => "allowed",
                        authz::DryRunOutcome::WouldDeny => "denied",
                    },
                })
            })
            .collect();
        Ok(json!({
            "source": { "ip": src_ip, "identity": identity.map(|i| i.to_string()) },
            "destination": { "address": dst, "target": resolved.target.key },
            "request": { "method": method, "host": host, "path": path },
            "verdict": verdict,
            "decidedBy": decided_by,
            "reason": reason,
            "applicablePolicies": policies.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect::<Vec<_>>(),
            "audited": audited,
            "dryRun": dry_run,
        }))
    }
}

/// Headers given as `header=<name>:<value>` query parameters (names lowercased).
struct QueryHeaders<'a>(&'a [(String, String)]);

impl Headers for QueryHeaders<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0.iter().filter(|(n, _)| n == name).any(|(_, v)| f(v))
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_query_values() {
        for (raw, want) in [
            ("spiffe%3A%2F%2Fa%2Fb", "spiffe://a/b"),
            ("a+b", "a b"),
            ("100%", "100%"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("%41%42", "AB"),
            ("caf%C3%A9", "café"),
            ("%+F", "% F"),
        ] {
            assert_eq!(decode(raw), want, "{raw}");
        }
    }
}
