//! One client's delta xDS state, without IO: what it subscribed to, which versions it holds,
//! and the responses that bring it up to date with a snapshot.
//!
//! Rules, in order:
//! 1. The first request of a type opens it: an empty subscribe list or `*` means wildcard;
//!    `initial_resource_versions` are what the client already holds (after a reconnect), so
//!    unchanged resources are not sent again and resources that are gone are removed.
//! 2. That first request always gets a response, even an empty one: it is how the client
//!    knows it is in sync.
//! 3. A request carrying a nonce is an ACK, or a NACK when it has `error_detail`. The client
//!    keeps its last good versions of rejected resources; we resend them when they change.
//! 4. On a new snapshot every open type gets the resources whose version differs from what
//!    the client holds and the removal of names it holds that are gone; nothing when nothing
//!    changed for it.
//! 5. Named (non-wildcard) subscriptions match a resource's name or any of its aliases.
//! 6. When a snapshot carries the names changed since the version a type was last brought up
//!    to date with, only those names are compared; otherwise every resource is.
//! 7. The waypoint's types (Target, HttpPolicy) are the set of the client's own waypoint,
//!    which its authenticated identity names (`WaypointResources::waypoint_of`, asked again at
//!    every snapshot: the waypoint's pod or Gateway may appear later); a client that is no
//!    waypoint gets an empty set. When the answer changes, the whole set is compared (rule 6's
//!    names are about sets, not about which set a client sees).
//!    The waypoints' Tracing is the mesh's, unless a Telemetry gives the client's waypoint
//!    its own (`Resources::served`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource};

use crate::auth::Caller;
use crate::resources::{ResourceSet, WAYPOINT_TYPE_URLS, WaypointKey};
use crate::snapshot::Snapshot;

/// What the client acknowledged or refused, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Ack {
        type_url: String,
        nonce: String,
    },
    Nack {
        type_url: String,
        nonce: String,
        message: String,
    },
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name -> the version the client has (or was last sent); shared strings, so a
    /// client costs a table, not a copy of every name.
    held: HashMap<Arc<str>, Arc<str>>,
    /// The snapshot version this type was last brought up to date with.
    synced: u64,
    /// The waypoint whose set this type was last brought up to date with (rule 7).
    waypoint: Option<WaypointKey>,
}

impl TypeState {
    fn wants(&self, r: &crate::resources::Resource) -> bool {
        self.wildcard
            || self.names.contains(&*r.name)
            || r.aliases.iter().any(|a| self.names.contains(a))
    }
}

/// Per-client subscriptions and held versions.
#[derive(Debug, Default)]
pub struct Session {
    types: HashMap<String, TypeState>,
    nonce: u64,
    /// Who the client authenticated as (rule 7); `None`: no waypoint.
    caller: Option<Caller>,
}

/// What one request led to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ack: Option<Ack>,
    pub response: Option<DeltaDiscoveryResponse>,
}

