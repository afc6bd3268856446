//! Traffic capture inside one workload's network namespace, with nftables: what istio-cni's
//! node agent installs in each ambient pod (shared mode, `node-agent`) and what `ztunnel
//! redirect install` sets up for a dedicated ztunnel. The functions act on the calling
//! thread's namespace; run them inside the pod's (`zds::Netns::run`) to reach a pod.
//!
//! Same semantics as istio-cni's in-pod rules (protocol.md 1.3), in its nftables naming
//! (table `inet istio-ambient-nat`, chains `istio-prerouting` / `istio-output`):
//! - inbound TCP, except to 15008 (HBONE), 15020/15021 (ztunnel's metrics and readiness) and
//!   ztunnel's own marked packets, goes to 15006; kubelet probes (SNATed to 169.254.7.127)
//!   are left alone;
//! - outbound TCP, except to loopback, to the pod itself over `lo`, and except ztunnel's
//!   own marked packets, goes to 15001.
//!
//! ztunnel delivers inbound connections from the pod's own address (no original source
//! spoofing), so istio-cni's connmark/policy-routing rules are not needed here.

use std::io::Write;
use std::process::{Command, Stdio};

/// ztunnel's ports inside the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub outbound: u16,
    pub inbound_plain: u16,
    pub inbound_hbone: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            outbound: 15001,
            inbound_plain: 15006,
            inbound_hbone: 15008,
        }
    }
}

/// Istio's packet mark on ztunnel's sockets (`PACKET_MARK`), which capture lets through.
pub const DEFAULT_MARK: u32 = 0x539;

pub const TABLE: &str = "istio-ambient-nat";
const STATS_PORT: u16 = 15020;
const READINESS_PORT: u16 = 15021;
const PROBE_V4: &str = "169.254.7.127";
const PROBE_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error("running {tool} (are we root?)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} rejected the rules: {message}")]
    Rejected { tool: &'static str, message: String },
    #[error("neither nft (nftables) nor iptables-restore (iptables) runs here: install one")]
    NoTool,
}

/// How the rules are installed: nftables (`inet istio-ambient-nat`, as istio-cni's
/// `native-nftables` mode), or iptables (`ISTIO_PRERT` / `ISTIO_OUTPUT` in the `nat` table, as
/// istio-cni's default) where nftables is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// nftables when `nft` runs here, else iptables when `iptables-restore` does.
    pub fn detect() -> Option<Backend> {
        let runs = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if runs("nft") {
            Some(Backend::Nftables)
        } else if runs("iptables-restore") {
            Some(Backend::Iptables)
        } else {
            None
        }
    }
}

const PRERT: &str = "ISTIO_PRERT";
const OUTPUT: &str = "ISTIO_OUTPUT";

/// The `iptables-restore --noflush` input with the same semantics as [`rules`], for IPv4 or
/// IPv6 (`ip6tables-restore`).
pub fn iptables_rules(ports: Ports, mark: u32, v6: bool) -> String {
    let Ports {
        outbound,
        inbound_plain,
        inbound_hbone,
    } = ports;
    let (loopback, probe) = if v6 {
        ("::1/128", PROBE_V6)
    } else {
        ("127.0.0.1/32", PROBE_V4)
    };
    format!(
        "*nat
:{PRERT} - [0:0]
:{OUTPUT} - [0:0]
-A PREROUTING -j {PRERT}
-A OUTPUT -j {OUTPUT}
-A {PRERT} -m mark --mark {mark:#x}/0xfff -j ACCEPT
-A {PRERT} -s {probe} -p tcp -j ACCEPT
-A {PRERT} ! -d {loopback} -p tcp -m multiport ! --dports {inbound_hbone},{STATS_PORT},{READINESS_PORT} -j REDIRECT --to-ports {inbound_plain}
-A {OUTPUT} -m mark --mark {mark:#x}/0xfff -j ACCEPT
-A {OUTPUT} -d {probe} -p tcp -j ACCEPT
-A {OUTPUT} -o lo -j ACCEPT
-A {OUTPUT} ! -d {loopback} -p tcp -j REDIRECT --to-ports {outbound}
COMMIT
"
    )
}

/// The nftables script that installs capture (replacing an earlier one of ours).
pub fn rules(ports: Ports, mark: u32) -> String {
    let Ports {
        outbound,
        inbound_plain,
        inbound_hbone,
    } = ports;
    // HBONE is not captured (peers speak it to us directly), nor are our metrics and readiness.
    let own = format!("{inbound_hbone}, {STATS_PORT}, {READINESS_PORT}");
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain istio-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    meta mark & 0xfff == {mark:#x} accept
    ip saddr {PROBE_V4} accept
    ip6 saddr {PROBE_V6} accept
    meta l4proto tcp ip daddr != 127.0.0.1 tcp dport != {{ {own} }} redirect to :{inbound_plain}
    meta l4proto tcp ip6 daddr != ::1 tcp dport != {{ {own} }} redirect to :{inbound_plain}
  }}
  chain istio-output {{
    type nat hook output priority -100; policy accept;
    meta mark & 0xfff == {mark:#x} accept
    ip daddr {PROBE_V4} accept
    ip6 daddr {PROBE_V6} accept
    oifname \"lo\" accept
    meta l4proto tcp ip daddr != 127.0.0.1 redirect to :{outbound}
    meta l4proto tcp ip6 daddr != ::1 redirect to :{outbound}
  }}
}}
"
    )
}

