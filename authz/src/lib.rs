//! Istio ambient authorization: the policy model, its evaluation, and translation from the CRDs.
#![forbid(unsafe_code)]

// Pure: no IO, no async. ztunnel evaluates inbound connections with `PolicyStore`, reads the
// local config's `policies` with `local`; a control plane turns AuthorizationPolicy and
// PeerAuthentication objects into `Policy` values with `translate`. The waypoint evaluates
// HTTP requests with `http::HttpPolicies`, from `translate::http_authorization_policy`.

pub mod http;
pub mod local;
mod model;
mod store;
pub mod translate;

pub use local::{LocalPolicy, PolicyError, parse_policies};
pub use model::{
    Action, Clause, Connection, Match, Peer, Policy, Rule, Scope, ServiceAccountMatch, StringMatch,
};
pub use store::{Decision, DryRunOutcome, DryRunResult, PolicyStore, Verdict};
