//! MeshConfig tracing and Telemetry -> the `mesh.waypoint.v1.Tracing` resource: the mesh's,
//! and a waypoint's own where Telemetry sets one, with the collector's service resolved to an
//! address the waypoint dials.
//!
//! Rules, in order:
//! 1. No tracing in the mesh config: no resource (a waypoint keeps its own flags).
//! 2. The service is resolved as ext_authz's is (`ext_authz::service_ip`: an IP literal as it
//!    is, else the Service's first VIP), after Istio's short forms are made whole:
//!    `<name>.<namespace>` and `<name>.<namespace>.svc` mean
//!    `<name>.<namespace>.svc.<domain suffix>`.
//! 3. A service that does not resolve is a warning, and the resource says exporter NONE:
//!    tracing is off rather than left as the waypoint's flags had it, since the mesh config
//!    asked for another collector. Resolved again at every translation, so the Service
//!    appearing later turns tracing on.
//! 4. A mesh-wide Telemetry (in the root namespace, with no `selector.matchLabels` nor
//!    `targetRef(s)`) with `tracing` decides instead of the mesh config, as in Istio: its
//!    entries that apply to a server's span (not `match.mode: CLIENT`) set, in order, the
//!    provider (a tracing provider of the mesh config; an unknown one: off, with a warning),
//!    `randomSamplingPercentage` and `disableSpanReporting`; what none sets is the default
//!    (`defaultProviders.tracing`, else off; `defaultConfig.tracing.sampling`; reporting on).
//!    Of several, the oldest (then by name) counts, whatever it configures, as Istio picks;
//!    the others get a warning. One that does not convert is a warning, and the mesh config's
//!    tracing stays.
//! 5. A waypoint's own tracing, as Istio merges Telemetry from the mesh to the workload: the
//!    entries of the mesh-wide Telemetry, then of its namespace's (no selector nor
//!    targetRefs; the oldest), then of its own (`targetRefs` naming its Gateway among
//!    others; the oldest; a selector never scopes a waypoint's, as in Istio) are read as rule
//!    4 reads one; a bad field is skipped with a warning, the rest read. A waypoint with such
//!    a Telemetry gets its own Tracing resource (same name, its content); the others the
//!    mesh's. A Telemetry with tracing for workloads that are no waypoint (only waypoints
//!    trace here), or for no waypoint there is, gets a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use kube_source::{Kind, Object, ObjectKey, RawPolicy};
use proto::waypoint as pb;
use serde::Deserialize;

use super::Options;
use super::ext_authz::service_ip;
use super::waypoint::WAYPOINT_CLASS;
use crate::index::Index;
use crate::mesh_config::{Tracing, TracingKind};
use crate::resources::WaypointKey;

/// What [`resolve`] gives.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The mesh's Tracing (rules 1-4), none when nothing configures tracing.
    pub mesh: Option<pb::Tracing>,
    /// Rule 5: the waypoints whose namespace's or own Telemetry makes their tracing differ.
    pub waypoints: BTreeMap<WaypointKey, pb::Tracing>,
    /// The mesh config's warning (a collector that does not resolve).
    pub mesh_warning: Option<String>,
    /// Warnings about Telemetry resources.
    pub warnings: Vec<(ObjectKey, String)>,
}

/// Rules 1-5.
pub fn resolve(index: &Index, opts: &Options) -> Resolved {
    let mut out = Resolved::default();
    let all = candidates(index, &mut out.warnings);
    let levels = levels(index, opts, &all, &mut out.warnings);
    let decided = decide(&[levels.root], opts, &mut out.warnings);
    let (mesh, warning, _) = from_decision(index, opts, decided);
    (out.mesh, out.mesh_warning) = (mesh, warning);
    for (waypoint, [namespace, own]) in levels.waypoints {
        let decided = decide(&[levels.root, namespace, own], opts, &mut out.warnings);
        let (tracing, warning, chooser) = from_decision(index, opts, decided);
        // A collector that does not resolve is told on the Telemetry that chose it, or as
        // the mesh config's.
        match (warning, chooser) {
            (Some(w), Some(key)) => out.warnings.push((key, w)),
            (Some(w), None) if out.mesh_warning.is_none() => out.mesh_warning = Some(w),
            _ => {}
        }
        if let Some(t) = tracing {
            out.waypoints.insert(waypoint, t);
        }
    }
    // A Telemetry read for several waypoints (the mesh-wide one, a namespace's) is warned
    // about once.
    let mut seen = BTreeSet::new();
    out.warnings.retain(|w| seen.insert(w.clone()));
    out
}

