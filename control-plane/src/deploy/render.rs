//! What meshd creates in a cluster for one waypoint Gateway, as istiod's gateway deployment
//! controller renders its `waypoint` template: a ServiceAccount, a Deployment running our
//! `waypoint` binary and a Service, all named after the Gateway and owned by it; and, from the
//! Service the cluster then holds, the Gateway's status. Pure: objects in, JSON out; applying
//! them is `controller.rs`'s business.
//!
//! Rules, in order:
//! 1. Only Gateways of class `istio-waypoint` are deployed; any other class, or one being
//!    deleted (`deletionTimestamp`), renders nothing.
//!    Nor does a Gateway whose `gateway.istio.io/controller-version` is not a number up to 5:
//!    a newer controller owns it (istiod's rule).
//! 2. Names: the Deployment and the Service are `gateway.istio.io/name-override`, else the
//!    Gateway's name (a waypoint's names carry no class suffix); the ServiceAccount is
//!    `gateway.istio.io/service-account`, else the same name. A name Kubernetes would refuse
//!    (a Service name is a DNS-1035 label, a ServiceAccount name a DNS-1123 subdomain), and
//!    a Gateway without namespace or uid, are errors naming the field.
//! 3. Labels and annotations: the Gateway's own are copied (istiod's default), annotations
//!    without those that steer the controller; then `gateway.networking.k8s.io/gateway-name`,
//!    `gateway.networking.k8s.io/gateway-class-name` and `gateway.istio.io/managed:
//!    istio.io-mesh-controller` win. The pod template starts from `sidecar.istio.io/inject:
//!    "false"`, `istio.io/dataplane-mode: none` and the canonical name and revision, which the
//!    Gateway's labels may override (a captured waypoint). The Deployment selects its pods by
//!    `gateway.networking.k8s.io/gateway-name` (Istio dropped `istio.io/gateway-name` in 1.24).
//! 4. Every object has the Gateway as its owner (`ownerReferences` with the Gateway's uid), so
//!    Kubernetes' garbage collector deletes them with it. istiod sets it on the ServiceAccount
//!    only from Kubernetes 1.28; we always do.
//! 5. Service ports: `status-port` 15021 (`appProtocol: tcp`), then one per listener port (the
//!    first listener on a port wins), named after the listener ('.' -> '-', at most 63 chars),
//!    `appProtocol` the listener's protocol in lowercase (`hbone` for the `mesh` listener).
//!    Type `ClusterIP` unless `networking.istio.io/service-type` names another.
//! 6. The pod runs our `waypoint` with the names it reads: `XDS_ADDRESS` (meshd), the mesh
//!    root from the `istio-ca-root-cert` ConfigMap at `/var/run/secrets/istio`, a token for
//!    audience `istio-ca` projected at `/var/run/secrets/tokens/istio-token`, its identity
//!    from the downward API (`POD_NAME`, `POD_NAMESPACE`, `SERVICE_ACCOUNT`, `INSTANCE_IP`),
//!    `CLUSTER_ID` and `TRUST_DOMAIN` as meshd's; readiness on 15021, metrics on 15020.
//! 7. Status: `Accepted`, and once the Service has a VIP, its VIPs (`IPAddress`) then its
//!    name (`Hostname`, `<svc>.<ns>.svc.<domain>`) as `addresses` (istiod reports both for
//!    waypoints) and `Programmed`; before that no address and `Programmed` false with reason
//!    `AddressNotUsable`. Conditions carry the Gateway's `metadata.generation`.

use std::collections::BTreeMap;

use kube_source::{Gateway, Service};
use serde_json::{Value, json};

use crate::translate::labels::{GATEWAY_MANAGED, GATEWAY_MANAGED_MESH};
use crate::translate::waypoint::WAYPOINT_CLASS;

