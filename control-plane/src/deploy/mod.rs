//! Waypoints in a cluster: for each Gateway of class `istio-waypoint`, meshd creates and keeps
//! what istiod's gateway deployment controller would (a ServiceAccount, a Deployment running
//! our `waypoint`, a Service), and writes the Gateway's status. Cluster mode only; a manifest
//! directory's waypoints are started by `meshctl local`.
//!
//! `observed` takes the Gateways and managed Services from the updates meshd already receives,
//! `render` decides what each Gateway needs (pure), `controller` applies it.

mod controller;
mod observed;
mod render;

pub use controller::{Action, ApplyError, Deployer, FIELD_MANAGER};
pub use observed::{Key, Observed, tee};
pub use render::{
    Address, Child, GATEWAY_CLASS_LABEL, Object, RenderError, Rendered, Settings, Status, render,
    status,
};
