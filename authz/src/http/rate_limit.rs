//! Local rate limits at the waypoint (our `LocalRateLimit` resource; Istio needs an
//! EnvoyFilter for this). The model and which requests a limit counts are here, pure; the
//! token buckets live in the waypoint.

use std::time::Duration;

use serde::Serialize;

use super::model::Operation;
use super::request::Request;

/// Whose requests share a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitPer {
    /// One bucket for every caller of the route.
    Route,
    /// A bucket per calling identity (the peer's SPIFFE principal).
    SourcePrincipal,
}

/// One token bucket limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// `namespace/name` of the LocalRateLimit, for logs and metrics.
    pub source: String,
    /// The requests it counts: those any of these matches (empty: every request).
    pub matches: Vec<Operation>,
    pub per: RateLimitPer,
    /// The bucket's size: the burst allowed.
    pub max_tokens: u32,
    /// Tokens added every `fill_interval`, up to `max_tokens`.
    pub tokens_per_fill: u32,
    #[serde(with = "millis")]
    pub fill_interval: Duration,
}

impl RateLimit {
    /// Whether this limit counts `req`.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches_request(req))
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}
