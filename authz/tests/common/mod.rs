//! Helpers shared by the table tests: the connection notation, decision text, and checks
//! every table makes.

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};

use authz::translate::Input;
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

/// Row names identify failures, so each must be unique. Returns how many there are.
#[allow(dead_code)] // not every table binary uses every helper
pub fn assert_unique_names<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    let mut names: Vec<&str> = names.into_iter().collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "duplicate row names");
    total
}

/// A resource translates the same from YAML text and from the parsed value.
#[allow(dead_code)]
pub fn assert_value_input_agrees<T: PartialEq + Debug>(
    name: &str,
    crd: &str,
    translate: impl Fn(Input<'_>) -> T,
) {
    let value: serde_yaml::Value = serde_yaml::from_str(crd).expect("yaml");
    let from_text = translate(Input::Yaml(crd));
    let from_value = translate(Input::Value(&value));
    assert_eq!(from_text, from_value, "{name}");
}

/// `Ok` when some warning contains `want`, or, with `want` empty, when there are none.
#[allow(dead_code)]
pub fn check_warnings(warnings: &[String], want: &str) -> Result<(), String> {
    let ok = if want.is_empty() {
        warnings.is_empty()
    } else {
        warnings.iter().any(|w| w.contains(want))
    };
    if ok {
        Ok(())
    } else {
        Err(format!("warnings {warnings:?}, want {want:?}"))
    }
}

/// Checks every row and fails once, listing each failing row by name. Returns the row count.
#[allow(dead_code)]
pub fn check_rows<'r, R: 'r>(
    rows: impl IntoIterator<Item = &'r R>,
    name: impl Fn(&R) -> &str,
    check: impl Fn(&R) -> Result<(), String>,
) -> usize {
    let mut count = 0;
    let mut failures = Vec::new();
    for row in rows {
        count += 1;
        if let Err(e) = check(row) {
            failures.push(format!("{}: {e}", name(row)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    count
}
