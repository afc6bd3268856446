//! A mesh under test: a CA, per-test config files, and ztunnel processes in test hosts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hbone::{FileCa, SpiffeId, WorkloadCertificate};

use crate::meshd::Meshd;
use crate::netns::{Host, run};

/// Where the binaries under test are: `ztunnel`, `meshd` and `meshapp` side by side in the
/// target dir.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ztunnel: PathBuf,
    pub meshd: PathBuf,
    pub node_agent: PathBuf,
    pub meshctl: PathBuf,
    pub waypoint: PathBuf,
    pub meshapp: PathBuf,
}

/// A binary the tests run, and the workspace paths it is built from (for the stale check).
struct Built {
    bin: &'static str,
    package: &'static str,
    sources: &'static [&'static str],
}

const ZTUNNEL: Built = Built {
    bin: "ztunnel",
    package: "ztunnel",
    sources: &[
        "ztunnel",
        "xds-client",
        "zds",
        "capture",
        "hbone",
        "authz",
        "proto",
    ],
};

const NODE_AGENT: Built = Built {
    bin: "node-agent",
    package: "node-agent",
    sources: &["node-agent", "capture", "zds", "kube-source", "proto"],
};

const WAYPOINT: Built = Built {
    bin: "waypoint",
    package: "waypoint",
    sources: &["waypoint", "xds-client", "hbone", "authz", "proto"],
};

const MESHCTL: Built = Built {
    bin: "meshctl",
    package: "meshctl",
    sources: &["meshctl", "kube-source", "zds"],
};

const MESHD: Built = Built {
    bin: "meshd",
    package: "control-plane",
    sources: &["control-plane", "kube-source", "hbone", "authz", "proto"],
};

impl Binaries {
    /// From the path of `meshapp` (cargo gives tests `CARGO_BIN_EXE_meshapp`). When run under
    /// cargo, (re)builds `ztunnel` first: `cargo test -p e2e` alone would not, and a stale
    /// binary would test old code.
    pub fn beside(meshapp: impl Into<PathBuf>) -> anyhow::Result<Binaries> {
        let meshapp = meshapp.into();
        let bins = Binaries {
            ztunnel: meshapp.with_file_name("ztunnel"),
            meshd: meshapp.with_file_name("meshd"),
            node_agent: meshapp.with_file_name("node-agent"),
            meshctl: meshapp.with_file_name("meshctl"),
            waypoint: meshapp.with_file_name("waypoint"),
            meshapp,
        };
        bins.ensure(&ZTUNNEL)?;
        Ok(bins)
    }

    /// `meshd`, (re)built the same way as `ztunnel`; only tests that run the control plane
    /// ask for it, so the others do not depend on it building.
    pub fn meshd(&self) -> anyhow::Result<&Path> {
        self.ensure(&MESHD)?;
        Ok(&self.meshd)
    }

    /// `meshctl` with everything it runs (`meshd`, `node-agent`, `ztunnel`), (re)built.
    pub fn meshctl(&self) -> anyhow::Result<&Path> {
        self.ensure(&MESHD)?;
        self.ensure(&NODE_AGENT)?;
        self.ensure(&MESHCTL)?;
        Ok(&self.meshctl)
    }

    /// `waypoint`, (re)built the same way.
    pub fn waypoint(&self) -> anyhow::Result<&Path> {
        self.ensure(&WAYPOINT)?;
        Ok(&self.waypoint)
    }

    /// `node-agent`, (re)built the same way.
    pub fn node_agent(&self) -> anyhow::Result<&Path> {
        self.ensure(&NODE_AGENT)?;
        Ok(&self.node_agent)
    }

    fn ensure(&self, b: &Built) -> anyhow::Result<()> {
        let bin = self.meshapp.with_file_name(b.bin);
        if let Ok(cargo) = std::env::var("CARGO")
            && is_stale(&bin, b.sources)
        {
            // Once per binary per test process; tests running in parallel wait for it.
            static BUILT: std::sync::Mutex<BTreeMap<&str, Result<(), String>>> =
                std::sync::Mutex::new(BTreeMap::new());
            let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
            built
                .entry(b.bin)
                .or_insert_with(|| build(&cargo, &self.meshapp, b))
                .clone()
                .map_err(anyhow::Error::msg)?;
        }
        if !bin.exists() {
            bail!(
                "{} not found: build it first (`cargo build -p {}`, or run the tests with `cargo test --workspace`)",
                bin.display(),
                b.package
            );
        }
        Ok(())
    }
}

