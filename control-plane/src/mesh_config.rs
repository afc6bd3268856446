//! Istio's MeshConfig, as much of it as meshd uses: the `extensionProviders` a CUSTOM
//! AuthorizationPolicy names (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`) and the mesh's tracing
//! (`tracing.rs`: `zipkin`/`opentelemetry` providers, `defaultProviders.tracing`,
//! `defaultConfig.tracing`), read from the YAML file `--mesh-config` names (the `mesh` key of
//! Istio's `istio` ConfigMap).
//!
//! Rules, in order:
//! 1. Unknown fields are ignored, and so are providers of other kinds (logging, metrics):
//!    a MeshConfig written for istiod loads as it is.
//! 2. Each ext_authz provider needs a `name` (unique among all providers), a `service` and a
//!    `port` (1-65535); `timeout` is a protobuf duration (`"0.5s"`, `"10s"`, `"1m"`; default
//!    10 minutes), `statusOnError` an HTTP status as a string (default 403), and `pathPrefix`
//!    (HTTP) starts with `/`; `includeRequestBodyInCheck` needs `maxRequestBytes` above 0
//!    (Envoy refuses 0). A bad provider, or bad tracing settings, make the whole file an
//!    error: meshd does not start on half a configuration.
//! 3. `service` is resolved at translation, not here (`translate::ext_authz`,
//!    `translate::tracing`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

mod tracing;

pub use self::tracing::{Collector, DEFAULT_SAMPLING_PER_MILLION, Tracing, TracingKind};

/// Why a MeshConfig was refused.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    #[error("not MeshConfig YAML")]
    Yaml(#[from] serde_yaml::Error),
    #[error("extensionProviders[{index}] ({name:?}): {reason}")]
    Provider {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("tracing: {0}")]
    Tracing(String),
}

/// The MeshConfig settings meshd knows: ext_authz providers by name, and tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    pub ext_authz: BTreeMap<String, ExtAuthzProvider>,
    /// `None`: MeshConfig configures no tracing.
    pub tracing: Option<Tracing>,
    /// Every tracing provider by name, with its max tag length, for a Telemetry resource that
    /// names one (`translate::tracing`).
    pub tracing_providers: BTreeMap<String, (Collector, u32)>,
    /// `defaultConfig.tracing.sampling` (or Istio's default), in millionths: what a Telemetry
    /// resource that gives no percentage samples.
    pub default_sampling_per_million: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtAuthzKind {
    Http,
    Grpc,
}

/// One `envoyExtAuthzHttp` or `envoyExtAuthzGrpc` provider (rule 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzProvider {
    pub name: String,
    pub kind: ExtAuthzKind,
    /// `[<namespace>/]<hostname>`.
    pub service: String,
    pub port: u16,
    pub timeout: Duration,
    pub fail_open: bool,
    pub status_on_error: u16,
    pub path_prefix: String,
    pub include_request_headers_in_check: Vec<String>,
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
    /// `None`: the check carries no body.
    pub include_request_body_in_check: Option<BodyInCheck>,
}

/// Istio's `includeRequestBodyInCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyInCheck {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

impl Default for MeshConfig {
    /// What an empty file says.
    fn default() -> Self {
        MeshConfig {
            ext_authz: BTreeMap::new(),
            tracing: None,
            tracing_providers: BTreeMap::new(),
            default_sampling_per_million: DEFAULT_SAMPLING_PER_MILLION,
        }
    }
}

/// Istio's default provider timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    extension_providers: Vec<RawProvider>,
    default_config: Option<tracing::RawProxyConfig>,
    default_providers: Option<tracing::RawDefaultProviders>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProvider {
    #[serde(default)]
    name: String,
    envoy_ext_authz_http: Option<RawExtAuthz>,
    envoy_ext_authz_grpc: Option<RawExtAuthz>,
    zipkin: Option<tracing::RawProvider>,
    opentelemetry: Option<tracing::RawProvider>,
}

/// Both kinds' fields; the gRPC kind has no path or header lists.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawExtAuthz {
    #[serde(default)]
    service: String,
    #[serde(default)]
    port: u32,
    timeout: Option<String>,
    #[serde(default)]
    fail_open: bool,
    status_on_error: Option<String>,
    #[serde(default)]
    path_prefix: String,
    #[serde(default)]
    include_request_headers_in_check: Vec<String>,
    /// Istio's older name for the same list.
    #[serde(default)]
    include_headers_in_check: Vec<String>,
    #[serde(default)]
    include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default)]
    headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_allow: Vec<String>,
    include_request_body_in_check: Option<RawBodyInCheck>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawBodyInCheck {
    #[serde(default)]
    max_request_bytes: u32,
    #[serde(default)]
    allow_partial_message: bool,
    #[serde(default)]
    pack_as_bytes: bool,
}

