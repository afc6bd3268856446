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
    #[error("running nft (is the nftables package installed, and are we root?)")]
    Spawn(#[source] std::io::Error),
    #[error("nft rejected the rules: {0}")]
    Nft(String),
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

/// Installs capture in the current network namespace (replacing ours if there).
pub fn install(ports: Ports, mark: u32) -> Result<(), RedirectError> {
    nft(&rules(ports, mark))
}

/// Whether our capture table is in the current network namespace.
pub fn installed() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes capture from the current network namespace (no error if it was not there).
pub fn remove() -> Result<(), RedirectError> {
    nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
}

fn nft(script: &str) -> Result<(), RedirectError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RedirectError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(RedirectError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(RedirectError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RedirectError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
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
}