/// Whether `bin` is missing or older than any of `sources` (workspace paths) or the
/// workspace manifest and lock file.
fn is_stale(bin: &Path, sources: &[&str]) -> bool {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pending: Vec<PathBuf> = sources
        .iter()
        .chain(&["Cargo.toml", "Cargo.lock"])
        .map(|p| root.join(p))
        .collect();
    while let Some(p) = pending.pop() {
        let Ok(meta) = fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return true;
        }
    }
    false
}

fn build(cargo: &str, meshapp: &Path, b: &Built) -> Result<(), String> {
    // meshapp is <target>/<profile>/meshapp.
    let profile_dir = meshapp.parent().ok_or("meshapp has no directory")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        b.package,
        "--bin",
        b.bin,
        "--target-dir",
    ])
    .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "building {} failed: {}",
            b.bin,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Files of one test: CA, configs, logs.
pub struct Mesh {
    pub dir: PathBuf,
    pub ca_dir: PathBuf,
    pub bins: Binaries,
    children: Vec<Child>,
}

/// A running ztunnel and its log.
pub struct Ztunnel {
    pub log: PathBuf,
    /// Its process id (`ip netns exec` execs in place, so this is ztunnel itself).
    pub pid: u32,
}

impl Mesh {
    pub fn new(test: &str, bins: Binaries) -> anyhow::Result<Mesh> {
        let dir = std::env::temp_dir().join(format!("e2e-{test}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let ca_dir = dir.join("cacerts");
        FileCa::generate(&ca_dir, "e2e")?;
        Ok(Mesh {
            dir,
            ca_dir,
            bins,
            children: Vec::new(),
        })
    }

    pub fn ca(&self) -> anyhow::Result<FileCa> {
        Ok(FileCa::load(&self.ca_dir)?)
    }

    /// Writes a file in the test directory.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        // Written aside, then renamed over: a ztunnel polling the file never reads half of
        // it (a truncated config can parse, and policy tests then saw the wrong verdict).
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, contents)?;
        fs::rename(&tmp, &p)?;
        Ok(p)
    }

    /// Issues a certificate and writes `<name>.pem` (chain) and `<name>.key`.
    pub fn write_cert(
        &self,
        name: &str,
        cert: &WorkloadCertificate,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (chain, key) = cert.to_pem();
        Ok((
            self.write(&format!("{name}.pem"), &chain)?,
            self.write(&format!("{name}.key"), &key)?,
        ))
    }

