//! AuthorizationPolicy (for ztunnel and for waypoints), PeerAuthentication and LocalRateLimit
//! objects (`authz::translate`), as meshd reads them from a cluster or a manifest: YAML text,
//! and the same text parsed to a `serde_yaml::Value` first (the path `kube_source::RawPolicy`
//! values take).
#![no_main]

use authz::translate::{self, Input, TranslateOptions};
use libfuzzer_sys::fuzz_target;

const ROOT: &str = "istio-system";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = TranslateOptions {
        enable_dry_run: flags & 1 == 1,
    };
    let value = serde_yaml::from_str::<serde_yaml::Value>(text).ok();
    let mut inputs = vec![Input::Yaml(text)];
    if let Some(v) = &value {
        inputs.push(Input::Value(v));
    }
    for input in inputs {
        match translate::authorization_policy(input, ROOT, &opts) {
            Ok(t) => {
                let _ = t.key();
                let _ = t.selects(ROOT, "shop", &Default::default());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match translate::http_authorization_policy(input, ROOT) {
            Ok(t) => {
                let _ = t.key();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match translate::local_rate_limit(input, ROOT) {
            Ok(l) => {
                let _ = l.limits.iter().map(|x| x.fill_interval).max();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match translate::peer_authentication(input) {
            Ok(pa) => {
                let all = [pa];
                let _ = translate::peer_authentication_policies(&all, ROOT);
                let _ = translate::converted_peer_authentication(&all[0], &all, ROOT);
                let _ = translate::effective_mtls(&all, ROOT, "shop", &Default::default());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
