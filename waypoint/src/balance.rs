//! Which healthy endpoint of a target a request (or an opaque stream) goes to.
//!
//! Rules:
//! 1. Least request (the default, as Istio's since 1.14): two healthy endpoints drawn at
//!    random, the one with fewer requests in flight wins, the first drawn on a tie (Envoy's
//!    power of two choices for equal weights). One healthy endpoint: that one.
//! 2. Round robin (`--load-balancing round-robin`): the healthy endpoints in turn.
//! 3. A request is in flight from its pick until its response head arrives (an opaque stream:
//!    until it closes): the [`InFlight`] guard counts it. Counts live in a fixed table of
//!    slots indexed by the endpoint's IP, so there is no map, no lock and no allocation per
//!    request; two endpoints sharing a slot only blur the comparison between them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::targets::Endpoint;

const SLOTS: usize = 1024;

/// The load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    #[default]
    LeastRequest,
    RoundRobin,
}

/// The waypoint's balancer: its policy, its turn counter and the in-flight table.
#[derive(Debug)]
pub struct Balancer {
    policy: AtomicU8,
    next: AtomicU64,
    in_flight: Box<[AtomicU32]>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer {
            policy: AtomicU8::new(Balance::LeastRequest as u8),
            next: AtomicU64::new(0),
            in_flight: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// One request in flight to an endpoint (rule 3); counted until dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    slot: &'a AtomicU32,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub fn set_policy(&self, policy: Balance) {
        self.policy.store(policy as u8, Ordering::Relaxed);
    }

    pub fn policy(&self) -> Balance {
        match self.policy.load(Ordering::Relaxed) {
            x if x == Balance::RoundRobin as u8 => Balance::RoundRobin,
            _ => Balance::LeastRequest,
        }
    }

    /// Rules 1-2 over `endpoints` (only the healthy ones count); `None` when none is healthy.
    pub fn pick<'e>(&self, endpoints: &'e [Endpoint]) -> Option<(&'e Endpoint, InFlight<'_>)> {
        // Counted, then the i-th taken: no list built per request.
        let healthy = || endpoints.iter().filter(|e| e.healthy);
        let n = healthy().count();
        if n == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = match (self.policy(), n) {
            (_, 1) => healthy().next(),
            (Balance::RoundRobin, _) => healthy().nth(index(turn, n)),
            (Balance::LeastRequest, _) => {
                let r = splitmix(turn);
                let a = index(r, n);
                let mut b = index(r >> 32, n - 1);
                if b >= a {
                    b += 1;
                }
                let (ea, eb) = (healthy().nth(a)?, healthy().nth(b)?);
                if self.load(eb.ip) < self.load(ea.ip) {
                    Some(eb)
                } else {
                    Some(ea)
                }
            }
        }?;
        let slot = self.slot(chosen.ip);
        slot.fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight { slot }))
    }

    /// Requests in flight to `ip` (its slot's).
    pub fn load(&self, ip: IpAddr) -> u32 {
        self.slot(ip).load(Ordering::Relaxed)
    }

    fn slot(&self, ip: IpAddr) -> &AtomicU32 {
        let h = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        &self.in_flight[index(splitmix(h), SLOTS)]
    }
}

/// `x` reduced to `0..n` (n > 0).
fn index(x: u64, n: usize) -> usize {
    (x % n as u64) as usize
}

/// A counter or an address turned into well-spread bits (SplitMix64's finaliser).
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u8, unhealthy: &[u8]) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint {
                ip: IpAddr::from([10, 0, 0, i]),
                identity: "spiffe://cluster.local/ns/shop/sa/api".parse().unwrap(),
                healthy: !unhealthy.contains(&i),
            })
            .collect()
    }

    fn last_octet(e: &Endpoint) -> u8 {
        match e.ip {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(_) => 0,
        }
    }

    #[test]
    fn least_request_avoids_the_busy_endpoints() {
        let b = Balancer::default();
        let eps = endpoints(3, &[]);
        // Endpoints 1 and 2 each hold 5 requests; every new pick then goes to 3 whenever it
        // is drawn, and never to 1 or 2 while 3 has fewer.
        let mut held = Vec::new();
        for ip in [1u8, 2] {
            for _ in 0..5 {
                let slot = b.slot(IpAddr::from([10, 0, 0, ip]));
                slot.fetch_add(1, Ordering::Relaxed);
                held.push(InFlight { slot });
            }
        }
        let mut to_three = 0;
        for _ in 0..100 {
            let (e, guard) = b.pick(&eps).unwrap();
            if last_octet(e) == 3 {
                to_three += 1;
            }
            drop(guard);
        }
        // Two of three draws include endpoint 3: about 67 of 100 picks, never fewer than a
        // pair of draws that miss it allows.
        assert!(to_three > 50, "{to_three}");
        drop(held);
        assert_eq!(b.load(IpAddr::from([10, 0, 0, 1])), 0);
    }

    #[test]
    fn in_flight_requests_spread_evenly() {
        let b = Balancer::default();
        let eps = endpoints(4, &[]);
        let held: Vec<_> = (0..40).map(|_| b.pick(&eps).unwrap()).collect();
        for ip in 1..=4u8 {
            let load = b.load(IpAddr::from([10, 0, 0, ip]));
            assert!((6..=14).contains(&load), "endpoint {ip}: {load}");
        }
        drop(held);
        for ip in 1..=4u8 {
            assert_eq!(b.load(IpAddr::from([10, 0, 0, ip])), 0);
        }
    }

    #[test]
    fn round_robin_takes_the_healthy_ones_in_turn() {
        let b = Balancer::default();
        b.set_policy(Balance::RoundRobin);
        let eps = endpoints(4, &[2]);
        let picked: Vec<u8> = (0..6)
            .map(|_| last_octet(b.pick(&eps).unwrap().0))
            .collect();
        assert_eq!(picked, [1, 3, 4, 1, 3, 4]);
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_and_none_left_is_none() {
        let b = Balancer::default();
        let one = endpoints(3, &[1, 3]);
        for _ in 0..10 {
            assert_eq!(last_octet(b.pick(&one).unwrap().0), 2);
        }
        assert!(b.pick(&endpoints(2, &[1, 2])).is_none());
        assert!(b.pick(&[]).is_none());
    }
}
