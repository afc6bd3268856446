//! The control plane's two gRPC services as a proxy uses them: the delta ADS client (subscribes
//! per type URL, hands typed resources to handlers, ACKs or NACKs) and the CA client (`ca`).
#![forbid(unsafe_code)]

// Knows nothing of the mesh: callers give the node identity, the TLS settings and one typed
// handler per resource type. `channel` (a gRPC channel over rustls with bearer-token metadata)
// is public because other gRPC clients of the control plane (the CA client) share it.

mod backoff;
pub mod ca;
mod channel;
mod client;
mod handler;
mod metrics;

pub use backoff::Backoff;
pub use channel::{ChannelError, GrpcTarget, Token, connect, tls_with_roots};
pub use client::{Client, ClientBuilder, Subscription};
pub use handler::{Changes, Handler, Rejection};
pub use metrics::Metrics;
