//! Admin endpoints on 127.0.0.1:15000: what ztunnel knows and does, for an operator.
//!
//! | path | method | what |
//! |---|---|---|
//! | `/config_dump` | GET | workloads, services, certificates (identity, validity) as JSON |
//! | `/logging` | GET, POST `?level=<filter>` | show or change log levels at run time |
//! | `/quitquitquit` | POST | graceful exit |

use std::sync::Arc;
use std::time::SystemTime;

use hbone::CertManager;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::http::{self, Body};
use crate::state::{Protocol, StateHandle, Workload};

/// Changes and reports the log filter (a `tracing_subscriber` reload handle, in the binary).
pub trait LogControl: Send + Sync {
    fn current(&self) -> String;
    fn set(&self, filter: &str) -> Result<(), String>;
}

pub struct Admin {
    pub state: StateHandle,
    pub certs: Arc<CertManager>,
    pub logs: Arc<dyn LogControl>,
    /// Notified by `/quitquitquit`.
    pub shutdown: Arc<Notify>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => http::text(
                StatusCode::OK,
                "/config_dump\n/logging\n/quitquitquit (POST)\n",
            ),
            (&Method::GET, "/config_dump") => http::json(StatusCode::OK, &self.config_dump().await),
            (&Method::GET, "/logging") => {
                http::text(StatusCode::OK, format!("{}\n", self.logs.current()))
            }
            (&Method::POST, "/logging") => {
                let level = http::query(&req)
                    .into_iter()
                    .find(|(k, _)| k == "level")
                    .map(|(_, v)| v);
                match level {
                    None => http::text(StatusCode::BAD_REQUEST, "missing ?level=<filter>\n"),
                    Some(l) => match self.logs.set(&l) {
                        Ok(()) => http::text(StatusCode::OK, format!("{}\n", self.logs.current())),
                        Err(e) => http::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    },
                }
            }
            (&Method::POST, "/quitquitquit") => {
                self.shutdown.notify_one();
                http::text(StatusCode::OK, "shutting down\n")
            }
            (_, "/logging" | "/quitquitquit" | "/config_dump") => {
                http::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => http::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn config_dump(&self) -> Value {
        let state = self.state.load();
        let workloads: Vec<Value> = state.workloads().iter().map(|w| workload_json(w)).collect();
        let services: Vec<Value> = state
            .services()
            .map(|s| {
                json!({
                    "name": s.name,
                    "namespace": s.namespace,
                    "hostname": s.hostname,
                    "vips": s.vips.iter().map(|(n, ip)| format!("{n}/{ip}")).collect::<Vec<_>>(),
                    "ports": s.ports,
                    "subjectAltNames": s.subject_alt_names.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "endpoints": state.endpoints(s).iter().map(|w| w.uid.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let certificates: Vec<Value> = self
            .certs
            .certificates()
            .await
            .iter()
            .map(|c| {
                json!({
                    "identity": c.identity().to_string(),
                    "validFrom": rfc3339(c.not_before()),
                    "expirationTime": rfc3339(c.not_after()),
                    "refreshAt": rfc3339(c.refresh_at()),
                    "chainLength": c.chain().len(),
                })
            })
            .collect();
        json!({
            "workloads": workloads,
            "services": services,
            "certificates": certificates,
        })
    }
}

fn workload_json(w: &Workload) -> Value {
    json!({
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "serviceAccount": w.service_account,
        "trustDomain": w.trust_domain,
        "workloadIps": w.ips,
        "protocol": match w.protocol { Protocol::Hbone => "HBONE", Protocol::Tcp => "TCP" },
        "status": if w.healthy { "Healthy" } else { "Unhealthy" },
        "node": w.node,
        "canonicalName": w.canonical_name,
        "canonicalRevision": w.canonical_revision,
        "workloadName": w.workload_name,
        "clusterId": w.cluster_id,
        "services": w.services,
        "authorizationPolicies": w.authorization_policies,
    })
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_599_303)),
            "2026-11-25T09:35:03Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
