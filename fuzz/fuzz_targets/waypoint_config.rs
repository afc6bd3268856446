//! meshd's waypoint resources as the waypoint receives them (`mesh.waypoint.v1` over delta
//! ADS): decoded, converted at `waypoint::config`'s boundary, snapshotted, and a request
//! decided against what was accepted.
//!
//! Input: resources, each a selector byte (bit 2 set: Tracing, named `mesh` when bit 1 is set;
//! else even: Target, odd: HttpPolicy, bit 1: named by its own namespace/name; otherwise named
//! by the next bytes), a length byte and the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::waypoint::{HttpPolicy, Target, Tracing};
use waypoint::config::Store;

fuzz_target!(|data: &[u8]| {
    let mut store = Store::default();
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let raw_name = String::from_utf8_lossy(bytes.get(..8).unwrap_or(bytes)).into_owned();
        if selector & 4 != 0 {
            if let Ok(t) = Tracing::decode(bytes) {
                let name = if selector & 2 != 0 {
                    proto::WAYPOINT_TRACING_NAME.to_string()
                } else {
                    raw_name
                };
                match waypoint::config::convert_tracing(&name, &t) {
                    Ok(Some(s)) => assert!((0.0..=100.0).contains(&s.sampling)),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        } else if selector & 1 == 0 {
            if let Ok(t) = Target::decode(bytes) {
                let name = if selector & 2 != 0 {
                    format!("{}/{}", t.namespace, t.name)
                } else {
                    raw_name
                };
                if let Err(e) = store.apply_target(&name, &t) {
                    let _ = e.to_string();
                }
            }
        } else if let Ok(p) = HttpPolicy::decode(bytes) {
            let name = if selector & 2 != 0 {
                format!("{}/{}", p.namespace, p.name)
            } else {
                raw_name
            };
            if let Err(e) = store.apply_policy(&name, &p) {
                let _ = e.to_string();
            }
        }
    }
    let targets = store.snapshot();
    for t in targets.iter() {
        for vip in &t.vips {
            let addr = std::net::SocketAddr::new(*vip, 80);
            if let Some(r) = targets.resolve(addr) {
                let mut req = authz::http::Request::new(*vip, addr, "GET", "host", "/a?b");
                let headers: [(&str, &str); 1] = [("user-agent", "sqlmap")];
                req.headers = &headers;
                let _ = r.target.policies.custom(&req);
                let _ = r.target.policies.decide(&req).verdict.to_string();
            }
        }
    }
});
