//! Local rate limiting: the token buckets behind a target's `rate_limits`.
//!
//! Rules:
//! 1. A limit counts the requests its `match` selects (`authz::http::RateLimit::applies`).
//!    `per: route` is one bucket per target and limit; `per: sourcePrincipal` one per calling
//!    identity besides.
//! 2. Buckets start full and gain `tokens_per_fill` every whole `fill_interval`, up to
//!    `max_tokens` (Envoy's local rate limit token bucket). A request takes one token from
//!    every limit that counts it, in order; the first limit with none left refuses it.
//! 3. A bucket is keyed by its limit's numbers too, so a limit changed by meshd starts with a
//!    fresh bucket and an unchanged one keeps its state across config updates.
//! 4. Memory is bounded: at `max_buckets`, buckets that have refilled completely (the same as
//!    a new one) are dropped; if that frees nothing, a caller without a bucket shares its
//!    limit's overflow bucket, so a flood of identities is still limited, never let through.
//! 5. Checked after authorization: a denied request costs no tokens, so a refused caller cannot
//!    drain the bucket that the allowed callers of a route share.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use authz::http::{RateLimit, RateLimitPer};

/// The default bound on live buckets (about 40 bytes each).
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// Why a request was refused: what the 429's `x-ratelimit-*` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit's `namespace/name` (for the access log).
    pub source: String,
    /// The bucket's size.
    pub limit: u32,
    /// Until the next tokens arrive.
    pub reset: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the last whole fill interval ended.
    filled: Instant,
}

/// Every bucket of this waypoint.
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<HashMap<u64, Bucket>>,
    hasher: std::collections::hash_map::RandomState,
    max_buckets: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(DEFAULT_MAX_BUCKETS)
    }
}

impl Limiter {
    pub fn new(max_buckets: usize) -> Limiter {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            hasher: Default::default(),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Rule 2 for the limits of `target` that count this request, in order; `principal` is
    /// the caller's identity.
    pub fn check<'a>(
        &self,
        target: &str,
        limits: impl IntoIterator<Item = &'a RateLimit>,
        principal: &str,
        now: Instant,
    ) -> Result<(), Limited> {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            // A panic elsewhere while holding the lock left plain numbers behind: still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        for (i, limit) in limits.into_iter().enumerate() {
            let per_caller = limit.per == RateLimitPer::SourcePrincipal;
            let mut key = self.key(target, i, limit, per_caller.then_some(principal));
            if !buckets.contains_key(&key) && buckets.len() >= self.max_buckets {
                sweep(&mut buckets, limit, now);
                if buckets.len() >= self.max_buckets {
                    // Rule 4: the limit's overflow bucket.
                    key = self.key(target, i, limit, None);
                }
            }
            let bucket = buckets.entry(key).or_insert(Bucket {
                tokens: limit.max_tokens,
                filled: now,
            });
            refill(bucket, limit, now);
            match bucket.tokens.checked_sub(1) {
                Some(left) => bucket.tokens = left,
                None => {
                    let next = bucket.filled + limit.fill_interval;
                    return Err(Limited {
                        source: limit.source.clone(),
                        limit: limit.max_tokens,
                        reset: next.saturating_duration_since(now),
                    });
                }
            }
        }
        Ok(())
    }

    /// Live buckets (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rule 3: the bucket's identity.
    fn key(&self, target: &str, index: usize, limit: &RateLimit, caller: Option<&str>) -> u64 {
        let mut h = self.hasher.build_hasher();
        target.hash(&mut h);
        index.hash(&mut h);
        limit.source.hash(&mut h);
        limit.max_tokens.hash(&mut h);
        limit.tokens_per_fill.hash(&mut h);
        limit.fill_interval.hash(&mut h);
        caller.hash(&mut h);
        h.finish()
    }
}

/// Adds the tokens of the whole intervals since the bucket was last filled.
fn refill(bucket: &mut Bucket, limit: &RateLimit, now: Instant) {
    let interval = limit.fill_interval.max(Duration::from_millis(1));
    let elapsed = now.saturating_duration_since(bucket.filled);
    let fills = elapsed.as_nanos() / interval.as_nanos();
    if fills == 0 {
        return;
    }
    let added = fills.saturating_mul(u128::from(limit.tokens_per_fill));
    let tokens = u128::from(bucket.tokens).saturating_add(added);
    bucket.tokens = u32::try_from(tokens.min(u128::from(limit.max_tokens))).unwrap_or(u32::MAX);
    // Whole intervals only; a bucket full again restarts its clock.
    bucket.filled = if bucket.tokens == limit.max_tokens {
        now
    } else {
        bucket.filled + interval * u32::try_from(fills).unwrap_or(u32::MAX)
    };
}

