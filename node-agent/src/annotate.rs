//! The `ambient.istio.io/redirection` annotation on captured pods, as istio-cni writes it
//! (in a cluster; a manifest directory is the user's, and is never written).
//!
//! Rules:
//! 1. `enabled` once ztunnel acked the pod's `AddWorkload`; `pending` while its rules are in
//!    place but no ztunnel has taken it (none connected, NACKed, connection lost). The ZDS
//!    server reports each outcome ([`Redirection`]); it sees every add and delete in order, so
//!    a late ack can never overwrite a release.
//! 2. Released pods lose the annotation (a merge patch setting it to `null`). A pod already
//!    deleted answers 404, which is success: there is nothing left to annotate.
//! 3. Each pod's written state is remembered: a replay to a restarted ztunnel acks every pod
//!    again without patching any. What failed to write (API server unreachable) is retried
//!    every [`RETRY`] until it is written or no longer wanted.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use tokio::sync::mpsc;

/// The annotation's name (protocol.md 11).
pub const ANNOTATION: &str = "ambient.istio.io/redirection";

/// How often failed patches are tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the annotation should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Rules in place, ztunnel has not taken the pod yet.
    Pending,
    /// ztunnel serves the pod.
    Enabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Enabled => "enabled",
        }
    }
}

/// One pod's new state, from the ZDS server; `None` once released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirection {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub state: Option<State>,
}

/// Where the ZDS server reports [`Redirection`]s. Unbounded because the writer drains it into
/// a map of one entry per pod at once; only the map waits on the API server.
pub type Reports = mpsc::UnboundedSender<Redirection>;

struct Pod {
    namespace: String,
    name: String,
    wanted: Option<State>,
    /// What the API server holds, as far as the agent knows (`None`: nothing written).
    written: Option<Option<State>>,
}

/// Writes the annotation for every report on `reports` until the sender closes.
pub async fn run(client: kube::Client, mut reports: mpsc::UnboundedReceiver<Redirection>) {
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut failing = false;
    loop {
        tokio::select! {
            report = reports.recv() => {
                let Some(first) = report else { return };
                note(&mut pods, first);
                while let Ok(more) = reports.try_recv() {
                    note(&mut pods, more);
                }
            }
            _ = tokio::time::sleep(RETRY), if failing => {}
        }
        failing = write(&client, &mut pods).await;
    }
}

fn note(pods: &mut BTreeMap<String, Pod>, r: Redirection) {
    let pod = pods.entry(r.uid).or_insert(Pod {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        wanted: None,
        written: None,
    });
    pod.namespace = r.namespace;
    pod.name = r.name;
    pod.wanted = r.state;
}

/// Patches every pod whose annotation differs from what is wanted; true when some failed.
async fn write(client: &kube::Client, pods: &mut BTreeMap<String, Pod>) -> bool {
    let mut failed = false;
    for pod in pods.values_mut() {
        // Rule 3 (and a pod never annotated needs no removal).
        let done = match pod.written {
            Some(written) => written == pod.wanted,
            None => pod.wanted.is_none(),
        };
        if done {
            continue;
        }
        match patch(client, &pod.namespace, &pod.name, pod.wanted).await {
            Ok(()) => {
                tracing::debug!(pod = %format_args!("{}/{}", pod.namespace, pod.name), state = ?pod.wanted, "annotated");
                pod.written = Some(pod.wanted);
            }
            Err(e) => {
                tracing::warn!(pod = %format_args!("{}/{}", pod.namespace, pod.name), error = %e, retry_in = ?RETRY, "cannot annotate the pod");
                failed = true;
            }
        }
    }
    // Released pods whose removal is written are forgotten.
    pods.retain(|_, p| p.wanted.is_some() || p.written != Some(None));
    failed
}

async fn patch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    state: Option<State>,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "metadata": { "annotations": { ANNOTATION: state.map(State::as_str) } }
    });
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .map_err(kube::Error::BuildRequest)?;
    match client.request::<serde_json::Value>(request).await {
        Ok(_) => Ok(()),
        // Rule 2.
        Err(kube::Error::Api(r)) if r.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
