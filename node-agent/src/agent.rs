//! From source updates to captured pods: the agent's loop.
//!
//! Rules, on every change of namespaces or pods:
//! 1. A captured pod that is no longer wanted (deleted, moved, its namespace unlabeled, opted
//!    out) or whose identity or IPs changed is released: `DelWorkload` to ztunnel, then its
//!    capture rules removed (if its namespace still exists).
//! 2. A wanted pod not yet captured gets its namespace located, its capture rules installed
//!    there, and an `AddWorkload` to ztunnel. A pod whose namespace is not found yet (the
//!    runtime has not set it up) is tried again every [`RETRY`].
//! 3. Rules are installed before ztunnel hears of the pod, as istio-cni does: until ztunnel
//!    binds its listeners, the pod's connections are refused rather than sent around the mesh.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_source::Update;
use tokio::sync::mpsc;
use zds::{Netns, WorkloadInfo};

use crate::locate;
use crate::pods::{CapturedPod, Objects};
use crate::server::Command;

/// How often pods whose namespace was not found are looked for again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the agent does to each pod.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (`NODE_NAME`): pods scheduled here are ours.
    pub node: String,
    /// The mark ztunnel sets on its sockets (`PACKET_MARK`), exempt from capture.
    pub mark: u32,
    pub ports: capture::Ports,
    /// Where pods' network namespaces are looked for.
    pub netns: crate::locate::Scope,
}

pub struct Agent {
    cfg: Config,
    objects: Objects,
    captured: BTreeMap<String, (CapturedPod, Arc<Netns>)>,
    /// Wanted pods whose namespace is not found yet (rule 2).
    unplaced: BTreeSet<String>,
    zds: mpsc::Sender<Command>,
}

impl Agent {
    pub fn new(cfg: Config, zds: mpsc::Sender<Command>) -> Self {
        Agent {
            cfg,
            objects: Objects::default(),
            captured: BTreeMap::new(),
            unplaced: BTreeSet::new(),
            zds,
        }
    }

    /// Runs until the source's channel closes.
    pub async fn run(mut self, initial: Update, mut updates: mpsc::Receiver<Update>) {
        self.objects.apply(initial);
        self.reconcile().await;
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(u) => {
                        if self.objects.apply(u) {
                            self.reconcile().await;
                        }
                    }
                    None => return,
                },
                _ = retry.tick(), if !self.unplaced.is_empty() => self.reconcile().await,
            }
        }
    }

    async fn reconcile(&mut self) {
        let wanted = self.objects.captured_on(&self.cfg.node);
        // Rule 1.
        let released: Vec<String> = self
            .captured
            .iter()
            .filter(|(uid, (pod, _))| wanted.get(*uid) != Some(pod))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in released {
            let Some((pod, netns)) = self.captured.remove(&uid) else {
                continue;
            };
            let _ = self.zds.send(Command::Del { uid: uid.clone() }).await;
            let removed = tokio::task::spawn_blocking(move || netns.run(capture::remove)).await;
            match removed {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(%uid, error = %e, "removing capture rules"),
                other => tracing::debug!(%uid, outcome = ?other.err(), "pod namespace gone"),
            }
            tracing::info!(%uid, pod = %format_args!("{}/{}", pod.namespace, pod.name), "pod released");
        }
        // Rule 2.
        self.unplaced.clear();
        let started = Instant::now();
        let new: Vec<CapturedPod> = wanted
            .into_values()
            .filter(|p| !self.captured.contains_key(&p.uid))
            .collect();
        if new.is_empty() {
            return;
        }
        let placed = self.capture(&new).await;
        let mut added = 0usize;
        for pod in new {
            let uid = pod.uid.clone();
            match placed.get(&uid) {
                Some(Ok(netns)) => {
                    let info = WorkloadInfo {
                        name: pod.name.clone(),
                        namespace: pod.namespace.clone(),
                        service_account: pod.service_account.clone(),
                    };
                    let _ = self
                        .zds
                        .send(Command::Add {
                            uid: uid.clone(),
                            info,
                            netns: netns.clone(),
                        })
                        .await;
                    tracing::info!(%uid, pod = %format_args!("{}/{}", pod.namespace, pod.name), netns = netns.id(), "pod captured");
                    self.captured.insert(uid, (pod, netns.clone()));
                    added += 1;
                }
                other => {
                    let reason = match other {
                        Some(Err(e)) => e.clone(),
                        _ => format!("no network namespace holds {:?}", pod.ips),
                    };
                    tracing::debug!(%uid, %reason, retry_in = ?RETRY, "pod not captured yet");
                    self.unplaced.insert(uid);
                }
            }
        }
        if added > 0 {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                added,
                seconds = secs,
                per_second = added as f64 / secs.max(1e-9),
                "pods captured"
            );
        }
    }

    /// Locates the pods' namespaces (one pass) and installs each one's capture rules there.
    async fn capture(&self, pods: &[CapturedPod]) -> HashMap<String, Result<Arc<Netns>, String>> {
        let wanted: Vec<(String, Vec<IpAddr>)> = pods
            .iter()
            .map(|p| (p.uid.clone(), p.ips.clone()))
            .collect();
        let (ports, mark, scope) = (self.cfg.ports, self.cfg.mark, self.cfg.netns.clone());
        tokio::task::spawn_blocking(move || {
            locate::find_all(&wanted, &scope)
                .into_iter()
                .map(|(uid, netns)| {
                    let installed = netns
                        .run(|| capture::install(ports, mark))
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| format!("installing capture rules: {e}")));
                    (uid.to_string(), installed.map(|()| Arc::new(netns)))
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}
