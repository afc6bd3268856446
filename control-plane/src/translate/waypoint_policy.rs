//! AuthorizationPolicies with `targetRefs` -> HttpPolicy resources for waypoints, and which
//! targets each applies to (protocol.md 8.4).
//!
//! Rules, in order:
//! 1. Only policies with `targetRef`/`targetRefs` are for waypoints. Selector, namespace-wide
//!    and mesh-wide policies are ztunnel's and do not apply at the waypoint (Istio's default;
//!    its `ENABLE_LAYERED_WAYPOINT_AUTHORIZATION_POLICIES` also applies selector policies
//!    there, which we do not).
//! 2. Each is translated by `authz`'s `http_authorization_policy` once per change of its
//!    object (the parse is the costly part), and only the namespaces a change touched are
//!    looked at again (`Scope`).
//! 3. Where it attaches: a Gateway reference -> every target of that waypoint; a Service ->
//!    that service's target, whichever waypoint it is bound to; the `istio-waypoint`
//!    GatewayClass (root namespace only, `authz` checks) -> every target of every waypoint.
//!    A ServiceEntry reference attaches nowhere (no ServiceEntry support yet) and a Gateway
//!    reference naming no waypoint Gateway attaches nowhere; both are warnings.
//! 4. A policy that fails translation is an error, reported where every translation error is
//!    (`/debug/config_errors`, the log), and is not sent; its key still attaches where its
//!    references (read leniently from the object) point. Its targets then name a policy the
//!    waypoint never receives, and the waypoint denies their requests until it is fixed:
//!    fail closed, as a broken ALLOW or DENY must not turn into "allow".
//! 5. A target lists every key attached to it, sorted, each once.
//! 6. A CUSTOM policy carries its extension provider, resolved on every translation (the
//!    provider's Service may change without the policy changing); a provider that does not
//!    resolve is an error, and the policy is not sent (rule 4's fail closed).

use std::collections::{BTreeMap, BTreeSet};

use authz::http::HttpAction;
use authz::translate::{Attachment, HttpTranslated, Target, http_authorization_policy};
use kube_source::{Kind, ObjectKey, RawPolicy};
use serde_yaml::Value;

use super::attach::{Attached, place};
use super::http_policy::to_proto;
use super::policy::{has_target_refs, key_of};
use super::waypoint::{WAYPOINT_CLASS, Waypoints};
use super::{Options, Scope, Translation};
use crate::index::Index;
use crate::resources::{Resource, ResourceSet};

/// Each waypoint policy's last translation, reused while its object is unchanged (rule 2).
#[derive(Debug, Default)]
pub struct Memo {
    entries: BTreeMap<ObjectKey, Memoized>,
}

#[derive(Debug)]
struct Memoized {
    value: Value,
    /// Where the references point (rule 3, or rule 4's lenient reading on failure).
    targets: Vec<Target>,
    result: Result<(HttpTranslated, Resource), String>,
}

/// Which policy keys attach to which targets (rules 3-5): each key's one item is itself.
pub type Attachments = Attached<String>;

/// The waypoint policies of one translation.
#[derive(Debug, Default)]
pub struct Parsed {
    pub attachments: Attachments,
    /// The HttpPolicy resources of the policies that translated, by key.
    pub resources: ResourceSet,
}

