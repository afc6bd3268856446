//! An `istio.workload.Address` as the waypoint receives it (`waypoint::peers`): decoded,
//! applied under its own uid and under another name, looked up by each of its addresses, then
//! removed; every lookup afterwards names nobody.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::workload::{Address, address};
use waypoint::peers::Peers;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = Address::decode(data) else {
        return;
    };
    let uid = match &a.r#type {
        Some(address::Type::Workload(w)) => w.uid.clone(),
        _ => String::new(),
    };
    let peers = Peers::default();
    for e in peers.apply(&[(uid.clone(), a.clone()), ("other".to_string(), a)], &[]) {
        let _ = e.to_string();
    }
    let mut held = Vec::new();
    for w in peers.workloads() {
        held.extend(w.addresses.iter().map(|ip| (*ip, w.identity.clone())));
    }
    for (ip, identity) in &held {
        assert!(peers.lookup(*ip, identity).is_some());
    }
    peers.apply(&[], &[uid, "other".to_string()]);
    assert!(peers.is_empty());
    for (ip, identity) in &held {
        assert!(peers.lookup(*ip, identity).is_none());
    }
});
