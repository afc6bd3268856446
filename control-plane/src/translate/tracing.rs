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

use std::net::SocketAddr;

use proto::waypoint as pb;

use super::Options;
use super::ext_authz::service_ip;
use crate::index::Index;
use crate::mesh_config::TracingKind;

/// Rules 1-3: the resource, and the warning when its collector does not resolve.
pub fn resolve(index: &Index, opts: &Options) -> (Option<pb::Tracing>, Option<String>) {
    let Some(t) = &opts.mesh.tracing else {
        return (None, None);
    };
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
            (Some(out), None)
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
            (Some(out), Some(warning))
        }
    }
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
