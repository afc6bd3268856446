//! Authorization at the destination: the verdict for each new inbound connection, and the
//! registry that re-checks open connections whenever the config (and so policy) changes.
//!
//! Rules:
//! - Every inbound connection, HBONE (15008) or plaintext (15006), is checked before the
//!   upstream connection is made; a denial is answered 401 on HBONE and closed on plaintext.
//! - Dry-run results are logged, never enforced.
//! - An allowed connection stays registered while open; after each config change it is
//!   evaluated again and closed (reset) if the new policy denies it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use authz::{Connection, Decision, DryRunOutcome, Peer, Verdict};
use hbone::SpiffeId;
use tokio::sync::Notify;

use crate::state::{State, StateHandle, Workload};

/// The attributes policy sees, from the connection's addresses and proven identity.
pub fn connection(src: SocketAddr, dst: SocketAddr, peer: Option<&SpiffeId>) -> Connection {
    Connection {
        src_ip: src.ip(),
        dst_ip: dst.ip(),
        dst_port: dst.port(),
        peer: peer.map(|id| Peer {
            trust_domain: id.trust_domain().to_string(),
            namespace: id.namespace().to_string(),
            service_account: id.service_account().to_string(),
        }),
    }
}

/// Evaluates, and logs what dry-run policies would have done.
pub fn check(state: &State, dst: &Workload, conn: &Connection) -> Verdict {
    let verdict = state.authorize(dst, conn);
    for d in &verdict.dry_run {
        let would = match d.outcome {
            DryRunOutcome::WouldAllow => "allow",
            DryRunOutcome::WouldDeny => "deny",
        };
        tracing::info!(
            policy = %d.policy,
            rule = d.rule,
            would,
            src = %conn.src_ip,
            dst = %format_args!("{}:{}", conn.dst_ip, conn.dst_port),
            "dry-run policy"
        );
    }
    verdict
}

/// The deciding policy and rule, as logs and metrics name it; `None` when no policy decided.
pub fn decided_by(verdict: &Verdict) -> Option<String> {
    match &verdict.reason {
        Decision::DeniedBy { policy, rule } | Decision::AllowedBy { policy, rule } => {
            Some(format!("{policy} rule {rule}"))
        }
        Decision::NoAllowMatched => Some("no ALLOW policy matched".to_string()),
        Decision::NoAllowPolicies | Decision::NoPolicies => None,
    }
}

/// The policy key to count a denial under (bounded by the number of policies).
pub fn denial_key(verdict: &Verdict) -> String {
    match &verdict.reason {
        Decision::DeniedBy { policy, .. } => policy.to_string(),
        _ => "no-allow-match".to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("denied by policy")]
pub struct Denied;

#[derive(Debug, thiserror::Error)]
#[error("closed: policy now denies it")]
pub struct Revoked;

/// What re-evaluating an open connection needs; the policy attributes are rebuilt from it
/// on each change rather than held (identities are shared, so this allocates nothing).
struct Tracked {
    /// The local workload as it was at connect time; re-looked up by name on each change.
    dst: Arc<Workload>,
    src: SocketAddr,
    target: SocketAddr,
    peer: Option<SpiffeId>,
    revoke: Arc<Revocation>,
}

/// Set once when policy revokes an open connection.
#[derive(Default)]
pub struct Revocation {
    notify: Notify,
    reason: Mutex<Option<String>>,
}

impl Revocation {
    /// Completes when the connection is revoked, with the policy that revoked it.
    pub async fn revoked(&self) -> Option<String> {
        self.notify.notified().await;
        self.reason()
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Open inbound connections, for re-checking against new policy. Each is also counted as
/// carried (`drain::Active`) while registered.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Tracked>>,
    active: Arc<crate::drain::Active>,
}

/// Keeps a connection registered; dropping it unregisters.
pub struct Registration {
    id: u64,
    registry: Arc<Registry>,
    pub revocation: Arc<Revocation>,
    _active: crate::drain::ActiveGuard,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        open.remove(&self.id);
        // A burst of connections grows the table; give that memory back once they are gone.
        if open.capacity() > 64 && open.len() * 4 < open.capacity() {
            let len = open.len();
            open.shrink_to(len * 2);
        }
    }
}

impl Registry {
    /// A registry whose connections count in `active`.
    pub fn new(active: Arc<crate::drain::Active>) -> Self {
        Registry {
            active,
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks an allowed connection from `src` to `target` on `dst`, with its proven identity.
    pub fn register(
        self: &Arc<Self>,
        dst: &Arc<Workload>,
        src: SocketAddr,
        target: SocketAddr,
        peer: Option<&SpiffeId>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let revoke = Arc::new(Revocation::default());
        self.lock().insert(
            id,
            Tracked {
                dst: dst.clone(),
                src,
                target,
                peer: peer.cloned(),
                revoke: revoke.clone(),
            },
        );
        Registration {
            id,
            registry: self.clone(),
            revocation: revoke,
            _active: self.active.track(),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evaluates every open connection against `state`; revokes those now denied.
    pub fn recheck(&self, state: &State) -> usize {
        let open = self.lock();
        let mut revoked = 0;
        for t in open.values() {
            let Some(dst) = state.workload_by_name(&t.dst.namespace, &t.dst.name) else {
                continue;
            };
            let verdict = check(state, dst, &connection(t.src, t.target, t.peer.as_ref()));
            if !verdict.allowed {
                let mut reason = t.revoke.reason.lock().unwrap_or_else(|p| p.into_inner());
                if reason.is_none() {
                    *reason = Some(denial_key(&verdict));
                    t.revoke.notify.notify_one();
                    revoked += 1;
                }
            }
        }
        revoked
    }

    /// Re-checks after every config change, until the state handle is gone.
    pub async fn watch(self: Arc<Self>, state: StateHandle) {
        let mut changes = state.subscribe();
        while changes.changed().await.is_ok() {
            let n = self.recheck(&state.load());
            if n > 0 {
                tracing::info!(revoked = n, "policy change closed open connections");
            }
        }
    }
}