    /// Installs capture in `host` and starts its ztunnel for `workload_info`
    /// (`ns/pod/sa`) on the local `config` file and the test CA, waiting until it is ready.
    pub fn start_ztunnel(
        &mut self,
        host: &Host,
        workload_info: &str,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Ztunnel> {
        run(host
            .command(&self.bins.ztunnel)
            .args(["redirect", "install"]))?;
        let source: Vec<(&str, OsString)> = vec![
            ("LOCAL_XDS_PATH", config.into()),
            ("CA_CERTS_DIR", self.ca_dir.clone().into()),
            ("LOCAL_XDS_POLL_INTERVAL", "200ms".into()),
        ];
        self.launch_ztunnel(host, workload_info, &source, env)
    }

    /// Installs capture in `host` and starts its ztunnel for `workload_info`, configured only
    /// by `meshd` (xDS and certificates, with the token of `node`), waiting until it is ready:
    /// it has had the first push, found its workload in it and got a certificate from meshd.
    pub fn start_ztunnel_xds(
        &mut self,
        host: &Host,
        workload_info: &str,
        node: &str,
        meshd: &Meshd,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Ztunnel> {
        run(host
            .command(&self.bins.ztunnel)
            .args(["redirect", "install"]))?;
        // No exemption for meshd: ztunnel marks its xDS and CA sockets (PACKET_MARK), so
        // capture skips them, as it does in a pod.
        let mut source = meshd.ztunnel_env(node, Duration::from_secs(15))?;
        source.push(("INSTANCE_IP", host.ip.to_string().into()));
        source.push(("NODE_NAME", node.into()));
        self.launch_ztunnel(host, workload_info, &source, env)
    }

    /// Starts a shared-mode ztunnel in `node` on the local `config` file and the test CA,
    /// connecting to the node agent at `socket`. Returns at once: it serves nothing until the
    /// agent hands it pods.
    pub fn start_ztunnel_shared(
        &mut self,
        node: &Host,
        config: &Path,
        socket: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Ztunnel> {
        // One log per start: a restarted ztunnel must not overwrite its predecessor's.
        let log = self
            .dir
            .join(format!("ztunnel-{}-{}.log", node.ns, self.children.len()));
        let mut cmd = node.command(&self.bins.ztunnel);
        cmd.env("PROXY_MODE", "shared")
            .env("INPOD_UDS", socket)
            .env("LOCAL_XDS_PATH", config)
            .env("CA_CERTS_DIR", &self.ca_dir)
            .env("LOCAL_XDS_POLL_INTERVAL", "200ms");
        self.spawn_ztunnel(cmd, env, log)
    }

    /// Spawns a prepared ztunnel command with `env` on top, its stderr to `log`.
    fn spawn_ztunnel(
        &mut self,
        mut cmd: Command,
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Ztunnel> {
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting ztunnel")?;
        let pid = child.id();
        self.children.push(child);
        Ok(Ztunnel { log, pid })
    }

    /// Starts ztunnel in `host` with `source` (where config and certificates come from) and
    /// `env`, and waits until it is ready.
    fn launch_ztunnel(
        &mut self,
        host: &Host,
        workload_info: &str,
        source: &[(&str, OsString)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Ztunnel> {
        let log = self.dir.join(format!("ztunnel-{}.log", host.ns));
        let mut cmd = host.command(&self.bins.ztunnel);
        cmd.env("PROXY_MODE", "dedicated")
            .env("PROXY_WORKLOAD_INFO", workload_info);
        for (k, v) in source {
            cmd.env(k, v);
        }
        let z = self.spawn_ztunnel(cmd, env, log)?;
        z.wait_for("ztunnel ready", Duration::from_secs(15))?;
        Ok(z)
    }

    /// Starts `meshapp <args>` in `host` in the background, stdout to `<name>.out`; its pid too.
    pub fn spawn_app_pid(
        &mut self,
        host: &Host,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<(PathBuf, u32)> {
        let out = self.spawn_app(host, name, args)?;
        let pid = self.children.last().map(|c| c.id()).unwrap_or(0);
        Ok((out, pid))
    }

    /// Starts `meshapp <args>` in `host` in the background, stdout to `<name>.out`.
    pub fn spawn_app(&mut self, host: &Host, name: &str, args: &[&str]) -> anyhow::Result<PathBuf> {
        let out = self.dir.join(format!("{name}.out"));
        let child = host
            .command(&self.bins.meshapp)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting meshapp")?;
        self.children.push(child);
        Ok(out)
    }

    /// Runs `meshapp <args>` in `host` to completion (bounded by `timeout`); its stdout.
    pub fn run_app(&self, host: &Host, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        run_with_timeout(host.command(&self.bins.meshapp).args(args), timeout)
    }

    /// `GET http://<addr><path>` from inside `host`: (status, body).
    pub fn http_get(
        &self,
        host: &Host,
        addr: &str,
        path: &str,
    ) -> anyhow::Result<(String, String)> {
        http_get(&self.bins.meshapp, host, addr, path)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Ztunnel {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; fails with the log if it does not in time.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        wait_for_file(&self.log, needle, timeout)
    }

    /// Waits until the log contains `needle` at least `count` times.
    pub fn wait_for_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log();
            if text.matches(needle).count() >= count {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "{needle:?} did not appear {count} times in {} within {timeout:?}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Log lines of the access log (target `access`).
    pub fn access_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" access: "))
            .map(str::to_string)
            .collect()
    }
}

/// Waits until `path` contains `needle`.
pub fn wait_for_file(path: &Path, needle: &str, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "{needle:?} did not appear in {} within {timeout:?}; it holds:\n{text}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET http://<addr><path>` with `meshapp http` inside `host`: (status, body).
pub fn http_get(
    meshapp: &Path,
    host: &Host,
    addr: &str,
    path: &str,
) -> anyhow::Result<(String, String)> {
    let out = run_with_timeout(
        host.command(meshapp)
            .args(["http", "--addr", addr, "--path", path]),
        Duration::from_secs(10),
    )?;
    let (status, body) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    Ok((status.to_string(), body.to_string()))
}

/// Runs a command, killing it after `timeout`; its stdout, or an error with stderr.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    if !status.success() {
        bail!("{cmd:?} failed ({status}): stdout: {out} stderr: {err}");
    }
    Ok(out)
}

/// The sum of every sample of metric `name` (Prometheus text) whose labels contain all of
/// `labels` (each like `policy="demo/x"`); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A workload entry for the local config; `ips` is a YAML list body: `"10.0.0.1", "fd00::1"`.
pub fn workload_yaml(
    name: &str,
    namespace: &str,
    sa: &str,
    ips: &str,
    protocol: &str,
    services: &str,
) -> String {
    format!(
        "- name: {name}\n  namespace: {namespace}\n  serviceAccount: {sa}\n  workloadIps: [{ips}]\n  protocol: {protocol}\n  services: {{{services}}}\n"
    )
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn spiffe(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).expect("test identity")
}