pub const GATEWAY_NAME_LABEL: &str = crate::resources::GATEWAY_NAME_LABEL;
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
pub const NAME_OVERRIDE: &str = "gateway.istio.io/name-override";
pub const SERVICE_ACCOUNT_OVERRIDE: &str = "gateway.istio.io/service-account";
pub const CONTROLLER_VERSION: &str = "gateway.istio.io/controller-version";
pub const SERVICE_TYPE: &str = "networking.istio.io/service-type";
/// istiod's gateway controller version (1.18 on); a Gateway marked higher is not ours.
const OUR_CONTROLLER_VERSION: u32 = 5;
/// Annotations that steer the controller, never copied onto what it creates.
const NOT_COPIED: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    NAME_OVERRIDE,
    SERVICE_ACCOUNT_OVERRIDE,
    CONTROLLER_VERSION,
];
pub const STATUS_PORT: u16 = 15021;
pub const METRICS_PORT: u16 = 15020;
/// Where the waypoint finds the mesh root and its token (istiod's mounts).
const ROOT_DIR: &str = "/var/run/secrets/istio";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
const TOKEN_AUDIENCE: &str = "istio-ca";
const TOKEN_SECONDS: u32 = 43200;

/// meshd's settings the objects carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The waypoint container's image.
    pub image: String,
    /// `imagePullPolicy`; none: Kubernetes' default for the tag.
    pub image_pull_policy: Option<String>,
    /// meshd as the waypoint reaches it (`https://istiod.istio-system.svc:15012`).
    pub xds_address: String,
    pub cluster_id: String,
    pub trust_domain: String,
    /// `<svc>.<ns>.svc.<domain_suffix>` in the status.
    pub domain_suffix: String,
}

/// A kind of object created for a waypoint, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Child {
    ServiceAccount,
    Service,
    Deployment,
}

impl Child {
    pub fn as_str(self) -> &'static str {
        match self {
            Child::ServiceAccount => "ServiceAccount",
            Child::Service => "Service",
            Child::Deployment => "Deployment",
        }
    }

    /// The namespace's collection in the API: `/api/v1/namespaces/<ns>/services`.
    pub fn collection(self, namespace: &str) -> String {
        match self {
            Child::ServiceAccount => format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            Child::Service => format!("/api/v1/namespaces/{namespace}/services"),
            Child::Deployment => format!("/apis/apps/v1/namespaces/{namespace}/deployments"),
        }
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: Child,
    pub namespace: String,
    pub name: String,
    /// The whole object, as the apply request's body.
    pub body: Value,
}

/// Everything one waypoint Gateway needs (rule 1 passed).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// ServiceAccount, Service, Deployment.
    pub objects: Vec<Object>,
    /// The Service's name (the status looks it up).
    pub service: String,
}

impl Rendered {
    /// The name of the object of `kind`.
    pub fn name_of(&self, kind: Child) -> Option<&str> {
        self.objects
            .iter()
            .find(|o| o.kind == kind)
            .map(|o| o.name.as_str())
    }
}

