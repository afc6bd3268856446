//! Istio's standard metrics as a waypoint reports them (`reporter="waypoint"`, protocol.md
//! 7.3): `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`
//! and `istio_response_bytes` per HTTP request; `istio_tcp_*` per opaque TCP stream.
//!
//! Rules, in order:
//! 1. Labels carry Istio's names, in the order of protocol.md 7.2 (HTTP adds `response_code`
//!    and `grpc_response_status` after `request_protocol`). A value that is not known is
//!    `unknown`, except `source_canonical_revision`, which Istio's stats filter reports as
//!    `latest` when the peer's labels are not known; `grpc_response_status` is empty for
//!    plain HTTP, as in Istio.
//! 2. The source is the HBONE peer: its SPIFFE identity is `source_principal`, and its
//!    namespace `source_workload_namespace` (Istio reads the namespace from the certificate
//!    first). Its workload, when the waypoint knows the one at its address with that identity
//!    (`peers.rs`), gives `source_workload`, `source_canonical_service`, `-revision` and
//!    `source_cluster`; `source_app` and `source_version` stay `unknown`, as Istio's waypoint
//!    reports them (its workload discovery carries no app labels).
//! 3. The destination is the target (`destination_service*`, a service's hostname and its
//!    first label) and, once one is picked, the endpoint (`destination_principal`, its
//!    identity's namespace as `destination_workload_namespace`, and its workload's names as
//!    for the source); `destination_cluster` is the
//!    waypoint's own cluster, as Envoy reports it for a gateway.
//! 4. Histograms use Envoy's default buckets (Istio sets none of its own unless a pod asks
//!    with `sidecar.istio.io/statsHistogramBuckets`), for milliseconds and bytes alike.
//! 5. Cardinality is bounded: past `max_series` distinct label sets per kind (HTTP, TCP), new
//!    ones are folded into an overflow set with every peer label `unknown`, counted in
//!    `waypoint_metric_series_overflow_total`, and logged once. Totals stay right; only the
//!    breakdown is lost.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use hbone::SpiffeId;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::peers::{Upstream, Workload};
use crate::targets::Target;

/// Distinct label sets kept per kind before new ones are folded (rule 5).
pub const MAX_SERIES: usize = 10_000;

/// Envoy's default histogram buckets (rule 4).
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const UNKNOWN: &str = "unknown";
/// Istio's value for an unknown canonical revision of the source (rule 1).
const LATEST: &str = "latest";

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Reporter {
    waypoint,
}

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestProtocol {
    http,
    grpc,
    tcp,
}

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum SecurityPolicy {
    /// HBONE: the peer presented a certificate, and so did the waypoint.
    mutual_tls,
}

/// Envoy's response flags, as its access logs and Istio's `response_flags` write them.
/// An RBAC denial has none: it shows as `response_code="403"` with `-`.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum ResponseFlags {
    #[default]
    None,
    /// `UH`: no healthy upstream (no endpoint to send to).
    NoHealthyUpstream,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure,
    /// `UC`: the upstream connection ended mid-response.
    UpstreamConnectionTermination,
    /// `DC`: the client went away before the response was done.
    DownstreamConnectionTermination,
    /// `UAEX`: an external authorizer (CUSTOM) denied, or none was there to ask.
    UnauthorizedExternalService,
    /// `DPE`: the request could not be carried as it was written.
    DownstreamProtocolError,
    /// `RL`: refused by a local rate limit (429).
    RateLimited,
    /// `UPE`: the upstream answered what the request did not allow (a `101` it did not ask
    /// for, or to another protocol).
    UpstreamProtocolError,
}

impl ResponseFlags {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlags::None => "-",
            ResponseFlags::NoHealthyUpstream => "UH",
            ResponseFlags::UpstreamConnectionFailure => "UF",
            ResponseFlags::UpstreamConnectionTermination => "UC",
            ResponseFlags::DownstreamConnectionTermination => "DC",
            ResponseFlags::UnauthorizedExternalService => "UAEX",
            ResponseFlags::DownstreamProtocolError => "DPE",
            ResponseFlags::RateLimited => "RL",
            ResponseFlags::UpstreamProtocolError => "UPE",
        }
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, w: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(w, self.as_str())
    }
}

/// Who talked to what: the labels shared by HTTP and TCP metrics, in Istio's order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub reporter: Reporter,
    pub source_workload: Label,
    pub source_canonical_service: Label,
    pub source_canonical_revision: Label,
    pub source_workload_namespace: Label,
    pub source_principal: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub source_cluster: Label,
    pub destination_service: Label,
    pub destination_service_namespace: Label,
    pub destination_service_name: Label,
    pub destination_workload: Label,
    pub destination_canonical_service: Label,
    pub destination_canonical_revision: Label,
    pub destination_workload_namespace: Label,
    pub destination_principal: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_cluster: Label,
    pub request_protocol: RequestProtocol,
}