/// Installs capture in the current network namespace (replacing ours if there), with
/// nftables, or iptables where nftables is not available.
pub fn install(ports: Ports, mark: u32) -> Result<(), RedirectError> {
    install_with(detected().ok_or(RedirectError::NoTool)?, ports, mark)
}

/// [`Backend::detect`], once per process (the node agent installs rules per pod).
fn detected() -> Option<Backend> {
    static DETECTED: std::sync::OnceLock<Option<Backend>> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(Backend::detect)
}

/// Installs capture with `backend`.
pub fn install_with(backend: Backend, ports: Ports, mark: u32) -> Result<(), RedirectError> {
    match backend {
        Backend::Nftables => run("nft", &["-f", "-"], &rules(ports, mark)),
        Backend::Iptables => {
            remove_iptables();
            run(
                "iptables-restore",
                &["--noflush"],
                &iptables_rules(ports, mark, false),
            )?;
            // A namespace without IPv6 has nothing to capture there.
            if std::path::Path::new("/proc/net/if_inet6").exists() {
                run(
                    "ip6tables-restore",
                    &["--noflush"],
                    &iptables_rules(ports, mark, true),
                )?;
            }
            Ok(())
        }
    }
}

/// Whether our capture rules (either backend) are in the current network namespace.
pub fn installed() -> bool {
    let ok = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("nft", &["list", "table", "inet", TABLE]) || ok("iptables", &["-t", "nat", "-S", OUTPUT])
}

/// Removes capture (either backend) from the current network namespace; nothing there is
/// not an error.
pub fn remove() -> Result<(), RedirectError> {
    if detected() == Some(Backend::Nftables) {
        run(
            "nft",
            &["-f", "-"],
            &format!("table inet {TABLE}\ndelete table inet {TABLE}\n"),
        )?;
    }
    remove_iptables();
    Ok(())
}

/// Our iptables chains and the jumps to them, where they exist.
fn remove_iptables() {
    for tool in ["iptables", "ip6tables"] {
        for (hook, chain) in [("PREROUTING", PRERT), ("OUTPUT", OUTPUT)] {
            let quiet = |args: &[&str]| {
                let _ = Command::new(tool)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            quiet(&["-t", "nat", "-D", hook, "-j", chain]);
            quiet(&["-t", "nat", "-F", chain]);
            quiet(&["-t", "nat", "-X", chain]);
        }
    }
}

fn run(tool: &'static str, args: &[&str], script: &str) -> Result<(), RedirectError> {
    let spawn = |source| RedirectError::Spawn { tool, source };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RedirectError::Rejected {
            tool,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_skip_marked_hbone_and_loopback() {
        let r = rules(Ports::default(), 1337);
        assert!(r.contains("meta mark & 0xfff == 0x539 accept"));
        assert!(r.contains("tcp dport != { 15008, 15020, 15021 } redirect to :15006"));
        assert!(r.contains("ip daddr != 127.0.0.1 redirect to :15001"));
        assert!(r.contains("oifname \"lo\" accept"));
    }

    #[test]
    fn iptables_rules_say_the_same() {
        let v4 = iptables_rules(Ports::default(), 1337, false);
        assert!(v4.contains("-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j ACCEPT"));
        assert!(v4.contains(
            "! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 15008,15020,15021 -j REDIRECT --to-ports 15006"
        ));
        assert!(
            v4.contains("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15001")
        );
        let v6 = iptables_rules(Ports::default(), 1337, true);
        assert!(
            v6.contains("! -d ::1/128") && v6.contains("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
        );
    }
}
