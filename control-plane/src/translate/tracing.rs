//! MeshConfig tracing -> the one `mesh.waypoint.v1.Tracing` resource every waypoint gets,
//! with the collector's service resolved to an address the waypoint dials.
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
//! 4. A mesh-wide Telemetry (in the root namespace, with no `selector` nor `targetRef(s)`)
//!    with a `tracing` entry wins over the mesh config's choice, as in Istio: its first entry's
//!    first provider (a tracing provider of the mesh config; none named: the mesh config's own
//!    choice), its `randomSamplingPercentage` (else `defaultConfig.tracing.sampling`);
//!    `disableSpanReporting: true` exports nothing (exporter NONE). Of several, the oldest
//!    (then by name) counts, with a warning. One that does not convert is a warning, and the
//!    mesh config's tracing stays. A Telemetry for a namespace or a workload is not read (a
//!    warning says so): tracing here is one resource for every waypoint.

use std::net::SocketAddr;

use kube_source::{Kind, Object, RawPolicy};
use proto::waypoint as pb;
use serde::Deserialize;

use super::Options;
use super::ext_authz::service_ip;
use crate::index::Index;
use crate::mesh_config::{Tracing, TracingKind};

/// Rules 1-4: the resource, and warnings (a collector that does not resolve, a Telemetry
/// that is not read).
pub fn resolve(index: &Index, opts: &Options) -> (Option<pb::Tracing>, Vec<String>) {
    let mut warnings = Vec::new();
    let chosen = match telemetry(index, opts, &mut warnings) {
        Some(chosen) => chosen,
        None => opts.mesh.tracing.clone(),
    };
    let Some(t) = chosen else {
        return match off_by_telemetry(index, opts) {
            true => (Some(off()), warnings),
            false => (None, warnings),
        };
    };
    let (resource, warning) = resolve_collector(index, opts, &t);
    warnings.extend(warning);
    (Some(resource), warnings)
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
    tracing: Vec<TracingEntry>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TracingEntry {
    #[serde(default)]
    providers: Vec<ProviderRef>,
    random_sampling_percentage: Option<f64>,
    #[serde(default)]
    disable_span_reporting: bool,
}

#[derive(Deserialize, Default)]
struct ProviderRef {
    #[serde(default)]
    name: String,
}

fn spec(raw: &RawPolicy) -> Result<TelemetrySpec, String> {
    let spec = raw.value.get("spec").cloned().unwrap_or_default();
    serde_yaml::from_value::<Option<TelemetrySpec>>(spec)
        .map(Option::unwrap_or_default)
        .map_err(|e| format!("spec: {e}"))
}

/// The Telemetry resources of rule 4 that say something about tracing, oldest first.
fn mesh_wide(
    index: &Index,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Vec<(String, TelemetrySpec)> {
    let mut found = Vec::new();
    for object in index.of_kind(Kind::Telemetry) {
        let Object::Telemetry(raw) = object else {
            continue;
        };
        let m = &raw.metadata;
        let name = format!("Telemetry {}/{}", m.namespace, m.name);
        let spec = match spec(raw) {
            Ok(spec) => spec,
            Err(e) => {
                warnings.push(format!("{name}: {e}; not read"));
                continue;
            }
        };
        if spec.tracing.is_empty() {
            continue;
        }
        let scoped =
            spec.selector.is_some() || spec.target_ref.is_some() || spec.target_refs.is_some();
        if m.namespace != opts.root_namespace || scoped {
            warnings.push(format!(
                "{name}: only a mesh-wide Telemetry (in {}, for every workload) sets the \
                 waypoints' tracing; this one is not read",
                opts.root_namespace
            ));
            continue;
        }
        found.push((m.creation_timestamp.clone(), name, spec));
    }
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|f| f.1.as_str()).collect();
        warnings.push(format!(
            "{} mesh-wide Telemetry resources set tracing ({}); the oldest counts",
            found.len(),
            names.join(", ")
        ));
    }
    found
        .into_iter()
        .map(|(_, name, spec)| (name, spec))
        .collect()
}

/// Rule 4: `Some(choice)` when a mesh-wide Telemetry decides (`Some(None)`: off), `None` when
/// the mesh config does.
fn telemetry(index: &Index, opts: &Options, warnings: &mut Vec<String>) -> Option<Option<Tracing>> {
    let (name, spec) = mesh_wide(index, opts, warnings).into_iter().next()?;
    let entry = spec.tracing.first()?;
    if entry.disable_span_reporting {
        return Some(None);
    }
    let sampling = match entry.random_sampling_percentage {
        None => opts.mesh.default_sampling_per_million,
        Some(p) if (0.0..=100.0).contains(&p) => (p * 10_000.0).round() as u32,
        Some(p) => {
            warnings.push(format!(
                "{name}: randomSamplingPercentage {p} is not a percentage (0-100); not read"
            ));
            return None;
        }
    };
    let provider = entry.providers.first().map(|p| p.name.as_str());
    let (collector, max_tag_length) = match provider {
        Some(p) => match opts.mesh.tracing_providers.get(p) {
            Some(found) => found.clone(),
            None => {
                warnings.push(format!(
                    "{name}: provider {p:?} is no zipkin or opentelemetry extension provider \
                     of the mesh config; not read"
                ));
                return None;
            }
        },
        None => match &opts.mesh.tracing {
            Some(t) => (t.collector.clone(), t.max_tag_length),
            // Nowhere to send spans: as if the Telemetry were not there.
            None => return Some(None),
        },
    };
    Some(Some(Tracing {
        collector,
        sampling_per_million: sampling,
        max_tag_length,
    }))
}

/// Whether rule 4 turned tracing off (so the resource says NONE rather than nothing).
fn off_by_telemetry(index: &Index, opts: &Options) -> bool {
    let mut ignored = Vec::new();
    mesh_wide(index, opts, &mut ignored)
        .first()
        .and_then(|(_, spec)| spec.tracing.first())
        .is_some_and(|e| e.disable_span_reporting)
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
