//! The labels and annotations istiod reads (protocol.md 11), and label selection made cheap.
//!
//! Rules, as istiod applies them:
//! 1. A pod is enrolled in ambient when it or its namespace has `istio.io/dataplane-mode:
//!    ambient`, unless the pod says `none`, uses the host network, or carries a sidecar
//!    (`sidecar.istio.io/status`). istio-cni's `ambient.istio.io/redirection: enabled`
//!    (what istiod itself keys on in a live cluster) also counts.
//! 2. Telemetry names fall back through well-known labels: `service.istio.io/canonical-name`,
//!    `app.kubernetes.io/name`, `app`, then the workload name; revisions through
//!    `service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`, then
//!    `latest`. A label that is present wins even when empty (Go's `map[k]; ok`).
//! 3. [`SelectorIndex`] answers "which selectors match these labels" without testing every
//!    selector: each selector is filed under one of its `key=value` pairs, so a lookup only
//!    tests the selectors filed under one of the labels' own pairs (plus the empty ones).

use std::collections::{BTreeMap, HashMap};

use kube_source::{Meta, Namespace, Pod};

pub const AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";
pub const AMBIENT_REDIRECTION_ENABLED: &str = "enabled";
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
pub const USE_WAYPOINT_NONE: &str = "none";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// Annotation on a waypoint Gateway naming the service account (in the Gateway's namespace)
/// whose pods it serves. Istio dropped it in 1.22 (istio/istio#50173); we keep it.
pub const FOR_SERVICE_ACCOUNT: &str = "istio.io/for-service-account";
/// `gateway.istio.io/managed: istio.io-mesh-controller` marks a waypoint's own pods and
/// Service: a waypoint never has a waypoint.
pub const GATEWAY_MANAGED: &str = "gateway.istio.io/managed";
pub const GATEWAY_MANAGED_MESH: &str = "istio.io-mesh-controller";
pub const TRAFFIC_DISTRIBUTION: &str = "networking.istio.io/traffic-distribution";
pub const NETWORK: &str = "topology.istio.io/network";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

const CANONICAL_NAME: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
const CANONICAL_REVISION: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

pub type Labels = BTreeMap<String, String>;

/// Rule 1: whether ztunnel captures this pod (tunnel protocol HBONE): the labels' rule
/// (shared with the node agent), or istio-cni saying it redirected the pod.
pub fn ambient_enrolled(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    pod.metadata
        .annotations
        .get(AMBIENT_REDIRECTION)
        .map(String::as_str)
        == Some(AMBIENT_REDIRECTION_ENABLED)
        || kube_source::ambient::captured(pod, namespace)
}

/// Rule 2: `canonical_name`.
pub fn canonical_name<'a>(labels: &'a Labels, workload_name: &'a str) -> &'a str {
    first_label(labels, &CANONICAL_NAME).unwrap_or(workload_name)
}

/// Rule 2: `canonical_revision`.
pub fn canonical_revision(labels: &Labels) -> &str {
    first_label(labels, &CANONICAL_REVISION).unwrap_or("latest")
}

fn first_label<'a>(labels: &'a Labels, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| labels.get(*k)).map(String::as_str)
}

/// Whether `meta` belongs to a waypoint deployed by istiod's mesh controller.
pub fn is_waypoint_itself(meta: &Meta) -> bool {
    meta.labels.get(GATEWAY_MANAGED).map(String::as_str) == Some(GATEWAY_MANAGED_MESH)
}

/// `topology.istio.io/network` of the object, else of its namespace, else `default`.
pub fn network<'a>(meta: &'a Meta, namespace: Option<&'a Namespace>, default: &'a str) -> &'a str {
    meta.labels
        .get(NETWORK)
        .or_else(|| namespace.and_then(|ns| ns.metadata.labels.get(NETWORK)))
        .map_or(default, String::as_str)
}

/// Rule 3: selectors filed by one of their `key=value` pairs.
#[derive(Debug)]
pub struct SelectorIndex<'s, T> {
    /// Selectors with no labels: they match everything.
    always: Vec<T>,
    /// Every other selector under its first pair, with the whole selector to confirm.
    by_pair: HashMap<(&'s str, &'s str), Vec<(&'s Labels, T)>>,
}

impl<'s, T> Default for SelectorIndex<'s, T> {
    fn default() -> Self {
        SelectorIndex {
            always: Vec::new(),
            by_pair: HashMap::new(),
        }
    }
}

impl<'s, T: Copy> SelectorIndex<'s, T> {
    pub fn insert(&mut self, selector: &'s Labels, item: T) {
        match selector.iter().next() {
            None => self.always.push(item),
            Some((k, v)) => self
                .by_pair
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push((selector, item)),
        }
    }

    /// Every item whose selector matches `labels`, each once (in no particular order).
    pub fn matching<'q>(&'q self, labels: &'q Labels) -> impl Iterator<Item = T> + 'q {
        let filed = labels.iter().flat_map(move |(k, v)| {
            self.by_pair
                .get(&(k.as_str(), v.as_str()))
                .into_iter()
                .flatten()
                .filter(move |(sel, _)| selector_matches(sel, labels))
                .map(|(_, item)| *item)
        });
        self.always.iter().copied().chain(filed)
    }
}

/// Every label of `selector` is in `labels` with the same value.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_index_finds_exactly_the_matching_selectors() {
        let sels = [
            l(&[]),
            l(&[("app", "a")]),
            l(&[("app", "a"), ("v", "1")]),
            l(&[("app", "b")]),
            l(&[("v", "1")]),
        ];
        let mut idx = SelectorIndex::default();
        for (i, s) in sels.iter().enumerate() {
            idx.insert(s, i);
        }
        for labels in [
            l(&[]),
            l(&[("app", "a")]),
            l(&[("app", "a"), ("v", "1")]),
            l(&[("app", "b"), ("v", "1"), ("x", "y")]),
        ] {
            let mut got: Vec<usize> = idx.matching(&labels).collect();
            got.sort_unstable();
            let want: Vec<usize> = (0..sels.len())
                .filter(|i| selector_matches(&sels[*i], &labels))
                .collect();
            assert_eq!(got, want, "{labels:?}");
        }
    }

    #[test]
    fn telemetry_fallbacks() {
        let cases: [(Labels, &str, &str); 4] = [
            (
                l(&[
                    ("service.istio.io/canonical-name", "c"),
                    ("app", "a"),
                    ("service.istio.io/canonical-revision", "r"),
                    ("version", "v1"),
                ]),
                "c",
                "r",
            ),
            (
                l(&[
                    ("app.kubernetes.io/name", "k"),
                    ("app", "a"),
                    ("app.kubernetes.io/version", "kv"),
                ]),
                "k",
                "kv",
            ),
            (l(&[("app", "a"), ("version", "v1")]), "a", "v1"),
            (l(&[]), "wl", "latest"),
        ];
        for (labels, name, rev) in cases {
            assert_eq!(canonical_name(&labels, "wl"), name, "{labels:?}");
            assert_eq!(canonical_revision(&labels), rev, "{labels:?}");
        }
    }
}