/// One HTTP request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    /// `0` when no response was sent (the client left first).
    pub response_code: u16,
    pub grpc_response_status: String,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// One TCP stream's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// A label value, shared rather than copied: a connection's labels are cloned into every
/// request's record, and most values repeat.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(Arc<str>);

impl Label {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(s.into())
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label(s.into())
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, w: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(w, &self.0)
    }
}

static UNKNOWN_LABEL: LazyLock<Label> = LazyLock::new(|| Label::from(UNKNOWN));
static LATEST_LABEL: LazyLock<Label> = LazyLock::new(|| Label::from(LATEST));

fn unknown() -> Label {
    UNKNOWN_LABEL.clone()
}

/// Sets `label` to `value` unless `value` is empty (not known).
fn known(label: &mut Label, value: &str) {
    if !value.is_empty() {
        *label = value.into();
    }
}

impl PeerLabels {
    /// Everything unknown but the reporter, the protocol and the waypoint's cluster.
    pub fn unknown(cluster: &str, protocol: RequestProtocol) -> PeerLabels {
        PeerLabels {
            reporter: Reporter::waypoint,
            source_workload: unknown(),
            source_canonical_service: unknown(),
            source_canonical_revision: LATEST_LABEL.clone(),
            source_workload_namespace: unknown(),
            source_principal: unknown(),
            source_app: unknown(),
            source_version: unknown(),
            source_cluster: unknown(),
            destination_service: unknown(),
            destination_service_namespace: unknown(),
            destination_service_name: unknown(),
            destination_workload: unknown(),
            destination_canonical_service: unknown(),
            destination_canonical_revision: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            destination_app: unknown(),
            destination_version: unknown(),
            destination_cluster: if cluster.is_empty() {
                unknown()
            } else {
                cluster.into()
            },
            request_protocol: protocol,
        }
    }

    /// Rules 2 and 3 for a stream: the peer, its workload if known, and the target it asked
    /// for.
    pub fn new(
        cluster: &str,
        protocol: RequestProtocol,
        peer: &SpiffeId,
        source: Option<&Workload>,
        target: &Target,
    ) -> PeerLabels {
        let mut l = PeerLabels::unknown(cluster, protocol);
        l.source_principal = peer.to_string().into();
        l.source_workload_namespace = peer.namespace().into();
        if let Some(w) = source {
            known(&mut l.source_workload, &w.name);
            known(&mut l.source_canonical_service, &w.canonical_name);
            known(&mut l.source_canonical_revision, &w.canonical_revision);
            known(&mut l.source_cluster, &w.cluster);
        }
        let name = target
            .key
            .split_once('/')
            .map_or(target.key.as_str(), |(_, n)| n);
        if !target.namespace.is_empty() {
            l.destination_service_namespace = target.namespace.as_str().into();
        }
        if target.vips.is_empty() {
            // A workload bound directly: its name, no service.
            if !name.is_empty() {
                l.destination_workload = name.into();
            }
        } else if !name.is_empty() {
            l.destination_service = name.into();
            l.destination_service_name = name.split('.').next().unwrap_or(name).into();
        }
        l
    }

    /// Rule 3: the endpoint picked.
    pub fn endpoint(&mut self, upstream: &Upstream) {
        self.destination_principal = upstream.identity.to_string().into();
        self.destination_workload_namespace = upstream.identity.namespace().into();
        if let Some(w) = &upstream.workload {
            known(&mut self.destination_workload, &w.name);
            known(&mut self.destination_canonical_service, &w.canonical_name);
            known(
                &mut self.destination_canonical_revision,
                &w.canonical_revision,
            );
        }
    }

    /// The set new series fold into once the cap is reached (rule 5).
    fn overflow(&self) -> PeerLabels {
        PeerLabels::unknown(self.destination_cluster.as_str(), self.request_protocol)
    }
}

impl RequestLabels {
    fn overflow(&self) -> RequestLabels {
        RequestLabels {
            peers: self.peers.overflow(),
            response_code: self.response_code,
            grpc_response_status: self.grpc_response_status.clone(),
            response_flags: self.response_flags,
            connection_security_policy: self.connection_security_policy,
        }
    }
}

