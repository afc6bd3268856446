//! Prometheus metrics, named and labelled as Istio's ztunnel names them (protocol.md 7.1-7.2),
//! plus ztunnel's own: certificate expiry and denials by policy.
//!
//! Label cardinality is bounded: past [`MAX_SERIES`] distinct traffic label sets, new ones are
//! folded into a single overflow set (every workload label `unknown`) instead of growing the
//! exposition without limit.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::{Service, Workload};

/// Distinct traffic label sets kept before folding new ones into the overflow set.
pub const MAX_SERIES: usize = 10_000;

const UNKNOWN: &str = "unknown";

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Reporter {
    source,
    destination,
}

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum SecurityPolicy {
    unknown,
    mutual_tls,
}

/// Istio's `response_flags`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ResponseFlags {
    None,
    /// Denied by policy.
    Deny,
    /// The upstream connection failed.
    Connect,
    /// The TLS handshake failed.
    TlsFailure,
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(
        &self,
        w: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        w.write_str(match self {
            ResponseFlags::None => "-",
            ResponseFlags::Deny => "DENY",
            ResponseFlags::Connect => "CONNECT",
            ResponseFlags::TlsFailure => "TLS_FAILURE",
        })
    }
}

/// The traffic label set, in Istio's order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
    /// Present once the source or destination workload is known, as in Istio.
    #[prometheus(flatten)]
    pub locality: OptionalLocality,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabels {
    pub source_region: String,
    pub source_zone: String,
    pub destination_region: String,
    pub destination_zone: String,
}

/// Encodes its labels only when set, so unknown endpoints carry no locality labels at all.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct OptionalLocality(pub Option<LocalityLabels>);

impl EncodeLabelSet for OptionalLocality {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(l) => l.encode(encoder),
            None => Ok(()),
        }
    }
}

