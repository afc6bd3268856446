//! What meshd writes into a cluster, as istiod does. Cluster mode only.
//!
//! Waypoints: for each Gateway of class `istio-waypoint`, meshd creates and keeps what
//! istiod's gateway deployment controller would (a ServiceAccount, a Deployment running our
//! `waypoint`, a Service), and writes the Gateway's status. A manifest directory's waypoints
//! are started by `meshctl local`. `observed` takes the Gateways and managed Services from the
//! updates meshd already receives, `render` decides what each Gateway needs (pure),
//! `controller` applies it.
//!
//! The root certificate: in every namespace, the `istio-ca-root-cert` ConfigMap istiod's
//! namespace controller keeps (which the waypoints mount). `root_cert` decides where and what
//! (pure), `publisher` applies it. Both controllers write through `apply`.

mod apply;
mod controller;
mod observed;
mod publisher;
mod render;
mod root_cert;

pub use apply::ApplyError;
pub use controller::{Action, Deployer, FIELD_MANAGER};
pub use observed::{Key, Observed, View, tee};
pub use publisher::{ROOT_CERT_FIELD_MANAGER, RootCertPublisher};
pub use render::{
    Address, Child, GATEWAY_CLASS_LABEL, Object, RenderError, Rendered, Settings, Status, render,
    status,
};
pub use root_cert::{
    CONFIG_LABEL, Namespaces, Published, ROOT_CERT_CONFIG_MAP, ROOT_CERT_KEY, config_map,
    needs_write, receives,
};
