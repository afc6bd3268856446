//! `demo`: the mesh as a new user first meets it, no cluster needed. `meshd`, the control
//! plane, serves the manifests in `examples/mesh/`; three workloads in network namespaces get
//! a dedicated ztunnel each, configured only by meshd (xDS and certificates). Prints what
//! happened on the way. Needs root, iproute2, nftables and tcpdump.

use std::time::Duration;

use anyhow::{Context, bail};
use e2e::capture::{Capture, TLS_APPLICATION_DATA, contains};
use e2e::mesh::{Binaries, metric_sum, wait_for_file};
use e2e::topology::{
    BARE_IP, CLIENT_NODE, OTHER_IP, Options, SERVER_IP, TwoWorkloads, example_manifests,
};

const T: Duration = Duration::from_secs(120);
/// How the demo names the directory meshd serves.
const EXAMPLES: &str = "examples/mesh/";

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bins = Binaries::beside(exe.with_file_name("meshapp"))?;
    let manifests = example_manifests();
    if !manifests.is_dir() {
        bail!(
            "{} not found: run the demo from its checkout",
            manifests.display()
        );
    }
    println!(
        "starting meshd on {EXAMPLES} and a dedicated ztunnel per workload, in network namespaces e2e-demo.*"
    );
    let mut w = TwoWorkloads::start(
        "demo",
        bins,
        Options {
            meshd: Some(&manifests),
            ..Options::default()
        },
    )?;
    let meshd = w.meshd.as_ref().context("no meshd")?;
    println!(
        "  meshd   {}  xDS and CA (TLS, gRPC); metrics and debug on {}",
        meshd.grpc_addr(),
        meshd.monitoring_addr()
    );
    let other = w.net.host("other", OTHER_IP)?;
    let _zt_other =
        w.mesh
            .start_ztunnel_xds(&other, "demo/other/other", CLIENT_NODE, meshd, &[])?;

    // What the ztunnels hold came from the manifests, through meshd only.
    let (_, dump) = w
        .mesh
        .http_get(&w.server, "127.0.0.1:15000", "/config_dump")?;
    let dump: serde_json::Value = serde_json::from_str(&dump).context("ztunnel config_dump")?;
    println!("\nconfig from {EXAMPLES}, as the server's ztunnel received it from meshd:");
    for wl in dump["workloads"].as_array().into_iter().flatten() {
        let ips: Vec<&str> = wl["workloadIps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str())
            .collect();
        println!(
            "  pod {:<7} {:<26} {}  spiffe://cluster.local/ns/{}/sa/{}",
            wl["name"].as_str().unwrap_or("?"),
            ips.join(", "),
            wl["node"].as_str().unwrap_or("?"),
            wl["namespace"].as_str().unwrap_or("?"),
            wl["serviceAccount"].as_str().unwrap_or("?"),
        );
    }
    for svc in dump["services"].as_array().into_iter().flatten() {
        println!(
            "  service {}  vips {}  ports {}",
            svc["hostname"].as_str().unwrap_or("?"),
            svc["vips"],
            svc["ports"]
        );
    }
    for p in dump["policies"].as_array().into_iter().flatten() {
        println!(
            "  AuthorizationPolicy {}/{}  action {}",
            p["namespace"].as_str().unwrap_or("?"),
            p["name"].as_str().unwrap_or("?"),
            p["action"].as_str().unwrap_or("?")
        );
    }
    let (_, meshd_metrics) = w
        .mesh
        .http_get(&meshd.host, &meshd.monitoring_addr(), "/metrics")?;
    println!(
        "  certificates issued by meshd's CA: {} (one per workload; no CA files on the ztunnels' side)",
        metric_sum(
            &meshd_metrics,
            "citadel_server_success_cert_issuance_count_total",
            &[]
        )
    );

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
    println!(
        "identities proved in the mutual TLS handshake: client {} to the server, server {} to the client",
        field(inbound, "src.identity"),
        field(outbound, "dst.identity")
    );

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

    // The example's AuthorizationPolicy at work: `other` is not the client.
    let refused = w.mesh.run_app(
        &other,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            "let me in",
        ],
        T,
    );
    let got_through = matches!(&refused, Ok(out) if out.trim() == "received: let me in");
    println!(
        "\nother -> {SERVER_IP}:8080: {}",
        if got_through {
            "GOT THROUGH"
        } else {
            "refused"
        }
    );
    if got_through {
        bail!("the example's AuthorizationPolicy did not refuse demo/other");
    }
    let server_log = w.zt_server.wait_for("denied by policy", T)?;
    let denied = server_log
        .lines()
        .find(|l| l.contains("denied by policy"))
        .unwrap_or_default();
    println!("server's ztunnel access log:\n  {}", strip_time(denied));
    let (_, metrics) = w.mesh.http_get(&w.server, "127.0.0.1:15020", "/metrics")?;
    let denials: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ztunnel_authorization_denials_total"))
        .collect();
    println!("server's ztunnel metrics:");
    for l in &denials {
        println!("  {l}");
    }
    if !denied.contains("demo/server-only-client") {
        bail!("the refusal does not name the example's policy: {denied}");
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

/// The value of `name=` in a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("(none)")
}

/// Drops the timestamp and level so the line reads well in a terminal.
fn strip_time(line: &str) -> &str {
    line.split_once(" access: ")
        .map(|(_, rest)| rest)
        .unwrap_or(line)
}
