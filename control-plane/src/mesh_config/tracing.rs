//! MeshConfig's tracing: where a waypoint's spans go and how many traces it starts sampled.
//!
//! Rules, in order:
//! 1. A `zipkin` or `opentelemetry` extension provider needs a `name` (unique among all
//!    providers), a `service` and a `port` (1-65535); `maxTagLength` is optional (Istio's
//!    default, 256). The `opentelemetry` provider is exported over OTLP/gRPC, or over
//!    OTLP/HTTP (protobuf) when it has `http`: `path` (default `/v1/traces`, else a path
//!    starting with `/`), `timeout` (a duration as for ext_authz; default 5 s) and `headers`
//!    (valid `name` and `value`; Envoy's `envoyHeader` formats and the headers the export's
//!    own framing sets, such as `content-type` and `host`, are refused).
//! 2. `defaultProviders.tracing` names the provider in use (the first name; Istio uses one);
//!    it must be a tracing provider of this file. It wins over `defaultConfig.tracing.zipkin`.
//! 3. Else `defaultConfig.tracing.zipkin.address` (`host:port`, as Istio writes it) is a
//!    Zipkin collector; `maxPathTagLength` bounds the URL tag.
//! 4. `defaultConfig.tracing.sampling` is a percentage, 0-100, default 1 (Istio's
//!    `PILOT_TRACE_SAMPLING`), kept in millionths of traces so the config stays comparable.
//! 5. No provider and no Zipkin address: no tracing from meshd (a waypoint keeps its flags).
//! 6. Service names are resolved at translation (`translate::tracing`), not here.

use serde::Deserialize;

/// How spans are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracingKind {
    /// Zipkin v2 JSON over HTTP.
    Zipkin,
    /// OTLP over gRPC.
    OtlpGrpc,
    /// OTLP over HTTP, protobuf-encoded.
    OtlpHttp,
}

/// `opentelemetry.http` (rule 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpHttp {
    pub path: String,
    /// `None`: the waypoint's default.
    pub timeout: Option<std::time::Duration>,
    pub headers: Vec<(String, String)>,
}

/// The collector a mesh's tracing sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    /// The extension provider's name; empty for `defaultConfig.tracing.zipkin`.
    pub provider: String,
    pub kind: TracingKind,
    /// As Istio writes it: a hostname (`zipkin.istio-system.svc.cluster.local`, or short
    /// forms), optionally `<namespace>/` first, or an IP.
    pub service: String,
    pub port: u16,
    /// With [`TracingKind::OtlpHttp`].
    pub http: Option<OtlpHttp>,
}

/// Tracing as MeshConfig configures it (rules 2-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    pub collector: Collector,
    /// Millionths of new traces sampled (rule 4).
    pub sampling_per_million: u32,
    /// Longest tag value kept; 0: the default.
    pub max_tag_length: u32,
}

/// Istio's default `sampling`: 1%.
pub const DEFAULT_SAMPLING_PER_MILLION: u32 = 10_000;