/// The resource a decision makes, its collector's warning, and the Telemetry that chose its
/// provider.
fn from_decision(
    index: &Index,
    opts: &Options,
    decided: FromTelemetry,
) -> (Option<pb::Tracing>, Option<String>, Option<ObjectKey>) {
    let (chosen, chooser) = match decided {
        FromTelemetry::Off => return (Some(off()), None, None),
        FromTelemetry::On(t, chooser) => (t, chooser),
        FromTelemetry::Silent => match &opts.mesh.tracing {
            Some(t) => (t.clone(), None),
            None => return (None, None, None),
        },
    };
    let (resource, warning) = resolve_collector(index, opts, &chosen);
    (Some(resource), warning, chooser)
}

/// Exporter NONE: tracing off.
fn off() -> pb::Tracing {
    pb::Tracing {
        exporter: pb::tracing::Exporter::None as i32,
        ..Default::default()
    }
}

/// Rules 2-3 for the chosen tracing.
fn resolve_collector(index: &Index, opts: &Options, t: &Tracing) -> (pb::Tracing, Option<String>) {
    let c = &t.collector;
    let mut out = pb::Tracing {
        exporter: pb::tracing::Exporter::None as i32,
        address: String::new(),
        sampling: f64::from(t.sampling_per_million) / 10_000.0,
        max_tag_length: t.max_tag_length,
        provider: c.provider.clone(),
        otlp_http: c.http.as_ref().map(|h| pb::tracing::OtlpHttp {
            path: h.path.clone(),
            timeout_ms: h.timeout.map_or(0, |t| {
                u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
            }),
            headers: h
                .headers
                .iter()
                .map(|(name, value)| pb::tracing::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
    };
    let service = whole(&c.service, &opts.domain_suffix);
    match service_ip(index, opts, &service) {
        Ok(ip) => {
            out.exporter = match c.kind {
                TracingKind::Zipkin => pb::tracing::Exporter::Zipkin,
                TracingKind::OtlpGrpc => pb::tracing::Exporter::OtlpGrpc,
                TracingKind::OtlpHttp => pb::tracing::Exporter::OtlpHttp,
            } as i32;
            out.address = SocketAddr::new(ip, c.port).to_string();
            (out, None)
        }
        Err(e) => {
            let which = match c.provider.as_str() {
                "" => "defaultConfig.tracing.zipkin".to_string(),
                p => format!("tracing provider {p:?}"),
            };
            let warning = format!(
                "{which}: service {:?}: {e}; spans are not exported",
                c.service
            );
            (out, Some(warning))
        }
    }
}

/// A Telemetry's `spec`, what rule 4 reads of it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TelemetrySpec {
    selector: Option<serde_yaml::Value>,
    target_ref: Option<serde_yaml::Value>,
    target_refs: Option<serde_yaml::Value>,
    #[serde(default)]
    tracing: Option<Vec<TracingEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TracingEntry {
    #[serde(default)]
    providers: Option<Vec<ProviderRef>>,
    random_sampling_percentage: Option<f64>,
    disable_span_reporting: Option<bool>,
    #[serde(rename = "match")]
    matched: Option<TracingMatch>,
}

#[derive(Deserialize, Default)]
struct TracingMatch {
    mode: Option<String>,
}

#[derive(Deserialize, Default)]
struct ProviderRef {
    #[serde(default)]
    name: String,
}

/// What rule 4 decides.
enum FromTelemetry {
    /// No Telemetry says anything about tracing: the mesh config decides.
    Silent,
    /// Spans are not reported.
    Off,
    /// This tracing; the Telemetry that named its provider (none: the default provider).
    On(Tracing, Option<ObjectKey>),
}

/// Whether `value` has a non-empty map at `field` (`selector.matchLabels`).
fn non_empty(value: &Option<serde_yaml::Value>, field: &str) -> bool {
    value
        .as_ref()
        .and_then(|v| v.get(field))
        .and_then(|m| m.as_mapping())
        .is_some_and(|m| !m.is_empty())
}

fn spec(raw: &RawPolicy) -> Result<TelemetrySpec, String> {
    let spec = raw.value.get("spec").cloned().unwrap_or_default();
    serde_yaml::from_value::<Option<TelemetrySpec>>(spec)
        .map(Option::unwrap_or_default)
        .map_err(|e| format!("spec: {e}"))
}

/// Which workloads a Telemetry is for (rule 5).
#[derive(Debug, PartialEq)]
enum Scope {
    /// Every workload of its namespace (of the mesh, in the root namespace).
    Namespace,
    /// The waypoints of these Gateways in its namespace.
    Waypoints(Vec<String>),
    /// Workloads that are no waypoint.
    Others,
}

/// Rule 5: what a Telemetry's `selector` or `targetRef(s)` scope it to.
fn scope(spec: &TelemetrySpec) -> Scope {
    let refs: Vec<&serde_yaml::Value> = match (&spec.target_refs, &spec.target_ref) {
        (Some(refs), _) => match refs.as_sequence() {
            Some(refs) => refs.iter().collect(),
            // Not a list: not read as one, and not as no scope either.
            None => return Scope::Others,
        },
        (None, Some(one)) => vec![one],
        (None, None) => Vec::new(),
    };
    if !refs.is_empty() {
        // The Gateways it names, whatever else it names too.
        let gateways: Vec<String> = refs
            .iter()
            .filter_map(|r| {
                let field = |f: &str| r.get(f).and_then(|v| v.as_str()).unwrap_or_default();
                let gateway = field("kind") == "Gateway"
                    && matches!(field("group"), "" | "gateway.networking.k8s.io");
                gateway.then(|| field("name").to_string())
            })
            .collect();
        return match gateways.is_empty() {
            true => Scope::Others,
            false => Scope::Waypoints(gateways),
        };
    }
    // A selector never scopes a waypoint's Telemetry, in Istio: only targetRefs do.
    match non_empty(&spec.selector, "matchLabels") {
        true => Scope::Others,
        false => Scope::Namespace,
    }
}

/// One Telemetry, read.
struct Candidate {
    /// Creation time, then name: the older counts (Istio's pick).
    age: (String, String),
    key: ObjectKey,
    scope: Scope,
    spec: TelemetrySpec,
}

/// Every Telemetry that reads, oldest first; a warning for each that does not.
fn candidates(index: &Index, warnings: &mut Vec<(ObjectKey, String)>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for object in index.of_kind(Kind::Telemetry) {
        let Object::Telemetry(raw) = object else {
            continue;
        };
        match spec(raw) {
            Ok(spec) => out.push(Candidate {
                age: (
                    raw.metadata.creation_timestamp.clone(),
                    raw.metadata.name.clone(),
                ),
                key: object.key(),
                scope: scope(&spec),
                spec,
            }),
            Err(e) => warnings.push((object.key(), format!("{e}; not read"))),
        }
    }
    out.sort_by(|a, b| a.age.cmp(&b.age));
    out
}

/// The oldest of `found` counts; the others are warned about (one at a time per scope).
fn oldest<'a>(
    mut found: impl Iterator<Item = &'a Candidate>,
    what: &str,
    warnings: &mut Vec<(ObjectKey, String)>,
) -> Option<&'a Candidate> {
    let first = found.next()?;
    for later in found {
        let why = format!(
            "{} is older and counts (one {what} Telemetry at a time)",
            first.key
        );
        warnings.push((later.key.clone(), why));
    }
    Some(first)
}

/// Rules 4-5: the tracing of the mesh, and of each waypoint a Telemetry of its namespace or
/// for it changes.
struct Levels<'a> {
    root: Option<&'a Candidate>,
    /// Per waypoint Gateway: its namespace's Telemetry, and its own (either may be missing).
    waypoints: BTreeMap<WaypointKey, [Option<&'a Candidate>; 2]>,
}

fn levels<'a>(
    index: &Index,
    opts: &Options,
    all: &'a [Candidate],
    warnings: &mut Vec<(ObjectKey, String)>,
) -> Levels<'a> {
    let root_ns = opts.root_namespace.as_str();
    let namespace_wide = |ns: &str| -> Vec<&'a Candidate> {
        all.iter()
            .filter(|c| c.key.namespace == ns && c.scope == Scope::Namespace)
            .collect()
    };
    let own = |ns: &str, name: &str| -> Vec<&'a Candidate> {
        all.iter()
            .filter(|c| c.key.namespace == ns)
            .filter(|c| matches!(&c.scope, Scope::Waypoints(n) if n.iter().any(|n| n == name)))
            .collect()
    };
    let root = oldest(namespace_wide(root_ns).into_iter(), "mesh-wide", warnings);
    let mut waypoints = BTreeMap::new();
    let mut used: BTreeSet<&ObjectKey> = BTreeSet::new();
    for gw in index.gateways() {
        if gw.spec.gateway_class_name != WAYPOINT_CLASS {
            continue;
        }
        let (ns, name) = (gw.metadata.namespace.as_str(), gw.metadata.name.as_str());
        let (wide, mine) = (namespace_wide(ns), own(ns, name));
        // Those that lose to an older one were warned about as such.
        used.extend(wide.iter().chain(&mine).map(|c| &c.key));
        let namespace = match ns == root_ns {
            true => None,
            false => oldest(wide.into_iter(), "namespace-wide", warnings),
        };
        let own = oldest(mine.into_iter(), "per-waypoint", warnings);
        if namespace.is_some() || own.is_some() {
            let key = WaypointKey {
                namespace: ns.to_string(),
                name: name.to_string(),
            };
            waypoints.insert(key, [namespace, own]);
        }
    }
    // Rule 5's warnings: tracing nothing here reads.
    for c in all {
        let applies = match &c.scope {
            Scope::Namespace => c.key.namespace == root_ns || used.contains(&c.key),
            Scope::Waypoints(_) => used.contains(&c.key),
            Scope::Others => false,
        };
        if c.spec.tracing.is_some() && !applies {
            let why = match c.scope {
                Scope::Others => "selects no waypoint (only waypoints trace here)",
                _ => "applies to no waypoint of the mesh now",
            };
            warnings.push((c.key.clone(), format!("{why}; its tracing is not read")));
        }
    }
    Levels { root, waypoints }
}

