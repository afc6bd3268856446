//! L7 (HTTP) authorization for the waypoint: Istio's AuthorizationPolicy with HTTP attributes,
//! pure (no IO, no async, no HTTP library).
//!
//! The waypoint builds an [`HttpPolicies`] per target from
//! [`http_authorization_policy`](crate::translate::http_authorization_policy) results,
//! describes each request as a borrowed [`Request`], asks [`HttpPolicies::custom`] whether an
//! external authorizer must be consulted, then [`HttpPolicies::decide`] for the DENY/ALLOW
//! verdict (protocol.md 8.4, 10.3).

mod evaluate;
mod matching;
mod model;
mod rate_limit;
mod request;

pub use evaluate::{CustomCheck, DenyReason, HttpDecision, HttpPolicies, HttpVerdict, RuleRef};
pub use model::{
    Condition, ConditionKey, ConditionValues, HttpAction, HttpPolicy, HttpRule, HttpStringMatch,
    Needle, Operation, Source,
};
pub use rate_limit::{RateLimit, RateLimitPer};
pub use request::{Headers, JwtAuth, Request};
