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
//! 4. A mesh-wide Telemetry (in the root namespace, with no `selector.matchLabels` nor
//!    `targetRef(s)`) with `tracing` decides instead of the mesh config, as in Istio: its
//!    entries that apply to a server's span (not `match.mode: CLIENT`) set, in order, the
//!    provider (a tracing provider of the mesh config; an unknown one: off, with a warning),
//!    `randomSamplingPercentage` and `disableSpanReporting`; what none sets is the default
//!    (`defaultProviders.tracing`, else off; `defaultConfig.tracing.sampling`; reporting on).
//!    Of several, the oldest (then by name) counts, whatever it configures, as Istio picks;
//!    the others get a warning. One that does not convert is a warning, and the mesh config's
//!    tracing stays. A Telemetry for a namespace or a workload is not read (a warning says
//!    so): tracing here is one resource for every waypoint.

use std::net::SocketAddr;

use kube_source::{Kind, Object, ObjectKey, RawPolicy};
use proto::waypoint as pb;
use serde::Deserialize;

use super::Options;
use super::ext_authz::service_ip;
use crate::index::Index;
use crate::mesh_config::{Tracing, TracingKind};

/// Rules 1-4: the resource, the mesh config's warning (a collector that does not resolve),
/// and warnings about Telemetry resources.
pub fn resolve(
    index: &Index,
    opts: &Options,
) -> (
    Option<pb::Tracing>,
    Option<String>,
    Vec<(ObjectKey, String)>,
) {
    let mut warnings = Vec::new();
    let chosen = match telemetry(index, opts, &mut warnings) {
        FromTelemetry::Off => return (Some(off()), None, warnings),
        FromTelemetry::On(t) => t,
        FromTelemetry::Silent => match &opts.mesh.tracing {
            Some(t) => t.clone(),
            None => return (None, None, warnings),
        },
    };
    let (resource, warning) = resolve_collector(index, opts, &chosen);
    (Some(resource), warning, warnings)
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
    /// No mesh-wide Telemetry says anything about tracing: the mesh config decides.
    Silent,
    /// Spans are not reported.
    Off,
    On(Tracing),
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

/// Rule 4: the mesh-wide Telemetry (the oldest selector-less one in the root namespace, as
/// Istio picks it, whatever it configures) and what its tracing decides.
fn telemetry(
    index: &Index,
    opts: &Options,
    warnings: &mut Vec<(ObjectKey, String)>,
) -> FromTelemetry {
    let mut mesh_wide = Vec::new();
    for object in index.of_kind(Kind::Telemetry) {
        let Object::Telemetry(raw) = object else {
            continue;
        };
        let spec = match spec(raw) {
            Ok(spec) => spec,
            Err(e) => {
                warnings.push((object.key(), format!("{e}; not read")));
                continue;
            }
        };
        let m = &raw.metadata;
        let scoped = non_empty(&spec.selector, "matchLabels")
            || spec.target_ref.is_some()
            || spec
                .target_refs
                .as_ref()
                .is_some_and(|r| r.as_sequence().is_none_or(|s| !s.is_empty()));
        if m.namespace == opts.root_namespace && !scoped {
            mesh_wide.push((
                m.creation_timestamp.clone(),
                m.name.clone(),
                object.key(),
                spec,
            ));
        } else if spec.tracing.is_some() {
            warnings.push((
                object.key(),
                format!(
                    "only a mesh-wide Telemetry (in {}, for every workload) sets the \
                     waypoints' tracing; this one's tracing is not read",
                    opts.root_namespace
                ),
            ));
        }
    }
    mesh_wide.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut mesh_wide = mesh_wide.into_iter();
    let Some((_, _, key, spec)) = mesh_wide.next() else {
        return FromTelemetry::Silent;
    };
    for (_, _, later, _) in mesh_wide {
        let why = format!("{key} is older and counts (one mesh-wide Telemetry at a time)");
        warnings.push((later, why));
    }
    // Istio's reading: when the Telemetry has tracing at all, its entries that apply to a
    // server's span (a waypoint's) override field by field, in order; what none sets is the
    // default: `defaultProviders.tracing`, the mesh's sampling, reporting on.
    let entries = match &spec.tracing {
        Some(entries) if !entries.is_empty() => entries,
        _ => return FromTelemetry::Silent,
    };
    let (mut provider, mut percentage, mut disabled) = (None, None, false);
    for e in entries {
        let mode = e.matched.as_ref().and_then(|m| m.mode.as_deref());
        if mode == Some("CLIENT") {
            continue;
        }
        if let Some(p) = e.providers.iter().flatten().next() {
            provider = Some(p.name.as_str());
        }
        percentage = e.random_sampling_percentage.or(percentage);
        disabled = e.disable_span_reporting.unwrap_or(disabled);
    }
    if disabled {
        return FromTelemetry::Off;
    }
    let sampling = match percentage {
        None => opts.mesh.default_sampling_per_million,
        Some(p) if (0.0..=100.0).contains(&p) => (p * 10_000.0).round() as u32,
        Some(p) => {
            let why = format!("randomSamplingPercentage {p} is not a percentage (0-100); not read");
            warnings.push((key, why));
            return FromTelemetry::Silent;
        }
    };
    let (collector, max_tag_length) = match provider {
        Some(p) => match opts.mesh.tracing_providers.get(p) {
            Some(found) => found.clone(),
            None => {
                // As Istio: a provider it cannot find traces nowhere.
                let why = format!(
                    "provider {p:?} is no zipkin or opentelemetry extension provider of the \
                     mesh config; tracing is off"
                );
                warnings.push((key, why));
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
    FromTelemetry::On(Tracing {
        collector,
        sampling_per_million: sampling,
        max_tag_length,
    })
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