impl TcpLabels {
    fn overflow(&self) -> TcpLabels {
        TcpLabels {
            peers: self.peers.overflow(),
            response_flags: self.response_flags,
            connection_security_policy: self.connection_security_policy,
        }
    }
}

/// What one HTTP request did, recorded when its response ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSample {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Label sets seen so far, for the cap (rule 5).
struct Seen<L> {
    sets: Mutex<HashSet<L>>,
}

impl<L: Hash + Eq + Clone> Seen<L> {
    fn new() -> Self {
        Seen {
            sets: Mutex::new(HashSet::new()),
        }
    }

    /// `true` when `labels` may have a series of its own.
    fn admit(&self, labels: &L, max: usize) -> bool {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if sets.contains(labels) {
            return true;
        }
        if sets.len() >= max {
            return false;
        }
        sets.insert(labels.clone());
        true
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// One HTTP label set's metrics: shared handles into the registry's families.
#[derive(Debug, Clone)]
pub struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    pub fn record(&self, sample: RequestSample) {
        self.requests.inc();
        self.duration.observe(sample.duration_ms);
        self.request_bytes.observe(sample.request_bytes as f64);
        self.response_bytes.observe(sample.response_bytes as f64);
    }
}

/// The counters an open TCP stream adds to when it closes.
#[derive(Debug)]
pub struct OpenStream {
    closed: Counter,
    sent: Counter,
    received: Counter,
}

impl OpenStream {
    /// The stream closed having sent `sent` bytes to the client and received `received`.
    pub fn closed(&self, sent: u64, received: u64) {
        self.closed.inc();
        self.sent.inc_by(sent);
        self.received.inc_by(received);
    }
}

/// Every metric the waypoint exports, and the registry they are encoded from.
pub struct Metrics {
    registry: Registry,
    cluster: String,
    max_series: usize,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<RequestLabels>,
    request_bytes: Histograms<RequestLabels>,
    response_bytes: Histograms<RequestLabels>,
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    overflow: Family<KindLabels, Counter>,
    /// Set once the cap was first reached, so that is logged once.
    overflow_logged: AtomicBool,
    seen_requests: Seen<RequestLabels>,
    seen_tcp: Seen<TcpLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("cluster", &self.cluster)
            .field("max_series", &self.max_series)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("Kubernetes", MAX_SERIES)
    }
}

impl Metrics {
    /// `cluster`: the waypoint's cluster id (Istio's `CLUSTER_ID`).
    pub fn new(cluster: &str, max_series: usize) -> Metrics {
        let mut registry = Registry::default();
        let istio = registry.sub_registry_with_prefix("istio");
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                component: "waypoint".into(),
                tag: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        istio.register("build", "Istio component build info", build);
        let requests = Family::default();
        istio.register(
            "requests",
            "The number of HTTP requests the waypoint handled",
            requests.clone(),
        );
        let duration: Histograms<RequestLabels> = Family::new_with_constructor(histogram);
        istio.register(
            "request_duration_milliseconds",
            "From the request's arrival to the end of its response, in milliseconds",
            duration.clone(),
        );
        let request_bytes: Histograms<RequestLabels> = Family::new_with_constructor(histogram);
        istio.register(
            "request_bytes",
            "Request body bytes read from the client",
            request_bytes.clone(),
        );
        let response_bytes: Histograms<RequestLabels> = Family::new_with_constructor(histogram);
        istio.register(
            "response_bytes",
            "Response body bytes sent to the client",
            response_bytes.clone(),
        );
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
        let sent = Family::default();
        istio.register(
            "tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            sent.clone(),
        );
        let received = Family::default();
        istio.register(
            "tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            received.clone(),
        );
        let overflow = Family::default();
        registry.sub_registry_with_prefix("waypoint").register(
            "metric_series_overflow",
            "Records folded into the overflow label set because the series cap was reached",
            overflow.clone(),
        );
        Metrics {
            registry,
            cluster: cluster.to_string(),
            max_series,
            requests,
            duration,
            request_bytes,
            response_bytes,
            opened,
            closed,
            sent,
            received,
            overflow,
            overflow_logged: AtomicBool::new(false),
            seen_requests: Seen::new(),
            seen_tcp: Seen::new(),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn folded(&self, kind: &'static str) {
        self.overflow.get_or_create(&KindLabels { kind }).inc();
        if !self.overflow_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_series = self.max_series,
                kind,
                "metric series cap reached: new label sets are folded into one with unknown peers (logged once)"
            );
        }
    }

