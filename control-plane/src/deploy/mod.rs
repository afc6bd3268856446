//! Waypoints in a cluster: for each Gateway of class `istio-waypoint`, meshd creates and keeps
//! what istiod's gateway deployment controller would (a ServiceAccount, a Deployment running
//! our `waypoint`, a Service), and writes the Gateway's status. Cluster mode only; a manifest
//! directory's waypoints are started by `meshctl local`.
//!
//! `render` decides what each Gateway needs (pure).

mod render;

pub use render::{
    Address, Child, GATEWAY_CLASS_LABEL, Object, RenderError, Rendered, Settings, Status,
    render, status,
};