impl MeshConfig {
    /// Rules 1-2.
    pub fn parse(yaml: &str) -> Result<MeshConfig, MeshConfigError> {
        let raw: Raw = serde_yaml::from_str::<Option<Raw>>(yaml)?.unwrap_or_default();
        let mut out = MeshConfig::default();
        let mut tracers = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for (index, p) in raw.extension_providers.iter().enumerate() {
            let err = |reason: String| MeshConfigError::Provider {
                index,
                name: p.name.clone(),
                reason,
            };
            let tracer = tracing::provider(&p.name, p.zipkin.as_ref(), p.opentelemetry.as_ref())
                .map_err(err)?;
            let (kind, e) = match (&p.envoy_ext_authz_http, &p.envoy_ext_authz_grpc, tracer) {
                (None, None, None) => continue,
                (None, None, Some(t)) => {
                    if !names.insert(p.name.clone()) {
                        return Err(err("a second provider of that name".into()));
                    }
                    tracers.insert(p.name.clone(), t);
                    continue;
                }
                (Some(e), None, None) => (ExtAuthzKind::Http, e),
                (None, Some(e), None) => (ExtAuthzKind::Grpc, e),
                _ => {
                    return Err(err("more than one kind (envoyExtAuthzHttp, \
                                    envoyExtAuthzGrpc, zipkin, opentelemetry)"
                        .into()));
                }
            };
            let provider = convert(&p.name, kind, e).map_err(err)?;
            if !names.insert(p.name.clone()) {
                return Err(err("a second provider of that name".into()));
            }
            out.ext_authz.insert(p.name.clone(), provider);
        }
        out.tracing = tracing::select(
            raw.default_config.as_ref(),
            raw.default_providers.as_ref(),
            &tracers,
        )
        .map_err(MeshConfigError::Tracing)?;
        out.default_sampling_per_million =
            tracing::sampling(raw.default_config.as_ref()).map_err(MeshConfigError::Tracing)?;
        out.tracing_providers = tracers;
        Ok(out)
    }
}

fn convert(name: &str, kind: ExtAuthzKind, e: &RawExtAuthz) -> Result<ExtAuthzProvider, String> {
    if name.is_empty() {
        return Err("name is required".into());
    }
    if e.service.is_empty() {
        return Err("service is required".into());
    }
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is not 1-65535", e.port))?;
    let timeout = match &e.timeout {
        Some(t) => parse_duration(t)?,
        None => DEFAULT_TIMEOUT,
    };
    let status_on_error = match &e.status_on_error {
        Some(s) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (200..600).contains(s))
            .ok_or_else(|| format!("statusOnError {s:?} is not an HTTP status"))?,
        None => 403,
    };
    if !e.path_prefix.is_empty() && !e.path_prefix.starts_with('/') {
        return Err(format!("pathPrefix {:?} must start with /", e.path_prefix));
    }
    let body = match &e.include_request_body_in_check {
        Some(b) if b.max_request_bytes == 0 => {
            return Err("includeRequestBodyInCheck.maxRequestBytes must be above 0".into());
        }
        Some(b) => Some(BodyInCheck {
            max_request_bytes: b.max_request_bytes,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        }),
        None => None,
    };
    let mut include = e.include_request_headers_in_check.clone();
    include.extend(e.include_headers_in_check.iter().cloned());
    Ok(ExtAuthzProvider {
        name: name.to_string(),
        kind,
        service: e.service.clone(),
        port,
        timeout,
        fail_open: e.fail_open,
        status_on_error,
        path_prefix: e.path_prefix.clone(),
        include_request_headers_in_check: include,
        include_additional_headers_in_check: e.include_additional_headers_in_check.clone(),
        headers_to_upstream_on_allow: e.headers_to_upstream_on_allow.clone(),
        headers_to_downstream_on_deny: e.headers_to_downstream_on_deny.clone(),
        headers_to_downstream_on_allow: e.headers_to_downstream_on_allow.clone(),
        include_request_body_in_check: body,
    })
}

