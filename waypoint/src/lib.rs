//! The waypoint: an L7 proxy for the services and workloads bound to it. It terminates HBONE
//! (seeing each client's true identity), applies HTTP AuthorizationPolicy per request, and
//! sends what is allowed on to the destination over HBONE with its own identity.
//!
//! - [`config`]: meshd's `mesh.waypoint.v1` resources into targets and policies (one boundary);
//! - [`targets`]: what it serves and how a CONNECT's authority resolves (pure);
//! - [`detect`]: HTTP/1, HTTP/2 or opaque TCP, from a stream's first bytes;
//! - [`proxy`]: the HBONE server and upstream streams;
//! - [`jwt`]: RequestAuthentication: a request's token checked before policy;
//! - [`request`]: one HTTP request: token, policy, then forward;
//! - [`health`]: readiness on 15021.
#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod health;
pub mod jwt;
pub mod proxy;
pub mod request;
pub mod targets;

pub use proxy::Waypoint;
pub use targets::{Endpoint, Target, Targets};
