//! The Kubernetes objects the mesh reads, with only the fields it uses.
//!
//! Both sources deserialize into these types: YAML documents from a manifest directory and
//! JSON from the API server, so the same object reads the same either way. Fields the mesh
//! does not use are ignored (objects from `kubectl get -o yaml` carry many); fields it uses
//! are typed, so a wrong type is an error naming the field.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// API group of the Gateway API (`gateway.networking.k8s.io/v1`).
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// Our own resources' API group (what Istio has no CRD for, such as LocalRateLimit).
pub const MESH_POLICY_GROUP: &str = "policy.mesh.dev";

/// The kinds the mesh reads. Anything else in a manifest is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    ServiceAccount,
    /// `gateway.networking.k8s.io` Gateway (waypoints have class `istio-waypoint`).
    Gateway,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
    /// Ours (`policy.mesh.dev`): token-bucket limits a waypoint applies.
    LocalRateLimit,
    /// `telemetry.istio.io` Telemetry (meshd reads the mesh-wide one's tracing).
    Telemetry,
    /// `v1` ConfigMap. Not in [`Kind::ALL`]: a cluster holds many ConfigMaps and the mesh
    /// reads one name of them (meshd keeps `istio-ca-root-cert` published; see
    /// `ClusterOptions::config_map_name`).
    ConfigMap,
    /// `apps/v1` Deployment. Not in [`Kind::ALL`] either: meshd reads the ones it deploys
    /// (by label, `ClusterOptions::deployments_labelled`), to put back one that goes.
    Deployment,
}

impl Kind {
    /// The kinds the mesh translates, which a cluster source lists whole.
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Gateway,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::LocalRateLimit,
        Kind::Telemetry,
    ];

    /// The kind named by an object's `apiVersion` and `kind`, if the mesh reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let k = match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "Pod") => Kind::Pod,
            ("", "Service") => Kind::Service,
            ("", "ServiceAccount") => Kind::ServiceAccount,
            (GATEWAY_API_GROUP, "Gateway") => Kind::Gateway,
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("security.istio.io", "RequestAuthentication") => Kind::RequestAuthentication,
            (MESH_POLICY_GROUP, "LocalRateLimit") => Kind::LocalRateLimit,
            ("telemetry.istio.io", "Telemetry") => Kind::Telemetry,
            ("", "ConfigMap") => Kind::ConfigMap,
            // Read from the cluster only (`parse.rs`).
            ("apps", "Deployment") => Kind::Deployment,
            _ => return None,
        };
        Some(k)
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Gateway => "Gateway",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::LocalRateLimit => "LocalRateLimit",
            Kind::Telemetry => "Telemetry",
            Kind::ConfigMap => "ConfigMap",
            Kind::Deployment => "Deployment",
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// `metadata`, the part every object shares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub creation_timestamp: String,
    #[serde(default)]
    pub resource_version: String,
    /// Bumped by the API server on each change of `spec`; conditions name the one they saw.
    #[serde(default)]
    pub generation: i64,
    /// Set once the object is being deleted (finalizers or a foreground cascade keep it).
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    /// Who created the object (a Pod's ReplicaSet, Job, ...): gives the workload name.
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub status: NamespaceStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NamespaceStatus {
    /// `Active`, or `Terminating` once deleted and until its objects are gone (empty in a
    /// manifest).
    #[serde(default)]
    pub phase: String,
}

impl Namespace {
    /// Deleted and waiting for its objects to go: the API server refuses new ones in it.
    pub fn is_terminating(&self) -> bool {
        self.status.phase == "Terminating"
    }
}

/// A ConfigMap's string data (`binaryData` is not read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// A Deployment: only its metadata is read (meshd needs to know its waypoints' are there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub metadata: Meta,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    #[serde(default)]
    pub metadata: Meta,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Empty means `default`.
    #[serde(default)]
    pub service_account_name: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub containers: Vec<PodContainer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodContainer {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: String,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: String,
    #[serde(default, rename = "podIP")]
    pub pod_ip: String,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
}

impl Pod {
    /// The pod's IPs: `status.podIPs`, else `status.podIP`, as written (not yet parsed).
    pub fn ips(&self) -> Vec<&str> {
        if self.status.pod_ips.is_empty() {
            (!self.status.pod_ip.is_empty())
                .then_some(self.status.pod_ip.as_str())
                .into_iter()
                .collect()
        } else {
            self.status.pod_ips.iter().map(|p| p.ip.as_str()).collect()
        }
    }

    /// `spec.serviceAccountName`, or `default`.
    pub fn service_account(&self) -> &str {
        if self.spec.service_account_name.is_empty() {
            "default"
        } else {
            &self.spec.service_account_name
        }
    }

    /// Not ready only when the pod says so (a `Ready` condition that is not `True`) or has
    /// finished; a manifest without status conditions counts as ready.
    pub fn is_ready(&self) -> bool {
        if matches!(self.status.phase.as_str(), "Succeeded" | "Failed") {
            return false;
        }
        self.status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .is_none_or(|c| c.status == "True")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (the default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// A VIP, `None` for a headless service, or empty.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: String,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// Pods whose labels include all of these are the endpoints; absent means none.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// The VIPs as written: `clusterIPs`, else `clusterIP`; none for headless (`None`).
    pub fn vips(&self) -> Vec<&str> {
        let all: Vec<&str> = if self.spec.cluster_ips.is_empty() {
            vec![self.spec.cluster_ip.as_str()]
        } else {
            self.spec.cluster_ips.iter().map(String::as_str).collect()
        };
        all.into_iter()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// A port number or the name of a container port; absent means `port`.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub app_protocol: String,
}

/// Kubernetes' `IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u32),
    String(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: GatewaySpec,
    #[serde(default)]
    pub status: GatewayStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    /// A waypoint has one: `mesh` on 15008 speaking `HBONE`.
    #[serde(default)]
    pub listeners: Vec<GatewayListener>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GatewayListener {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// `HBONE`, `HTTP`, `TCP`, ... (Gateway API protocol names).
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GatewayAddress {
    /// `IPAddress` (the default) or `Hostname`.
    #[serde(default, rename = "type")]
    pub kind: String,
    pub value: String,
}

/// An Istio security resource, kept whole: the control plane hands it to `authz`'s
/// translation, which checks it field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPolicy {
    pub metadata: Meta,
    pub value: serde_yaml::Value,
}

/// One object of a kind the mesh reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    ServiceAccount(ServiceAccount),
    Gateway(Gateway),
    AuthorizationPolicy(RawPolicy),
    PeerAuthentication(RawPolicy),
    RequestAuthentication(RawPolicy),
    LocalRateLimit(RawPolicy),
    Telemetry(RawPolicy),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Gateway(_) => Kind::Gateway,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::RequestAuthentication(_) => Kind::RequestAuthentication,
            Object::LocalRateLimit(_) => Kind::LocalRateLimit,
            Object::Telemetry(_) => Kind::Telemetry,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Deployment(_) => Kind::Deployment,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::AuthorizationPolicy(p)
            | Object::PeerAuthentication(p)
            | Object::RequestAuthentication(p)
            | Object::LocalRateLimit(p)
            | Object::Telemetry(p) => &p.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::AuthorizationPolicy(p)
            | Object::PeerAuthentication(p)
            | Object::RequestAuthentication(p)
            | Object::LocalRateLimit(p)
            | Object::Telemetry(p) => &mut p.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
        }
    }
}
