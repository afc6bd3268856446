//! PeerAuthentication in ambient mode (protocol.md 9): the effective mTLS mode of a workload
//! and the DENY policies istiod synthesizes so ztunnel rejects plaintext where it is STRICT.
//!
//! One inheritance rule is applied everywhere: a port's UNSET takes the workload mode, the
//! workload's UNSET the namespace mode, the namespace's UNSET the mesh mode, and no mode at all
//! means PERMISSIVE. istiod's own code applies it slightly differently in a few corners (for
//! example a PERMISSIVE workload with a STRICT port under a STRICT mesh and no namespace
//! policy gets the key but no policy); here the synthesized policies always agree with
//! [`effective_mtls`], which the tests check port by port.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use super::{
    ISTIO_SECURITY, Input, Labels, TranslateError, parse_object, scalar_string, selector_matches,
};
use crate::model::{Action, Clause, Match, Policy, Rule, Scope, StringMatch};

const KIND: &str = "PeerAuthentication";

/// Name of the static policy published in the root namespace whenever any
/// PeerAuthentication exists.
pub const STATIC_STRICT_POLICY_NAME: &str = "istio_converted_static_strict";
/// Name prefix of the per-workload policies converted from `portLevelMtls`.
pub const CONVERTED_PEER_AUTHENTICATION_PREFIX: &str = "converted_peer_authentication_";

/// `spec.mtls.mode`. ztunnel-to-ztunnel traffic is always mTLS, so the mode only decides
/// whether plaintext arriving on 15006 is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MtlsMode {
    /// Inherit from the parent (workload → namespace → mesh); PERMISSIVE when nothing is set.
    #[default]
    Unset,
    /// Same effect as PERMISSIVE in ambient mode.
    Disable,
    Permissive,
    /// Plaintext rejected.
    Strict,
}

impl MtlsMode {
    pub fn is_strict(self) -> bool {
        self == MtlsMode::Strict
    }

    fn or(self, parent: MtlsMode) -> MtlsMode {
        if self == MtlsMode::Unset {
            parent
        } else {
            self
        }
    }
}

/// A validated PeerAuthentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub name: String,
    pub namespace: String,
    /// `metadata.creationTimestamp` (RFC 3339 UTC); `""` when absent, which counts as oldest.
    pub creation_timestamp: String,
    /// `spec.selector.matchLabels`; `None` or empty: a namespace-wide (or, in the root
    /// namespace, mesh-wide) policy.
    pub selector: Option<Labels>,
    pub mode: MtlsMode,
    pub port_level_mtls: BTreeMap<u16, MtlsMode>,
}

impl PeerAuthentication {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn is_namespace_wide(&self) -> bool {
        self.selector.as_ref().is_none_or(|s| s.is_empty())
    }

    /// Oldest first; ties broken by name so the choice is stable.
    fn older_than(&self, other: &PeerAuthentication) -> bool {
        (&self.creation_timestamp, &self.name) < (&other.creation_timestamp, &other.name)
    }
}

/// The effective peer authentication of one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadMtls {
    /// Mode for ports without a port-level setting (never `Unset`).
    pub mode: MtlsMode,
    /// Effective mode of each port named by the workload's `portLevelMtls` (never `Unset`).
    pub ports: BTreeMap<u16, MtlsMode>,
    /// Keys to add to the workload's `authorization_policies`.
    pub policy_keys: Vec<String>,
    /// The synthesized policies those keys name.
    pub policies: Vec<Policy>,
}