/// Why a waypoint Gateway cannot be deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "{field} {value:?} cannot name a {kind}: at most 63 lowercase letters, digits and '-', \
         starting with a letter and ending with a letter or digit"
    )]
    Label {
        field: &'static str,
        value: String,
        kind: &'static str,
    },
    #[error(
        "{field} {value:?} cannot name a ServiceAccount: at most 253 lowercase letters, digits, \
         '-' and '.', starting and ending with a letter or digit"
    )]
    Subdomain { field: &'static str, value: String },
    #[error("{0} is empty: the Gateway must come from the API server")]
    Missing(&'static str),
}

/// The objects for `gw`, or `None` when it is not a waypoint meshd deploys (rule 1).
pub fn render(gw: &Gateway, settings: &Settings) -> Result<Option<Rendered>, RenderError> {
    let meta = &gw.metadata;
    // Being deleted: its objects go with it (a foreground cascade deletes them first, and
    // applying them again would fight it).
    if gw.spec.gateway_class_name != WAYPOINT_CLASS
        || !ours(gw)
        || meta.deletion_timestamp.is_some()
    {
        return Ok(None);
    }
    // Rule 2.
    if meta.namespace.is_empty() {
        return Err(RenderError::Missing("metadata.namespace"));
    }
    if meta.uid.is_empty() {
        return Err(RenderError::Missing("metadata.uid"));
    }
    check_label("metadata.name", &meta.name, "Service")?;
    let name = match meta.annotations.get(NAME_OVERRIDE) {
        Some(n) => {
            check_label(NAME_OVERRIDE, n, "Service")?;
            n.clone()
        }
        None => meta.name.clone(),
    };
    let account = match meta.annotations.get(SERVICE_ACCOUNT_OVERRIDE) {
        Some(a) => {
            check_subdomain(SERVICE_ACCOUNT_OVERRIDE, a)?;
            a.clone()
        }
        None => meta.name.clone(),
    };
    let ns = meta.namespace.as_str();

    // Rule 3.
    let mut labels: BTreeMap<String, String> = meta.labels.clone();
    labels.insert(GATEWAY_NAME_LABEL.into(), meta.name.clone());
    labels.insert(GATEWAY_CLASS_LABEL.into(), WAYPOINT_CLASS.into());
    labels.insert(GATEWAY_MANAGED.into(), GATEWAY_MANAGED_MESH.into());
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut pod_labels: BTreeMap<String, String> = [
        ("sidecar.istio.io/inject", "false"),
        ("istio.io/dataplane-mode", "none"),
        ("service.istio.io/canonical-name", name.as_str()),
        ("service.istio.io/canonical-revision", "latest"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    pod_labels.extend(labels.clone());
    // Rule 4.
    let owner = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": meta.name,
        "uid": meta.uid,
    }]);
    let metadata = |object_name: &str, annotations: &BTreeMap<String, String>| {
        json!({
            "name": object_name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owner,
        })
    };
    let selector = json!({ GATEWAY_NAME_LABEL: meta.name });

    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(&account, &annotations),
    });

    // Rule 5.
    let mut service_annotations = annotations.clone();
    service_annotations
        .entry("networking.istio.io/traffic-distribution".into())
        .or_insert_with(|| "PreferClose".into());
    let service_type = meta
        .annotations
        .get(SERVICE_TYPE)
        .map_or("ClusterIP", String::as_str);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(&name, &service_annotations),
        "spec": {
            "ipFamilyPolicy": "PreferDualStack",
            "ports": service_ports(gw),
            "selector": selector,
            "type": service_type,
        },
    });

    // Rule 6.
    let mut container = json!({
        "name": "istio-proxy",
        "image": settings.image,
        "ports": [
            {"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"},
            {"containerPort": STATUS_PORT, "name": "status-port", "protocol": "TCP"},
        ],
        "env": env(settings),
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT, "scheme": "HTTP"},
            "failureThreshold": 4, "periodSeconds": 15, "timeoutSeconds": 1,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT, "scheme": "HTTP"},
            "failureThreshold": 30, "initialDelaySeconds": 1, "periodSeconds": 1,
            "timeoutSeconds": 1,
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": 1337,
            "runAsNonRoot": true,
            "runAsUser": 1337,
        },
        "volumeMounts": [
            {"mountPath": ROOT_DIR, "name": "istiod-ca-cert"},
            {"mountPath": TOKEN_DIR, "name": "istio-token"},
        ],
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = policy.as_str().into();
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&name, &annotations),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "annotations": {
                        "prometheus.io/path": "/stats/prometheus",
                        "prometheus.io/port": METRICS_PORT.to_string(),
                        "prometheus.io/scrape": "true",
                    },
                    "labels": pod_labels,
                },
                "spec": {
                    "serviceAccountName": account,
                    "containers": [container],
                    "volumes": [
                        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": TOKEN_SECONDS,
                            "path": "istio-token",
                        }}]}},
                        {"name": "istiod-ca-cert", "configMap": {"name": ROOT_CONFIGMAP}},
                    ],
                },
            },
        },
    });
    let object = |kind, name: &str, body| Object {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        body,
    };
    Ok(Some(Rendered {
        objects: vec![
            object(Child::ServiceAccount, &account, service_account),
            object(Child::Service, &name, service),
            object(Child::Deployment, &name, deployment),
        ],
        service: name,
    }))
}

/// Rule 1's version check: no annotation, or a number we are not older than.
fn ours(gw: &Gateway) -> bool {
    match gw.metadata.annotations.get(CONTROLLER_VERSION) {
        None => true,
        Some(v) => v.parse::<u32>().is_ok_and(|v| v <= OUR_CONTROLLER_VERSION),
    }
}

