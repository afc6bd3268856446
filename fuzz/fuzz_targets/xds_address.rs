//! An `istio.workload.Address` from istiod, as ztunnel's xDS client hands it to the one wire
//! boundary: decode, convert and apply (`XdsState::apply_addresses`), then build the `State`
//! the data path reads and look the result up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::workload::{Address, address};
use ztunnel::state::xds::XdsState;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = Address::decode(data) else {
        return;
    };
    // The name a well-behaved istiod gives it (so conversion gets past the name check), and a
    // mismatched one.
    let name = match &a.r#type {
        Some(address::Type::Workload(w)) => w.uid.clone(),
        Some(address::Type::Service(s)) => format!("{}/{}", s.namespace, s.hostname),
        None => String::new(),
    };
    let mut xds = XdsState::new();
    let rejected = xds.apply_addresses(&[(name.clone(), a.clone()), ("other".to_string(), a)], &[]);
    for (_, e) in &rejected {
        let _ = e.to_string();
    }
    let state = xds.to_state();
    for w in state.workloads() {
        let _ = w.identity();
        for ip in &w.ips {
            assert!(state.workload_by_ip(*ip).is_some());
        }
    }
    for s in state.services() {
        let _ = state.endpoints(s);
        for (_, vip) in &s.vips {
            assert!(state.service_by_vip(*vip).is_some());
        }
    }
    // A removal of what was just applied leaves nothing behind.
    xds.apply_addresses(&[], &[name, "other".to_string()]);
    assert_eq!(xds.counts(), (0, 0, 0));
});
