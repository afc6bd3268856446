//! Which pods ambient mode captures: the one rule `meshd` (tunnel protocol HBONE) and the
//! node agent (capture rules, ZDS) both apply (protocol.md 11).
//!
//! A pod is captured when it or its namespace is labeled `istio.io/dataplane-mode: ambient`,
//! unless the pod is labeled `none`, uses the host network, or carries an Istio sidecar
//! (`sidecar.istio.io/status`).

use crate::objects::{Namespace, Pod};

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
pub const DATAPLANE_MODE_NONE: &str = "none";
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

/// Whether ambient mode captures `pod` (in `namespace`, when known).
pub fn captured(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    let m = &pod.metadata;
    let pod_mode = m.labels.get(DATAPLANE_MODE).map(String::as_str);
    if pod_mode == Some(DATAPLANE_MODE_NONE)
        || pod.spec.host_network
        || m.annotations.contains_key(SIDECAR_STATUS)
    {
        return false;
    }
    pod_mode == Some(DATAPLANE_MODE_AMBIENT)
        || namespace.is_some_and(|ns| {
            ns.metadata.labels.get(DATAPLANE_MODE).map(String::as_str)
                == Some(DATAPLANE_MODE_AMBIENT)
        })
}
