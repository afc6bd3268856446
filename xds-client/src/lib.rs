//! Delta ADS client: subscribes per type URL, hands typed resources to handlers, ACKs or NACKs.
#![forbid(unsafe_code)]

// Knows nothing of the mesh: callers give the node identity, the TLS settings and one typed
// handler per resource type. `channel` (a gRPC channel over rustls with bearer-token metadata)
// is public because other gRPC clients of the control plane (the CA client) share it.

mod backoff;
mod channel;
mod client;
mod handler;
mod metrics;

pub use backoff::Backoff;
pub use channel::{ChannelError, GrpcTarget, Token, connect};
pub use client::{Client, ClientBuilder, Subscription};
pub use handler::{Changes, Handler, Rejection};
pub use metrics::Metrics;