/// Rule 4: what the tracing entries of `levels` (mesh-wide first, the most specific last)
/// decide, field by field.
fn decide(
    levels: &[Option<&Candidate>],
    opts: &Options,
    warnings: &mut Vec<(ObjectKey, String)>,
) -> FromTelemetry {
    // Istio's reading: the entries that apply to a server's span (a waypoint's) override
    // field by field, in order; what none sets is the default: `defaultProviders.tracing`,
    // the mesh's sampling, reporting on.
    let (mut provider, mut percentage, mut disabled) = (None, None, false);
    let mut any = false;
    for c in levels.iter().flatten() {
        for e in c.spec.tracing.iter().flatten() {
            any = true;
            let mode = e.matched.as_ref().and_then(|m| m.mode.as_deref());
            if mode == Some("CLIENT") {
                continue;
            }
            if let Some(p) = e.providers.iter().flatten().next() {
                provider = Some((p.name.as_str(), &c.key));
            }
            match e.random_sampling_percentage {
                Some(p) if (0.0..=100.0).contains(&p) => percentage = Some(p),
                Some(p) => {
                    let why = format!(
                        "randomSamplingPercentage {p} is not a percentage (0-100); not read"
                    );
                    warnings.push((c.key.clone(), why));
                }
                None => {}
            }
            disabled = e.disable_span_reporting.unwrap_or(disabled);
        }
    }
    if !any {
        return FromTelemetry::Silent;
    }
    if disabled {
        return FromTelemetry::Off;
    }
    let sampling = match percentage {
        None => opts.mesh.default_sampling_per_million,
        Some(p) => (p * 10_000.0).round() as u32,
    };
    let (collector, max_tag_length) = match provider {
        Some((p, key)) => match opts.mesh.tracing_providers.get(p) {
            Some(found) => found.clone(),
            None => {
                // As Istio: a provider it cannot find traces nowhere.
                let why = format!(
                    "provider {p:?} is no zipkin or opentelemetry extension provider of the \
                     mesh config; tracing is off"
                );
                warnings.push((key.clone(), why));
                return FromTelemetry::Off;
            }
        },
        // The default provider (not `defaultConfig.tracing.zipkin`, which Telemetry replaces);
        // none: off.
        None => match &opts.mesh.tracing {
            Some(t) if !t.collector.provider.is_empty() => (t.collector.clone(), t.max_tag_length),
            _ => return FromTelemetry::Off,
        },
    };
    let chooser = provider.map(|(_, key)| key.clone());
    let tracing = Tracing {
        collector,
        sampling_per_million: sampling,
        max_tag_length,
    };
    FromTelemetry::On(tracing, chooser)
}

