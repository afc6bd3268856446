//! The xDS client's metrics: Istio ztunnel's names where it has them
//! (`istio_xds_connection_terminations_total`, `istio_xds_message_total`,
//! `istio_xds_message_bytes_total`), plus the connection state and rejected resources.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a connection to the control plane ended (Istio's label values).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TerminationReason {
    /// Could not connect (TCP, TLS or the RPC itself).
    ConnectionError,
    /// The stream failed after it was up.
    Error,
    /// The server ended the stream cleanly.
    Complete,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub reason: TerminationReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UrlLabels {
    pub url: String,
}

/// Handles to the client's metrics; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub(crate) terminations: Family<ReasonLabels, Counter>,
    pub(crate) messages: Family<UrlLabels, Counter>,
    pub(crate) message_bytes: Family<UrlLabels, Counter>,
    pub(crate) rejected: Family<UrlLabels, Counter>,
    pub(crate) connected: Gauge,
}

impl Metrics {
    /// Registers the metrics at the root of `registry` (names carry their own prefixes).
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "istio_xds_connection_terminations",
            "Connections to the xDS server that ended, by reason",
            m.terminations.clone(),
        );
        registry.register(
            "istio_xds_message",
            "xDS responses received, by type URL",
            m.messages.clone(),
        );
        registry.register(
            "istio_xds_message_bytes",
            "Bytes of xDS resources received, by type URL",
            m.message_bytes.clone(),
        );
        registry.register(
            "xds_rejected_resources",
            "Resources NACKed (not applied), by type URL",
            m.rejected.clone(),
        );
        registry.register(
            "xds_connected",
            "1 while the xDS stream to the control plane is up",
            m.connected.clone(),
        );
        m
    }

    /// How many resources of `type_url` were rejected so far.
    pub fn rejected(&self, type_url: &str) -> u64 {
        per_url(&self.rejected, type_url)
    }

    /// Bytes of resources received of `type_url` so far.
    pub fn message_bytes(&self, type_url: &str) -> u64 {
        per_url(&self.message_bytes, type_url)
    }

    /// Responses received of `type_url` so far.
    pub fn messages(&self, type_url: &str) -> u64 {
        per_url(&self.messages, type_url)
    }

    /// Connections that ended so far, for any reason.
    pub fn terminations(&self) -> u64 {
        [
            TerminationReason::ConnectionError,
            TerminationReason::Error,
            TerminationReason::Complete,
        ]
        .into_iter()
        .map(|reason| {
            self.terminations
                .get_or_create(&ReasonLabels { reason })
                .get()
        })
        .sum()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get() == 1
    }
}

fn per_url(family: &Family<UrlLabels, Counter>, type_url: &str) -> u64 {
    family
        .get_or_create(&UrlLabels {
            url: type_url.to_string(),
        })
        .get()
}