/// Rule 4: drops the buckets that an empty bucket of `limit` would have refilled by now.
/// Buckets of limits with a slower refill may go a little early, which only forgives a few
/// of their caller's requests.
fn sweep(buckets: &mut HashMap<u64, Bucket>, limit: &RateLimit, now: Instant) {
    let horizon = limit
        .fill_interval
        .saturating_mul(limit.max_tokens.div_ceil(limit.tokens_per_fill.max(1)));
    buckets.retain(|_, b| now.saturating_duration_since(b.filled) < horizon);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per: RateLimitPer, max: u32, fill: u32, every_ms: u64) -> RateLimit {
        RateLimit {
            source: "shop/rl".into(),
            matches: Vec::new(),
            per,
            max_tokens: max,
            tokens_per_fill: fill,
            fill_interval: Duration::from_millis(every_ms),
        }
    }

    #[test]
    fn a_bucket_empties_then_refills_by_whole_intervals() {
        let l = limit(RateLimitPer::Route, 3, 2, 1000);
        let lim = Limiter::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let check = |ms| lim.check("t", [&l], "a", at(ms));
        for _ in 0..3 {
            assert_eq!(check(0), Ok(()));
        }
        assert_eq!(
            check(400),
            Err(Limited {
                source: "shop/rl".into(),
                limit: 3,
                reset: Duration::from_millis(600)
            })
        );
        // One interval: two tokens, not three.
        assert_eq!(check(1000), Ok(()));
        assert_eq!(check(1500), Ok(()));
        assert!(check(1999).is_err());
        // Many intervals: capped at max.
        for _ in 0..3 {
            assert_eq!(check(60_000), Ok(()));
        }
        assert!(check(60_000).is_err());
    }

    #[test]
    fn per_principal_buckets_are_separate_and_route_buckets_shared() {
        let per = limit(RateLimitPer::SourcePrincipal, 1, 1, 1000);
        let route = limit(RateLimitPer::Route, 1, 1, 1000);
        let lim = Limiter::default();
        let now = Instant::now();
        assert!(lim.check("t", [&per], "a", now).is_ok());
        assert!(lim.check("t", [&per], "a", now).is_err());
        assert!(lim.check("t", [&per], "b", now).is_ok());
        assert!(lim.check("t", [&route], "a", now).is_ok());
        assert!(lim.check("t", [&route], "b", now).is_err());
        // Another target: its own buckets.
        assert!(lim.check("u", [&route], "b", now).is_ok());
    }

    #[test]
    fn every_counting_limit_takes_a_token_and_the_first_empty_one_refuses() {
        let wide = limit(RateLimitPer::Route, 10, 10, 1000);
        let mut narrow = limit(RateLimitPer::Route, 1, 1, 1000);
        narrow.source = "shop/narrow".into();
        let lim = Limiter::default();
        let now = Instant::now();
        assert!(lim.check("t", [&wide, &narrow], "a", now).is_ok());
        let refused = lim.check("t", [&wide, &narrow], "a", now);
        assert_eq!(refused.map_err(|l| l.source), Err("shop/narrow".into()));
    }

    #[test]
    fn a_changed_limit_starts_a_fresh_bucket() {
        let old = limit(RateLimitPer::Route, 1, 1, 1000);
        let new = limit(RateLimitPer::Route, 2, 1, 1000);
        let lim = Limiter::default();
        let now = Instant::now();
        assert!(lim.check("t", [&old], "a", now).is_ok());
        assert!(lim.check("t", [&old], "a", now).is_err());
        assert!(lim.check("t", [&new], "a", now).is_ok());
    }

    #[test]
    fn buckets_are_bounded_and_a_flood_of_callers_shares_the_overflow_bucket() {
        let per = limit(RateLimitPer::SourcePrincipal, 2, 1, 1000);
        let lim = Limiter::new(4);
        let now = Instant::now();
        let outcomes: Vec<bool> = (0..10)
            .map(|i| lim.check("t", [&per], &format!("caller-{i}"), now).is_ok())
            .collect();
        // Four callers get their own bucket; the rest share one of two tokens.
        assert_eq!(
            outcomes,
            [
                true, true, true, true, true, true, false, false, false, false
            ]
        );
        assert!(lim.len() <= 5, "{}", lim.len());
        // Once the buckets have refilled they are dropped and new callers get their own.
        let later = now + Duration::from_secs(5);
        assert!(lim.check("t", [&per], "late", later).is_ok());
        assert!(lim.len() <= 2, "{}", lim.len());
    }
}
