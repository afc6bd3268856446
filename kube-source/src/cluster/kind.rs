//! The IO of one kind: list pages, watch streams read line by line, pauses and retries.
//! What each answer means is decided by [`KindState`]; this file only carries it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::io::AsyncBufReadExt;
use kube::core::params::{ListParams, WatchParams};
use kube::core::{ErrorResponse, Request};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::state::{Change, KindState, Step};
use super::{ClusterOptions, Resource, Selectors};

/// A relist restarts this many times when its `continue` token expires (410) between pages.
const MAX_LIST_RESTARTS: usize = 3;

/// Why a list failed.
#[derive(Debug)]
pub(super) enum ListError {
    /// 404: the server does not serve the kind (its CRD is not installed).
    NotServed,
    Kube(kube::Error),
}

/// Everything a (paged) list returned.
#[derive(Debug)]
pub(super) struct Listed {
    pub resource_version: String,
    pub items: Vec<Value>,
}

/// One page: `{"metadata": {"resourceVersion": "..", "continue": ".."}, "items": [..]}`.
#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_token: String,
}

/// Lists a kind over all namespaces, following `continue` tokens; a token that expired
/// between pages (410) restarts the list.
pub(super) async fn list(
    client: &kube::Client,
    resource: Resource,
    page_size: u32,
    selectors: &Selectors,
) -> Result<Listed, ListError> {
    let request = Request::new(resource.collection());
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let mut restarts = 0;
    loop {
        let mut params = ListParams::default();
        if page_size > 0 {
            params = params.limit(page_size);
        }
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        if let Some(fields) = &selectors.fields {
            params = params.fields(fields);
        }
        if let Some(labels) = &selectors.labels {
            params = params.labels(labels);
        }
        let req = request
            .list(&params)
            .map_err(|e| ListError::Kube(kube::Error::BuildRequest(e)))?;
        match client.request::<ListPage>(req).await {
            Ok(page) => {
                items.extend(page.items);
                if page.metadata.continue_token.is_empty() {
                    return Ok(Listed {
                        resource_version: page.metadata.resource_version,
                        items,
                    });
                }
                token = Some(page.metadata.continue_token);
            }
            Err(kube::Error::Api(r)) if r.code == 404 => return Err(ListError::NotServed),
            Err(kube::Error::Api(r))
                if r.code == 410 && token.is_some() && restarts < MAX_LIST_RESTARTS =>
            {
                debug!(path = %resource.collection(), "list continue token expired; listing again");
                restarts += 1;
                items.clear();
                token = None;
            }
            Err(e) => return Err(ListError::Kube(e)),
        }
    }
}

/// What the loop does next.
#[derive(Debug)]
enum Next {
    Now,
    After(Duration),
    /// The consumer is gone.
    Stop,
}

