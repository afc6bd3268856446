//! meshd: Kubernetes resources in, delta xDS and workload certificates out, as istiod serves ztunnel.
#![forbid(unsafe_code)]

// Flow: a source (`kube_source`) emits object changes -> `index` keeps the current objects ->
// `translate` turns them into xDS `resources` -> `xds` diffs them per client and pushes;
// `ca` signs certificates for the identities a caller may hold, as `index` says. In a cluster,
// `deploy` creates each waypoint Gateway's Deployment, Service and ServiceAccount.

pub mod auth;
pub mod ca;
pub mod debug;
pub mod deploy;
pub mod grpc;
pub mod index;
pub mod mesh_config;
pub mod mesh_reload;
pub mod meshd;
pub mod metrics;
pub mod pipeline;
pub mod resources;
pub mod snapshot;
pub mod token_review;
pub mod translate;
pub mod xds;
