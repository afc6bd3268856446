//! A live cluster as a source of objects: one list+watch per kind through `kube`, reported as
//! the same [`Update`]s the manifest directory produces (`meshd` without `--manifests`).
//!
//! Why its own loop rather than `kube::runtime::watcher`: the two protocol events that matter
//! here, a `410 Gone` that forces a relist and a `BOOKMARK` that only moves the
//! resourceVersion, stay visible and testable in [`state`], which does no IO; [`kind`] only
//! moves bytes. It also keeps `kube-runtime` out of the build.
//!
//! The rules, in order:
//! 1. Each kind of [`ClusterOptions::kinds`] is listed (`limit` pages, following `continue`;
//!    pods of one node only with [`ClusterOptions::pods_on_node`]; ConfigMaps of one name
//!    only, with [`ClusterOptions::config_map_name`]; Deployments of one label only, with
//!    [`ClusterOptions::deployments_labelled`]) and then
//!    watched from the list's resourceVersion with `allowWatchBookmarks=true`. Objects are
//!    read by [`parse_json_object`](crate::parse_json_object), the parser the manifest source
//!    uses; list items get the list's `apiVersion` and `kind` when the server omits them.
//! 2. `ADDED` and `MODIFIED` apply the object, `DELETED` deletes its key, `BOOKMARK` only
//!    records its resourceVersion (no [`Update`]). Each event moves the resourceVersion the
//!    next watch starts from; a watch the server ends (`timeoutSeconds`) is renewed from there.
//! 3. `410 Gone` (an `ERROR` event carrying a `Status` with code 410, or a 410 answer to the
//!    watch request) means the history is gone: the kind is listed again and the list is
//!    compared with what was known, so objects deleted meanwhile are reported deleted and
//!    only objects whose resourceVersion changed are applied again.
//! 4. An object that cannot be read is an error in [`Update::errors`], located at its API
//!    path (`/api/v1/namespaces/shop/services/cart: spec.ports[0].port: ...`); the consumer
//!    keeps its last good version. `errors` is always the complete current list over all
//!    kinds, as with manifests. Objects carry an [`Origin`] naming the same API path, line 0.
//! 5. A kind the server does not serve (404 on list: the Gateway API or Istio CRDs are not
//!    installed) is not fatal: it counts as empty, is logged once, and is listed again every
//!    [`ClusterOptions::missing_kind_retry`]. Other failures after the start are retried
//!    with a doubling backoff; the start itself fails when a kind cannot be listed (no
//!    access, no server), as a wrong `--manifests` does.
//! 6. The tasks stop when the receiver of updates is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::manifest::{ManifestError, Origin, Update};
use crate::objects::Kind;

mod kind;
mod state;

use kind::{KindWatch, ListError};
use state::{Change, KindState};

/// Changes the kind tasks may queue before they wait for the merger, and updates the merger
/// may queue before it waits for the consumer.
const CHANNEL_CAPACITY: usize = 16;

/// Tuning of [`watch_cluster`]; the defaults suit a real API server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Objects per list page (`limit`); 0 asks for everything in one response.
    pub page_size: u32,
    /// `timeoutSeconds` of each watch request: the server ends the watch then, and it is
    /// renewed from the last resourceVersion seen (kube's default, under its 295 s limit).
    pub watch_timeout: Duration,
    /// How often a kind the server does not serve (CRD not installed) is listed again.
    pub missing_kind_retry: Duration,
    /// First wait before retrying a failed list or watch; it doubles up to `max_backoff`
    /// and starts over after a success.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The kinds listed and watched (all of [`Kind::ALL`] for meshd).
    pub kinds: Vec<Kind>,
    /// Only the pods scheduled on this node (`fieldSelector=spec.nodeName=<node>`), as a node
    /// agent watches them: its memory and the API server's work stay per node.
    pub pods_on_node: Option<String>,
    /// Also the ConfigMaps of this name, in every namespace, and no other ConfigMap
    /// (`fieldSelector=metadata.name=<name>`): meshd's `istio-ca-root-cert`. Reading every
    /// ConfigMap of a cluster would cost memory for nothing.
    pub config_map_name: Option<String>,
    /// Also the Deployments this label selector (`key=value`) picks, in every namespace, and
    /// no other Deployment: meshd's waypoints (`gateway.istio.io/managed=...`).
    pub deployments_labelled: Option<String>,
}

