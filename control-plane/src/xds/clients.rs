//! The connected xDS clients, for the debug endpoint: who they are, what they hold, what they
//! refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::session::Session;
use crate::auth::Caller;

/// One connected client.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub peer: String,
    /// `namespace/service-account` from its token.
    pub account: String,
    /// The node its token is bound to.
    pub node: Option<String>,
    pub connected_at: SystemTime,
    /// Node id from its first request (`ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub node_id: Mutex<String>,
    pub session: Arc<Mutex<Session>>,
    pub pushes: AtomicU64,
    pub nacks: AtomicU64,
    pub last_nack: Mutex<Option<String>>,
}

/// JSON view of a client (`/debug/connections`, `/debug/config_dump`).
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub id: u64,
    pub node_id: String,
    pub peer: String,
    pub account: String,
    pub node: Option<String>,
    pub connected_secs: u64,
    pub pushes: u64,
    pub nacks: u64,
    pub last_nack: Option<String>,
    /// Type URL -> resource name -> version, as last sent (only in a config dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Default)]
pub struct Clients {
    inner: Arc<Mutex<BTreeMap<u64, Arc<ClientInfo>>>>,
    next: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clients {
    /// Registers a client authenticated as `caller`.
    pub fn add(&self, peer: String, caller: &Caller) -> Arc<ClientInfo> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            peer,
            account: caller.account(),
            node: caller.node.clone(),
            connected_at: SystemTime::now(),
            node_id: Mutex::new(String::new()),
            session: Arc::new(Mutex::new(Session::for_caller(caller.clone()))),
            pushes: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            last_nack: Mutex::new(None),
        });
        lock(&self.inner).insert(id, info.clone());
        info
    }

    pub fn remove(&self, id: u64) {
        lock(&self.inner).remove(&id);
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every client; with `dump`, the resources each holds; `filter` matches node ids.
    pub fn views(&self, dump: bool, filter: Option<&str>) -> Vec<ClientView> {
        let clients: Vec<Arc<ClientInfo>> = lock(&self.inner).values().cloned().collect();
        clients
            .iter()
            .filter(|c| filter.is_none_or(|f| lock(&c.node_id).contains(f)))
            .map(|c| {
                let resources = dump.then(|| {
                    let session = lock(&c.session);
                    let mut types: Vec<String> = session.types().map(str::to_string).collect();
                    types.sort();
                    types
                        .into_iter()
                        .map(|t| {
                            let held = session.held(&t).into_iter().collect();
                            (t, held)
                        })
                        .collect()
                });
                ClientView {
                    id: c.id,
                    node_id: lock(&c.node_id).clone(),
                    peer: c.peer.clone(),
                    account: c.account.clone(),
                    node: c.node.clone(),
                    connected_secs: c.connected_at.elapsed().map_or(0, |d| d.as_secs()),
                    pushes: c.pushes.load(Ordering::Relaxed),
                    nacks: c.nacks.load(Ordering::Relaxed),
                    last_nack: lock(&c.last_nack).clone(),
                    resources,
                }
            })
            .collect()
    }
}
