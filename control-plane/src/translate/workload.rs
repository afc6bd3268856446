//! Pods -> `istio.workload.Workload`, as istiod's ambient index builds them.
//!
//! Rules:
//! 1. A pod in a terminal phase (`Succeeded`, `Failed`) or without IPs is not a workload. An
//!    IP that does not parse makes the pod an error.
//! 2. uid and resource name `<cluster_id>//Pod/<ns>/<name>`; aliases `<network>/<IP>`;
//!    addresses as 4 or 16 raw bytes; network from `topology.istio.io/network` on the pod,
//!    else its namespace, else the mesh's.
//! 3. Identity: the trust domain is left empty when it is `cluster.local` (istiod's
//!    `pickTrustDomain`; ztunnel reads empty as `cluster.local`); the service account is
//!    `spec.serviceAccountName`, or `default`.
//! 4. HBONE when enrolled in ambient (`labels.rs`), else NONE; hostNetwork pods get
//!    `network_mode = HOST_NETWORK`; HEALTHY unless the pod says it is not ready.
//! 5. Telemetry: workload name and type from the controlling owner (istiod's
//!    `workloadNameAndType`, see [`workload_name_and_type`]); canonical name and revision from
//!    labels with the workload name as last resort.
//! 6. `services`, `waypoint` and `authorization_policies` come from `service.rs`,
//!    `waypoint.rs` and `policy.rs`.

use std::net::IpAddr;

use kube_source::{ObjectKey, Pod};
use proto::workload::{NetworkMode, TunnelProtocol, Workload, WorkloadStatus, WorkloadType};

use super::labels::{self, POD_TEMPLATE_HASH};
use super::{Catalog, ObjectError, ip_bytes};
use crate::resources::WaypointKey;

pub(super) const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A translated pod and the aliases it is published under.
#[derive(Debug)]
pub struct Translated {
    pub workload: Workload,
    pub aliases: Vec<String>,
    /// The waypoint Gateway it is bound to itself (its `waypoint` is that Gateway's address).
    pub gateway: Option<WaypointKey>,
    pub warning: Option<(ObjectKey, String)>,
}

/// `<cluster_id>//Pod/<ns>/<name>`.
pub fn uid(cluster_id: &str, namespace: &str, name: &str) -> String {
    format!("{cluster_id}//Pod/{namespace}/{name}")
}

/// Rules 1-6 for one pod; `None` when it is not a workload.
pub fn translate(pod: &Pod, cat: &Catalog<'_>) -> Result<Option<Translated>, ObjectError> {
    if matches!(pod.status.phase.as_str(), "Succeeded" | "Failed") {
        return Ok(None);
    }
    let ips = pod
        .ips()
        .into_iter()
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|source| ObjectError::BadIp {
                field: "status.podIPs",
                value: ip.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<IpAddr>, _>>()?;
    if ips.is_empty() {
        return Ok(None);
    }
    let opts = cat.opts;
    let m = &pod.metadata;
    let namespace = cat.namespaces.get(m.namespace.as_str()).copied();
    let network = labels::network(m, namespace, &opts.network);
    let aliases = ips.iter().map(|ip| format!("{network}/{ip}")).collect();
    let (workload_name, workload_type) = workload_name_and_type(pod);
    let waypoint = cat.waypoints.resolve_pod(pod, namespace);
    let tunnel = if labels::ambient_enrolled(pod, namespace) {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };
    let workload = Workload {
        uid: uid(&opts.cluster_id, &m.namespace, &m.name),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        addresses: ips.into_iter().map(ip_bytes).collect(),
        network: network.to_string(),
        tunnel_protocol: tunnel as i32,
        trust_domain: if opts.trust_domain == DEFAULT_TRUST_DOMAIN {
            String::new()
        } else {
            opts.trust_domain.clone()
        },
        service_account: pod.service_account().to_string(),
        waypoint: waypoint.address,
        node: pod.spec.node_name.clone(),
        canonical_name: labels::canonical_name(&m.labels, workload_name).to_string(),
        canonical_revision: labels::canonical_revision(&m.labels).to_string(),
        workload_type: workload_type as i32,
        workload_name: workload_name.to_string(),
        services: cat.services.port_lists(pod),
        authorization_policies: cat.bindings.keys(&m.namespace, &m.labels),
        status: if pod.is_ready() {
            WorkloadStatus::Healthy
        } else {
            WorkloadStatus::Unhealthy
        } as i32,
        cluster_id: opts.cluster_id.clone(),
        network_mode: if pod.spec.host_network {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        } as i32,
        ..Default::default()
    };
    Ok(Some(Translated {
        workload,
        aliases,
        gateway: waypoint.gateway,
        warning: waypoint.warning,
    }))
}

/// istiod's `workloadNameAndType` over `GetDeployMetaFromPod`:
/// - the controlling owner reference (`controller: true`; a manifest that leaves `controller`
///   out is read as controlling) decides;
/// - ReplicaSet `foo-<pod-template-hash>` -> Deployment `foo`. When the pod has no
///   `pod-template-hash` label (hand-written manifests), a last `-<suffix>` made of the
///   characters Kubernetes uses for that hash counts as one;
/// - Job `name-<8 to 10 digits>` -> CronJob `name`; any other Job -> Job;
/// - anything else (StatefulSet, DaemonSet, a bare ReplicaSet, no owner) -> the pod, POD.
pub fn workload_name_and_type(pod: &Pod) -> (&str, WorkloadType) {
    let m = &pod.metadata;
    let owners = &m.owner_references;
    let controller = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.iter().find(|o| o.controller.is_none()));
    let Some(owner) = controller else {
        return (&m.name, WorkloadType::Pod);
    };
    let name = owner.name.as_str();
    match owner.kind.as_str() {
        "ReplicaSet" => match replica_set_deployment(name, m.labels.get(POD_TEMPLATE_HASH)) {
            Some(d) => (d, WorkloadType::Deployment),
            None => (&m.name, WorkloadType::Pod),
        },
        "Deployment" => (name, WorkloadType::Deployment),
        "Job" => match cron_job_name(name) {
            Some(c) => (c, WorkloadType::Cronjob),
            None => (name, WorkloadType::Job),
        },
        "CronJob" => (name, WorkloadType::Cronjob),
        _ => (&m.name, WorkloadType::Pod),
    }
}

