//! LocalRateLimits (`policy.mesh.dev/v1alpha1`, ours) -> the `rate_limits` of waypoint
//! targets.
//!
//! Rules:
//! 1. Each object is translated by `authz`'s `local_rate_limit`; they are few, so every call
//!    translates them all (no memo).
//! 2. Where a limit attaches follows its `targetRefs` as for waypoint policies
//!    (`waypoint_policy.rs` rule 3): a waypoint Gateway -> every target of that waypoint; a
//!    Service -> that service's target; the `istio-waypoint` GatewayClass (root namespace
//!    only) -> every target of every waypoint. A Gateway that is no waypoint, or a
//!    ServiceEntry, is a warning and attaches nowhere.
//! 3. A LocalRateLimit that fails translation is an error (reported with every translation
//!    error) and limits nothing. Unlike an authorization policy it fails open: a limit
//!    protects capacity, not access, and a typo must not take a service down.
//! 4. A target's limits come in the order of their objects' `namespace/name`, each object's
//!    limits in its own order; the waypoint keeps a bucket per limit.

use authz::http::{RateLimit, RateLimitPer};
use authz::translate::local_rate_limit;
use kube_source::{Kind, Object};
use proto::waypoint as pb;

use super::attach::{Attached, place};
use super::http_policy::operation;
use super::waypoint::Waypoints;
use super::{Options, Translation};
use crate::index::Index;

/// The limits of every LocalRateLimit, by where they attach (rules 2 and 4).
pub type RateLimits = Attached<pb::RateLimit>;

/// Rules 1-3: translates every LocalRateLimit in `index`, reporting into `out`.
pub fn parse(
    index: &Index,
    opts: &Options,
    waypoints: &Waypoints<'_>,
    out: &mut Translation,
) -> RateLimits {
    let mut limits = RateLimits::default();
    for object in index.of_kind(Kind::LocalRateLimit) {
        let Object::LocalRateLimit(raw) = object else {
            continue;
        };
        let key = object.key();
        let t = match local_rate_limit(&raw.value, &opts.root_namespace) {
            Ok(t) => t,
            Err(e) => {
                out.errors.push((key, e.to_string()));
                continue;
            }
        };
        let name = format!("{}/{}", t.namespace, t.name);
        let wire: Vec<pb::RateLimit> = t.limits.iter().map(to_proto).collect();
        for w in &t.warnings {
            out.warnings.push((key.clone(), w.clone()));
        }
        let mut places = Vec::new();
        for target in &t.targets {
            match place(target, waypoints) {
                Ok(p) => places.push(p),
                Err(w) => out.warnings.push((key.clone(), w)),
            }
        }
        limits.insert(&name, wire, places);
    }
    limits
}

/// The wire form of one limit (the waypoint's `config.rs` converts it back).
pub fn to_proto(l: &RateLimit) -> pb::RateLimit {
    let per = match l.per {
        RateLimitPer::Route => pb::rate_limit::Per::Route,
        RateLimitPer::SourcePrincipal => pb::rate_limit::Per::SourcePrincipal,
    };
    pb::RateLimit {
        source: l.source.clone(),
        r#match: l.matches.iter().map(operation).collect(),
        per: per as i32,
        max_tokens: l.max_tokens,
        tokens_per_fill: l.tokens_per_fill,
        fill_interval_ms: u32::try_from(l.fill_interval.as_millis()).unwrap_or(u32::MAX),
    }
}