/// Why a watch ended.
#[derive(Debug)]
enum WatchEnd {
    /// The server closed the stream (`timeoutSeconds`); `events` lines were read.
    Closed {
        events: usize,
    },
    /// 410: list again.
    Expired(ErrorResponse),
    Failed(WatchError),
    /// The consumer is gone.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("watch request failed")]
    Request(#[source] kube::Error),
    #[error("reading the watch stream failed")]
    Read(#[source] std::io::Error),
    #[error("the server ended the watch with an error")]
    Status(#[source] ErrorResponse),
    #[error("the watch stream sent a line that is not a watch event")]
    Malformed(#[source] serde_json::Error),
}

/// One kind's list+watch loop, run as a task.
pub(super) struct KindWatch {
    state: KindState,
    client: kube::Client,
    opts: Arc<ClusterOptions>,
    /// To the merger; its closing (the consumer went away) stops the task.
    tx: mpsc::Sender<Change>,
    /// Whether the last list found the kind served; a 404 is logged only when this flips.
    served: bool,
}

impl KindWatch {
    /// `state` as the first list left it.
    pub fn new(
        state: KindState,
        client: kube::Client,
        opts: Arc<ClusterOptions>,
        tx: mpsc::Sender<Change>,
    ) -> Self {
        let served = state.resource_version().is_some();
        KindWatch {
            state,
            client,
            opts,
            tx,
            served,
        }
    }

    pub async fn run(mut self) {
        let mut backoff = self.opts.min_backoff;
        loop {
            let next = match self.state.resource_version().map(str::to_string) {
                None => self.relist(&mut backoff).await,
                Some(version) => self.rewatch(&version, &mut backoff).await,
            };
            match next {
                Next::Now => {}
                Next::After(pause) => {
                    if !self.pause(pause).await {
                        return;
                    }
                }
                Next::Stop => return,
            }
        }
    }

    /// Lists the kind and reports what changed since it was last seen.
    async fn relist(&mut self, backoff: &mut Duration) -> Next {
        let kind = self.state.kind();
        let selectors = self.opts.selectors(kind);
        match list(
            &self.client,
            Resource::of(kind),
            self.opts.page_size,
            &selectors,
        )
        .await
        {
            Ok(listed) => {
                if !self.served {
                    info!(%kind, "the API server now serves this kind");
                    self.served = true;
                }
                *backoff = self.opts.min_backoff;
                let change = self.state.relisted(listed.resource_version, listed.items);
                debug!(
                    %kind,
                    applied = change.applied.len(),
                    deleted = change.deleted.len(),
                    "relisted"
                );
                self.send(change).await
            }
            Err(ListError::NotServed) => {
                if self.served {
                    info!(
                        %kind, retry = ?self.opts.missing_kind_retry,
                        "the API server no longer serves this kind (CRD removed?); \
                         its objects are gone"
                    );
                    self.served = false;
                }
                let change = self.state.not_served();
                match self.send(change).await {
                    Next::Now => Next::After(self.opts.missing_kind_retry),
                    stop => stop,
                }
            }
            Err(ListError::Kube(e)) => {
                warn!(%kind, error = %e, "cannot list; retrying in {backoff:?}");
                Next::After(next_backoff(backoff, self.opts.max_backoff))
            }
        }
    }

    /// Watches from `version` and decides what follows the watch's end.
    async fn rewatch(&mut self, version: &str, backoff: &mut Duration) -> Next {
        let kind = self.state.kind();
        match self.watch(Resource::of(kind), version).await {
            WatchEnd::Closed { events } => {
                debug!(%kind, events, "watch ended; watching again");
                *backoff = self.opts.min_backoff;
                // A stream that closes at once, again and again, must not spin.
                if events == 0 {
                    Next::After(self.opts.min_backoff)
                } else {
                    Next::Now
                }
            }
            WatchEnd::Expired(status) => {
                info!(
                    %kind, resource_version = %version, message = %status.message,
                    "watch history expired (410); listing again"
                );
                Next::Now
            }
            WatchEnd::Failed(e) => {
                warn!(
                    %kind, error = %e, cause = %source_of(&e),
                    "watch failed; watching again in {backoff:?}"
                );
                Next::After(next_backoff(backoff, self.opts.max_backoff))
            }
            WatchEnd::Stopped => Next::Stop,
        }
    }

    /// Watches from `version` until the stream ends, sending each change.
    async fn watch(&mut self, resource: Resource, version: &str) -> WatchEnd {
        // kube refuses 295 s and more (the API server's own limit).
        let timeout = self.opts.watch_timeout.as_secs().clamp(1, 294);
        let timeout = u32::try_from(timeout).unwrap_or(290);
        let mut params = WatchParams::default().timeout(timeout);
        let selectors = self.opts.selectors(self.state.kind());
        if let Some(fields) = &selectors.fields {
            params = params.fields(fields);
        }
        if let Some(labels) = &selectors.labels {
            params = params.labels(labels);
        }
        let req = match Request::new(resource.collection()).watch(&params, version) {
            Ok(req) => req,
            Err(e) => return WatchEnd::Failed(WatchError::Request(kube::Error::BuildRequest(e))),
        };
        let response = tokio::select! {
            response = self.client.request_stream(req) => response,
            _ = self.tx.closed() => return WatchEnd::Stopped,
        };
        let stream = match response {
            Ok(stream) => stream,
            // 410: too old; 404: the kind went away. Either way the next step is a list.
            Err(kube::Error::Api(status)) if status.code == 410 || status.code == 404 => {
                self.state.expire();
                return WatchEnd::Expired(status);
            }
            Err(e) => return WatchEnd::Failed(WatchError::Request(e)),
        };
        let mut lines = std::pin::pin!(stream.lines());
        let mut events = 0;
        loop {
            let line = tokio::select! {
                line = lines.next() => line,
                _ = self.tx.closed() => return WatchEnd::Stopped,
            };
            let line = match line {
                None => return WatchEnd::Closed { events },
                Some(Err(e)) => return WatchEnd::Failed(WatchError::Read(e)),
                Some(Ok(line)) => line,
            };
            if line.trim().is_empty() {
                continue;
            }
            events += 1;
            match self.state.event(&line) {
                Step::Changed(change) => {
                    if let Next::Stop = self.send(change).await {
                        return WatchEnd::Stopped;
                    }
                }
                Step::Bookmark => {
                    let version = self.state.resource_version();
                    debug!(kind = %self.state.kind(), resource_version = ?version, "bookmark");
                }
                Step::Expired(status) => return WatchEnd::Expired(status),
                Step::Failed(status) => return WatchEnd::Failed(WatchError::Status(status)),
                Step::Malformed(e) => return WatchEnd::Failed(WatchError::Malformed(e)),
                Step::Unknown(t) => {
                    debug!(kind = %self.state.kind(), event = %t, "ignoring an unknown event type");
                }
            }
        }
    }

    /// Sends a non-empty change to the merger; `Stop` when it is gone.
    async fn send(&self, change: Change) -> Next {
        if change.is_empty() || self.tx.send(change).await.is_ok() {
            Next::Now
        } else {
            Next::Stop
        }
    }

    /// Waits `d`; false when the consumer went away meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.tx.closed() => false,
        }
    }
}

/// The wait to use now; doubles the next one, up to `max`.
fn next_backoff(backoff: &mut Duration, max: Duration) -> Duration {
    let now = *backoff;
    *backoff = (now * 2).min(max);
    now
}

/// The cause under a watch error, for one log line.
fn source_of(e: &WatchError) -> String {
    std::error::Error::source(e).map_or_else(String::new, |s| s.to_string())
}