/// Rule 2: `name.ns` and `name.ns.svc` made `name.ns.svc.<suffix>`; anything else as it is.
fn whole(service: &str, suffix: &str) -> String {
    let (prefix, host) = match service.split_once('/') {
        Some((ns, host)) => (format!("{ns}/"), host),
        None => (String::new(), service),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    match labels.as_slice() {
        [name, ns] if !is_ip && !name.is_empty() && !ns.is_empty() => {
            format!("{prefix}{name}.{ns}.svc.{suffix}")
        }
        [name, ns, "svc"] if !name.is_empty() && !ns.is_empty() => {
            format!("{prefix}{name}.{ns}.svc.{suffix}")
        }
        _ => service.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_are_made_whole() {
        let rows = [
            (
                "zipkin.istio-system",
                "zipkin.istio-system.svc.cluster.local",
            ),
            (
                "zipkin.istio-system.svc",
                "zipkin.istio-system.svc.cluster.local",
            ),
            (
                "zipkin.istio-system.svc.cluster.local",
                "zipkin.istio-system.svc.cluster.local",
            ),
            (
                "istio-system/zipkin.istio-system",
                "istio-system/zipkin.istio-system.svc.cluster.local",
            ),
            ("10.96.0.9", "10.96.0.9"),
            ("fd00::9", "fd00::9"),
            ("zipkin", "zipkin"),
            ("collector.example.com", "collector.example.com"),
        ];
        for (given, want) in rows {
            assert_eq!(whole(given, "cluster.local"), want, "{given}");
        }
    }
}
