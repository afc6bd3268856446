//! Exponential backoff with jitter between reconnect attempts.

use std::time::Duration;

/// Doubling delays from `initial` up to `max`, each shortened by up to `jitter` of itself so
/// that many clients that lost the same server do not return in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction (0..=1) of each delay that may be taken off at random.
    pub jitter: f64,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            initial,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            next: initial,
            seed,
        }
    }

    /// Istio ztunnel's xDS reconnect schedule: 10 ms doubling to 15 s.
    pub fn xds_default() -> Self {
        Backoff::new(Duration::from_millis(10), Duration::from_secs(15), 0.2)
    }

    /// The next delay; each call doubles the base until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift: good enough to spread reconnects, no dependency needed.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - self.jitter * unit)
    }

    /// Back to `initial`, after a connection that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100), 0.2);
        let bases = [10u64, 20, 40, 80, 100, 100];
        for base in bases {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(d <= base && d >= base.mul_f64(0.8), "{d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
