//! The Kubernetes objects the mesh is configured from, and the sources that supply them.
#![forbid(unsafe_code)]

// One typed model (`objects`) whichever source feeds it: a directory of manifests
// (`manifest`) or a live cluster through `kube` (`cluster`). Both parse through `parse`, and
// sources emit whole objects keyed by `ObjectKey`; consumers (meshd, the node agent) keep
// their own index.

pub mod ambient;
mod cluster;
mod manifest;
mod objects;
mod parse;

pub use cluster::{ClusterError, ClusterOptions, watch_cluster};
pub use manifest::{
    Document, ManifestDir, ManifestError, Origin, Update, manifest_files, split_documents, watch,
};
pub use objects::{
    ConfigMap, ContainerPort, Deployment, GATEWAY_API_GROUP, Gateway, GatewayAddress,
    GatewayListener, GatewaySpec, GatewayStatus, IntOrString, Kind, MESH_POLICY_GROUP, Meta,
    Namespace, NamespaceStatus, Object, ObjectKey, OwnerReference, Pod, PodContainer, PodIp,
    PodSpec, PodStatus, RawPolicy, Service, ServiceAccount, ServicePort, ServiceSpec,
};
pub use parse::{ParseError, Parsed, parse_json_object, parse_yaml_document};
