//! One document of a manifest file (`kube_source::parse_yaml_document`), and the same bytes
//! as an API server's JSON object (`kube_source::parse_json_object`).
//!
//! The file-level splitting on `---` is private to `kube_source::manifest`; `manifest_file`
//! reaches it through `ManifestDir` on a one-file directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for outcome in kube_source::parse_yaml_document(text) {
            if let Err(e) = outcome {
                let _ = e.to_string();
            }
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        for outcome in kube_source::parse_json_object(&value) {
            if let Err(e) = outcome {
                let _ = e.to_string();
            }
        }
    }
});
