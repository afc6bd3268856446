//! AuthorizationPolicy and PeerAuthentication -> Authorization resources, and which policy
//! keys each workload lists (protocol.md 8.3, 9).
//!
//! The translation itself is the `authz` crate's; this file runs it once per object and per
//! call, publishes the results, and answers "which keys does this pod list" cheaply. Rules:
//! 1. A PeerAuthentication `authz` rejects is an error and left out; the valid ones give the
//!    published policies (`peer_authentication_policies`: the static strict policy whenever
//!    any exists, plus converted port-level policies) and each workload's keys
//!    (`effective_mtls`).
//! 2. An AuthorizationPolicy `authz` rejects is an error. One it accepts but that is not for
//!    ztunnel (`policy: None`) publishes nothing; its warnings (unsupported action, dry-run
//!    not enabled) are kept, except for `targetRef(s)` policies, which belong to waypoints:
//!    `waypoint_policy.rs` reports their errors and warnings (once, not once per proxy).
//!    Warnings of published policies (L7 parts dropped...) are kept.
//! 3. A policy whose key is already taken by one synthesized from PeerAuthentication is an
//!    error: the synthesized one is what ztunnel must see.
//! 4. A workload lists every published selector policy that selects it
//!    (`Translated::selects`: its own namespace or the root namespace), plus its
//!    PeerAuthentication keys; sorted, without duplicates.
//! 5. Only the workload's namespace and the root namespace matter to `effective_mtls`, so each
//!    namespace gets that subset once, and namespaces without selector PeerAuthentications get
//!    their keys once for all their pods.

use std::collections::HashMap;

use authz::translate::{
    Input, PeerAuthentication, SkipReason, TranslateOptions, Translated, authorization_policy,
    effective_mtls, peer_authentication, peer_authentication_policies,
};
use kube_source::{Kind, ObjectKey, RawPolicy};

use super::authorization::to_proto;
use super::labels::{Labels, SelectorIndex};
use super::{Options, Scope, Translation};
use crate::index::Index;
use crate::resources::Resource;

/// Each AuthorizationPolicy's last translation, reused while its object is unchanged:
/// `authz` parses a policy from text, which is most of a translation's cost.
#[derive(Debug, Default)]
pub struct Memo {
    authorization: HashMap<ObjectKey, Memoized>,
}

#[derive(Debug)]
struct Memoized {
    value: serde_yaml::Value,
    result: Result<(Translated, Option<Resource>), String>,
}

/// The policies of one translation, parsed once.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Published selector policies (the only ones workloads list by key).
    selector_policies: Vec<Translated>,
    peer_authentications: Vec<PeerAuthentication>,
}

pub(super) fn key_of(raw: &RawPolicy, kind: Kind) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: raw.metadata.namespace.clone(),
        name: raw.metadata.name.clone(),
    }
}

/// Whether the raw object names waypoint targets (its warnings are not ztunnel's business).
pub(super) fn has_target_refs(raw: &RawPolicy) -> bool {
    let spec = raw.value.get("spec");
    let set = |field: &str| {
        spec.and_then(|s| s.get(field))
            .is_some_and(|v| !v.is_null() && v.as_sequence().is_none_or(|s| !s.is_empty()))
    };
    set("targetRef") || set("targetRefs")
}

/// Rules 1-3: translate every policy object, publish into `out`, keep what binds workloads.
/// A memoized policy outside `scope` is known unchanged and not even compared.
pub fn parse(
    index: &Index,
    opts: &Options,
    scope: &Scope,
    out: &mut Translation,
    memo: &mut Memo,
) -> Parsed {
    let root = opts.root_namespace.as_str();
    let mut parsed = Parsed::default();

    for raw in index.peer_authentications() {
        match peer_authentication(Input::Value(&raw.value)) {
            Ok(pa) => parsed.peer_authentications.push(pa),
            Err(e) => out
                .errors
                .push((key_of(raw, Kind::PeerAuthentication), e.to_string())),
        }
    }
    for p in peer_authentication_policies(&parsed.peer_authentications, root) {
        out.resources
            .insert_authorization(Resource::new(p.key(), Vec::new(), &to_proto(&p)));
    }

    let topts = TranslateOptions {
        enable_dry_run: opts.enable_dry_run,
    };
    let mut seen = std::collections::HashSet::new();
    for raw in index.authorization_policies() {
        let key = key_of(raw, Kind::AuthorizationPolicy);
        seen.insert(key.clone());
        let fresh = memo
            .authorization
            .get(&key)
            .is_some_and(|m| !scope.includes(&raw.metadata.namespace) || m.value == raw.value);
        if !fresh {
            let result = authorization_policy(Input::Value(&raw.value), root, &topts)
                .map(|t| {
                    let resource = t
                        .policy
                        .as_ref()
                        .map(|p| Resource::new(p.key(), Vec::new(), &to_proto(p)));
                    (t, resource)
                })
                .map_err(|e| e.to_string());
            memo.authorization.insert(
                key.clone(),
                Memoized {
                    value: raw.value.clone(),
                    result,
                },
            );
        }
        let Some(m) = memo.authorization.get(&key) else {
            continue;
        };
        let (t, resource) = match &m.result {
            Ok((t, r)) => (t.clone(), r.clone()),
            Err(_) if has_target_refs(raw) => continue,
            Err(e) => {
                out.errors.push((key, e.clone()));
                continue;
            }
        };
        let for_waypoints = t.skipped == Some(SkipReason::TargetRefs) || has_target_refs(raw);
        if !for_waypoints {
            out.warnings
                .extend(t.warnings.iter().map(|w| (key.clone(), w.clone())));
        }
        let Some(resource) = resource else {
            continue;
        };
        if out.resources.authorizations.contains_key(&*resource.name) {
            out.errors.push((
                key,
                format!(
                    "{} is the name of a policy synthesized from PeerAuthentication",
                    resource.name
                ),
            ));
            continue;
        }
        out.resources.insert_authorization(resource);
        if t.selector.is_some() {
            parsed.selector_policies.push(t);
        }
    }
    memo.authorization.retain(|k, _| seen.contains(k));
    parsed
}

