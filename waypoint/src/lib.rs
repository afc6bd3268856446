//! The waypoint: an L7 proxy for the services and workloads bound to it. It terminates HBONE
//! (seeing each client's true identity), applies HTTP AuthorizationPolicy per request, and
//! sends what is allowed on to the destination over HBONE with its own identity.
//!
//! - [`config`]: meshd's `mesh.waypoint.v1` resources into targets and policies (one boundary);
//! - [`targets`]: what it serves and how a CONNECT's authority resolves (pure);
//! - [`peers`]: the mesh's workloads (Istio's `Address` resources), which name peers in metrics;
//! - [`detect`]: HTTP/1, HTTP/2 or opaque TCP, from a stream's first bytes;
//! - [`drain`]: the signal a SIGTERM sends every connection;
//! - [`proxy`]: the HBONE server and upstream streams;
//! - [`balance`]: which endpoint: least request (Istio's default) or round robin;
//! - [`ratelimit`]: the token buckets of LocalRateLimits;
//! - [`jwt`]: RequestAuthentication: a request's token checked before policy;
//! - [`request`]: one HTTP request: token, policy, rate limits, then forward;
//! - [`request_body`]: the body forwarded, with what an authorizer's check read first;
//! - [`upstream`]: HTTP connections to endpoints, shared by all downstream connections;
//! - [`upgrade`]: WebSocket: an upgraded request spliced to its endpoint;
//! - [`ext_authz`]: the external authorizers CUSTOM policies ask (HTTP and gRPC);
//! - [`health`]: readiness on 15021;
//! - [`log_sink`]: log lines to stderr in batches (an access-log line per request);
//! - [`metrics`], [`telemetry`]: Istio's metrics and the access log, per request and stream;
//! - [`trace`]: W3C and B3 trace context carried on, spans exported to Zipkin or OTLP/gRPC as
//!   meshd's Tracing (or the flags) say;
//! - [`admin`]: admin (15000: config dump, log level, explain, quit) and metrics (15020).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod balance;
pub mod config;
pub mod detect;
pub mod drain;
pub mod ext_authz;
pub mod health;
pub mod jwt;
pub mod log_sink;
pub mod metrics;
pub mod peers;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod request_body;
pub mod targets;
pub mod telemetry;
pub mod trace;
pub mod upgrade;
pub mod upstream;

pub use proxy::Waypoint;
pub use targets::{Endpoint, Target, Targets};
