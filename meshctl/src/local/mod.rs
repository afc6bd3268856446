//! `meshctl local`: a whole mesh on one machine, from the manifest directory `meshd` reads.
//!
//! `up` makes the network (`net`) the manifests describe (`plan`), starts `meshd` on the
//! switch (serving the directory, with local secrets), and per node a `node-agent` and a
//! shared-mode `ztunnel` configured only through Istio's environment names; then it starts
//! each pod's program and leaves a watcher that creates and removes pod namespaces as the
//! directory changes (meshd and the agents follow labels and policies themselves). It returns
//! once the mesh is up; `down` removes everything, and `up` calls it first, so a second `up`
//! after a crash starts clean.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube_source::{ManifestDir, Object};
use serde::{Deserialize, Serialize};

pub mod net;
pub mod plan;

use plan::{Plan, SWITCH_IP};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// The local cluster's name: prefixes its network namespaces.
    #[arg(long, default_value = "mesh")]
    pub name: String,
    /// Where its state, secrets and logs go (a directory per cluster name inside).
    #[arg(long, default_value = "/tmp/meshctl-local")]
    pub state: PathBuf,
    /// The node proxy to run (default: the `ztunnel` beside meshctl). Any ztunnel configured
    /// by Istio's environment names works, Istio's own included.
    #[arg(long)]
    pub ztunnel: Option<PathBuf>,
}

/// What `down`, `status` and `exec` need to know of a running cluster.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    dir: PathBuf,
    /// Processes outside the cluster's namespaces (the watcher).
    pids: Vec<u32>,
}

