//! ztunnel's local config file (`LOCAL_XDS_PATH`): `LocalConfig::parse`, YAML to `State`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ztunnel::state::local::LocalConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match LocalConfig::parse(Path::new("fuzz.yaml"), text) {
        Ok(state) => {
            for w in state.workloads() {
                let _ = w.identity();
                let _ = state.authorize(
                    w,
                    &authz::Connection {
                        src_ip: [10, 0, 0, 1].into(),
                        dst_ip: w.ips.first().copied().unwrap_or([10, 0, 0, 2].into()),
                        dst_port: 80,
                        peer: None,
                    },
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