impl OptionalLocality {
    fn get(&mut self) -> &mut LocalityLabels {
        self.0.get_or_insert_with(|| LocalityLabels {
            source_region: UNKNOWN.into(),
            source_zone: UNKNOWN.into(),
            destination_region: UNKNOWN.into(),
            destination_zone: UNKNOWN.into(),
        })
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

impl TrafficLabels {
    pub fn new(reporter: Reporter, security: SecurityPolicy) -> Self {
        let u = || UNKNOWN.to_string();
        TrafficLabels {
            reporter,
            source_workload: u(),
            source_canonical_service: u(),
            source_canonical_revision: u(),
            source_workload_namespace: u(),
            source_principal: u(),
            source_app: u(),
            source_version: u(),
            source_cluster: u(),
            destination_service: u(),
            destination_service_namespace: u(),
            destination_service_name: u(),
            destination_workload: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_cluster: u(),
            request_protocol: "tcp".to_string(),
            response_flags: ResponseFlags::None,
            connection_security_policy: security,
            locality: OptionalLocality::default(),
        }
    }

    /// Source workload labels. `source_principal` is set separately: only a handshake proves it.
    pub fn source(&mut self, w: &Workload) {
        self.source_workload = or_unknown(workload_name(w));
        self.source_canonical_service = or_unknown(&w.canonical_name);
        self.source_canonical_revision = or_unknown(&w.canonical_revision);
        self.source_workload_namespace = or_unknown(&w.namespace);
        self.source_app = or_unknown(&w.canonical_name);
        self.source_version = or_unknown(&w.canonical_revision);
        self.source_cluster = or_unknown(&w.cluster_id);
        let l = self.locality.get();
        l.source_region = or_unknown(&w.locality.region);
        l.source_zone = or_unknown(&w.locality.zone);
    }

    pub fn destination(&mut self, w: &Workload) {
        self.destination_workload = or_unknown(workload_name(w));
        self.destination_canonical_service = or_unknown(&w.canonical_name);
        self.destination_canonical_revision = or_unknown(&w.canonical_revision);
        self.destination_workload_namespace = or_unknown(&w.namespace);
        if let Ok(id) = w.identity() {
            self.destination_principal = id.to_string();
        }
        self.destination_app = or_unknown(&w.canonical_name);
        self.destination_version = or_unknown(&w.canonical_revision);
        self.destination_cluster = or_unknown(&w.cluster_id);
        let l = self.locality.get();
        l.destination_region = or_unknown(&w.locality.region);
        l.destination_zone = or_unknown(&w.locality.zone);
    }

    pub fn destination_service(&mut self, s: &Service) {
        self.destination_service = or_unknown(&s.hostname);
        self.destination_service_namespace = or_unknown(&s.namespace);
        self.destination_service_name = or_unknown(&s.name);
    }

    /// The set new series fold into once the cap is reached.
    fn overflow(&self) -> Self {
        TrafficLabels {
            response_flags: self.response_flags,
            ..TrafficLabels::new(self.reporter, self.connection_security_policy)
        }
    }
}

/// Istio's `source_workload` is the workload (e.g. Deployment) name; a bare pod falls back to its name.
fn workload_name(w: &Workload) -> &str {
    if w.workload_name.is_empty() {
        &w.name
    } else {
        &w.workload_name
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

/// The series an open connection will count into when it closes.
#[derive(Debug)]
pub struct OpenCounters {
    closed: Counter,
    sent: Counter,
    received: Counter,
}

impl OpenCounters {
    /// The connection closed, having moved these bytes.
    pub fn closed(&self, sent: u64, received: u64) {
        self.closed.inc();
        self.sent.inc_by(sent);
        self.received.inc_by(received);
    }
}

/// Every metric ztunnel exports.
pub struct Metrics {
    registry: Registry,
    opened: Family<TrafficLabels, Counter>,
    closed: Family<TrafficLabels, Counter>,
    sent: Family<TrafficLabels, Counter>,
    received: Family<TrafficLabels, Counter>,
    failed: Family<TrafficLabels, Counter>,
    /// Connections refused by an authorization policy, by policy key (bounded by policy count).
    pub denials: Family<PolicyLabels, Counter>,
    /// Unix time at which each identity's certificate expires.
    pub cert_expiry: Family<IdentityLabels, Gauge>,
    /// The xDS client's (`istio_xds_*`, connection state, rejected resources).
    pub xds: xds_client::Metrics,
    /// Label sets seen so far, for the cardinality cap.
    seen: Mutex<HashSet<TrafficLabels>>,
    /// Connections being carried (what a draining ztunnel waits for).
    pub active: std::sync::Arc<crate::drain::Active>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let xds = xds_client::Metrics::register(&mut registry);
        let istio = registry.sub_registry_with_prefix("istio");
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                component: "ztunnel".into(),
                tag: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        istio.register("build", "Istio component build info", build);
        let opened = Family::default();
        istio.register(
            "tcp_connections_opened",
            "The total number of TCP connections opened",
            opened.clone(),
        );
        let closed = Family::default();
        istio.register(
            "tcp_connections_closed",
            "The total number of TCP connections closed",
            closed.clone(),
        );
        let received = Family::default();
        istio.register(
            "tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            received.clone(),
        );
        let sent = Family::default();
        istio.register(
            "tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            sent.clone(),
        );
        let failed = Family::default();
        istio.register(
            "tcp_connections_failed",
            "The total number of TCP connections that failed to establish (unstable)",
            failed.clone(),
        );
        let zt = registry.sub_registry_with_prefix("ztunnel");
        let denials = Family::default();
        zt.register(
            "authorization_denials",
            "Connections refused by an authorization policy, by policy",
            denials.clone(),
        );
        let cert_expiry = Family::default();
        zt.register(
            "certificate_expiration_timestamp_seconds",
            "When each workload certificate expires (Unix time)",
            cert_expiry.clone(),
        );
        Metrics {
            active: Default::default(),
            registry,
            opened,
            closed,
            sent,
            received,
            failed,
            denials,
            cert_expiry,
            xds,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The labels to record under: `labels`, or the overflow set once the cap is reached.
    fn bounded(&self, labels: TrafficLabels) -> TrafficLabels {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&labels) {
            return labels;
        }
        if seen.len() >= MAX_SERIES {
            return labels.overflow();
        }
        seen.insert(labels.clone());
        labels
    }

    /// A connection opened: counted now; the returned handles count its close and bytes
    /// later (cheaper to hold for the connection's life than its label set).
    pub fn opened(&self, labels: &TrafficLabels) -> OpenCounters {
        let labels = self.bounded(labels.clone());
        self.opened.get_or_create(&labels).inc();
        OpenCounters {
            closed: self.closed.get_or_create(&labels).clone(),
            sent: self.sent.get_or_create(&labels).clone(),
            received: self.received.get_or_create(&labels).clone(),
        }
    }

    /// A connection that never got going (denied, upstream unreachable, handshake failed).
    pub fn failed(&self, labels: &TrafficLabels) {
        let labels = self.bounded(labels.clone());
        self.failed.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_istio_names_and_labels() {
        let m = Metrics::new();
        let mut l = TrafficLabels::new(Reporter::destination, SecurityPolicy::mutual_tls);
        l.source_principal = "spiffe://cluster.local/ns/a/sa/b".into();
        m.opened(&l).closed(10, 20);
        let text = m.encode();
        assert!(
            text.contains("istio_build{component=\"ztunnel\",tag=\""),
            "{text}"
        );
        assert!(text.contains("istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"unknown\""), "{text}");
        assert!(text.contains("istio_tcp_sent_bytes_total{"), "{text}");
        assert!(text.contains("request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 10"), "{text}");
        assert!(
            text.contains("istio_tcp_received_bytes_total{") && text.contains("} 20"),
            "{text}"
        );
    }

    #[test]
    fn locality_labels_only_when_a_workload_is_known() {
        let m = Metrics::new();
        let unknown = TrafficLabels::new(Reporter::source, SecurityPolicy::unknown);
        m.failed(&unknown);
        assert!(!m.encode().contains("source_region"));
        let state = crate::state::local::LocalConfig::parse(
            std::path::Path::new("t.yaml"),
            "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  locality: {region: eu, zone: eu-1}\n",
        )
        .unwrap();
        let mut known = TrafficLabels::new(Reporter::source, SecurityPolicy::unknown);
        known.source(&state.workloads()[0]);
        m.failed(&known);
        let text = m.encode();
        assert!(
            text.contains("source_region=\"eu\",source_zone=\"eu-1\",destination_region=\"unknown\",destination_zone=\"unknown\"}"),
            "{text}"
        );
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES + 50 {
            let mut l = TrafficLabels::new(Reporter::source, SecurityPolicy::unknown);
            l.source_workload = format!("w{i}");
            m.opened(&l);
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1, "cap plus one overflow series");
        assert!(text.contains("source_workload=\"unknown\""));
    }
}
