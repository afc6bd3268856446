//! `AggregatedDiscoveryService` over tonic: authenticates the caller, then runs one task per
//! stream that answers requests and pushes each new snapshot's differences.
//!
//! A slow client holds back only itself: responses go through a small bounded channel, and
//! snapshots arrive through a `watch`, so a client that falls behind skips straight to the
//! latest state instead of queueing every intermediate one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryService;
use proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::clients::{ClientInfo, Clients};
use super::session::Ack;
use crate::auth::{Authenticator, authenticate};
use crate::grpc::PeerAddr;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotRx};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Responses buffered per client before its task waits for the client to read.
const SEND_BUFFER: usize = 16;

#[derive(Clone)]
pub struct AdsService {
    pub snapshots: SnapshotRx,
    pub auth: Arc<dyn Authenticator>,
    pub clients: Clients,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "meshd serves delta xDS only (DeltaAggregatedResources), as istiod does for ztunnel",
        ))
    }

    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map_or_else(|| "unknown".to_string(), |p| p.0.to_string());
        let caller = authenticate(self.auth.as_ref(), request.metadata())
            .await
            .map_err(|e| {
                tracing::warn!(%peer, error = %e, "xDS client refused");
                e.status()
            })?;
        let client = self
            .clients
            .add(peer, caller.account(), caller.node.clone());
        let (tx, mut rx) = mpsc::channel(SEND_BUFFER);
        let stream = request.into_inner();
        tokio::spawn(run(
            client,
            stream,
            tx,
            self.snapshots.clone(),
            self.clients.clone(),
            self.metrics.clone(),
        ));
        let out = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(out)))
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