fn service_ports(gw: &Gateway) -> Vec<Value> {
    let mut ports = vec![json!({
        "name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "appProtocol": "tcp",
    })];
    let mut seen = vec![STATUS_PORT];
    for (i, l) in gw.spec.listeners.iter().enumerate() {
        if seen.contains(&l.port) {
            continue;
        }
        seen.push(l.port);
        let protocol = l.protocol.to_ascii_lowercase();
        let mut name: String = l.name.replace('.', "-").chars().take(63).collect();
        if name.is_empty() {
            name = format!("{protocol}-{i}");
        }
        ports.push(json!({
            "name": name, "port": l.port, "protocol": "TCP", "appProtocol": protocol,
        }));
    }
    ports
}

fn env(settings: &Settings) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let value = |name: &str, value: &str| json!({"name": name, "value": value});
    json!([
        value("XDS_ADDRESS", &settings.xds_address),
        value("XDS_ROOT_CA", &format!("{ROOT_DIR}/root-cert.pem")),
        value("AUTH_TOKEN", &format!("{TOKEN_DIR}/istio-token")),
        value("CLUSTER_ID", &settings.cluster_id),
        value("TRUST_DOMAIN", &settings.trust_domain),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("INSTANCE_IP", "status.podIP"),
    ])
}

/// One `status.addresses` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `IPAddress` or `Hostname`.
    pub kind: &'static str,
    pub value: String,
}

/// The Gateway status meshd writes (rule 7), without the time it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub generation: i64,
    pub addresses: Vec<Address>,
    /// `Programmed`: true with the Service's `host:port`s, or false and why.
    pub programmed: Result<String, String>,
}

/// The status of `gw` given its Service as the cluster holds it now (none yet: `None`).
pub fn status(
    gw: &Gateway,
    rendered: &Rendered,
    service: Option<&Service>,
    settings: &Settings,
) -> Status {
    let ns = &gw.metadata.namespace;
    let host = format!("{}.{ns}.svc.{}", rendered.service, settings.domain_suffix);
    let vips: Vec<&str> = service.map(Service::vips).unwrap_or_default();
    if vips.is_empty() {
        return Status {
            generation: gw.metadata.generation,
            addresses: Vec::new(),
            programmed: Err(format!(
                "Failed to assign to any requested addresses: hostname {host:?} not found"
            )),
        };
    }
    let mut addresses: Vec<Address> = vips
        .iter()
        .map(|ip| Address {
            kind: "IPAddress",
            value: ip.to_string(),
        })
        .collect();
    addresses.push(Address {
        kind: "Hostname",
        value: host.clone(),
    });
    let mut ports: Vec<String> = Vec::new();
    for l in &gw.spec.listeners {
        let p = format!("{host}:{}", l.port);
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.is_empty() {
        ports.push(host);
    }
    Status {
        generation: gw.metadata.generation,
        addresses,
        programmed: Ok(format!(
            "Resource programmed, assigned to service(s) {}",
            ports.join(", ")
        )),
    }
}

impl Status {
    /// The apply body for the Gateway's `status` subresource; `now` is RFC 3339.
    pub fn to_apply(&self, namespace: &str, name: &str, now: &str) -> Value {
        let (programmed, reason, message) = match &self.programmed {
            Ok(m) => ("True", "Programmed", m.as_str()),
            Err(m) => ("False", "AddressNotUsable", m.as_str()),
        };
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": kind, "status": status, "reason": reason, "message": message,
                "observedGeneration": self.generation, "lastTransitionTime": now,
            })
        };
        let addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| json!({"type": a.kind, "value": a.value}))
            .collect();
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "status": {
                "addresses": addresses,
                "conditions": [
                    condition("Accepted", "True", "Accepted", "Resource accepted"),
                    condition("Programmed", programmed, reason, message),
                ],
            },
        })
    }
}

/// A DNS-1035 label: what a Service may be named (a Gateway's name is kept to it too, since
/// its Service takes the name).
fn check_label(field: &'static str, value: &str, kind: &'static str) -> Result<(), RenderError> {
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last().is_some_and(|c| *c != b'-');
    if ok {
        Ok(())
    } else {
        Err(RenderError::Label {
            field,
            value: value.to_string(),
            kind,
        })
    }
}

/// A DNS-1123 subdomain: dot-separated labels of lowercase letters, digits and '-'.
fn check_subdomain(field: &'static str, value: &str) -> Result<(), RenderError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first().is_some_and(|c| *c != b'-')
                && b.last().is_some_and(|c| *c != b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(RenderError::Subdomain {
            field,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