impl Parsed {
    /// Rule 5: the indexes workloads are matched against.
    pub fn bindings<'p>(&'p self, root_namespace: &'p str) -> Bindings<'p> {
        let mut selectors: HashMap<&str, SelectorIndex<'p, &'p Translated>> = HashMap::new();
        for t in &self.selector_policies {
            if let Some(sel) = &t.selector {
                selectors
                    .entry(t.namespace.as_str())
                    .or_default()
                    .insert(sel, t);
            }
        }

        let root_pas: Vec<&PeerAuthentication> = self
            .peer_authentications
            .iter()
            .filter(|pa| pa.namespace == root_namespace)
            .collect();
        let mut per_ns: HashMap<&str, Vec<PeerAuthentication>> = HashMap::new();
        for pa in &self.peer_authentications {
            if pa.namespace != root_namespace {
                per_ns
                    .entry(pa.namespace.as_str())
                    .or_insert_with(|| root_pas.iter().map(|p| (*p).clone()).collect())
                    .push(pa.clone());
            }
        }
        let no_labels = Labels::new();
        let root_only: Vec<PeerAuthentication> = root_pas.into_iter().cloned().collect();
        // A namespace with no PeerAuthentication of its own: only the mesh level counts.
        let fallback = effective_mtls(&root_only, root_namespace, "", &no_labels).policy_keys;
        let peer = per_ns
            .into_iter()
            .map(|(ns, all)| {
                let by_selector = all.iter().any(|pa| {
                    pa.namespace == ns && pa.selector.as_ref().is_some_and(|s| !s.is_empty())
                });
                let constant = (!by_selector)
                    .then(|| effective_mtls(&all, root_namespace, ns, &no_labels).policy_keys);
                (ns, NamespacePeers { all, constant })
            })
            .collect();
        Bindings {
            root_namespace,
            selectors,
            peer,
            fallback,
        }
    }
}

/// PeerAuthentications bearing on one namespace's workloads.
#[derive(Debug)]
struct NamespacePeers {
    /// The namespace's own and the root namespace's.
    all: Vec<PeerAuthentication>,
    /// The keys of every workload there, when no selector policy can tell them apart.
    constant: Option<Vec<String>>,
}

/// Which policy keys a workload lists (rule 4).
#[derive(Debug)]
pub struct Bindings<'p> {
    root_namespace: &'p str,
    selectors: HashMap<&'p str, SelectorIndex<'p, &'p Translated>>,
    peer: HashMap<&'p str, NamespacePeers>,
    fallback: Vec<String>,
}

impl Bindings<'_> {
    /// `Workload.authorization_policies` of a workload in `namespace` with `labels`.
    pub fn keys(&self, namespace: &str, labels: &Labels) -> Vec<String> {
        let root = self.root_namespace;
        let mut keys: Vec<String> = match self.peer.get(namespace) {
            None => self.fallback.clone(),
            Some(NamespacePeers {
                constant: Some(k), ..
            }) => k.clone(),
            Some(NamespacePeers { all, .. }) => {
                effective_mtls(all, root, namespace, labels).policy_keys
            }
        };
        let mut scopes = vec![namespace];
        if namespace != root {
            scopes.push(root);
        }
        for ns in scopes {
            if let Some(idx) = self.selectors.get(ns) {
                keys.extend(
                    idx.matching(labels)
                        .filter(|t| t.selects(root, namespace, labels))
                        .map(Translated::key),
                );
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}