impl WorkloadMtls {
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }

    pub fn accepts_plaintext(&self, port: u16) -> bool {
        !self.mode_for_port(port).is_strict()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    selector: Option<SelectorSpec>,
    #[serde(default)]
    mtls: Option<ModeSpec>,
    #[serde(default)]
    port_level_mtls: Option<serde_yaml::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectorSpec {
    #[serde(default)]
    match_labels: Option<Labels>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeSpec {
    #[serde(default)]
    mode: Option<String>,
}

/// Parse and validate one PeerAuthentication.
pub fn peer_authentication<'a>(
    input: impl Into<Input<'a>>,
) -> Result<PeerAuthentication, TranslateError> {
    let (obj, ctx) = parse_object::<Spec>(input.into(), KIND, ISTIO_SECURITY)?;
    let mode_of = |m: Option<&ModeSpec>, field: &str| -> Result<MtlsMode, TranslateError> {
        match m.and_then(|m| m.mode.as_deref()) {
            None | Some("UNSET") => Ok(MtlsMode::Unset),
            Some("DISABLE") => Ok(MtlsMode::Disable),
            Some("PERMISSIVE") => Ok(MtlsMode::Permissive),
            Some("STRICT") => Ok(MtlsMode::Strict),
            Some(other) => Err(ctx.err(
                field,
                format!("unknown mode {other:?} (expected UNSET, DISABLE, PERMISSIVE or STRICT)"),
            )),
        }
    };
    let mode = mode_of(obj.spec.mtls.as_ref(), "spec.mtls.mode")?;
    let selector = obj
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone().unwrap_or_default());
    let mut port_level_mtls = BTreeMap::new();
    if let Some(ports) = &obj.spec.port_level_mtls {
        if ports.is_empty() {
            return Err(ctx.err("spec.portLevelMtls", "if set, must have at least one port"));
        }
        if selector.as_ref().is_none_or(|s| s.is_empty()) {
            return Err(ctx.err(
                "spec.portLevelMtls",
                "needs a workload selector (mesh- and namespace-wide policies cannot set it)",
            ));
        }
        for (k, v) in ports {
            let key = scalar_string(k).unwrap_or_else(|| format!("{k:?}"));
            let at = format!("spec.portLevelMtls[{key}]");
            let port = key
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0 && key.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| ctx.err(&at, format!("{key:?} is not a port in 1..65535")))?;
            let spec: Option<ModeSpec> = match v {
                Value::Null => None,
                other => Some(
                    serde_yaml::from_value(other.clone())
                        .map_err(|e| ctx.err(&at, e.to_string()))?,
                ),
            };
            port_level_mtls.insert(port, mode_of(spec.as_ref(), &format!("{at}.mode"))?);
        }
    }
    Ok(PeerAuthentication {
        name: obj.name,
        namespace: obj.namespace,
        creation_timestamp: obj.metadata.creation_timestamp.unwrap_or_default(),
        selector,
        mode,
        port_level_mtls,
    })
}

/// The static DENY policy `<root>/istio_converted_static_strict`: no peer identity → deny.
pub fn static_strict_policy(root_namespace: &str) -> Policy {
    Policy {
        name: STATIC_STRICT_POLICY_NAME.to_string(),
        namespace: root_namespace.to_string(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        dry_run: false,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![no_identity()],
            }],
        }],
    }
}

/// Every Authorization istiod publishes for this set of PeerAuthentications: the static
/// strict policy (when any exists) and one converted policy per workload-selector policy with
/// `portLevelMtls` that needs one.
pub fn peer_authentication_policies(
    all: &[PeerAuthentication],
    root_namespace: &str,
) -> Vec<Policy> {
    if all.is_empty() {
        return Vec::new();
    }
    let mut out = vec![static_strict_policy(root_namespace)];
    let mut converted: Vec<Policy> = all
        .iter()
        .filter_map(|pa| converted_peer_authentication(pa, all, root_namespace))
        .collect();
    converted.sort_by_key(Policy::key);
    out.extend(converted);
    out
}

