//! The pods this ztunnel serves, each with its own proxy in its own network namespace.
//!
//! Rules:
//! 1. A pod is served from its `AddWorkload` until its `DelWorkload` (or until a snapshot
//!    leaves it out). An `AddWorkload` for a pod already served in the same namespace (the
//!    replay after a reconnect) changes nothing: its listeners and connections stay.
//! 2. A pod that cannot start (no certificate yet, a port taken) is NACKed with the reason and
//!    waits; waiting pods are retried every [`RETRY`] until they start or are removed.
//! 3. Stopping a pod closes its listeners; connections already open end on their own (the
//!    pod's namespace going away ends them). No other pod is touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hbone::{CertManager, H2Settings, SpiffeId, TrustRoots};
use zds::Netns;

use crate::config::WorkloadInfo;
use crate::metrics::Metrics;
use crate::proxy::{self, Ports, ProxyContext, Running};
use crate::state::StateHandle;

/// How often pods that could not start are tried again (Istio's ztunnel: 5 s).
pub const RETRY: Duration = Duration::from_secs(5);

/// Longest a pod's start may hold up its ack: the agent waits 5 s for each.
const START_TIMEOUT: Duration = Duration::from_secs(4);

/// What every pod's proxy shares.
pub struct Node {
    pub state: StateHandle,
    pub certs: Arc<CertManager>,
    pub roots: TrustRoots,
    pub mark: u32,
    pub settings: H2Settings,
    pub metrics: Arc<Metrics>,
    /// The mesh's trust domain, for the pods' SPIFFE identities.
    pub trust_domain: String,
    pub ports: Ports,
}

struct Served {
    info: WorkloadInfo,
    netns: Arc<Netns>,
    /// Dropping it closes the pod's listeners.
    _running: Running,
}

struct Waiting {
    info: WorkloadInfo,
    netns: Arc<Netns>,
}

/// The pods served and waiting, by Kubernetes uid.
pub struct Pods {
    node: Node,
    served: HashMap<String, Served>,
    waiting: HashMap<String, Waiting>,
}

impl Pods {
    pub fn new(node: Node) -> Self {
        Pods {
            node,
            served: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Rules 1 and 2: serves a pod; the error is the NACK's text.
    pub async fn add(
        &mut self,
        uid: &str,
        info: zds::WorkloadInfo,
        netns: Netns,
    ) -> Result<(), String> {
        let info = WorkloadInfo {
            namespace: info.namespace,
            name: info.name,
            service_account: info.service_account,
        };
        if let Some(served) = self.served.get(uid) {
            if *served.netns == netns && served.info == info {
                return Ok(());
            }
            tracing::info!(uid, workload = %info, "pod changed namespace or identity: restarting its proxy");
            self.served.remove(uid);
        }
        self.waiting.remove(uid);
        self.start(uid, info, Arc::new(netns)).await
    }

    async fn start(
        &mut self,
        uid: &str,
        info: WorkloadInfo,
        netns: Arc<Netns>,
    ) -> Result<(), String> {
        match self.try_start(&info, &netns).await {
            Ok(running) => {
                self.served.insert(
                    uid.to_string(),
                    Served {
                        info,
                        netns,
                        _running: running,
                    },
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(uid, workload = %info, error = %e, retry_in = ?RETRY, "pod not served yet");
                self.waiting
                    .insert(uid.to_string(), Waiting { info, netns });
                Err(e)
            }
        }
    }

    async fn try_start(&self, info: &WorkloadInfo, netns: &Arc<Netns>) -> Result<Running, String> {
        let node = &self.node;
        // The pod's own trust domain when the config already lists it.
        let trust_domain = node
            .state
            .load()
            .workload_by_name(&info.namespace, &info.name)
            .map(|w| w.trust_domain.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| node.trust_domain.clone());
        let identity = SpiffeId::new(&trust_domain, &info.namespace, &info.service_account)
            .map_err(|e| format!("identity of {info}: {e}"))?;
        let ctx = ProxyContext::new(
            node.state.clone(),
            info.clone(),
            identity,
            node.certs.clone(),
            node.roots.clone(),
            Some(node.mark),
            Some(netns.clone()),
            node.settings.clone(),
            node.metrics.clone(),
        );
        match tokio::time::timeout(START_TIMEOUT, proxy::start(ctx, node.ports)).await {
            Ok(Ok(running)) => Ok(running),
            Ok(Err(e)) => Err(crate::proxy::access::error_chain(&e)),
            Err(_) => Err(format!(
                "starting {info} took over {START_TIMEOUT:?} (is the CA reachable?)"
            )),
        }
    }

    /// Rule 3: stops serving a pod; false if it was not known.
    pub fn remove(&mut self, uid: &str) -> bool {
        let served = self.served.remove(uid);
        if let Some(s) = &served {
            tracing::info!(uid, workload = %s.info, "pod no longer served");
        }
        served.is_some() | self.waiting.remove(uid).is_some()
    }

    /// Stops every pod not in `keep` (the end of a replay); returns their uids.
    pub fn retain(&mut self, keep: &HashSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .served
            .keys()
            .chain(self.waiting.keys())
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        for uid in &gone {
            self.remove(uid);
        }
        gone
    }

    /// Rule 2: tries the waiting pods again.
    pub async fn retry_waiting(&mut self) {
        let waiting: Vec<(String, Waiting)> = self.waiting.drain().collect();
        for (uid, w) in waiting {
            if self.start(&uid, w.info, w.netns).await.is_ok() {
                tracing::info!(uid, "pod served after a retry");
            }
        }
    }

    /// Served pods as `uid -> namespace/name/service-account`, for status and tests.
    pub fn served(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .served
            .iter()
            .map(|(uid, s)| (uid.clone(), s.info.to_string()))
            .collect();
        v.sort();
        v
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
