//! The node agent: for each ambient pod scheduled on its node, it installs the pod's capture
//! rules inside the pod's network namespace and hands the pod to the node's ztunnel over ZDS;
//! when the pod goes (or stops being ambient) it removes both. Our counterpart of istio-cni's
//! node agent, speaking the same ZDS, so either ztunnel works with either agent.
//!
//! - [`pods`]: which pods of the node are captured (pure, over the current objects);
//! - [`locate`]: which network namespace is a pod's (the one holding its IP);
//! - [`server`]: the ZDS server ztunnel connects to: replay, then adds and deletes, each acked;
//! - [`agent`]: the loop from source updates to capture rules and ZDS requests;
//! - [`annotate`]: `ambient.istio.io/redirection` on the pods, in a cluster.

pub mod agent;
pub mod annotate;
pub mod locate;
pub mod pods;
pub mod server;
