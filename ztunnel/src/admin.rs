//! Admin endpoints on 127.0.0.1:15000: what ztunnel knows and does, for an operator.
//!
//! | path | method | what |
//! |---|---|---|
//! | `/config_dump` | GET | workloads, services, certificates (identity, validity) as JSON |
//! | `/logging` | GET, POST `?level=<filter>` | show or change log levels at run time |
//! | `/quitquitquit` | POST | graceful exit |
//! | `/explain` | GET | the policy verdict for a would-be connection, and what decided it |
//!
//! `/explain` takes `dst_ip`, `dst_port`, and a source: `src_ip` plus either `src_identity`
//! (`spiffe://...`), or `src_namespace` and `src_service_account` (`src_trust_domain`
//! defaults to `cluster.local`), or none of these for a plaintext (identity-less) peer.
//! `src_ip` may be left out when the identity belongs to a known workload.

use std::sync::Arc;
use std::time::SystemTime;

use std::net::{IpAddr, SocketAddr};

use hbone::{CertManager, SpiffeId};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::http::{self, Body};
use crate::state::{GatewayRef, Protocol, StateHandle, Workload};

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
                "/config_dump\n/logging\n/explain?src_identity=&src_ip=&dst_ip=&dst_port=\n/quitquitquit (POST)\n",
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
            (&Method::GET, "/explain") => match self.explain(&http::query(&req)) {
                Ok(v) => http::json(StatusCode::OK, &v),
                Err(e) => http::json(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            (&Method::POST, "/quitquitquit") => {
                self.shutdown.notify_one();
                http::text(StatusCode::OK, "shutting down\n")
            }
            (_, "/logging" | "/quitquitquit" | "/config_dump" | "/explain") => {
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
                    "waypoint": s.waypoint.as_ref().map(gateway_json),
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
        let policies: Vec<Value> = state
            .policies()
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or_else(|e| json!({ "error": e.to_string() })))
            .collect();
        json!({
            "workloads": workloads,
            "services": services,
            "policies": policies,
            "certificates": certificates,
        })
    }

    /// The verdict for a connection described by query parameters, without sending traffic.
    fn explain(&self, q: &[(String, String)]) -> Result<Value, String> {
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let state = self.state.load();
        let identity: Option<SpiffeId> = match (
            get("src_identity"),
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
                    "give src_identity, or both src_namespace and src_service_account".into(),
                );
            }
        };
        let src_ip: IpAddr = match get("src_ip") {
            Some(ip) => ip.parse().map_err(|e| format!("src_ip {ip:?}: {e}"))?,
            None => identity
                .as_ref()
                .and_then(|id| {
                    state
                        .workloads()
                        .iter()
                        .find(|w| w.identity().ok().as_ref() == Some(id))
                })
                .and_then(|w| w.ips.first().copied())
                .ok_or("src_ip is needed (no known workload has that identity)")?,
        };
        let dst_ip: IpAddr = get("dst_ip")
            .ok_or("dst_ip is needed")?
            .parse()
            .map_err(|e| format!("dst_ip: {e}"))?;
        let dst_port: u16 = get("dst_port")
            .ok_or("dst_port is needed")?
            .parse()
            .map_err(|e| format!("dst_port: {e}"))?;
        let dst = state
            .workload_by_ip(dst_ip)
            .ok_or_else(|| format!("no workload has IP {dst_ip}"))?;
        let conn = crate::proxy::policy::connection(
            SocketAddr::new(src_ip, 0),
            SocketAddr::new(dst_ip, dst_port),
            identity.as_ref(),
        );
        let verdict = state.authorize(dst, &conn);
        let applicable: Vec<String> = state
            .policies()
            .iter()
            .filter(|p| match p.scope {
                authz::Scope::Global => true,
                authz::Scope::Namespace => p.namespace == dst.namespace,
                authz::Scope::WorkloadSelector => dst.authorization_policies.contains(&p.key()),
            })
            .map(|p| p.key())
            .collect();
        let decided_by = match &verdict.reason {
            authz::Decision::DeniedBy { policy, rule }
            | authz::Decision::AllowedBy { policy, rule } => {
                json!({ "policy": policy.to_string(), "rule": rule })
            }
            _ => Value::Null,
        };
        let dry_run: Vec<Value> = verdict
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
            "destination": {
                "ip": dst_ip,
                "port": dst_port,
                "workload": format!("{}/{}", dst.namespace, dst.name),
                "identity": dst.identity().ok().map(|i| i.to_string()),
            },
            "verdict": if verdict.allowed { "allow" } else { "deny" },
            "decidedBy": decided_by,
            "reason": verdict.reason.to_string(),
            "applicablePolicies": applicable,
            "dryRun": dry_run,
        }))
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
        "waypoint": w.waypoint.as_ref().map(gateway_json),
    })
}

/// A waypoint as the local config writes it.
fn gateway_json(g: &GatewayRef) -> Value {
    json!({ "destination": g.to_string(), "hboneMtlsPort": g.hbone_mtls_port })
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