/// Why a request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("type {0:?} is not served here (meshd serves {ADDRESS}, {AUTHORIZATION}, {TARGET}, {POLICY} and {TRACING})", ADDRESS = proto::ADDRESS_TYPE_URL, AUTHORIZATION = proto::AUTHORIZATION_TYPE_URL, TARGET = proto::WAYPOINT_TARGET_TYPE_URL, POLICY = proto::WAYPOINT_POLICY_TYPE_URL, TRACING = proto::WAYPOINT_TRACING_TYPE_URL)]
    UnknownType(String),
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session for a client authenticated as `caller`.
    pub fn for_caller(caller: Caller) -> Self {
        Session {
            caller: Some(caller),
            ..Self::default()
        }
    }

    /// Rule 7: the waypoint whose set of `type_url` this client sees in `snapshot`.
    fn waypoint(&self, type_url: &str, snapshot: &Snapshot) -> Option<WaypointKey> {
        let caller = self.caller.as_ref()?;
        let per_waypoint =
            WAYPOINT_TYPE_URLS.contains(&type_url) || type_url == proto::WAYPOINT_TRACING_TYPE_URL;
        per_waypoint.then(|| {
            snapshot.resources.waypoints.waypoint_of(
                &caller.namespace,
                &caller.service_account,
                caller.pod.as_deref(),
            )
        })
    }

    /// The types this client has opened.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Names and versions the client holds (as far as we know) for `type_url`.
    pub fn held(&self, type_url: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .types
            .get(type_url)
            .map(|t| {
                t.held
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Handles one request against the current snapshot.
    pub fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> Result<Outcome, RequestError> {
        let system_version = snapshot.version.to_string();
        let system_version = system_version.as_str();
        let waypoint = self.waypoint(&req.type_url, snapshot);
        let set = snapshot
            .resources
            .served(&req.type_url, waypoint.as_ref())
            .ok_or_else(|| RequestError::UnknownType(req.type_url.clone()))?;
        let mut outcome = Outcome::default();
        if !req.response_nonce.is_empty() {
            outcome.ack = Some(match req.error_detail {
                Some(status) => Ack::Nack {
                    type_url: req.type_url.clone(),
                    nonce: req.response_nonce.clone(),
                    message: status.message,
                },
                None => Ack::Ack {
                    type_url: req.type_url.clone(),
                    nonce: req.response_nonce.clone(),
                },
            });
        }
        let opening = !self.types.contains_key(&req.type_url);
        let changes_subscription =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if !opening && !changes_subscription {
            return Ok(outcome);
        }
        let state = self.types.entry(req.type_url.clone()).or_default();
        if opening {
            state.wildcard = req.resource_names_subscribe.is_empty();
            state.held = req
                .initial_resource_versions
                .into_iter()
                .map(|(n, v)| (Arc::from(n), Arc::from(v)))
                .collect();
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(name);
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
            }
        }
        let response = diff(
            &req.type_url,
            state,
            set,
            None,
            system_version,
            &mut self.nonce,
        );
        state.synced = snapshot.version;
        state.waypoint = waypoint;
        outcome.response = match response {
            Some(r) => Some(r),
            // Rule 2: an opening request is always answered.
            None if opening => Some(empty(&req.type_url, system_version, &mut self.nonce)),
            None => None,
        };
        Ok(outcome)
    }

    /// Responses that bring every open type up to date with `snapshot`.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        let system_version = snapshot.version.to_string();
        let mut out = Vec::new();
        let mut types: Vec<String> = self.types.keys().cloned().collect();
        types.sort();
        for type_url in types {
            let waypoint = self.waypoint(&type_url, snapshot);
            let (Some(set), Some(state)) = (
                snapshot.resources.served(&type_url, waypoint.as_ref()),
                self.types.get_mut(&type_url),
            ) else {
                continue;
            };
            // Rule 6: only the names that changed, when the delta starts where we are (and,
            // rule 7, the client still sees the same waypoint's set).
            let only = snapshot
                .delta
                .as_ref()
                .filter(|d| d.from == state.synced && state.waypoint == waypoint)
                .map(|d| d.names.get(&type_url).map(Vec::as_slice).unwrap_or(&[]));
            if let Some(r) = diff(
                &type_url,
                state,
                set,
                only,
                &system_version,
                &mut self.nonce,
            ) {
                out.push(r);
            }
            state.synced = snapshot.version;
            state.waypoint = waypoint;
        }
        out
    }
}

fn next_nonce(counter: &mut u64) -> String {
    *counter += 1;
    counter.to_string()
}

fn empty(type_url: &str, system_version: &str, nonce: &mut u64) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.to_string(),
        system_version_info: system_version.to_string(),
        nonce: next_nonce(nonce),
        ..Default::default()
    }
}

/// The response that makes `state` match `set`, recording what it sends; `None` if nothing.
/// With `only`, just those names are compared (the rest are known unchanged).
fn diff(
    type_url: &str,
    state: &mut TypeState,
    set: &ResourceSet,
    only: Option<&[Arc<str>]>,
    system_version: &str,
    nonce: &mut u64,
) -> Option<DeltaDiscoveryResponse> {
    let mut sent: Vec<&crate::resources::Resource> = Vec::new();
    let mut removed: Vec<Arc<str>> = Vec::new();
    let stale = |r: &crate::resources::Resource, state: &TypeState| {
        state.held.get(&r.name) != Some(&r.version)
    };
    match only {
        Some(names) => {
            for name in names {
                match set.get(&**name).filter(|r| state.wants(r)) {
                    Some(r) if stale(r, state) => sent.push(r),
                    Some(_) => {}
                    None => {
                        if let Some((held, _)) = state.held.get_key_value(&**name) {
                            removed.push(held.clone());
                        }
                    }
                }
            }
        }
        None => {
            sent.extend(set.values().filter(|r| state.wants(r) && stale(r, state)));
            removed = state
                .held
                .keys()
                .filter(|name| set.get(&***name).is_none_or(|r| !state.wants(r)))
                .cloned()
                .collect();
        }
    }
    removed.sort();
    if sent.is_empty() && removed.is_empty() {
        return None;
    }
    let mut resources = Vec::with_capacity(sent.len());
    for r in sent {
        state.held.insert(r.name.clone(), r.version.clone());
        resources.push(WireResource {
            name: r.name.to_string(),
            aliases: r.aliases.to_vec(),
            version: r.version.to_string(),
            resource: Some((*r.body).clone()),
            ..Default::default()
        });
    }
    for name in &removed {
        state.held.remove(name);
    }
    let removed = removed.iter().map(|n| n.to_string()).collect();
    Some(DeltaDiscoveryResponse {
        type_url: type_url.to_string(),
        system_version_info: system_version.to_string(),
        resources,
        removed_resources: removed,
        nonce: next_nonce(nonce),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
