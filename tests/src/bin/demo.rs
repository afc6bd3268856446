//! `demo`: the mesh on an embedded default, no cluster needed. Two workloads in network
//! namespaces, a dedicated ztunnel beside each; prints what happened on the way.
//! Needs root, iproute2, nftables and tcpdump.

use std::time::Duration;

use anyhow::bail;
use e2e::capture::{Capture, TLS_APPLICATION_DATA, contains};
use e2e::mesh::{Binaries, wait_for_file};
use e2e::topology::{BARE_IP, CLIENT_IP, Options, SERVER_IP, TwoWorkloads};

const T: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bins = Binaries::beside(exe.with_file_name("meshapp"))?;
    println!(
        "starting two workloads, each with a dedicated ztunnel, in network namespaces e2e-demo.*"
    );
    let mut w = TwoWorkloads::start("demo", bins, Options::default())?;
    println!("  client  {CLIENT_IP}  spiffe://cluster.local/ns/demo/sa/client");
    println!("  server  {SERVER_IP}  spiffe://cluster.local/ns/demo/sa/server");

    let server = w.server.clone();
    let echo = w
        .mesh
        .spawn_app(&server, "echo", &["echo", "--listen", "0.0.0.0:8080"])?;
    wait_for_file(&echo, "listening", T)?;

    // Capture the client's link while a message crosses it.
    let capture = Capture::start(&w.net, "client", w.mesh.dir.join("link.pcap"))?;
    let message = "hello from the client, in plaintext";
    let out = w.mesh.run_app(
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            message,
        ],
        T,
    )?;
    let bytes = capture.stop()?;
    println!(
        "\nclient -> {SERVER_IP}:8080 (plain TCP from the app's point of view): {}",
        out.trim()
    );

    let server_log = w.zt_server.wait_for("direction=\"inbound\"", T)?;
    let inbound = server_log
        .lines()
        .find(|l| l.contains("direction=\"inbound\""))
        .unwrap_or_default();
    println!("server's ztunnel access log:\n  {}", strip_time(inbound));
    let client_log = w.zt_client.log();
    let outbound = client_log
        .lines()
        .find(|l| l.contains("direction=\"outbound\""))
        .unwrap_or_default();
    println!("client's ztunnel access log:\n  {}", strip_time(outbound));

    let has = |needle: &[u8]| contains(&bytes, needle);
    println!(
        "\non the wire ({} bytes captured on the client's link): TLS application-data records {}, the app's plaintext {}",
        bytes.len(),
        if has(&TLS_APPLICATION_DATA) {
            "present"
        } else {
            "ABSENT"
        },
        if has(message.as_bytes()) {
            "VISIBLE"
        } else {
            "not visible"
        },
    );
    if !has(&TLS_APPLICATION_DATA) || has(message.as_bytes()) {
        bail!("the link did not carry TLS only");
    }

    // Throughput: through both ztunnels, then straight over the same kind of link.
    let bare = w.bare.clone();
    let sink = w.mesh.spawn_app(
        &server,
        "pattern",
        &["pattern-server", "--listen", "0.0.0.0:9000"],
    )?;
    wait_for_file(&sink, "listening", T)?;
    let sink = w.mesh.spawn_app(
        &bare,
        "pattern-bare",
        &["pattern-server", "--listen", "0.0.0.0:9000"],
    )?;
    wait_for_file(&sink, "listening", T)?;
    let size = "536870912";
    println!("\nthroughput, 512 MiB each, one stream, verified byte for byte:");
    let tunnel = w.mesh.run_app(
        &w.client,
        &[
            "pattern-send",
            "--connect",
            "10.244.0.2:9000",
            "--bytes",
            size,
        ],
        T,
    )?;
    let direct = w.mesh.run_app(
        &w.outsider,
        &[
            "pattern-send",
            "--connect",
            &format!("{BARE_IP}:9000"),
            "--bytes",
            size,
        ],
        T,
    )?;
    let mbps = |s: &str| {
        s.split("MBps=")
            .nth(1)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!("  through the ztunnels : {}", tunnel.trim());
    println!("  direct over the link : {}", direct.trim());
    println!(
        "  tunnel / direct      : {:.2}",
        mbps(&tunnel) / mbps(&direct).max(f64::MIN_POSITIVE)
    );
    println!("\nlogs and capture: {}", w.mesh.dir.display());
    Ok(())
}

/// Drops the timestamp and level so the line reads well in a terminal.
fn strip_time(line: &str) -> &str {
    line.split_once(" access: ")
        .map(|(_, rest)| rest)
        .unwrap_or(line)
}
