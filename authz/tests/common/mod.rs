//! Helpers shared by the table tests: the connection notation and decision text.

use std::net::{IpAddr, SocketAddr};

use authz::{Connection, Decision, Peer, Verdict};

/// `SRC -> DST:PORT [as TD/ns/NS/sa/SA]`; without `as` the connection is plaintext.
pub fn connection(s: &str) -> Connection {
    let (addrs, peer) = match s.split_once(" as ") {
        Some((a, id)) => (a, Some(peer(id))),
        None => (s, None),
    };
    let (src, dst) = addrs.split_once(" -> ").expect("SRC -> DST:PORT");
    let src: IpAddr = src.trim().parse().expect("source IP");
    let dst: SocketAddr = dst.trim().parse().expect("destination IP:port");
    Connection {
        src_ip: src,
        dst_ip: dst.ip(),
        dst_port: dst.port(),
        peer,
    }
}

pub fn peer(id: &str) -> Peer {
    let parts: Vec<&str> = id.trim().split('/').collect();
    assert!(
        parts.len() == 5 && parts[1] == "ns" && parts[3] == "sa",
        "bad identity {id}"
    );
    Peer {
        trust_domain: parts[0].into(),
        namespace: parts[2].into(),
        service_account: parts[4].into(),
    }
}

pub fn decision_text(d: &Decision) -> String {
    match d {
        Decision::DeniedBy { policy, rule } | Decision::AllowedBy { policy, rule } => {
            format!("{policy}#{rule}")
        }
        Decision::NoAllowMatched => "no-allow-matched".into(),
        Decision::NoAllowPolicies => "no-allow-policies".into(),
        Decision::NoPolicies => "no-policies".into(),
    }
}

/// `allow|deny` and the decision text, e.g. `deny shop/d#0` or `allow no-policies`.
pub fn verdict_text(v: &Verdict) -> String {
    format!(
        "{} {}",
        if v.allowed { "allow" } else { "deny" },
        decision_text(&v.reason)
    )
}
