//! Run-time configuration: Istio ztunnel's environment variable names, each also a flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hbone::H2Settings;

/// How ztunnel is deployed (`PROXY_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// One ztunnel per node serving every pod on it (needs the ZDS node agent).
    Shared,
    /// One ztunnel inside one workload's network namespace.
    Dedicated,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Local config file in Istio ztunnel's format (workloads, services, policies).
    #[arg(long, env = "LOCAL_XDS_PATH")]
    pub local_xds_path: Option<PathBuf>,

    /// The same config inline, used when `LOCAL_XDS_PATH` is not set (not watched).
    #[arg(long, env = "LOCAL_XDS")]
    pub local_xds: Option<String>,

    /// `shared` (per node) or `dedicated` (inside one workload's network namespace).
    #[arg(
        long,
        env = "PROXY_MODE",
        value_enum,
        default_value = "shared",
        ignore_case = true
    )]
    pub proxy_mode: ProxyMode,

    /// The workload this dedicated ztunnel serves: `<namespace>/<pod>/<service-account>`.
    #[arg(long, env = "PROXY_WORKLOAD_INFO")]
    pub proxy_workload_info: Option<String>,

    /// xDS server (`https://host:port`); empty means none (use the local config).
    #[arg(long, env = "XDS_ADDRESS", default_value = "")]
    pub xds_address: String,

    /// Trust roots for the xDS server's certificate.
    #[arg(
        long,
        env = "XDS_ROOT_CA",
        default_value = "./var/run/secrets/istio/root-cert.pem"
    )]
    pub xds_root_ca: PathBuf,

    /// Name the xDS server's certificate must carry, instead of the address's host.
    #[arg(long, env = "ALT_XDS_HOSTNAME")]
    pub alt_xds_hostname: Option<String>,

    /// Certificate service (`https://host:port`); empty means none (use `CA_CERTS_DIR`).
    #[arg(long, env = "CA_ADDRESS", default_value = "")]
    pub ca_address: String,

    /// Trust roots for the CA's certificate; also the mesh roots peers must chain to.
    #[arg(
        long,
        env = "CA_ROOT_CA",
        default_value = "./var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root_ca: PathBuf,

    /// Name the CA's certificate must carry, instead of the address's host.
    #[arg(long, env = "ALT_CA_HOSTNAME")]
    pub alt_ca_hostname: Option<String>,

    /// Bearer token for xDS and the CA: a file path, or the token itself.
    #[arg(
        long,
        env = "AUTH_TOKEN",
        default_value = "./var/run/secrets/tokens/istio-token"
    )]
    pub auth_token: String,

    /// Cluster id sent to the control plane (`ISTIO_META_CLUSTER_ID` wins when set).
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,

    /// This proxy's pod name and namespace, for its xDS node id (default: from
    /// `PROXY_WORKLOAD_INFO` in dedicated mode).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    #[arg(long, env = "INSTANCE_IP", default_value = "1.1.1.1")]
    pub instance_ip: String,

    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,

    /// Directory in the layout of Istio's `cacerts` secret, used to sign workload certificates.
    #[arg(long, env = "CA_CERTS_DIR")]
    pub ca_certs_dir: Option<PathBuf>,

    /// Workload certificate lifetime (Go duration, e.g. `24h`); renewed at half of it.
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    pub secret_ttl: Duration,

    /// Shared mode: the node agent's ZDS socket.
    #[arg(long, env = "INPOD_UDS", default_value = zds::DEFAULT_SOCKET)]
    pub inpod_uds: PathBuf,

    /// Shared mode: the trust domain of the pods' identities when the config does not give
    /// one for the pod.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Shared mode, on SIGTERM: how long the connections being carried may go on after the
    /// listeners close (a new ztunnel takes new ones). Istio's name; its default is 5 s and it
    /// then resets them, where this waits for them to end.
    #[arg(long, env = "CONNECTION_TERMINATION_DEADLINE", default_value = "1h", value_parser = parse_duration)]
    pub connection_termination_deadline: Duration,

    /// Mark set on every socket ztunnel opens so redirection skips them.
    #[arg(long, env = "PACKET_MARK", default_value_t = 1337)]
    pub packet_mark: u32,

    /// Streams per pooled HBONE connection.
    #[arg(long, env = "POOL_MAX_STREAMS_PER_CONNECTION", default_value_t = 100)]
    pub pool_max_streams_per_connection: usize,

    /// Idle pooled HBONE connections are closed after this.
    #[arg(long, env = "POOL_UNUSED_RELEASE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub pool_unused_release_timeout: Duration,

    /// Threads running the proxy (Istio's default is 2). 1 runs everything on one thread,
    /// which avoids cross-thread wakeups on small nodes.
    #[arg(long, env = "ZTUNNEL_WORKER_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

    #[arg(long, env = "HTTP2_STREAM_WINDOW_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub http2_stream_window_size: u32,

    #[arg(long, env = "HTTP2_CONNECTION_WINDOW_SIZE", default_value_t = 16 * 1024 * 1024)]
    pub http2_connection_window_size: u32,

    #[arg(long, env = "HTTP2_FRAME_SIZE", default_value_t = 1024 * 1024)]
    pub http2_frame_size: u32,

    /// Admin endpoint (config dump, log levels, explain); keep it on localhost.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: std::net::SocketAddr,

    /// Prometheus metrics (`/metrics`, `/stats/prometheus`).
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub stats_addr: std::net::SocketAddr,

    /// Readiness probe (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub readiness_addr: std::net::SocketAddr,

    /// How often the local config file is checked for changes.
    #[arg(long, env = "LOCAL_XDS_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub local_xds_poll_interval: Duration,
}

/// `PROXY_WORKLOAD_INFO`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

/// `<namespace>/<pod>/<service-account>`, as `PROXY_WORKLOAD_INFO` spells it.
impl std::fmt::Display for WorkloadInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace, self.name, self.service_account
        )
    }
}

impl std::str::FromStr for WorkloadInfo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>().as_slice() {
            [ns, name, sa] if !ns.is_empty() && !name.is_empty() && !sa.is_empty() => {
                Ok(WorkloadInfo {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    service_account: sa.to_string(),
                })
            }
            _ => Err(format!(
                "PROXY_WORKLOAD_INFO {s:?} is not <namespace>/<pod>/<service-account>"
            )),
        }
    }
}

impl RunArgs {
    pub fn h2_settings(&self) -> H2Settings {
        H2Settings {
            stream_window: self.http2_stream_window_size,
            connection_window: self.http2_connection_window_size,
            frame_size: self.http2_frame_size,
            max_streams_per_connection: self.pool_max_streams_per_connection.max(1),
            pool_idle_timeout: self.pool_unused_release_timeout,
            ..H2Settings::default()
        }
    }
}

/// Go-style durations as Istio's environment uses them: `500ms`, `30s`, `5m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 30s, 5m or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * unit).map_err(|_| bad())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "10", "5 m", "5x", "h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn workload_info() {
        let w: WorkloadInfo = "shop/cart-0/cart".parse().unwrap();
        assert_eq!(
            (
                w.namespace.as_str(),
                w.name.as_str(),
                w.service_account.as_str()
            ),
            ("shop", "cart-0", "cart")
        );
        for bad in ["shop/cart-0", "shop//cart", "a/b/c/d", ""] {
            assert!(bad.parse::<WorkloadInfo>().is_err(), "{bad} accepted");
        }
    }
}