    /// The series an HTTP request with `labels` is recorded in (folded past the cap), as
    /// handles a caller may keep: finding them hashes every label, recording into them does
    /// not (`telemetry.rs` keeps a connection's few).
    pub fn request_series(&self, labels: &RequestLabels) -> RequestSeries {
        let folded;
        let labels = if self.seen_requests.admit(labels, self.max_series) {
            labels
        } else {
            self.folded("http");
            folded = labels.overflow();
            &folded
        };
        RequestSeries {
            requests: self.requests.get_or_create_owned(labels),
            duration: self.duration.get_or_create_owned(labels),
            request_bytes: self.request_bytes.get_or_create_owned(labels),
            response_bytes: self.response_bytes.get_or_create_owned(labels),
        }
    }

    /// A TCP stream opened: counted now; the handle counts its close and bytes.
    pub fn tcp_opened(&self, labels: &TcpLabels) -> OpenStream {
        let folded;
        let labels = if self.seen_tcp.admit(labels, self.max_series) {
            labels
        } else {
            self.folded("tcp");
            folded = labels.overflow();
            &folded
        };
        self.opened.get_or_create(labels).inc();
        OpenStream {
            closed: self.closed.get_or_create(labels).clone(),
            sent: self.sent.get_or_create(labels).clone(),
            received: self.received.get_or_create(labels).clone(),
        }
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::targets::Endpoint;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
            .parse()
            .unwrap()
    }

    fn target(key: &str, vips: &[&str]) -> Target {
        Target {
            key: key.into(),
            namespace: key.split('/').next().unwrap().into(),
            vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
            ports: Default::default(),
            h2_ports: Default::default(),
            endpoints: vec![Endpoint {
                ip: "10.0.0.1".parse().unwrap(),
                identity: id("shop", "api"),
                healthy: true,
            }],
            policies: Default::default(),
            rate_limits: Vec::new(),
            jwt: Vec::new(),
            ext_authz: Default::default(),
        }
    }

    #[test]
    fn labels_from_peer_target_and_endpoint() {
        let svc = target("shop/api.shop.svc.cluster.local", &["10.96.0.1"]);
        let wl = target("shop/api-7d9f", &[]);
        struct Row {
            target: Target,
            endpoint: bool,
            /// The waypoint knows both workloads (`peers.rs`).
            workloads: bool,
            want: &'static [(&'static str, &'static str)],
        }
        let rows = [
            Row {
                target: svc.clone(),
                endpoint: false,
                workloads: false,
                want: &[
                    ("source_workload", "unknown"),
                    ("source_canonical_revision", "latest"),
                    ("source_workload_namespace", "web"),
                    ("source_principal", "spiffe://cluster.local/ns/web/sa/front"),
                    ("destination_service", "api.shop.svc.cluster.local"),
                    ("destination_service_namespace", "shop"),
                    ("destination_service_name", "api"),
                    ("destination_workload", "unknown"),
                    ("destination_principal", "unknown"),
                    ("destination_workload_namespace", "unknown"),
                    ("destination_cluster", "c1"),
                ],
            },
            Row {
                target: svc.clone(),
                endpoint: true,
                workloads: false,
                want: &[
                    (
                        "destination_principal",
                        "spiffe://cluster.local/ns/shop/sa/api",
                    ),
                    ("destination_workload_namespace", "shop"),
                    ("destination_workload", "unknown"),
                ],
            },
            Row {
                target: svc,
                endpoint: true,
                workloads: true,
                want: &[
                    ("source_workload", "front-v2"),
                    ("source_canonical_service", "front"),
                    ("source_canonical_revision", "v2"),
                    ("source_workload_namespace", "web"),
                    ("source_app", "unknown"),
                    ("source_version", "unknown"),
                    ("source_cluster", "c1"),
                    ("destination_workload", "api-v1"),
                    ("destination_canonical_service", "api"),
                    ("destination_canonical_revision", "v1"),
                    ("destination_workload_namespace", "shop"),
                ],
            },
            Row {
                target: wl,
                endpoint: false,
                workloads: false,
                want: &[
                    ("destination_service", "unknown"),
                    ("destination_service_name", "unknown"),
                    ("destination_workload", "api-7d9f"),
                    ("destination_service_namespace", "shop"),
                ],
            },
        ];
        let workload = |ns: &str, sa: &str, name: &str, canonical: &str, rev: &str| Workload {
            uid: format!("{name}-uid"),
            name: name.into(),
            namespace: ns.into(),
            canonical_name: canonical.into(),
            canonical_revision: rev.into(),
            cluster: "c1".into(),
            identity: id(ns, sa),
            addresses: Vec::new(),
        };
        let front = workload("web", "front", "front-v2", "front", "v2");
        let api = Arc::new(workload("shop", "api", "api-v1", "api", "v1"));
        for row in rows {
            let mut l = PeerLabels::new(
                "c1",
                RequestProtocol::http,
                &id("web", "front"),
                row.workloads.then_some(&front),
                &row.target,
            );
            if row.endpoint {
                l.endpoint(&Upstream {
                    identity: id("shop", "api"),
                    workload: row.workloads.then(|| api.clone()),
                });
            }
            let m = Metrics::new("c1", 10);
            let labels = RequestLabels {
                peers: l,
                response_code: 200,
                grpc_response_status: String::new(),
                response_flags: ResponseFlags::None,
                connection_security_policy: SecurityPolicy::mutual_tls,
            };
            m.request_series(&labels).record(RequestSample::default());
            let text = m.encode();
            let line = text
                .lines()
                .find(|l| l.starts_with("istio_requests_total{"))
                .unwrap();
            for (k, v) in row.want {
                assert!(line.contains(&format!("{k}=\"{v}\"")), "{k}={v} in {line}");
            }
        }
    }