impl Options {
    fn dir(&self) -> PathBuf {
        self.state.join(&self.name)
    }
    fn state_file(&self) -> PathBuf {
        self.dir().join("state.json")
    }
    fn logs(&self) -> PathBuf {
        self.dir().join("logs")
    }
    fn load(&self) -> anyhow::Result<State> {
        let text = std::fs::read_to_string(self.state_file()).with_context(|| {
            format!(
                "no local cluster {:?} is up ({} is missing)",
                self.name,
                self.state_file().display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A binary beside this one (`meshd`, `node-agent`, `ztunnel`).
fn beside(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found beside meshctl: build the workspace (`cargo build --release`)",
            path.display()
        );
    }
    Ok(path)
}

/// Whether `program` can be run here: a path that exists, or a name on `PATH`.
fn runnable(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn read_plan(dir: &Path, name: &str) -> anyhow::Result<(Plan, Vec<String>)> {
    let mut manifests = ManifestDir::new(dir);
    manifests.refresh();
    let errors = manifests.errors().iter().map(|e| e.to_string()).collect();
    let objects: Vec<Object> = manifests
        .objects()
        .values()
        .map(|(o, _)| o.clone())
        .collect();
    Ok((Plan::new(name, &objects, runnable), errors))
}

/// Starts `program` inside `netns` in the background, output to `log`.
fn spawn_in(
    netns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> anyhow::Result<u32> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {} in {netns}", program.display()))?;
    Ok(child.id())
}

pub fn up(dir: &Path, opts: &Options) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("manifest directory {}", dir.display()))?;
    down(opts)?;
    let (plan, errors) = read_plan(&dir, &opts.name)?;
    for e in &errors {
        eprintln!("manifest error (the rest still applies): {e}");
    }
    for (pod, why) in &plan.skipped {
        eprintln!("pod {pod} not made: {why}");
    }
    if plan.nodes.is_empty() {
        bail!(
            "no pod in {} names a node and an IPv4 address: nothing to run",
            dir.display()
        );
    }
    let meshd = beside("meshd")?;
    let agent = beside("node-agent")?;
    let ztunnel = match &opts.ztunnel {
        Some(p) => p.clone(),
        None => beside("ztunnel")?,
    };
    let logs = opts.logs();
    std::fs::create_dir_all(&logs)?;
    let secrets = opts.dir().join("secrets");
    net::create(&plan).context("creating the network")?;

    let sw = plan.switch_netns();
    spawn_in(
        &sw,
        &meshd,
        &[
            "--manifests".into(),
            dir.display().to_string(),
            "--cacerts".into(),
            opts.dir().join("cacerts").display().to_string(),
            "--local-secrets".into(),
            secrets.display().to_string(),
            "--grpc-addr".into(),
            format!("{SWITCH_IP}:15012"),
            "--monitoring-addr".into(),
            format!("{SWITCH_IP}:15014"),
        ],
        &[],
        &logs.join("meshd.log"),
    )?;
    for node in &plan.nodes {
        wait_for(
            &secrets.join(format!("token-{}", node.name)),
            Duration::from_secs(30),
        )
        .with_context(|| {
            format!(
                "meshd did not write the token of {} (see {})",
                node.name,
                logs.join("meshd.log").display()
            )
        })?;
    }
    for node in &plan.nodes {
        let socket = opts.dir().join(&node.name).join("ztunnel.sock");
        std::fs::create_dir_all(opts.dir().join(&node.name))?;
        spawn_in(
            &node.netns,
            &agent,
            &[
                "--manifests".into(),
                dir.display().to_string(),
                "--node".into(),
                node.name.clone(),
                "--socket".into(),
                socket.display().to_string(),
                "--pod-netns-prefix".into(),
                format!("{}.", node.netns),
            ],
            &[],
            &logs.join(format!("node-agent-{}.log", node.name)),
        )?;
        // Istio's ztunnel environment, nothing of ours: any ztunnel joins this way.
        let root = secrets.join("root-cert.pem").display().to_string();
        let env = [
            ("PROXY_MODE", "shared".to_string()),
            ("XDS_ADDRESS", format!("https://{SWITCH_IP}:15012")),
            ("CA_ADDRESS", format!("https://{SWITCH_IP}:15012")),
            ("XDS_ROOT_CA", root.clone()),
            ("CA_ROOT_CA", root),
            ("ALT_XDS_HOSTNAME", "istiod.istio-system.svc".to_string()),
            ("ALT_CA_HOSTNAME", "istiod.istio-system.svc".to_string()),
            (
                "AUTH_TOKEN",
                secrets
                    .join(format!("token-{}", node.name))
                    .display()
                    .to_string(),
            ),
            ("INPOD_UDS", socket.display().to_string()),
            ("NODE_NAME", node.name.clone()),
            ("INSTANCE_IP", node.underlay_ip.to_string()),
            ("POD_NAME", format!("ztunnel-{}", node.name)),
            ("POD_NAMESPACE", "istio-system".to_string()),
            ("RUST_LOG", "info".to_string()),
        ];
        spawn_in(
            &node.netns,
            &ztunnel,
            &[],
            &env,
            &logs.join(format!("ztunnel-{}.log", node.name)),
        )?;
    }
    for node in &plan.nodes {
        for pod in node.pods.iter().filter(|p| p.waypoint.is_some()) {
            start_waypoint(opts, &meshd, pod)?;
        }
        for pod in node
            .pods
            .iter()
            .filter(|p| !p.command.is_empty() && p.waypoint.is_none())
        {
            start_app(opts, pod)?;
        }
    }
    let watcher = Command::new(std::env::current_exe()?)
        .args(["local", "watch"])
        .arg(&dir)
        .args(["--name", &opts.name, "--state"])
        .arg(&opts.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.join("watch.log"))?)
        .spawn()
        .context("starting the watcher")?;
    let state = State {
        dir: dir.clone(),
        pids: vec![watcher.id()],
    };
    std::fs::write(opts.state_file(), serde_json::to_string_pretty(&state)?)?;
    // Ready when every node's ztunnel is.
    for node in &plan.nodes {
        wait_ready(&node.netns, Duration::from_secs(60)).with_context(|| {
            format!(
                "the ztunnel of {} is not ready (see {})",
                node.name,
                logs.join(format!("ztunnel-{}.log", node.name)).display()
            )
        })?;
    }
    for pod in plan
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .filter(|p| p.waypoint.is_some())
    {
        wait_ready(&pod.netns, Duration::from_secs(60)).with_context(|| {
            format!(
                "the waypoint {} is not ready (see {})",
                pod.key,
                logs.join(format!("waypoint-{}.log", pod.key.replace('/', ".")))
                    .display()
            )
        })?;
    }
    println!(
        "local cluster {:?} is up: meshd at {SWITCH_IP}:15012 (metrics and debug at :15014)",
        opts.name
    );
    print_status(opts, &plan);
    Ok(())
}

/// Rule 5 of the plan: the `waypoint` binary in the pod's namespace, joining meshd with a
/// token for its service account (`meshd --print-token`), configured by Istio's names.
fn start_waypoint(opts: &Options, meshd: &Path, pod: &plan::PodPlan) -> anyhow::Result<()> {
    let Some((ns, sa, name)) = &pod.waypoint else {
        return Ok(());
    };
    let waypoint = beside("waypoint")?;
    let secrets = opts.dir().join("secrets");
    let out = Command::new(meshd)
        .arg("--cacerts")
        .arg(opts.dir().join("cacerts"))
        .args(["--print-token", &format!("{ns}/{sa}/{name}")])
        .output()
        .context("meshd --print-token")?;
    if !out.status.success() {
        bail!(
            "a token for waypoint {}: {}",
            pod.key,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = secrets.join(format!("token-{ns}.{name}"));
    std::fs::write(&token, out.stdout.trim_ascii())?;
    let root = secrets.join("root-cert.pem");
    let env = [
        ("XDS_ADDRESS", format!("https://{SWITCH_IP}:15012")),
        ("XDS_ROOT_CA", root.display().to_string()),
        ("ALT_XDS_HOSTNAME", "istiod.istio-system.svc".to_string()),
        ("AUTH_TOKEN", token.display().to_string()),
        ("POD_NAME", name.clone()),
        ("POD_NAMESPACE", ns.clone()),
        ("SERVICE_ACCOUNT", sa.clone()),
        ("INSTANCE_IP", pod.ip.to_string()),
        ("RUST_LOG", "info".to_string()),
    ];
    let log = opts
        .logs()
        .join(format!("waypoint-{}.log", pod.key.replace('/', ".")));
    spawn_in(&pod.netns, &waypoint, &[], &env, &log)?;
    Ok(())
}

fn start_app(opts: &Options, pod: &plan::PodPlan) -> anyhow::Result<()> {
    let (program, args) = pod.command.split_first().context("no command")?;
    let log = opts
        .logs()
        .join(format!("pod-{}.log", pod.key.replace('/', ".")));
    spawn_in(&pod.netns, Path::new(program), args, &[], &log)?;
    Ok(())
}

fn wait_for(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear in {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Polls the node's ztunnel readiness (`127.0.0.1:15021/healthz/ready` in its namespace).
fn wait_ready(netns: &str, timeout: Duration) -> anyhow::Result<()> {
    let ns = zds::Netns::open(Path::new("/var/run/netns").join(netns))?;
    let deadline = Instant::now() + timeout;
    loop {
        if ns.run(ready_here).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /healthz/ready` on 127.0.0.1:15021 of the calling thread's namespace answers 200.
fn ready_here() -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], 15021)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz/ready HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

pub fn down(opts: &Options) -> anyhow::Result<()> {
    let mut pids = opts.load().map(|s| s.pids).unwrap_or_default();
    // A watcher whose state file is gone (its directory removed) is found by its arguments.
    pids.extend(watchers(&opts.name));
    for pid in pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let existing = net::existing(&opts.name);
    // Pods first, then nodes, then the switch: processes inside go with their namespace.
    let mut ordered = existing.clone();
    ordered.sort_by_key(|n| std::cmp::Reverse(n.matches('.').count()));
    for ns in &ordered {
        net::kill_inside(ns);
    }
    for ns in &ordered {
        let _ = net::ip(&["netns", "del", ns]);
    }
    let _ = std::fs::remove_file(opts.state_file());
    if !existing.is_empty() {
        eprintln!(
            "local cluster {:?}: removed {} network namespaces",
            opts.name,
            existing.len()
        );
    }
    Ok(())
}

/// Processes running `meshctl local watch ... --name <name>`.
fn watchers(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let has = |w: &[u8]| args.contains(&w);
            let named = args
                .windows(2)
                .any(|w| w[0] == b"--name" && w[1] == name.as_bytes());
            (has(b"local") && has(b"watch") && named && pid != std::process::id()).then_some(pid)
        })
        .collect()
}

pub fn status(opts: &Options) -> anyhow::Result<()> {
    let state = opts.load()?;
    let (plan, _) = read_plan(&state.dir, &opts.name)?;
    println!("local cluster {:?} from {}", opts.name, state.dir.display());
    print_status(opts, &plan);
    Ok(())
}

fn print_status(opts: &Options, plan: &Plan) {
    let existing = net::existing(&opts.name);
    for node in &plan.nodes {
        println!(
            "node {} ({}, netns {})",
            node.name, node.underlay_ip, node.netns
        );
        for pod in &node.pods {
            let made = existing.contains(&pod.netns);
            let state = match (made, made && net::captured(&pod.netns)) {
                (false, _) => "not made",
                (true, true) => "captured by ztunnel",
                (true, false) => "not captured",
            };
            println!("  pod {:<32} {:<15} {state}", pod.key, pod.ip.to_string());
        }
    }
    println!("logs: {}", opts.logs().display());
}

pub fn exec(opts: &Options, pod: &str, command: &[String]) -> anyhow::Result<i32> {
    let state = opts.load()?;
    let (plan, _) = read_plan(&state.dir, &opts.name)?;
    let (_, p) = plan
        .pod(pod)
        .with_context(|| format!("no pod {pod} in the local cluster {:?}", opts.name))?;
    let status = Command::new("ip")
        .args(["netns", "exec", &p.netns])
        .args(command)
        .status()
        .context("running the command")?;
    Ok(status.code().unwrap_or(1))
}

/// The background watcher `up` leaves: pods added to or removed from the directory get their
/// namespace (and program) made or removed. Runs until killed by `down`.
pub fn watch(dir: &Path, opts: &Options) -> anyhow::Result<()> {
    let (mut current, _) = read_plan(dir, &opts.name)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok((next, _)) = read_plan(dir, &opts.name) else {
            continue;
        };
        for node in &current.nodes {
            for pod in &node.pods {
                if next.pod(&pod.key).map(|(n, p)| (n.name.as_str(), p))
                    != Some((node.name.as_str(), pod))
                {
                    eprintln!("pod {} removed", pod.key);
                    net::delete_pod(&current, node, pod);
                }
            }
        }
        for node in &next.nodes {
            if !current.nodes.iter().any(|n| n.name == node.name) {
                eprintln!(
                    "node {} is new: run `meshctl local up` again to add nodes",
                    node.name
                );
                continue;
            }
            for pod in &node.pods {
                if current.pod(&pod.key).map(|(n, p)| (n.name.as_str(), p))
                    == Some((node.name.as_str(), pod))
                {
                    continue;
                }
                eprintln!("pod {} added", pod.key);
                if let Err(e) = net::create_pod(&next, node, pod) {
                    eprintln!("pod {}: {e:#}", pod.key);
                    continue;
                }
                let started = if pod.waypoint.is_some() {
                    beside("meshd").and_then(|meshd| start_waypoint(opts, &meshd, pod))
                } else if !pod.command.is_empty() {
                    start_app(opts, pod)
                } else {
                    Ok(())
                };
                if let Err(e) = started {
                    eprintln!("pod {}: {e:#}", pod.key);
                }
            }
        }
        // Nodes that were not made stay out of the plan the next round compares with.
        let made: Vec<String> = current.nodes.iter().map(|n| n.name.clone()).collect();
        current = next;
        current.nodes.retain(|n| made.contains(&n.name));
    }
}
