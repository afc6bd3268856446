//! Services and workloads bound to a waypoint -> `mesh.waypoint.v1.Target` resources: what a
//! waypoint needs to know to take a connection meant for them and pass it on.
//!
//! Built in the same pass as the Address resources, from what that pass computed (so a
//! target agrees with what ztunnel is told about the same objects). Rules:
//! 1. A Service whose waypoint (`waypoint.rs`, the resolution behind `Service.waypoint`) is
//!    Gateway G is a target of G, named `<namespace>/<hostname>`, the name of its Address.
//! 2. `vips`: its cluster IPs, as IP strings.
//! 3. `ports`: service port -> targetPort; the service port when targetPort is absent, or
//!    when it is a name. (ztunnel resolves a named targetPort per pod; per-endpoint ports
//!    at the waypoint are not done yet.)
//! 4. `h2_ports`: as Istio's protocol selection reads a port: its `appProtocol` when set
//!    (`http2`, `grpc`, `kubernetes.io/h2c`), else its name (`grpc`, `http2`, or starting
//!    with `grpc-` or `http2-`), ignoring ASCII case.
//! 5. `endpoints`: each workload (a translated pod: it has an IP) the Service selects, in pod
//!    name order: `address` its first IP, `identity` `spiffe://<trust domain>/ns/<ns>/sa/<sa>`
//!    from the Workload's own fields, `healthy` its status, `workload` its uid.
//! 6. A workload whose own waypoint is G is a target of G named `<namespace>/<pod name>`,
//!    with no VIPs or ports and itself as the one endpoint.
//! 7. `policies`: the keys `waypoint_policy.rs` attaches to it; `rate_limits`: the limits
//!    `rate_limit.rs` attaches to it.
//! 8. `jwt_rules`: the RequestAuthentication rules `waypoint_jwt.rs` attaches to it.

use std::collections::HashMap;
use std::net::IpAddr;

use kube_source::{IntOrString, Service, ServicePort};
use proto::waypoint::{Endpoint, Target};
use proto::workload::{Service as PbService, Workload, WorkloadStatus};

use super::encode::target_resource;
use super::rate_limit::RateLimits;
use super::waypoint_jwt::JwtAttachments;
use super::waypoint_policy::Attachments;
use super::workload::DEFAULT_TRUST_DOMAIN;
use crate::resources::{Resource, WaypointKey};

/// One target as the namespace's translation produced it.
#[derive(Debug)]
pub struct TargetOutput {
    pub waypoint: WaypointKey,
    /// A copy of the target's `policies`, so the waypoint's policy set is built without
    /// decoding the resource.
    pub policies: Vec<String>,
    pub resource: Resource,
}

/// The targets of one namespace, gathered as its Services and then its Pods are translated.
#[derive(Debug)]
pub struct Targets<'c> {
    attachments: &'c Attachments,
    rate_limits: &'c RateLimits,
    jwt: &'c JwtAttachments,
    /// Service targets, and where each is by its Address name (`Workload.services` keys).
    services: Vec<(WaypointKey, Target)>,
    by_key: HashMap<String, usize>,
    workloads: Vec<(WaypointKey, Target)>,
}

impl<'c> Targets<'c> {
    pub fn new(
        attachments: &'c Attachments,
        rate_limits: &'c RateLimits,
        jwt: &'c JwtAttachments,
    ) -> Self {
        Targets {
            attachments,
            rate_limits,
            jwt,
            services: Vec::new(),
            by_key: HashMap::new(),
            workloads: Vec::new(),
        }
    }