fn replica_set_deployment<'a>(rs: &'a str, hash: Option<&String>) -> Option<&'a str> {
    match hash.filter(|h| !h.is_empty()) {
        // Go: HasSuffix(name, hash), then TrimSuffix(name, "-"+hash).
        Some(h) => rs.ends_with(h.as_str()).then(|| {
            rs.strip_suffix(h.as_str())
                .and_then(|r| r.strip_suffix('-'))
                .unwrap_or(rs)
        }),
        None => {
            const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let (deployment, suffix) = rs.rsplit_once('-')?;
            let looks_hashed = !deployment.is_empty()
                && (1..=10).contains(&suffix.len())
                && suffix.bytes().all(|b| SAFE.contains(&b));
            looks_hashed.then_some(deployment)
        }
    }
}

/// `(.+)-\d{8,10}$`, the name a CronJob gives its Jobs.
fn cron_job_name(job: &str) -> Option<&str> {
    let (name, stamp) = job.rsplit_once('-')?;
    let ok = !name.is_empty()
        && (8..=10).contains(&stamp.len())
        && stamp.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::{Meta, OwnerReference};

    fn pod(name: &str, owner: Option<(&str, &str, Option<bool>)>, hash: Option<&str>) -> Pod {
        let mut p = Pod {
            metadata: Meta {
                name: name.into(),
                namespace: "ns".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Some((kind, owner, controller)) = owner {
            p.metadata.owner_references.push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: owner.into(),
                controller,
            });
        }
        if let Some(h) = hash {
            p.metadata.labels.insert(POD_TEMPLATE_HASH.into(), h.into());
        }
        p
    }

    #[test]
    fn workload_names_and_types() {
        use WorkloadType::{Cronjob, Deployment, Job, Pod as PodType};
        let t = Some(true);
        let cases: Vec<(&str, Pod, &str, WorkloadType)> = vec![
            ("no owner", pod("p", None, None), "p", PodType),
            (
                "replicaset with hash label",
                pod(
                    "foo-7d9c8b6f5-x2x4q",
                    Some(("ReplicaSet", "foo-7d9c8b6f5", t)),
                    Some("7d9c8b6f5"),
                ),
                "foo",
                Deployment,
            ),
            (
                "replicaset whose name does not end in the hash",
                pod("rs-abc", Some(("ReplicaSet", "rs", t)), Some("7d9c8b6f5")),
                "rs-abc",
                PodType,
            ),
            (
                "replicaset without hash label, hash-like suffix",
                pod(
                    "web-v2-5f4d8c7b9-zz",
                    Some(("ReplicaSet", "web-v2-5f4d8c7b9", t)),
                    None,
                ),
                "web-v2",
                Deployment,
            ),
            (
                "replicaset without hash label, not a hash (has a vowel)",
                pod("web-abc", Some(("ReplicaSet", "web-main", t)), None),
                "web-abc",
                PodType,
            ),
            (
                "job",
                pod("j-x", Some(("Job", "migrate", t)), None),
                "migrate",
                Job,
            ),
            (
                "cronjob's job",
                pod("b-x", Some(("Job", "backup-28391040", t)), None),
                "backup",
                Cronjob,
            ),
            (
                "job with a short number is a plain job",
                pod("b-x", Some(("Job", "backup-1234", t)), None),
                "backup-1234",
                Job,
            ),
            (
                "statefulset",
                pod("db-0", Some(("StatefulSet", "db", t)), None),
                "db-0",
                PodType,
            ),
            (
                "controller unset counts",
                pod("j-x", Some(("Job", "migrate", None)), None),
                "migrate",
                Job,
            ),
            (
                "non-controller owner ignored",
                pod("j-x", Some(("Job", "migrate", Some(false))), None),
                "j-x",
                PodType,
            ),
        ];
        for (name, p, want_name, want_type) in cases {
            assert_eq!(workload_name_and_type(&p), (want_name, want_type), "{name}");
        }
    }
}