/// The `converted_peer_authentication_<name>` policy for a workload-selector PeerAuthentication
/// with `portLevelMtls` outside the root namespace, or `None` when it needs none. `all` supplies
/// the namespace and mesh policies it inherits from.
pub fn converted_peer_authentication(
    pa: &PeerAuthentication,
    all: &[PeerAuthentication],
    root_namespace: &str,
) -> Option<Policy> {
    if pa.namespace == root_namespace || pa.is_namespace_wide() || pa.port_level_mtls.is_empty() {
        return None;
    }
    let mode = pa.mode.or(parent_mode(all, root_namespace, &pa.namespace));
    let ports = effective_ports(pa, mode);
    let rules = if mode.is_strict() {
        // Deny plaintext, except on the exempted ports: one rule, AND of its clauses.
        let exempt: Vec<u16> = ports
            .iter()
            .filter(|(_, m)| !m.is_strict())
            .map(|(p, _)| *p)
            .collect();
        if exempt.is_empty() {
            return None;
        }
        let mut clauses = vec![Clause {
            matches: vec![no_identity()],
        }];
        clauses.extend(exempt.into_iter().map(|p| Clause {
            matches: vec![Match {
                not_destination_ports: vec![p],
                ..Default::default()
            }],
        }));
        vec![Rule { clauses }]
    } else {
        // Deny plaintext on each STRICT port: one rule per port.
        let strict: Vec<Rule> = ports
            .iter()
            .filter(|(_, m)| m.is_strict())
            .map(|(p, _)| Rule {
                clauses: vec![Clause {
                    matches: vec![Match {
                        not_principals: vec![StringMatch::Presence],
                        destination_ports: vec![*p],
                        ..Default::default()
                    }],
                }],
            })
            .collect();
        if strict.is_empty() {
            return None;
        }
        strict
    };
    Some(Policy {
        name: format!("{CONVERTED_PEER_AUTHENTICATION_PREFIX}{}", pa.name),
        namespace: pa.namespace.clone(),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        dry_run: false,
        rules,
    })
}

/// The effective mode of a workload and the policy keys istiod lists on it.
///
/// Precedence: the oldest matching workload-selector policy in the workload's namespace, then
/// the oldest namespace-wide policy there, then the oldest namespace-wide policy in the root
/// namespace; `UNSET` inherits; nothing set means PERMISSIVE. Selector policies in the root
/// namespace are ignored.
pub fn effective_mtls(
    all: &[PeerAuthentication],
    root_namespace: &str,
    workload_namespace: &str,
    workload_labels: &Labels,
) -> WorkloadMtls {
    let parent = parent_mode(all, root_namespace, workload_namespace);
    let workload = oldest(all.iter().filter(|pa| {
        pa.namespace == workload_namespace
            && pa.namespace != root_namespace
            && !pa.is_namespace_wide()
            && pa
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, workload_labels))
    }));
    let mode = workload.map_or(parent, |w| w.mode.or(parent));
    let ports = workload
        .map(|w| effective_ports(w, mode))
        .unwrap_or_default();

    let mut policies = Vec::new();
    if let Some(p) = workload.and_then(|w| converted_peer_authentication(w, all, root_namespace)) {
        // It carries the workload's whole plaintext rule, so the static policy is not attached.
        policies.push(p);
    } else if mode.is_strict() {
        policies.push(static_strict_policy(root_namespace));
    }
    WorkloadMtls {
        mode,
        ports,
        policy_keys: policies.iter().map(Policy::key).collect(),
        policies,
    }
}

/// Namespace-wide mode of `namespace`, else the mesh-wide mode, else PERMISSIVE.
fn parent_mode(all: &[PeerAuthentication], root_namespace: &str, namespace: &str) -> MtlsMode {
    let mesh = oldest(
        all.iter()
            .filter(|pa| pa.namespace == root_namespace && pa.is_namespace_wide()),
    );
    let ns = oldest(all.iter().filter(|pa| {
        pa.namespace == namespace && pa.namespace != root_namespace && pa.is_namespace_wide()
    }));
    let mesh_mode = mesh
        .map_or(MtlsMode::Unset, |p| p.mode)
        .or(MtlsMode::Permissive);
    ns.map_or(mesh_mode, |p| p.mode.or(mesh_mode))
}

fn effective_ports(pa: &PeerAuthentication, workload_mode: MtlsMode) -> BTreeMap<u16, MtlsMode> {
    pa.port_level_mtls
        .iter()
        .map(|(p, m)| (*p, m.or(workload_mode)))
        .collect()
}

fn oldest<'a>(it: impl Iterator<Item = &'a PeerAuthentication>) -> Option<&'a PeerAuthentication> {
    it.fold(None, |best, pa| match best {
        Some(b) if !pa.older_than(b) => Some(b),
        _ => Some(pa),
    })
}

fn no_identity() -> Match {
    Match {
        not_principals: vec![StringMatch::Presence],
        ..Default::default()
    }
}
