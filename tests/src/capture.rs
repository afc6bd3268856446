//! Packet captures on a host's link, taken on its switch port with tcpdump, so a test can
//! say what actually crossed the wire.

use std::io::{BufRead, BufReader};
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
        Capture::on(net.switch_ns(), &format!("v-{role}"), path)
    }

    /// A capture of `interface` in network namespace `netns`, once tcpdump listens.
    pub fn on(netns: &str, interface: &str, path: PathBuf) -> anyhow::Result<Capture> {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "tcpdump", "-i", interface])
            .args(["--immediate-mode", "-U", "-s", "0", "-w"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (apt-get install tcpdump)")?;
        let mut capture = Capture { child, path };
        // Traffic must not start before tcpdump has opened the interface, which it says on
        // stderr ("listening on ..."); a fixed sleep was not enough on a loaded machine.
        let stderr = capture.child.stderr.take().context("tcpdump's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end, so tcpdump never blocks or dies writing its exit summary.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(15)).is_err() {
            let _ = capture.child.kill();
            anyhow::bail!("tcpdump did not start listening on {interface} within 15 s");
        }
        Ok(capture)
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
