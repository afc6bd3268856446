//! The delta ADS session loop: connect, subscribe to every type, apply each response through
//! its handler, ACK or NACK it, and on any failure reconnect with backoff, resubscribing with
//! the versions still held so the server can skip what has not changed.
//!
//! Rules, in order:
//! 1. One `DeltaDiscoveryRequest` per subscribed type opens each stream, with the node set,
//!    a wildcard subscription and `initial_resource_versions` = every resource accepted so far.
//! 2. A response's resources are decoded and handed to the handler as one batch; the valid
//!    ones apply even when others are rejected.
//! 3. The next request of the type carries the response's nonce: an ACK, or a NACK whose
//!    `error_detail.message` lists `<name>: <reason>` joined by `"; "`.
//! 4. A rejected resource is forgotten (not listed on resubscribe), so the server resends it.
//! 5. Removals delete from the held versions as well as from the handler's state.

use std::collections::HashMap;
use std::marker::PhantomData;

use prost::Name;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::channel::{ChannelError, GrpcTarget, connect};
use crate::handler::{ErasedHandler, Handler, Raw, Rejection, Typed};
use crate::metrics::{Metrics, ReasonLabels, TerminationReason, UrlLabels};

/// istiod may send large responses (every workload of a big cluster at once).
const MAX_MESSAGE: usize = 200 * 1024 * 1024;

/// gRPC status code sent in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// One subscribed type URL, its handler and what it holds.
pub struct Subscription {
    type_url: String,
    handler: Box<dyn ErasedHandler>,
    /// Resource name -> version, of every resource currently accepted.
    versions: HashMap<String, String>,
    /// Whether a first response was applied (readiness).
    synced: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("type_url", &self.type_url)
            .field("held", &self.versions.len())
            .field("synced", &self.synced)
            .finish()
    }
}

pub struct ClientBuilder {
    target: GrpcTarget,
    node: proto::core::Node,
    subscriptions: Vec<Subscription>,
    metrics: Metrics,
    backoff: Backoff,
}

impl ClientBuilder {
    /// Subscribes (wildcard) to resources of type `T`, handled by `handler`.
    pub fn watch<T, H>(mut self, handler: H) -> Self
    where
        T: prost::Message + Name + Default + 'static,
        H: Handler<T>,
    {
        let type_url = T::type_url();
        self.subscriptions.push(Subscription {
            type_url: type_url.clone(),
            handler: Box::new(Typed {
                type_url,
                handler,
                _marker: PhantomData::<fn() -> T>,
            }),
            versions: HashMap::new(),
            synced: false,
        });
        self
    }

    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn build(self) -> Client {
        Client {
            target: self.target,
            node: self.node,
            subscriptions: self.subscriptions,
            metrics: self.metrics,
            backoff: self.backoff,
            synced: watch::Sender::new(false),
        }
    }
}

/// A delta ADS client; [`Client::run`] keeps it connected for as long as it is polled.
pub struct Client {
    target: GrpcTarget,
    node: proto::core::Node,
    subscriptions: Vec<Subscription>,
    metrics: Metrics,
    backoff: Backoff,
    /// Becomes true once every subscription has applied its first response.
    synced: watch::Sender<bool>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("opening the xDS stream failed: {0}")]
    Open(tonic::Status),
    #[error("xDS stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the request stream closed")]
    RequestsClosed,
}

impl Client {
    pub fn builder(target: GrpcTarget, node: proto::core::Node) -> ClientBuilder {
        ClientBuilder {
            target,
            node,
            subscriptions: Vec::new(),
            metrics: Metrics::default(),
            backoff: Backoff::xds_default(),
        }
    }

