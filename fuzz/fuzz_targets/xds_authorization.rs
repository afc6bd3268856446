//! An `istio.security.Authorization` from istiod: decode, convert and apply
//! (`XdsState::apply_authorizations`), build the `State`, and evaluate a connection against
//! what was accepted.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::security::Authorization;
use ztunnel::state::xds::XdsState;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = Authorization::decode(data) else {
        return;
    };
    let name = format!("{}/{}", a.namespace, a.name);
    let namespace = a.namespace.clone();
    let mut xds = XdsState::new();
    let rejected = xds.apply_authorizations(&[(name.clone(), a)], &[]);
    for (_, e) in &rejected {
        let _ = e.to_string();
    }
    let state = xds.to_state();
    let peer = authz::Peer {
        trust_domain: "cluster.local".into(),
        namespace: "shop".into(),
        service_account: "cart".into(),
    };
    for peer in [Some(peer), None] {
        let conn = authz::Connection {
            src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            dst_port: 8080,
            peer,
        };
        let _ = state
            .policies()
            .evaluate(&namespace, std::slice::from_ref(&name), &conn);
    }
    xds.apply_authorizations(&[], &[name]);
    assert_eq!(xds.counts(), (0, 0, 0));
});
