//! Shared mode (Istio's in-pod mode): one ztunnel serving every ambient pod of its node.
//!
//! The node agent hands pods over ZDS (`zds` crate): each `AddWorkload` brings the pod's
//! identity and its network namespace. For each pod ztunnel builds a [`ProxyContext`] of its
//! own (the pod's identity and certificate, its namespace for every socket) over the
//! node-wide state, certificate manager and metrics, and binds 15001/15006/15008 inside the
//! pod's namespace. Pods are independent: one failing to start, or leaving, touches no other.
//!
//! - [`session`]: what each ZDS request means given where the replay is (pure);
//! - [`pods`]: starting, keeping and stopping pod proxies;
//! - [`client`]: the connection to the agent: hello, requests in, acks out, reconnects.
//!
//! [`ProxyContext`]: crate::proxy::ProxyContext

pub mod client;
pub mod pods;
pub mod session;

pub use client::run;
pub use pods::{Node, Pods};
