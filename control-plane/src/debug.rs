//! The monitoring port (15014, istiod's): Prometheus metrics and debug views.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text (`pilot_*`, `citadel_*`, `meshd_*`) |
//! | `/ready` | 200 once the first config was published |
//! | `/debug/connections` | connected xDS clients: node id, account, node, pushes, NACKs |
//! | `/debug/config_dump?proxyID=<substring>` | the same, with every resource name and version each holds |
//! | `/debug/config_errors` | objects currently rejected, with file and line |
//! | `/debug/resources` | every resource served, by type, with versions (the waypoints' per waypoint) |

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::pipeline::ConfigErrors;
use crate::snapshot::SnapshotRx;
use crate::xds::Clients;

#[derive(Clone)]
pub struct Debug {
    pub metrics: Metrics,
    pub clients: Clients,
    pub snapshots: SnapshotRx,
    pub errors: ConfigErrors,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(mut s) => {
            s.push('\n');
            let mut r = text(StatusCode::OK, s);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Debug {
    pub fn handle(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let query = req.uri().query();
        match req.uri().path() {
            "/metrics" | "/stats/prometheus" => {
                let mut r = text(StatusCode::OK, self.metrics.encode());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/ready" => {
                if self.snapshots.borrow().version > 0 {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no config published yet\n",
                    )
                }
            }
            "/debug/connections" => json(&self.clients.views(false, None)),
            "/debug/config_dump" => json(&self.clients.views(true, query_param(query, "proxyID"))),
            "/debug/config_errors" => {
                let errors = self
                    .errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                json(&errors)
            }
            "/debug/resources" => {
                let snap = self.snapshots.borrow().clone();
                let view = |set: &crate::resources::ResourceSet| {
                    set.values()
                        .map(|r| (r.name.to_string(), r.version.to_string()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                };
                let waypoints: std::collections::BTreeMap<String, _> = snap
                    .resources
                    .waypoints
                    .by_waypoint
                    .iter()
                    .map(|(w, sets)| {
                        let sets = serde_json::json!({
                            proto::WAYPOINT_TARGET_TYPE_URL: view(&sets.targets),
                            proto::WAYPOINT_POLICY_TYPE_URL: view(&sets.policies),
                        });
                        let mut sets = sets;
                        if let Some(own) = snap.resources.waypoint_tracing.get(w) {
                            sets[proto::WAYPOINT_TRACING_TYPE_URL] = serde_json::json!(view(own));
                        }
                        (w.to_string(), sets)
                    })
                    .collect();
                json(&serde_json::json!({
                    "version": snap.version,
                    proto::ADDRESS_TYPE_URL: view(&snap.resources.addresses),
                    proto::AUTHORIZATION_TYPE_URL: view(&snap.resources.authorizations),
                    proto::WAYPOINT_TRACING_TYPE_URL: view(&snap.resources.tracing),
                    "waypoints": waypoints,
                }))
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Serves the monitoring port until the task is dropped.
pub async fn serve(listener: TcpListener, debug: Debug) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let debug = debug.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let r = debug.handle(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Binds a listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
