//! In-process meshd for tests: a temp directory with manifests, CA and secrets, meshd on
//! loopback ports chosen by the OS, and clients that speak to it over real TLS and gRPC.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control_plane::ca::CaPolicy;
use control_plane::meshd::{self, Config, Running};
use control_plane::translate::Options;
use xds_client::{GrpcTarget, Token};

pub const NAMESPACE_YAML: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
";

/// A pod document on `node` with `ip`.
pub fn pod(name: &str, sa: &str, node: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: shop
  labels:
    app: {sa}
spec:
  serviceAccountName: {sa}
  nodeName: {node}
status:
  podIPs:
  - ip: {ip}
"
    )
}

pub const POLICY_YAML: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: cart-from-web
  namespace: shop
spec:
  selector:
    matchLabels:
      app: cart
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
";

pub struct Meshd {
    pub dir: PathBuf,
    pub running: Option<Running>,
    pub grpc_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meshd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("manifests")).expect("temp dir");
    d
}

pub fn config(dir: &Path, grpc: SocketAddr) -> Config {
    Config {
        manifests: Some(dir.join("manifests")),
        cacerts: dir.join("cacerts"),
        token_key: dir.join("token-key"),
        local_secrets: Some(dir.join("secrets")),
        grpc_addr: grpc,
        monitoring_addr: "127.0.0.1:0".parse().expect("addr"),
        dns_names: vec![],
        debounce: Duration::from_millis(10),
        poll: Duration::from_millis(20),
        mesh_config: None,
        translate: Options::default(),
        ca: CaPolicy::default(),
        waypoints: None,
        root_cert: None,
    }
}

impl Meshd {
    /// Writes `files` into a fresh manifest dir and starts meshd on it.
    pub async fn start(name: &str, files: &[(&str, String)]) -> Meshd {
        let dir = tempdir(name);
        for (f, content) in files {
            std::fs::write(dir.join("manifests").join(f), content).expect("write manifest");
        }
        let running = meshd::start(config(&dir, "127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("meshd starts");
        Meshd {
            grpc_addr: running.grpc_addr,
            monitoring_addr: running.monitoring_addr,
            dir,
            running: Some(running),
        }
    }

    /// As [`Meshd::start`], with the mesh config `mesh` (YAML) in `<dir>/mesh.yaml`, read
    /// again when [`Meshd::write_mesh`] changes it.
    pub async fn start_with_mesh(name: &str, files: &[(&str, String)], mesh: &str) -> Meshd {
        let dir = tempdir(name);
        for (f, content) in files {
            std::fs::write(dir.join("manifests").join(f), content).expect("write manifest");
        }
        std::fs::write(dir.join("mesh.yaml"), mesh).expect("write mesh config");
        let mut cfg = config(&dir, "127.0.0.1:0".parse().expect("addr"));
        cfg.mesh_config = Some(dir.join("mesh.yaml"));
        cfg.translate.mesh =
            control_plane::mesh_config::MeshConfig::parse(mesh).expect("mesh config");
        let running = meshd::start(cfg).await.expect("meshd starts");
        Meshd {
            grpc_addr: running.grpc_addr,
            monitoring_addr: running.monitoring_addr,
            dir,
            running: Some(running),
        }
    }

    /// Replaces the mesh config file (whole, by a rename).
    pub fn write_mesh(&self, content: &str) {
        let path = self.dir.join("mesh.yaml");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).expect("write mesh config");
        std::fs::rename(&tmp, &path).expect("rename mesh config");
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("meshd is running")
    }

    /// Stops meshd: listener and every connection closed.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// Starts again on the same directory, CA, token key and gRPC port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = meshd::start(config(&self.dir, self.grpc_addr))
            .await
            .expect("meshd restarts");
        self.monitoring_addr = running.monitoring_addr;
        self.running = Some(running);
    }

    pub fn write(&self, file: &str, content: &str) {
        let path = self.dir.join("manifests").join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).expect("write manifest");
        std::fs::rename(&tmp, &path).expect("rename manifest");
    }

    pub fn node_token(&self, node: &str) -> String {
        self.running()
            .tokens
            .mint_node("istio-system", "ztunnel", node)
    }

    pub fn target(&self, token: Option<String>) -> GrpcTarget {
        let roots = rustls_roots(&self.running().root_pem);
        let tls = rustls::ClientConfig::builder_with_provider(hbone::provider())
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        GrpcTarget {
            address: format!("https://{}", self.grpc_addr),
            tls: Arc::new(tls),
            server_name: Some("istiod.istio-system.svc".into()),
            token: token.map(Token::Literal),
            headers: vec![("clusterid".into(), "Kubernetes".into())],
            mark: None,
        }
    }

    /// GET on the monitoring port.
    pub async fn get(&self, path: &str) -> String {
        http_get(self.monitoring_addr, path).await
    }

    /// A metric's value summed over label sets whose line contains `filter`.
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = self.get("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn rustls_roots(pem: &str) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
        store.add(c.expect("root PEM")).expect("root");
    }
    store
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// Runs `client` on its own task and waits (10 s at most) until it holds a first config.
pub async fn run_synced(client: xds_client::Client) -> tokio::task::JoinHandle<()> {
    let mut synced = client.synced();
    let task = tokio::spawn(client.run());
    tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s))
        .await
        .expect("synced in time")
        .expect("client alive");
    task
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