    /// Replaces the metrics handles (e.g. to watch a client built elsewhere).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Turns true once every subscribed type has had its first response applied.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Connects and stays connected, reconnecting with backoff; returns only if dropped.
    pub async fn run(mut self) {
        loop {
            let mut got_response = false;
            let result = self.session(&mut got_response).await;
            self.metrics.connected.set(0);
            let reason = match &result {
                Ok(()) => TerminationReason::Complete,
                Err(SessionError::Channel(_) | SessionError::Open(_)) => {
                    TerminationReason::ConnectionError
                }
                Err(_) => TerminationReason::Error,
            };
            self.metrics
                .terminations
                .get_or_create(&ReasonLabels { reason })
                .inc();
            if got_response {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            match result {
                Ok(()) => {
                    tracing::info!(address = %self.target.address, retry_in = ?delay, "xDS stream ended by the server; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(address = %self.target.address, error = %error_chain(&e), retry_in = ?delay, "xDS connection failed; keeping the last good config")
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn session(&mut self, got_response: &mut bool) -> Result<(), SessionError> {
        let channel = connect(&self.target).await?;
        let mut ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        // Bounded: when the server stops reading, ACKs wait instead of piling up.
        let (tx, mut rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
        // Built before any await: the handlers need not be `Sync`.
        let initial: Vec<DeltaDiscoveryRequest> = self
            .subscriptions
            .iter()
            .map(|sub| DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: sub.type_url.clone(),
                initial_resource_versions: sub.versions.clone(),
                ..Default::default()
            })
            .collect();
        for request in initial {
            tx.send(request)
                .await
                .map_err(|_| SessionError::RequestsClosed)?;
        }
        let requests = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let request = self.target.request(requests)?;
        let mut responses = ads
            .delta_aggregated_resources(request)
            .await
            .map_err(SessionError::Open)?
            .into_inner();
        self.metrics.connected.set(1);
        tracing::info!(address = %self.target.address, "xDS stream up");
        while let Some(response) = responses.message().await.map_err(SessionError::Stream)? {
            *got_response = true;
            let reply = self.handle(response);
            tx.send(reply)
                .await
                .map_err(|_| SessionError::RequestsClosed)?;
        }
        Ok(())
    }

    /// Applies one response and builds its ACK or NACK.
    fn handle(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let labels = UrlLabels {
            url: response.type_url.clone(),
        };
        self.metrics.messages.get_or_create(&labels).inc();
        let bytes: usize = response
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|a| a.value.len())
            .sum();
        self.metrics
            .message_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);

        let rejected = match self
            .subscriptions
            .iter_mut()
            .find(|s| s.type_url == response.type_url)
        {
            None => vec![Rejection {
                name: response.type_url.clone(),
                reason: "type not subscribed".into(),
            }],
            Some(sub) => apply(sub, &response),
        };
        if !rejected.is_empty() {
            self.metrics
                .rejected
                .get_or_create(&labels)
                .inc_by(rejected.len() as u64);
        }
        if self.subscriptions.iter().all(|s| s.synced) {
            self.synced
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
        let error_detail = (!rejected.is_empty()).then(|| {
            let message = rejected
                .iter()
                .map(|r| format!("{}: {}", r.name, r.reason))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(type_url = %response.type_url, nonce = %response.nonce, %message, "xDS resources rejected (NACK); keeping their last good versions");
            proto::rpc::Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }
        });
        DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail,
            ..Default::default()
        }
    }
}

/// Hands one response to its subscription's handler and updates the versions held.
fn apply(sub: &mut Subscription, response: &DeltaDiscoveryResponse) -> Vec<Rejection> {
    let mut rejected = Vec::new();
    let mut raws = Vec::with_capacity(response.resources.len());
    let mut versions = Vec::with_capacity(response.resources.len());
    for r in &response.resources {
        match &r.resource {
            Some(any) => {
                raws.push(Raw {
                    name: r.name.clone(),
                    type_url: any.type_url.clone(),
                    value: bytes::Bytes::from(any.value.clone()),
                });
                versions.push((r.name.clone(), r.version.clone()));
            }
            None => rejected.push(Rejection {
                name: r.name.clone(),
                reason: "resource has no body".into(),
            }),
        }
    }
    let removed = response.removed_resources.clone();
    rejected.extend(sub.handler.apply_raw(raws, removed.clone()));
    for (name, version) in versions {
        sub.versions.insert(name, version);
    }
    for r in &rejected {
        sub.versions.remove(&r.name);
    }
    for name in &removed {
        sub.versions.remove(name);
    }
    sub.synced = true;
    tracing::debug!(type_url = %sub.type_url, updated = response.resources.len(), removed = removed.len(), rejected = rejected.len(), held = sub.versions.len(), "xDS response applied");
    rejected
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
