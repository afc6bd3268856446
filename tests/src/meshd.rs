//! The control plane under test: `meshd` in a host of its own on the test segment, serving a
//! manifest directory, and the settings a ztunnel needs to join it (Istio's names only).
//!
//! meshd writes the mesh root and one token per node (`--local-secrets`); ztunnels read them
//! from there, as a pod reads its mounted secrets. Its CA and token key live beside them, so
//! a restart ([`Meshd::restart`]) keeps the same roots and tokens.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::mesh::{Binaries, http_get};
use crate::netns::Host;

/// xDS and CA (TLS, gRPC), as istiod.
pub const GRPC_PORT: u16 = 15012;
/// Metrics and debug endpoints, as istiod.
pub const MONITORING_PORT: u16 = 15014;
/// The name ztunnels check meshd's serving certificate for (`ALT_XDS_HOSTNAME`), as for istiod.
pub const HOSTNAME: &str = "istiod.istio-system.svc";

/// A meshd process (or the slot for one, between [`Meshd::kill`] and [`Meshd::restart`]).
pub struct Meshd {
    pub host: Host,
    /// The directory it serves.
    pub manifests: PathBuf,
    /// Its CA (Istio `cacerts` layout), generated at first start.
    pub cacerts: PathBuf,
    /// `root-cert.pem` and `token-<node>`, written by meshd.
    pub secrets: PathBuf,
    /// stderr of every run, appended.
    pub log: PathBuf,
    /// Its `--mesh-config` file, if any.
    pub mesh_config: Option<PathBuf>,
    meshd: PathBuf,
    meshapp: PathBuf,
    child: Option<Child>,
}

impl Meshd {
    /// Starts meshd in `host` serving `manifests`, its files under `dir`, and waits until it
    /// has published its first config.
    pub fn start(
        bins: &Binaries,
        host: &Host,
        dir: &Path,
        manifests: &Path,
    ) -> anyhow::Result<Meshd> {
        Meshd::start_with(bins, host, dir, manifests, None)
    }

    /// [`Meshd::start`], with a MeshConfig file (`--mesh-config`).
    pub fn start_with(
        bins: &Binaries,
        host: &Host,
        dir: &Path,
        manifests: &Path,
        mesh_config: Option<&Path>,
    ) -> anyhow::Result<Meshd> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut m = Meshd {
            host: host.clone(),
            manifests: manifests.to_path_buf(),
            cacerts: dir.join("cacerts"),
            secrets: dir.join("secrets"),
            log: dir.join("meshd.log"),
            mesh_config: mesh_config.map(Path::to_path_buf),
            meshd: bins.meshd()?.to_path_buf(),
            meshapp: bins.meshapp.clone(),
            child: None,
        };
        m.restart()?;
        Ok(m)
    }

    /// Starts meshd again (same CA, tokens and manifests) and waits until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("meshd is already running");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = self.host.command(&self.meshd);
        if let Some(mesh_config) = &self.mesh_config {
            command.arg("--mesh-config").arg(mesh_config);
        }
        let child = command
            .arg("--manifests")
            .arg(&self.manifests)
            .arg("--cacerts")
            .arg(&self.cacerts)
            .arg("--local-secrets")
            .arg(&self.secrets)
            .arg("--grpc-addr")
            .arg(self.grpc_addr())
            .arg("--monitoring-addr")
            .arg(self.monitoring_addr())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting meshd")?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(15))
    }

    /// Kills meshd (SIGKILL: a crash, no goodbye to its clients) and waits until it is gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("meshd is not running");
        };
        // `ip netns exec` execs in place: this is meshd itself.
        child.kill().context("killing meshd")?;
        child.wait().context("waiting for meshd")?;
        Ok(())
    }

    pub fn grpc_addr(&self) -> String {
        format!("{}:{GRPC_PORT}", self.host.ip)
    }

    pub fn monitoring_addr(&self) -> String {
        format!("{}:{MONITORING_PORT}", self.host.ip)
    }

    /// What ztunnels put in `XDS_ADDRESS`.
    pub fn xds_address(&self) -> String {
        format!("https://{}", self.grpc_addr())
    }

    pub fn root_cert(&self) -> PathBuf {
        self.secrets.join("root-cert.pem")
    }

    pub fn token(&self, node: &str) -> PathBuf {
        self.secrets.join(format!("token-{node}"))
    }

    /// A token for `<ns>/<sa>[/<pod>]` from `meshd --print-token` (as `kubectl create token`),
    /// written to `token-<ns>.<sa>` beside the node tokens; its path.
    pub fn mint_token(&self, who: &str) -> anyhow::Result<PathBuf> {
        let out = std::process::Command::new(&self.meshd)
            .arg("--cacerts")
            .arg(&self.cacerts)
            .args(["--print-token", who])
            .output()
            .context("meshd --print-token")?;
        if !out.status.success() {
            bail!(
                "meshd --print-token {who}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let name = who.split('/').take(2).collect::<Vec<_>>().join(".");
        let path = self.secrets.join(format!("token-{name}"));
        fs::write(&path, out.stdout.trim_ascii())?;
        Ok(path)
    }

    /// `GET` on the monitoring port: (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(String, String)> {
        http_get(&self.meshapp, &self.host, &self.monitoring_addr(), path)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until `/ready` answers 200 (the first config is published).
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(self.get("/ready"), Ok((status, _)) if status == "200") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "meshd not ready within {timeout:?}; its log ({}):\n{}",
                    self.log.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Istio's ztunnel settings for joining this meshd from `node` (whose token meshd writes
    /// once a pod names that node: waited for up to `timeout`). No local config, no CA dir.
    pub fn ztunnel_env(
        &self,
        node: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(&'static str, OsString)>> {
        let token = self.token(node);
        let deadline = Instant::now() + timeout;
        while !token.exists() {
            if Instant::now() > deadline {
                bail!(
                    "meshd wrote no {} within {timeout:?} (does a pod name node {node:?}?); its log:\n{}",
                    token.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(vec![
            ("XDS_ADDRESS", self.xds_address().into()),
            ("XDS_ROOT_CA", self.root_cert().into()),
            ("CA_ROOT_CA", self.root_cert().into()),
            ("ALT_XDS_HOSTNAME", HOSTNAME.into()),
            ("ALT_CA_HOSTNAME", HOSTNAME.into()),
            ("AUTH_TOKEN", token.into()),
        ])
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