/// A kind's list and watch selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selectors {
    pub fields: Option<String>,
    pub labels: Option<String>,
}

impl ClusterOptions {
    /// The kinds to list and watch: [`ClusterOptions::kinds`], and ConfigMaps when a name
    /// is given.
    pub(crate) fn all_kinds(&self) -> Vec<Kind> {
        let mut kinds = self.kinds.clone();
        if self.config_map_name.is_some() && !kinds.contains(&Kind::ConfigMap) {
            kinds.push(Kind::ConfigMap);
        }
        if self.deployments_labelled.is_some() && !kinds.contains(&Kind::Deployment) {
            kinds.push(Kind::Deployment);
        }
        kinds
    }

    /// The `fieldSelector` and `labelSelector` of a kind's list and watch.
    pub(crate) fn selectors(&self, kind: Kind) -> Selectors {
        let fields = match (kind, &self.pods_on_node, &self.config_map_name) {
            (Kind::Pod, Some(node), _) => Some(format!("spec.nodeName={node}")),
            (Kind::ConfigMap, _, Some(name)) => Some(format!("metadata.name={name}")),
            _ => None,
        };
        let labels = match kind {
            Kind::Deployment => self.deployments_labelled.clone(),
            _ => None,
        };
        Selectors { fields, labels }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            page_size: 500,
            watch_timeout: Duration::from_secs(290),
            missing_kind_retry: Duration::from_secs(60),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            kinds: Kind::ALL.to_vec(),
            pods_on_node: None,
            config_map_name: None,
            deployments_labelled: None,
        }
    }
}

/// Why the cluster source could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot list {kind} ({path}){}", hint(.source))]
    List {
        kind: Kind,
        path: String,
        /// Boxed: `kube::Error` is large and this travels in `Result`s.
        #[source]
        source: Box<kube::Error>,
    },
}

/// An operator's next step for a failed first list.
fn hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(r) if r.code == 401 => {
            ": the API server does not accept meshd's credentials (expired kubeconfig token?)"
        }
        kube::Error::Api(r) if r.code == 403 => {
            ": meshd's service account needs get, list and watch on it (ClusterRole)"
        }
        kube::Error::Api(_) => "",
        _ => ": is the API server reachable from here?",
    }
}

/// Where a kind is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resource {
    /// `v1` for the core group, else `group/version`.
    pub api_version: &'static str,
    /// The lowercase plural in URLs.
    pub plural: &'static str,
}

impl Resource {
    pub fn of(kind: Kind) -> Resource {
        let (api_version, plural) = match kind {
            Kind::Namespace => ("v1", "namespaces"),
            Kind::Pod => ("v1", "pods"),
            Kind::Service => ("v1", "services"),
            Kind::ServiceAccount => ("v1", "serviceaccounts"),
            Kind::Gateway => ("gateway.networking.k8s.io/v1", "gateways"),
            Kind::AuthorizationPolicy => ("security.istio.io/v1", "authorizationpolicies"),
            Kind::PeerAuthentication => ("security.istio.io/v1", "peerauthentications"),
            Kind::RequestAuthentication => ("security.istio.io/v1", "requestauthentications"),
            Kind::LocalRateLimit => ("policy.mesh.dev/v1alpha1", "localratelimits"),
            Kind::Telemetry => ("telemetry.istio.io/v1", "telemetries"),
            Kind::ConfigMap => ("v1", "configmaps"),
            Kind::Deployment => ("apps/v1", "deployments"),
        };
        Resource {
            api_version,
            plural,
        }
    }