    #[test]
    fn label_order_is_istios() {
        let m = Metrics::new("Kubernetes", 10);
        let peers = PeerLabels::unknown("Kubernetes", RequestProtocol::http);
        m.request_series(&RequestLabels {
            peers: peers.clone(),
            response_code: 403,
            grpc_response_status: String::new(),
            response_flags: ResponseFlags::None,
            connection_security_policy: SecurityPolicy::mutual_tls,
        })
        .record(RequestSample {
            duration_ms: 3.0,
            request_bytes: 10,
            response_bytes: 19,
        });
        m.tcp_opened(&TcpLabels {
            peers: PeerLabels {
                request_protocol: RequestProtocol::tcp,
                ..peers
            },
            response_flags: ResponseFlags::UpstreamConnectionFailure,
            connection_security_policy: SecurityPolicy::mutual_tls,
        })
        .closed(5, 7);
        let text = m.encode();
        let keys = |prefix: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
            let inner = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            inner
                .split("\",")
                .map(|kv| kv.split('=').next().unwrap().to_string())
                .collect()
        };
        let peers_order = [
            "reporter",
            "source_workload",
            "source_canonical_service",
            "source_canonical_revision",
            "source_workload_namespace",
            "source_principal",
            "source_app",
            "source_version",
            "source_cluster",
            "destination_service",
            "destination_service_namespace",
            "destination_service_name",
            "destination_workload",
            "destination_canonical_service",
            "destination_canonical_revision",
            "destination_workload_namespace",
            "destination_principal",
            "destination_app",
            "destination_version",
            "destination_cluster",
            "request_protocol",
        ];
        let mut http: Vec<&str> = peers_order.to_vec();
        http.extend([
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ]);
        assert_eq!(keys("istio_requests_total{"), http);
        let mut tcp: Vec<&str> = peers_order.to_vec();
        tcp.extend(["response_flags", "connection_security_policy"]);
        assert_eq!(keys("istio_tcp_connections_closed_total{"), tcp);
        assert!(text.contains("reporter=\"waypoint\""), "{text}");
        assert!(
            text.contains("request_protocol=\"http\",response_code=\"403\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 1"),
            "{text}"
        );
        assert!(text.contains("response_flags=\"UF\""), "{text}");
        assert!(
            text.contains("istio_request_duration_milliseconds_bucket{"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(
                "istio_request_duration_milliseconds_bucket{le=\"3600000.0\",reporter=\"waypoint\""
            ) && l.ends_with("} 1")),
            "{text}"
        );
        assert!(text.contains("istio_response_bytes_sum{"), "{text}");
        assert!(
            text.contains("istio_build{component=\"waypoint\""),
            "{text}"
        );
    }

    #[test]
    fn series_are_capped_and_overflow_counted() {
        let m = Metrics::new("c", 3);
        for i in 0..10 {
            let mut peers = PeerLabels::unknown("c", RequestProtocol::http);
            peers.source_principal = format!("spiffe://cluster.local/ns/a/sa/s{i}").into();
            m.request_series(&RequestLabels {
                peers,
                response_code: 200,
                grpc_response_status: String::new(),
                response_flags: ResponseFlags::None,
                connection_security_policy: SecurityPolicy::mutual_tls,
            })
            .record(RequestSample::default());
        }
        let text = m.encode();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(series.len(), 4, "cap plus one overflow series: {text}");
        let total: u64 = series
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 10, "totals stay right");
        assert!(
            text.contains("waypoint_metric_series_overflow_total{kind=\"http\"} 7"),
            "{text}"
        );
    }
}