/// Rules 1-4: brings `memo` up to date for `scope`, reports errors and warnings into `out`,
/// and returns where each policy attaches and the resources to send.
pub fn parse(
    index: &Index,
    opts: &Options,
    scope: &Scope,
    waypoints: &Waypoints<'_>,
    out: &mut Translation,
    memo: &mut Memo,
) -> Parsed {
    let root = opts.root_namespace.as_str();
    match scope {
        Scope::All => {
            let seen = refresh(memo, index.authorization_policies(), root);
            memo.entries.retain(|k, _| seen.contains(k));
        }
        Scope::Namespaces(namespaces) => {
            let mut seen = BTreeSet::new();
            for ns in namespaces {
                let raws =
                    index
                        .of_kind_in(Kind::AuthorizationPolicy, ns)
                        .filter_map(|o| match o {
                            kube_source::Object::AuthorizationPolicy(p) => Some(p),
                            _ => None,
                        });
                seen.extend(refresh(memo, raws, root));
            }
            memo.entries
                .retain(|k, _| !namespaces.contains(&k.namespace) || seen.contains(k));
        }
    }

    let mut parsed = Parsed::default();
    for (object, m) in &memo.entries {
        let key = format!("{}/{}", object.namespace, object.name);
        let mut warnings = Vec::new();
        let mut places = Vec::new();
        for target in &m.targets {
            match place(target, waypoints) {
                Ok(p) => places.push(p),
                Err(w) => warnings.push(w),
            }
        }
        parsed.attachments.insert(&key, vec![key.clone()], places);
        match &m.result {
            Ok((t, resource)) => {
                warnings.extend(t.warnings.iter().cloned());
                // Rule 6.
                let resource = match &t.policy.action {
                    HttpAction::Custom { provider } => {
                        match super::ext_authz::resolve(index, opts, provider) {
                            Ok(e) => {
                                let mut policy = to_proto(&t.policy);
                                policy.ext_authz = Some(e);
                                Resource::new(t.key(), Vec::new(), &policy)
                            }
                            Err(e) => {
                                out.errors.push((object.clone(), e));
                                out.warnings
                                    .extend(warnings.into_iter().map(|w| (object.clone(), w)));
                                continue;
                            }
                        }
                    }
                    _ => resource.clone(),
                };
                parsed.resources.insert(resource.name.clone(), resource);
            }
            Err(e) => out.errors.push((object.clone(), e.clone())),
        }
        out.warnings
            .extend(warnings.into_iter().map(|w| (object.clone(), w)));
    }
    parsed
}

/// Translates again each of `raws` whose object changed; returns the keys of those that are
/// for waypoints (rule 1), whether translated now or before.
fn refresh<'a>(
    memo: &mut Memo,
    raws: impl Iterator<Item = &'a RawPolicy>,
    root: &str,
) -> BTreeSet<ObjectKey> {
    let mut seen = BTreeSet::new();
    for raw in raws {
        let key = key_of(raw, Kind::AuthorizationPolicy);
        if !has_target_refs(raw) {
            memo.entries.remove(&key);
            continue;
        }
        seen.insert(key.clone());
        if memo.entries.get(&key).is_some_and(|m| m.value == raw.value) {
            continue;
        }
        let (targets, result) = match http_authorization_policy(&raw.value, root) {
            Ok(t) => {
                let targets = match &t.attachment {
                    Attachment::Targets(targets) => targets.clone(),
                    // Not reached for a policy with references; applies nowhere (rule 1).
                    Attachment::Selector(_) | Attachment::Namespace | Attachment::Global => {
                        Vec::new()
                    }
                };
                let resource = Resource::new(t.key(), Vec::new(), &to_proto(&t.policy));
                (targets, Ok((t, resource)))
            }
            Err(e) => (lenient_targets(raw, root), Err(e.to_string())),
        };
        memo.entries.insert(
            key,
            Memoized {
                value: raw.value.clone(),
                targets,
                result,
            },
        );
    }
    seen
}

/// Rule 4: the references of a policy that did not translate, read as far as they can be:
/// a kind and a name, in the policy's own namespace.
fn lenient_targets(raw: &RawPolicy, root: &str) -> Vec<Target> {
    let namespace = raw.metadata.namespace.as_str();
    let spec = raw.value.get("spec");
    let one = spec.and_then(|s| s.get("targetRef"));
    let many = spec
        .and_then(|s| s.get("targetRefs"))
        .and_then(Value::as_sequence);
    one.into_iter()
        .chain(many.into_iter().flatten())
        .filter_map(|r| {
            let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            let (kind, name) = (field("kind"), field("name").to_string());
            let other_namespace = !["", namespace].contains(&field("namespace"));
            if name.is_empty() || other_namespace {
                return None;
            }
            let namespace = namespace.to_string();
            match kind {
                "Gateway" => Some(Target::Gateway { namespace, name }),
                "Service" => Some(Target::Service { namespace, name }),
                "GatewayClass" if name == WAYPOINT_CLASS && namespace == root => {
                    Some(Target::GatewayClass)
                }
                _ => None,
            }
        })
        .collect()
}