/// `zipkin` and `opentelemetry` providers' fields.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawProvider {
    #[serde(default)]
    service: String,
    #[serde(default)]
    port: u32,
    #[serde(default)]
    max_tag_length: u32,
    /// `opentelemetry.http`: OTLP over HTTP.
    http: Option<RawOtlpHttp>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawOtlpHttp {
    #[serde(default)]
    path: String,
    timeout: Option<String>,
    #[serde(default)]
    headers: Vec<RawHeader>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawHeader {
    #[serde(default)]
    name: String,
    value: Option<String>,
    envoy_header: Option<String>,
}

/// `defaultConfig` (Istio's ProxyConfig), only its tracing.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawProxyConfig {
    tracing: Option<RawTracing>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawTracing {
    zipkin: Option<RawZipkin>,
    sampling: Option<f64>,
    #[serde(default)]
    max_path_tag_length: u32,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawZipkin {
    #[serde(default)]
    address: String,
}

/// `defaultProviders`, only its tracing.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDefaultProviders {
    #[serde(default)]
    tracing: Vec<String>,
}

/// A provider's tracing collector (rule 1), if it is of a tracing kind.
pub(super) fn provider(
    name: &str,
    zipkin: Option<&RawProvider>,
    otel: Option<&RawProvider>,
) -> Result<Option<(Collector, u32)>, String> {
    let (kind, p) = match (zipkin, otel) {
        (Some(p), None) => (TracingKind::Zipkin, p),
        (None, Some(p)) if p.http.is_some() => (TracingKind::OtlpHttp, p),
        (None, Some(p)) => (TracingKind::OtlpGrpc, p),
        (Some(_), Some(_)) => return Err("both zipkin and opentelemetry".into()),
        (None, None) => return Ok(None),
    };
    if name.is_empty() {
        return Err("name is required".into());
    }
    if p.service.is_empty() {
        return Err("service is required".into());
    }
    let http = match &p.http {
        Some(h) if kind == TracingKind::OtlpHttp => Some(otlp_http(h)?),
        _ => None,
    };
    let port = u16::try_from(p.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is not 1-65535", p.port))?;
    let collector = Collector {
        provider: name.to_string(),
        kind,
        service: p.service.clone(),
        port,
        http,
    };
    Ok(Some((collector, p.max_tag_length)))
}

/// Rule 1's `http`.
fn otlp_http(h: &RawOtlpHttp) -> Result<OtlpHttp, String> {
    let path = match h.path.trim() {
        "" => "/v1/traces".to_string(),
        p if p.starts_with('/') && http::uri::PathAndQuery::try_from(p).is_ok() => p.to_string(),
        p => return Err(format!("http.path {p:?} must be a path starting with /")),
    };
    let timeout = h
        .timeout
        .as_deref()
        .map(super::parse_duration)
        .transpose()
        .map_err(|e| format!("http.timeout: {e}"))?;
    let headers = h
        .headers
        .iter()
        .map(|hd| {
            if hd.envoy_header.is_some() {
                return Err(format!(
                    "http.headers {:?}: envoyHeader is not supported (give a value)",
                    hd.name
                ));
            }
            let name = http::HeaderName::from_bytes(hd.name.as_bytes());
            let value = hd.value.as_deref().map(http::HeaderValue::from_str);
            match (name, value) {
                (Ok(n), _) if is_framing(&n) => Err(format!(
                    "http.headers {:?}: the exporter sets that header itself",
                    hd.name
                )),
                (Ok(_), Some(Ok(_))) => Ok((hd.name.clone(), hd.value.clone().unwrap_or_default())),
                _ => Err(format!(
                    "http.headers {:?}: not a header name and value",
                    hd.name
                )),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(OtlpHttp {
        path,
        timeout,
        headers,
    })
}

/// Headers an export's own framing decides: a provider may not set them.
fn is_framing(name: &http::HeaderName) -> bool {
    use http::header;
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::UPGRADE,
        header::TRAILER,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Rule 4: `defaultConfig.tracing.sampling` in millionths.
pub(super) fn sampling(default_config: Option<&RawProxyConfig>) -> Result<u32, String> {
    match default_config
        .and_then(|d| d.tracing.as_ref())
        .and_then(|t| t.sampling)
    {
        None => Ok(DEFAULT_SAMPLING_PER_MILLION),
        Some(s) if (0.0..=100.0).contains(&s) => Ok((s * 10_000.0).round() as u32),
        Some(s) => Err(format!(
            "defaultConfig.tracing.sampling {s} is not a percentage (0-100)"
        )),
    }
}

/// Rules 2-5, once every provider is read (`providers`: name -> collector and tag length).
pub(super) fn select(
    default_config: Option<&RawProxyConfig>,
    defaults: Option<&RawDefaultProviders>,
    providers: &std::collections::BTreeMap<String, (Collector, u32)>,
) -> Result<Option<Tracing>, String> {
    let t = default_config.and_then(|d| d.tracing.as_ref());
    let sampling = sampling(default_config)?;
    if let Some(name) = defaults.and_then(|d| d.tracing.first()) {
        let (collector, max_tag_length) = providers.get(name).cloned().ok_or_else(|| {
            format!(
                "defaultProviders.tracing names {name:?}, which is no zipkin or opentelemetry \
                 extension provider"
            )
        })?;
        return Ok(Some(Tracing {
            collector,
            sampling_per_million: sampling,
            max_tag_length,
        }));
    }
    let Some(address) = t
        .and_then(|t| t.zipkin.as_ref())
        .map(|z| z.address.trim())
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| {
            format!("defaultConfig.tracing.zipkin.address {address:?} is not host:port")
        })?;
    // `[::1]:9411`: the brackets are the address's, not the host's.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Some(Tracing {
        collector: Collector {
            provider: String::new(),
            kind: TracingKind::Zipkin,
            service: host.to_string(),
            port,
            http: None,
        },
        sampling_per_million: sampling,
        max_tag_length: t.map_or(0, |t| t.max_path_tag_length),
    }))
}

#[cfg(test)]
mod tests {
    use crate::mesh_config::MeshConfig;

    use super::*;

    fn zipkin(service: &str, port: u16, provider: &str) -> Collector {
        Collector {
            provider: provider.into(),
            kind: TracingKind::Zipkin,
            service: service.into(),
            port,
            http: None,
        }
    }

    #[test]
    fn tracing_settings_are_read_as_istio_writes_them() {
        let providers = "extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317, maxTagLength: 99}
- name: zipkin-provider
  zipkin: {service: zipkin.istio-system, port: 9411}
- name: authz
  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}
- name: otel-http
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4318
    http:
      timeout: 2s
      headers: [{name: x-api-key, value: k1}]
- name: otel-http-path
  opentelemetry: {service: c, port: 4318, http: {path: /otlp/v1/traces}}
";
        let rows: Vec<(&str, String, Option<Tracing>)> = vec![
            ("nothing", String::new(), None),
            (
                "sampling alone exports nowhere",
                "defaultConfig: {tracing: {sampling: 50}}".into(),
                None,
            ),
            (
                "defaultConfig zipkin, default sampling",
                "defaultConfig:\n  tracing:\n    zipkin: {address: zipkin.istio-system:9411}\n"
                    .into(),
                Some(Tracing {
                    collector: zipkin("zipkin.istio-system", 9411, ""),
                    sampling_per_million: 10_000,
                    max_tag_length: 0,
                }),
            ),
            (
                "defaultConfig zipkin with sampling and tag length",
                "defaultConfig:\n  tracing:\n    sampling: 12.5\n    maxPathTagLength: 64\n    \
                 zipkin: {address: '10.96.0.9:9411'}\n"
                    .into(),
                Some(Tracing {
                    collector: zipkin("10.96.0.9", 9411, ""),
                    sampling_per_million: 125_000,
                    max_tag_length: 64,
                }),
            ),
            (
                "an IPv6 literal",
                "defaultConfig: {tracing: {zipkin: {address: '[fd00::9]:9411'}, sampling: 0}}"
                    .into(),
                Some(Tracing {
                    collector: zipkin("fd00::9", 9411, ""),
                    sampling_per_million: 0,
                    max_tag_length: 0,
                }),
            ),
            (
                "a default provider wins over defaultConfig's zipkin",
                format!(
                    "{providers}defaultProviders: {{tracing: [otel]}}\n\
                     defaultConfig: {{tracing: {{sampling: 100, zipkin: {{address: z:1}}}}}}\n"
                ),
                Some(Tracing {
                    collector: Collector {
                        provider: "otel".into(),
                        kind: TracingKind::OtlpGrpc,
                        service: "otel-collector.observability.svc.cluster.local".into(),
                        port: 4317,
                        http: None,
                    },
                    sampling_per_million: 1_000_000,
                    max_tag_length: 99,
                }),
            ),
            (
                "a zipkin provider",
                format!("{providers}defaultProviders: {{tracing: [zipkin-provider]}}\n"),
                Some(Tracing {
                    collector: zipkin("zipkin.istio-system", 9411, "zipkin-provider"),
                    sampling_per_million: 10_000,
                    max_tag_length: 0,
                }),
            ),
            (
                "an OTLP/HTTP provider: the default path, a timeout, a header",
                format!("{providers}defaultProviders: {{tracing: [otel-http]}}\n"),
                Some(Tracing {
                    collector: Collector {
                        provider: "otel-http".into(),
                        kind: TracingKind::OtlpHttp,
                        service: "otel-collector.observability.svc.cluster.local".into(),
                        port: 4318,
                        http: Some(OtlpHttp {
                            path: "/v1/traces".into(),
                            timeout: Some(std::time::Duration::from_secs(2)),
                            headers: vec![("x-api-key".into(), "k1".into())],
                        }),
                    },
                    sampling_per_million: 10_000,
                    max_tag_length: 0,
                }),
            ),
            (
                "an OTLP/HTTP provider's own path",
                format!("{providers}defaultProviders: {{tracing: [otel-http-path]}}\n"),
                Some(Tracing {
                    collector: Collector {
                        provider: "otel-http-path".into(),
                        kind: TracingKind::OtlpHttp,
                        service: "c".into(),
                        port: 4318,
                        http: Some(OtlpHttp {
                            path: "/otlp/v1/traces".into(),
                            ..Default::default()
                        }),
                    },
                    sampling_per_million: 10_000,
                    max_tag_length: 0,
                }),
            ),
            ("providers but none selected", providers.to_string(), None),
        ];
        for (what, yaml, want) in rows {
            let m = MeshConfig::parse(&yaml).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(m.tracing, want, "{what}");
        }
    }

    #[test]
    fn the_example_loads() {
        let m =
            MeshConfig::parse(include_str!("../../../examples/tracing/mesh-config.yaml")).unwrap();
        let t = m.tracing.unwrap();
        assert_eq!(t.collector.provider, "otel");
        assert_eq!(t.collector.kind, TracingKind::OtlpGrpc);
        assert_eq!(t.sampling_per_million, 100_000);
        assert_eq!(t.max_tag_length, 256);
    }

    #[test]
    fn bad_tracing_settings_are_refused() {
        let rows = [
            (
                "defaultConfig: {tracing: {zipkin: {address: zipkin.istio-system}}}",
                "not host:port",
            ),
            (
                "defaultConfig: {tracing: {zipkin: {address: 'z:0'}}}",
                "not host:port",
            ),
            (
                "defaultConfig: {tracing: {zipkin: {address: ':9411'}}}",
                "not host:port",
            ),
            (
                "defaultConfig: {tracing: {sampling: 101, zipkin: {address: 'z:1'}}}",
                "not a percentage",
            ),
            (
                "defaultConfig: {tracing: {sampling: -1}}",
                "not a percentage",
            ),
            (
                "defaultProviders: {tracing: [nope]}",
                "no zipkin or opentelemetry",
            ),
            (
                "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a, port: 1}\n\
                 defaultProviders: {tracing: [a]}",
                "no zipkin or opentelemetry",
            ),
            (
                "extensionProviders:\n- name: z\n  zipkin: {port: 9411}",
                "service is required",
            ),
            (
                "extensionProviders:\n- name: z\n  zipkin: {service: z, port: 70000}",
                "port 70000",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {path: v1/traces}}",
                "must be a path",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {timeout: 5}}",
                "http.timeout",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {headers: [{name: x, envoyHeader: '%REQ(x)%'}]}}",
                "envoyHeader is not supported",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {headers: [{name: 'bad name', value: v}]}}",
                "not a header name and value",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {headers: [{name: x, value: \"a\\u0001\"}]}}",
                "not a header name and value",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {headers: [{name: Content-Length, value: '9'}]}}",
                "sets that header itself",
            ),
            (
                "extensionProviders:\n- name: o\n  opentelemetry: {service: o, port: 4318, http: {path: '/v1 traces'}}",
                "must be a path",
            ),
            (
                "extensionProviders:\n- name: z\n  zipkin: {service: z, port: 1}\n  opentelemetry: {service: o, port: 1}",
                "both",
            ),
            (
                "extensionProviders:\n- name: z\n  zipkin: {service: z, port: 1}\n\
                 - name: z\n  envoyExtAuthzGrpc: {service: a, port: 1}",
                "second",
            ),
        ];
        for (yaml, want) in rows {
            let err = MeshConfig::parse(yaml)
                .map(|m| format!("accepted: {m:?}"))
                .unwrap_or_else(|e| e.to_string());
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