    /// Rules 1-4 for a translated Service bound to `waypoint`.
    pub fn service(&mut self, svc: &Service, translated: &PbService, waypoint: &WaypointKey) {
        let key = format!("{}/{}", translated.namespace, translated.hostname);
        let target = Target {
            name: translated.hostname.clone(),
            namespace: translated.namespace.clone(),
            vips: translated
                .addresses
                .iter()
                .filter_map(|a| ip_string(&a.address))
                .collect(),
            ports: svc
                .spec
                .ports
                .iter()
                .map(|p| {
                    let to = match &p.target_port {
                        Some(IntOrString::Int(n)) => *n,
                        None | Some(IntOrString::String(_)) => u32::from(p.port),
                    };
                    (u32::from(p.port), to)
                })
                .collect(),
            h2_ports: svc
                .spec
                .ports
                .iter()
                .filter(|p| speaks_h2(p))
                .map(|p| u32::from(p.port))
                .collect(),
            endpoints: Vec::new(),
            policies: self.attachments.service(
                waypoint,
                &svc.metadata.namespace,
                &svc.metadata.name,
            ),
            rate_limits: self.rate_limits.service(
                waypoint,
                &svc.metadata.namespace,
                &svc.metadata.name,
            ),
            jwt_rules: self
                .jwt
                .service(waypoint, &svc.metadata.namespace, &svc.metadata.name),
        };
        self.by_key.insert(key, self.services.len());
        self.services.push((waypoint.clone(), target));
    }

    /// Rules 5 and 6 for a translated workload (bound to `waypoint` itself, if at all).
    pub fn workload(&mut self, workload: &Workload, waypoint: Option<&WaypointKey>) {
        let selecting: Vec<usize> = workload
            .services
            .keys()
            .filter_map(|k| self.by_key.get(k).copied())
            .collect();
        if selecting.is_empty() && waypoint.is_none() {
            return;
        }
        let Some(endpoint) = endpoint(workload) else {
            return;
        };
        for i in selecting {
            if let Some((_, target)) = self.services.get_mut(i) {
                target.endpoints.push(endpoint.clone());
            }
        }
        if let Some(w) = waypoint {
            self.workloads.push((
                w.clone(),
                Target {
                    name: workload.name.clone(),
                    namespace: workload.namespace.clone(),
                    endpoints: vec![endpoint],
                    policies: self.attachments.workload(w),
                    rate_limits: self.rate_limits.workload(w),
                    jwt_rules: self.jwt.workload(w),
                    ..Default::default()
                },
            ));
        }
    }

    /// Every target, encoded.
    pub fn finish(self) -> Vec<TargetOutput> {
        self.services
            .into_iter()
            .chain(self.workloads)
            .map(|(waypoint, target)| TargetOutput {
                waypoint,
                policies: target.policies.clone(),
                resource: target_resource(target),
            })
            .collect()
    }
}

/// Rule 5: a workload as an endpoint; `None` without an address.
fn endpoint(w: &Workload) -> Option<Endpoint> {
    let address = ip_string(w.addresses.first()?)?;
    let trust_domain = match w.trust_domain.as_str() {
        "" => DEFAULT_TRUST_DOMAIN,
        td => td,
    };
    Some(Endpoint {
        address,
        identity: format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            w.namespace, w.service_account
        ),
        healthy: w.status == WorkloadStatus::Healthy as i32,
        workload: w.uid.clone(),
    })
}

/// Rule 4.
fn speaks_h2(p: &ServicePort) -> bool {
    if !p.app_protocol.is_empty() {
        let a = p.app_protocol.as_str();
        return ["http2", "grpc", "kubernetes.io/h2c"]
            .iter()
            .any(|h2| a.eq_ignore_ascii_case(h2));
    }
    let prefix = p.name.split('-').next().unwrap_or_default();
    prefix.eq_ignore_ascii_case("grpc") || prefix.eq_ignore_ascii_case("http2")
}

/// 4 or 16 raw bytes (as the Address resources carry them) as an IP string.
fn ip_string(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_ports_follow_istios_protocol_selection() {
        let cases = [
            ("grpc", "", true),
            ("grpc-api", "", true),
            ("GRPC-web", "", true),
            ("http2", "", true),
            ("http2-x", "", true),
            ("http", "", false),
            ("grpcx", "", false),
            ("tcp", "http2", true),
            ("tcp", "kubernetes.io/h2c", true),
            ("grpc", "http", false),
            ("", "GRPC", true),
        ];
        for (name, app_protocol, want) in cases {
            let p = ServicePort {
                name: name.into(),
                port: 80,
                target_port: None,
                protocol: "TCP".into(),
                app_protocol: app_protocol.into(),
            };
            assert_eq!(speaks_h2(&p), want, "{name} {app_protocol}");
        }
    }
}
