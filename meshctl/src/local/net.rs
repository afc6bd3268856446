//! Network namespaces and links for a local cluster, through iproute2.
//!
//! The switch namespace holds a bridge (the underlay) with `meshd`'s address; each node has a
//! veth onto it, forwards, and routes every pod: its own through the pod's veth (answering
//! the pod's ARP for anything by proxy), other nodes' through their underlay address. A pod
//! has one veth to its node, its IP as a /32 and a default route out of it.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::plan::{NodePlan, Plan, PodPlan, SWITCH_IP};

/// `ip <args>`.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed, and are we root?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `commands` (one `ip` command a line) inside `netns`.
fn batch(netns: &str, commands: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "in {netns}: {}\n{commands}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A sysctl inside `netns`.
fn sysctl(netns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let status = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c"])
        .arg(format!("echo {value} > {path}"))
        .status()?;
    if !status.success() {
        bail!("sysctl {key}={value} in {netns} failed");
    }
    Ok(())
}

/// The switch, every node and every pod.
pub fn create(plan: &Plan) -> anyhow::Result<()> {
    let sw = plan.switch_netns();
    ip(&["netns", "add", &sw])?;
    batch(
        &sw,
        &format!(
            "link add br0 type bridge\nlink set br0 up\nlink set lo up\naddr add {SWITCH_IP}/24 dev br0\n"
        ),
    )?;
    for node in &plan.nodes {
        create_node(plan, node)?;
    }
    for node in &plan.nodes {
        for pod in &node.pods {
            create_pod(plan, node, pod)?;
        }
    }
    Ok(())
}

fn create_node(plan: &Plan, node: &NodePlan) -> anyhow::Result<()> {
    let sw = plan.switch_netns();
    ip(&["netns", "add", &node.netns])?;
    ip(&[
        "-n",
        &sw,
        "link",
        "add",
        &node.uplink,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &node.netns,
    ])?;
    batch(&sw, &format!("link set {} master br0 up\n", node.uplink))?;
    batch(
        &node.netns,
        &format!(
            "addr add {}/24 dev eth0\nlink set eth0 up\nlink set lo up\n",
            node.underlay_ip
        ),
    )?;
    sysctl(&node.netns, "net.ipv4.ip_forward", "1")
}

/// One pod: its namespace, its veth, its address, and the routes to it on every node.
pub fn create_pod(plan: &Plan, node: &NodePlan, pod: &PodPlan) -> anyhow::Result<()> {
    ip(&["netns", "add", &pod.netns])?;
    ip(&[
        "-n",
        &node.netns,
        "link",
        "add",
        &pod.veth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pod.netns,
    ])?;
    batch(
        &pod.netns,
        &format!(
            "addr add {}/32 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default dev eth0\n",
            pod.ip
        ),
    )?;
    batch(
        &node.netns,
        &format!(
            "link set {} up\nroute add {}/32 dev {}\n",
            pod.veth, pod.ip, pod.veth
        ),
    )?;
    sysctl(
        &node.netns,
        &format!("net.ipv4.conf.{}.proxy_arp", pod.veth),
        "1",
    )?;
    for other in plan.nodes.iter().filter(|n| n.name != node.name) {
        batch(
            &other.netns,
            &format!("route replace {}/32 via {}\n", pod.ip, node.underlay_ip),
        )?;
    }
    // meshd's side too: a pod that talks to it itself (a waypoint) gets its answers back.
    batch(
        &plan.switch_netns(),
        &format!("route replace {}/32 via {}\n", pod.ip, node.underlay_ip),
    )?;
    Ok(())
}

/// Removes a pod's namespace (its veth goes with it) and the other nodes' routes to it.
pub fn delete_pod(plan: &Plan, node: &NodePlan, pod: &PodPlan) {
    kill_inside(&pod.netns);
    let _ = ip(&["netns", "del", &pod.netns]);
    for other in plan.nodes.iter().filter(|n| n.name != node.name) {
        let _ = batch(&other.netns, &format!("route del {}/32\n", pod.ip));
    }
    let _ = batch(&plan.switch_netns(), &format!("route del {}/32\n", pod.ip));
}

/// The namespaces named `<name>.*`.
pub fn existing(name: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{name}.")))
        .map(str::to_string)
        .collect()
}

/// Kills every process inside `netns`.
pub fn kill_inside(netns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// Whether the pod's namespace has the capture rules.
pub fn captured(netns: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "list",
            "table",
            "inet",
            "istio-ambient-nat",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
