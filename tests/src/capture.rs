//! Packet captures on a host's link, taken on its switch port with tcpdump, so a test can
//! say what actually crossed the wire.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::netns::Net;

/// A running capture of everything on the link of host `role`.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    pub fn start(net: &Net, role: &str, path: PathBuf) -> anyhow::Result<Capture> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                net.switch_ns(),
                "tcpdump",
                "-i",
                &format!("v-{role}"),
            ])
            .args(["-U", "-s", "0", "-w"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tcpdump (apt-get install tcpdump)")?;
        // tcpdump needs a moment to open the interface before traffic starts.
        std::thread::sleep(Duration::from_millis(700));
        Ok(Capture { child, path })
    }

    /// Stops the capture and returns the pcap file's bytes.
    pub fn stop(mut self) -> anyhow::Result<Vec<u8>> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The header of a TLS 1.2/1.3 application-data record (TLS 1.3 disguises all its records so).
pub const TLS_APPLICATION_DATA: [u8; 3] = [0x17, 0x03, 0x03];
