//! meshd's metrics on the monitoring port (15014), under istiod's names where it has them:
//! `pilot_xds`, `pilot_xds_pushes`, `pilot_total_xds_rejects`, `pilot_proxy_convergence_time`,
//! `pilot_xds_config_size_bytes`, and the CA's `citadel_server_*` counters.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// istiod's short name for a type URL in metric labels.
pub fn short_type(type_url: &str) -> &'static str {
    match type_url {
        proto::ADDRESS_TYPE_URL => "wds",
        proto::AUTHORIZATION_TYPE_URL => "wads",
        // Ours; istiod has no name for them.
        proto::WAYPOINT_TARGET_TYPE_URL => "waypoint_target",
        proto::WAYPOINT_POLICY_TYPE_URL => "waypoint_policy",
        proto::WAYPOINT_TRACING_TYPE_URL => "waypoint_tracing",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CaOutcome {
    issued,
    refused,
}

/// Handles to every metric; cheap to clone (all fields are shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Connected xDS clients.
    pub xds_clients: Gauge,
    pub pushes: Family<TypeLabels, Counter>,
    pub rejects: Family<TypeLabels, Counter>,
    /// Seconds from a config change to its push reaching a client's stream.
    pub convergence: Histogram,
    pub config_size: Family<TypeLabels, Histogram>,
    pub csr_count: Counter,
    pub cert_issued: Counter,
    pub auth_failures: Counter,
    pub csr_refused: Counter,
    /// Objects that could not be read or translated, right now.
    pub config_errors: Gauge,
    /// Seconds a full translation took.
    pub translation: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let xds_clients = Gauge::default();
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this control plane using xDS",
            xds_clients.clone(),
        );
        let pushes = Family::<TypeLabels, Counter>::default();
        registry.register("pilot_xds_pushes", "xDS pushes, by type", pushes.clone());
        let rejects = Family::<TypeLabels, Counter>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of xDS responses rejected (NACKed) by clients, by type",
            rejects.clone(),
        );
        let convergence = Histogram::new(seconds_buckets());
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between a config change and a client receiving it",
            convergence.clone(),
        );
        let config_size = Family::<TypeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                256.0, 4.0, 12,
            ))
        });
        registry.register(
            "pilot_xds_config_size_bytes",
            "Size in bytes of the resources in a push, by type",
            config_size.clone(),
        );
        let csr_count = Counter::default();
        registry.register(
            "citadel_server_csr_count",
            "Certificate signing requests received",
            csr_count.clone(),
        );
        let cert_issued = Counter::default();
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued",
            cert_issued.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "citadel_server_authentication_failure_count",
            "Certificate requests whose caller could not be authenticated",
            auth_failures.clone(),
        );
        let csr_refused = Counter::default();
        registry.register(
            "meshd_ca_refusals",
            "Authenticated certificate requests refused (identity not allowed, bad CSR, lifetime)",
            csr_refused.clone(),
        );
        let config_errors = Gauge::default();
        registry.register(
            "meshd_config_errors",
            "Objects currently rejected (unreadable or untranslatable); see the logs or /debug/config_errors",
            config_errors.clone(),
        );
        let translation = Histogram::new(seconds_buckets());
        registry.register(
            "meshd_translation_seconds",
            "Time to translate every object into xDS resources",
            translation.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            xds_clients,
            pushes,
            rejects,
            convergence,
            config_size,
            csr_count,
            cert_issued,
            auth_failures,
            csr_refused,
            config_errors,
            translation,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn type_labels(type_url: &str) -> TypeLabels {
        TypeLabels {
            r#type: short_type(type_url),
        }
    }
}