    fn prefix(self) -> String {
        if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        }
    }

    /// The collection over all namespaces: `/api/v1/pods`.
    pub fn collection(self) -> String {
        format!("{}/{}", self.prefix(), self.plural)
    }

    /// One object: `/api/v1/namespaces/shop/pods/cart-0`, `/api/v1/namespaces/shop`.
    pub fn object(self, namespace: &str, name: &str) -> PathBuf {
        let path = if namespace.is_empty() {
            format!("{}/{}/{name}", self.prefix(), self.plural)
        } else {
            format!(
                "{}/namespaces/{namespace}/{}/{name}",
                self.prefix(),
                self.plural
            )
        };
        PathBuf::from(path)
    }

    /// The [`Origin`] of an object read from the cluster.
    pub fn origin(self, namespace: &str, name: &str) -> Origin {
        Origin {
            file: self.object(namespace, name),
            line: 0,
        }
    }
}

/// Lists every kind of [`ClusterOptions::kinds`] (and ConfigMaps by name) and watches them on
/// tasks of the current tokio runtime.
///
/// Returns everything listed at first as one update (with its errors), and the receiver of
/// later updates. Fails when a kind cannot be listed at the start for another reason than a
/// 404 (rule 5); afterwards failures are retried and logged.
pub async fn watch_cluster(
    client: kube::Client,
    opts: ClusterOptions,
) -> Result<(Update, mpsc::Receiver<Update>), ClusterError> {
    let opts = Arc::new(opts);
    let lists = opts.all_kinds().into_iter().map(|kind| {
        let client = client.clone();
        let opts = opts.clone();
        async move {
            let resource = Resource::of(kind);
            let selectors = opts.selectors(kind);
            let listed = kind::list(&client, resource, opts.page_size, &selectors).await;
            (kind, listed)
        }
    });
    let (change_tx, change_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let mut initial = Update::default();
    let mut errors = BTreeMap::new();
    let mut watches = Vec::new();
    for (kind, listed) in futures_util::future::join_all(lists).await {
        let mut state = KindState::new(kind);
        let change = match listed {
            Ok(list) => state.relisted(list.resource_version, list.items),
            Err(ListError::NotServed) => {
                info!(
                    %kind, retry = ?opts.missing_kind_retry,
                    "the API server does not serve this kind (CRD not installed?); \
                     listing it again later"
                );
                state.not_served()
            }
            Err(ListError::Kube(source)) => {
                return Err(ClusterError::List {
                    kind,
                    path: Resource::of(kind).collection(),
                    source: Box::new(source),
                });
            }
        };
        initial.applied.extend(change.applied);
        errors.insert(kind, change.errors.unwrap_or_default());
        watches.push(KindWatch::new(
            state,
            client.clone(),
            opts.clone(),
            change_tx.clone(),
        ));
    }
    initial.errors = errors.values().flatten().cloned().collect();
    for e in &initial.errors {
        warn!("{e}");
    }
    debug!(
        objects = initial.applied.len(),
        errors = initial.errors.len(),
        "cluster listed"
    );
    for watch in watches {
        tokio::spawn(watch.run());
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(merge(change_rx, tx, errors));
    Ok((initial, rx))
}

/// The merger task: turns each kind's [`Change`] into an [`Update`] whose `errors` is the
/// complete list over all kinds (rule 4). `changes` is shared by the kind tasks; `out` goes to
/// the one consumer, and its closing stops the merger, whose dropped receiver stops the kinds.
async fn merge(
    mut changes: mpsc::Receiver<Change>,
    out: mpsc::Sender<Update>,
    mut errors: BTreeMap<Kind, Vec<ManifestError>>,
) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = out.closed() => return,
        };
        let Some(change) = change else { return };
        let mut errors_changed = false;
        if let Some(new) = change.errors {
            let old = errors.entry(change.kind).or_default();
            for e in new.iter().filter(|e| !old.contains(e)) {
                warn!("{e}");
            }
            errors_changed = *old != new;
            *old = new;
        }
        if change.applied.is_empty() && change.deleted.is_empty() && !errors_changed {
            continue;
        }
        let update = Update {
            applied: change.applied,
            deleted: change.deleted,
            errors: errors.values().flatten().cloned().collect(),
        };
        if out.send(update).await.is_err() {
            return;
        }
    }
}
