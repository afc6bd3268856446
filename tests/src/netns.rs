//! Test hosts: one Linux network namespace per host, all attached to a bridge that lives in
//! a switch namespace of its own, so nothing touches the machine's own network.
//!
//! Names are derived from the test's name, so tests run side by side; leftovers of an
//! earlier run with the same name are removed first. Everything is deleted on drop.

use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

/// A private L2 segment (a bridge in its own namespace).
pub struct Net {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
}

/// One host on a [`Net`].
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: IpAddr,
    /// The host's IPv6 address: `fd00:e2e::<last octet of ip>`.
    pub ip6: IpAddr,
}

impl Net {
    /// A new segment for `test`. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): fails loudly otherwise.
    pub fn new(test: &str) -> anyhow::Result<Net> {
        let prefix = format!("e2e-{test}");
        cleanup(&prefix);
        let switch = format!("{prefix}.sw");
        ip(&["netns", "add", &switch])
            .context("creating a network namespace failed: these tests need root and iproute2")?;
        let net = Net {
            prefix,
            switch,
            hosts: Vec::new(),
        };
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    /// Adds a host named `role` with address `addr` (a /24 on the segment).
    pub fn host(&mut self, role: &str, addr: &str) -> anyhow::Result<Host> {
        let ns = format!("{}.{role}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        let port = format!("v-{role}");
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Connection-rate runs open tens of thousands of connections: widen the ephemeral
        // ports and reuse TIME_WAIT ones, so the port space is not what gets measured.
        run(Command::new("ip").args(["netns", "exec", &ns, "sh", "-c",
            "echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range && echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse"]))?;
        // Service VIPs live off-link: a default route lets the app's connect() reach the
        // capture rules, which redirect it before it would leave.
        ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
        let v4: std::net::Ipv4Addr = addr.parse().context("host address")?;
        let v6: IpAddr = format!("fd00:e2e::{}", v4.octets()[3]).parse()?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
        Ok(Host {
            ns,
            ip: IpAddr::V4(v4),
            ip6: v6,
        })
    }

    /// Adds `count` bare hosts `<role>-<i>` (no link to the segment: a veth pair within, holding
    /// the address `addr(i)` as a /32): enough for a pod whose network namespace must exist
    /// and own an address, in numbers. One `ip -batch` per namespace.
    pub fn bare_hosts(
        &mut self,
        role: &str,
        count: usize,
        addr: impl Fn(usize) -> String,
    ) -> anyhow::Result<Vec<Host>> {
        let mut hosts = Vec::new();
        for i in 0..count {
            let ns = format!("{}.{role}-{i}", self.prefix);
            let a = addr(i);
            ip(&["netns", "add", &ns])?;
            self.hosts.push(ns.clone());
            batch(
                &ns,
                &format!(
                    "link add d0 type veth peer name d1\naddr add {a}/32 dev d0\nlink set d1 up\nlink set d0 up\nlink set lo up\n"
                ),
            )?;
            let ip: IpAddr = a.parse().context("bare host address")?;
            hosts.push(Host { ns, ip, ip6: ip });
        }
        Ok(hosts)
    }

    pub fn switch_ns(&self) -> &str {
        &self.switch
    }
}

impl Host {
    /// A command that runs inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            // Processes still inside keep the namespace alive; kill them first.
            let _ = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `commands` (one `ip` command a line) in namespace `ns`.
fn batch(ns: &str, commands: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("ip -batch")?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(commands.as_bytes())?;
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "ip -n {ns} -batch failed:\n{commands}");
    Ok(())
}

fn cleanup(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&format!("{prefix}.")) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