/// A protobuf JSON duration (`"1.5s"`), and the Go forms Istio users also write (`"100ms"`,
/// `"2m"`, `"1h"`); must be positive.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = authz::translate::parse_duration(s.trim())
        .ok_or_else(|| format!("timeout {s:?} is not a duration like 0.5s, 100ms or 1m"))?;
    if d.is_zero() {
        return Err(format!("timeout {s:?} must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r#"
accessLogFile: /dev/stdout
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 0.5s
    pathPrefix: /check
    failOpen: true
    statusOnError: "503"
    includeRequestHeadersInCheck: ["x-ext-authz"]
    includeAdditionalHeadersInCheck: {x-from: waypoint}
    headersToUpstreamOnAllow: ["x-user-*"]
    headersToDownstreamOnDeny: ["x-reason"]
    headersToDownstreamOnAllow: ["x-trace"]
    includeRequestBodyInCheck: {maxRequestBytes: 4096, allowPartialMessage: true}
    someFutureField: 1
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 9000
- name: otel
  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
"#;

    #[test]
    fn istio_shaped_mesh_config_loads() {
        let m = MeshConfig::parse(MESH).unwrap();
        assert_eq!(
            m.ext_authz.len(),
            2,
            "the tracing provider is not an authorizer"
        );
        assert_eq!(m.tracing, None, "no defaultProviders.tracing selects it");
        let h = &m.ext_authz["sample-ext-authz-http"];
        assert_eq!(h.kind, ExtAuthzKind::Http);
        assert_eq!(h.port, 8000);
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert!(h.fail_open);
        assert_eq!(h.status_on_error, 503);
        assert_eq!(h.path_prefix, "/check");
        assert_eq!(h.include_request_headers_in_check, ["x-ext-authz"]);
        assert_eq!(h.include_additional_headers_in_check["x-from"], "waypoint");
        assert_eq!(h.headers_to_upstream_on_allow, ["x-user-*"]);
        let body = BodyInCheck {
            max_request_bytes: 4096,
            allow_partial_message: true,
            pack_as_bytes: false,
        };
        assert_eq!(h.include_request_body_in_check, Some(body));
        let g = &m.ext_authz["sample-ext-authz-grpc"];
        assert_eq!(g.kind, ExtAuthzKind::Grpc);
        assert_eq!(g.service, "foo/ext-authz.foo.svc.cluster.local");
        assert_eq!(g.timeout, DEFAULT_TIMEOUT);
        assert_eq!(g.status_on_error, 403);
        assert!(!g.fail_open);
        assert_eq!(g.include_request_body_in_check, None);
        assert_eq!(MeshConfig::parse("").unwrap(), MeshConfig::default());
    }

    #[test]
    fn the_example_loads() {
        let m =
            MeshConfig::parse(include_str!("../../examples/ext-authz/mesh-config.yaml")).unwrap();
        let names: Vec<&str> = m.ext_authz.keys().map(String::as_str).collect();
        assert_eq!(names, ["ext-authz-grpc", "ext-authz-http"]);
    }

    #[test]
    fn bad_providers_are_refused() {
        let rows: &[(&str, &str)] = &[
            ("envoyExtAuthzHttp: {service: a, port: 0}", "port 0"),
            ("envoyExtAuthzHttp: {service: a, port: 70000}", "port 70000"),
            ("envoyExtAuthzHttp: {port: 80}", "service is required"),
            (
                "envoyExtAuthzHttp: {service: a, port: 80, timeout: 10}",
                "timeout",
            ),
            (
                "envoyExtAuthzHttp: {service: a, port: 80, timeout: 0s}",
                "positive",
            ),
            (
                "envoyExtAuthzHttp: {service: a, port: 80, statusOnError: \"99\"}",
                "statusOnError",
            ),
            (
                "envoyExtAuthzHttp: {service: a, port: 80, pathPrefix: check}",
                "pathPrefix",
            ),
            (
                "envoyExtAuthzGrpc: {service: a, port: 80, includeRequestBodyInCheck: {}}",
                "maxRequestBytes must be above 0",
            ),
            (
                "envoyExtAuthzHttp: {service: a, port: 80}\n  envoyExtAuthzGrpc: {service: a, port: 80}",
                "more than one kind",
            ),
        ];
        for (provider, want) in rows {
            let yaml = format!("extensionProviders:\n- name: p\n  {provider}\n");
            let err = MeshConfig::parse(&yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{provider}: {err}");
        }
        let twice = "extensionProviders:\n- name: p\n  envoyExtAuthzGrpc: {service: a, port: 1}\n\
                     - name: p\n  envoyExtAuthzGrpc: {service: b, port: 1}\n";
        assert!(
            MeshConfig::parse(twice)
                .unwrap_err()
                .to_string()
                .contains("second")
        );
    }

    #[test]
    fn durations() {
        let rows = [
            ("0.5s", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("250ms", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (s, want) in rows {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for s in ["", "s", "10", "ten s", "-1s", "1d"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }
}
