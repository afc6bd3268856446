//! `AggregatedDiscoveryService` over tonic: authenticates the caller, then runs one task per
//! stream that answers requests and pushes each new snapshot's differences.
//!
//! A slow client holds back only itself: responses go through a small bounded channel, and
//! snapshots arrive through a `watch`, so a client that falls behind skips straight to the
//! latest state instead of queueing every intermediate one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tonic::codec::Codec;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use super::clients::{ClientInfo, Clients};
use super::framing;
use super::session::Ack;
use crate::auth::{Authenticator, authenticate};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotRx};

/// Responses buffered per client before its task waits for the client to read.
const SEND_BUFFER: usize = 16;

#[derive(Clone)]
pub struct AdsService {
    pub snapshots: SnapshotRx,
    pub auth: Arc<dyn Authenticator>,
    pub clients: Clients,
    pub metrics: Metrics,
}

/// The gRPC method served; every other ADS method is `UNIMPLEMENTED`.
pub const DELTA_ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

impl AdsService {
    /// Serves one call to the ADS service. Requests are decoded by tonic; responses are
    /// framed by [`framing`] (see there why not by tonic).
    pub async fn call(
        &self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
        max_message: usize,
    ) -> http::Response<tonic::body::Body> {
        if request.uri().path() != DELTA_ADS_PATH {
            return Status::unimplemented(format!(
                "{}: meshd serves delta xDS only (DeltaAggregatedResources), as istiod does \
                 for ztunnel",
                request.uri().path()
            ))
            .into_http();
        }
        let (parts, body) = request.into_parts();
        let metadata = MetadataMap::from_headers(parts.headers);
        let caller = match authenticate(self.auth.as_ref(), &metadata).await {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "xDS client refused");
                return e.status().into_http();
            }
        };
        let client = self.clients.add(peer.to_string(), &caller);
        let requests = Streaming::new_request(
            ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default().decoder(),
            body,
            None,
            Some(max_message),
        );
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        tokio::spawn(run(
            client,
            requests,
            tx,
            self.snapshots.clone(),
            self.clients.clone(),
            self.metrics.clone(),
        ));
        let mut response = http::Response::new(framing::body(rx, max_message));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// Serves one stream until the client goes away.
async fn run(
    client: Arc<ClientInfo>,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: Tx,
    mut snapshots: SnapshotRx,
    clients: Clients,
    metrics: Metrics,
) {
    metrics.xds_clients.inc();
    tracing::info!(id = client.id, peer = %client.peer, account = %client.account, node = ?client.node, "xDS client connected");
    let result = serve(&client, &mut requests, &tx, &mut snapshots, &metrics).await;
    match result {
        Ok(()) => {
            tracing::info!(id = client.id, node_id = %lock(&client.node_id), "xDS client disconnected")
        }
        Err(e) => {
            tracing::info!(id = client.id, node_id = %lock(&client.node_id), reason = %e, "xDS client stream ended")
        }
    }
    clients.remove(client.id);
    metrics.xds_clients.dec();
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(
    client: &ClientInfo,
    requests: &mut Streaming<DeltaDiscoveryRequest>,
    tx: &Tx,
    snapshots: &mut SnapshotRx,
    metrics: &Metrics,
) -> Result<(), Status> {
    // Nothing is served before the first config is published: answering from the empty
    // startup snapshot would tell a reconnecting client to remove everything it holds.
    snapshots
        .wait_for(|s| s.version > 0)
        .await
        .map_err(|_| Status::unavailable("meshd is shutting down"))?;
    // Everything up to now is sent in reply to the opening requests.
    snapshots.borrow_and_update();
    loop {
        tokio::select! {
            request = requests.message() => {
                let Some(request) = request? else { return Ok(()) };
                if let Some(node) = &request.node {
                    let mut id = lock(&client.node_id);
                    if id.is_empty() {
                        *id = node.id.clone();
                    }
                }
                let snapshot = snapshots.borrow().clone();
                let outcome = lock(&client.session).on_request(request, &snapshot);
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => {
                        let status = Status::invalid_argument(e.to_string());
                        let _ = tx.send(Err(status.clone())).await;
                        return Err(status);
                    }
                };
                if let Some(ack) = outcome.ack {
                    record_ack(client, metrics, ack);
                }
                if let Some(response) = outcome.response {
                    send(client, tx, metrics, response, None).await?;
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("meshd is shutting down"));
                }
                let snapshot: Arc<Snapshot> = snapshots.borrow_and_update().clone();
                let responses = lock(&client.session).on_snapshot(&snapshot);
                for response in responses {
                    send(client, tx, metrics, response, snapshot.changed_at).await?;
                }
            }
        }
    }
}

async fn send(
    client: &ClientInfo,
    tx: &Tx,
    metrics: &Metrics,
    response: DeltaDiscoveryResponse,
    changed_at: Option<tokio::time::Instant>,
) -> Result<(), Status> {
    let labels = Metrics::type_labels(&response.type_url);
    let bytes: usize = response
        .resources
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .map(|a| a.value.len())
        .sum();
    tracing::debug!(id = client.id, type_url = %response.type_url, nonce = %response.nonce, resources = response.resources.len(), removed = response.removed_resources.len(), bytes, "xDS push");
    tx.send(Ok(response))
        .await
        .map_err(|_| Status::cancelled("client went away"))?;
    metrics.pushes.get_or_create(&labels).inc();
    metrics
        .config_size
        .get_or_create(&labels)
        .observe(bytes as f64);
    if let Some(at) = changed_at {
        metrics.convergence.observe(at.elapsed().as_secs_f64());
    }
    client.pushes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn record_ack(client: &ClientInfo, metrics: &Metrics, ack: Ack) {
    match ack {
        Ack::Ack { type_url, nonce } => {
            tracing::debug!(id = client.id, %type_url, %nonce, "xDS ACK");
        }
        Ack::Nack {
            type_url,
            nonce,
            message,
        } => {
            tracing::warn!(id = client.id, node_id = %lock(&client.node_id), %type_url, %nonce, reason = %message, "xDS NACK: the client rejected resources and keeps its last good config");
            metrics
                .rejects
                .get_or_create(&Metrics::type_labels(&type_url))
                .inc();
            client.nacks.fetch_add(1, Ordering::Relaxed);
            *lock(&client.last_nack) = Some(format!("{type_url}: {message}"));
        }
    }
}
