//! End-to-end: two workloads in network namespaces, a dedicated ztunnel beside each, real
//! nftables capture, real mutual TLS and HTTP/2 on a veth link. Needs root.

use std::time::Duration;

use e2e::capture::{Capture, TLS_APPLICATION_DATA, contains};
use e2e::mesh::{Binaries, run_with_timeout, spiffe, wait_for_file};
use e2e::netns::Host;
use e2e::topology::{OUTSIDER_IP, Options, SERVER_IP, SERVICE_HOST, TwoWorkloads, VIP};

const T: Duration = Duration::from_secs(30);

fn bins() -> Binaries {
    Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries")
}

fn start(test: &str) -> TwoWorkloads {
    start_with(test, Options::default())
}

fn start_with(test: &str, opts: Options<'_>) -> TwoWorkloads {
    TwoWorkloads::start(test, bins(), opts).expect("topology")
}

/// Starts a meshapp server in `host` and waits until it listens.
fn serve(w: &mut TwoWorkloads, host: &Host, name: &str, args: &[&str]) {
    w.serve(host, name, args).expect("server up");
}

fn app(w: &TwoWorkloads, host: &Host, args: &[&str]) -> String {
    w.mesh.run_app(host, args, T).expect("meshapp")
}

/// Starts the pattern server (verifies every byte it receives) on the server host.
fn serve_pattern(w: &mut TwoWorkloads) {
    let server = w.server.clone();
    serve(
        w,
        &server,
        "pattern",
        &["pattern-server", "--listen", "0.0.0.0:9000"],
    );
}

/// Sends `bytes` of the verifiable pattern from the client to the server through the tunnel;
/// what the sender printed (`OK <bytes> ...` on success).
fn send_pattern(w: &TwoWorkloads, bytes: &str, extra: &[&str], timeout: Duration) -> String {
    let mut args = vec![
        "pattern-send",
        "--connect",
        "10.244.0.2:9000",
        "--bytes",
        bytes,
    ];
    args.extend_from_slice(extra);
    w.mesh.run_app(&w.client, &args, timeout).unwrap()
}

#[test]
fn round_trip_carries_client_identity() {
    let mut w = start("roundtrip");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            "hello mesh",
        ],
    );
    assert_eq!(out.trim(), "received: hello mesh");

    let inbound = w.zt_server.wait_for("direction=\"inbound\"", T).unwrap();
    let line = inbound
        .lines()
        .find(|l| l.contains("direction=\"inbound\""))
        .unwrap();
    assert!(line.contains("connection complete"), "{line}");
    assert!(
        line.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "{line}"
    );
    assert!(line.contains("dst.addr=10.244.0.2:8080"), "{line}");
    assert!(
        line.contains("bytes_sent=10") && line.contains("bytes_recv=10"),
        "{line}"
    );
    let outbound = w.zt_client.wait_for("direction=\"outbound\"", T).unwrap();
    let line = outbound
        .lines()
        .find(|l| l.contains("direction=\"outbound\""))
        .unwrap();
    assert!(line.contains("dst.hbone_addr=10.244.0.2:15008"), "{line}");
    assert!(
        line.contains("dst.identity=spiffe://cluster.local/ns/demo/sa/server"),
        "{line}"
    );
}

#[test]
fn ipv6_round_trip() {
    let mut w = start("ipv6");
    let server = w.server.clone();
    serve(&mut w, &server, "echo", &["echo", "--listen", "[::]:8080"]);
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "[fd00:e2e::2]:8080",
            "--message",
            "over v6",
        ],
    );
    assert_eq!(out.trim(), "received: over v6");
    let log = w.zt_server.wait_for("direction=\"inbound\"", T).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("direction=\"inbound\""))
        .unwrap();
    assert!(line.contains("dst.addr=[fd00:e2e::2]:8080"), "{line}");
    assert!(
        line.contains("dst.hbone_addr=[fd00:e2e::2]:15008"),
        "{line}"
    );
    assert!(
        line.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "{line}"
    );
}

#[test]
fn one_gib_arrives_intact() {
    let mut w = start("bigtransfer");
    serve_pattern(&mut w);
    let out = send_pattern(&w, "1073741824", &[], Duration::from_secs(300));
    eprintln!("1 GiB through the tunnel: {}", out.trim());
    assert!(out.starts_with("OK 1073741824 "), "{out}");
    // The bytes went through the tunnel, not around it.
    let log = w.zt_server.wait_for("bytes_sent=1073741824", T).unwrap();
    assert!(log.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"));
}

#[test]
fn single_threaded_runtime_carries_traffic() {
    // ZTUNNEL_WORKER_THREADS=1 runs ztunnel on a current-thread runtime: nothing on the data
    // path may need a second thread (block_in_place, a blocking wait on another task).
    let mut w = start_with(
        "onethread",
        Options {
            env: vec![("ZTUNNEL_WORKER_THREADS", "1")],
            ..Options::default()
        },
    );
    serve_pattern(&mut w);
    let out = send_pattern(&w, "67108864", &[], Duration::from_secs(120));
    assert!(out.starts_with("OK 67108864 "), "{out}");
    let log = w.zt_server.wait_for("bytes_sent=67108864", T).unwrap();
    assert!(log.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"));
}

#[test]
fn half_close_works_both_ways() {
    let mut w = start("halfclose");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    // Client FINs first; the server's reply still arrives.
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            "client-first",
        ],
    );
    assert_eq!(out.trim(), "received: client-first");
    // Server FINs first; the client's answer still arrives.
    let greet = w
        .mesh
        .spawn_app(
            &server,
            "greet",
            &[
                "greet",
                "--listen",
                "0.0.0.0:7000",
                "--message",
                "server-first",
            ],
        )
        .unwrap();
    wait_for_file(&greet, "listening", T).unwrap();
    let out = app(
        &w,
        &w.client,
        &[
            "answer",
            "--connect",
            "10.244.0.2:7000",
            "--message",
            "client-after",
        ],
    );
    assert_eq!(out.trim(), "received: server-first");
    wait_for_file(&greet, "received: client-after", T).unwrap();
}

#[test]
fn thousand_connections_share_few_http2_connections() {
    let mut w = start("pooling");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let out = w
        .mesh
        .spawn_app(
            &w.client.clone(),
            "many",
            &[
                "many",
                "--connect",
                "10.244.0.2:8080",
                "--count",
                "1000",
                "--hold-secs",
                "3",
            ],
        )
        .unwrap();
    wait_for_file(&out, "open 1000", Duration::from_secs(60)).unwrap();
    let ss = run_with_timeout(
        w.server
            .command("ss")
            .args(["-Htn", "state", "established", "( sport = :15008 )"]),
        T,
    )
    .unwrap();
    let conns = ss.lines().filter(|l| !l.trim().is_empty()).count();
    eprintln!("1000 streams over {conns} HBONE connections");
    // 100 streams per connection: 10, with a little slack for a connection being replaced.
    assert!(
        (10..=12).contains(&conns),
        "{conns} HBONE connections:\n{ss}"
    );
    wait_for_file(&out, "ok", T).unwrap();
}

#[test]
fn service_vip_reaches_an_endpoint() {
    let mut w = start("vip");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            &format!("{VIP}:80"),
            "--message",
            "via vip",
        ],
    );
    assert_eq!(out.trim(), "received: via vip");
    let log = w.zt_client.wait_for("direction=\"outbound\"", T).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("direction=\"outbound\""))
        .unwrap();
    assert!(
        line.contains(&format!("dst.service=\"{SERVICE_HOST}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("dst.addr={SERVER_IP}:8080")),
        "{line}"
    );
}

#[test]
fn unknown_address_passes_through_in_plaintext_and_mesh_traffic_is_tls() {
    let mut w = start("capture");
    let server = w.server.clone();
    let outsider = w.outsider.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    serve(
        &mut w,
        &outsider,
        "echo-out",
        &["echo", "--listen", "0.0.0.0:8080"],
    );

    let capture = Capture::start(&w.net, "client", w.mesh.dir.join("link.pcap")).unwrap();
    let mesh_marker = "MESH-SECRET-0123456789";
    let plain_marker = "PLAIN-VISIBLE-9876543210";
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            mesh_marker,
        ],
    );
    assert_eq!(out.trim(), format!("received: {mesh_marker}"));
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            &format!("{OUTSIDER_IP}:8080"),
            "--message",
            plain_marker,
        ],
    );
    assert_eq!(out.trim(), format!("received: {plain_marker}"));

    let bytes = capture.stop().unwrap();
    let has = |needle: &[u8]| contains(&bytes, needle);
    // The capture works: passthrough plaintext is visible on the link...
    assert!(
        has(plain_marker.as_bytes()),
        "capture saw no passthrough plaintext ({} bytes)",
        bytes.len()
    );
    // ...and the mesh connection's plaintext is not; TLS application-data records are.
    assert!(
        !has(mesh_marker.as_bytes()),
        "mesh plaintext crossed the link"
    );
    assert!(
        has(&TLS_APPLICATION_DATA),
        "no TLS application data records on the link"
    );

    let log = w.zt_client.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("dst.addr={OUTSIDER_IP}:8080")))
        .expect("passthrough logged");
    assert!(!line.contains("dst.hbone_addr"), "{line}");
}

/// Writes a client certificate for `id` (valid unless `expired`) issued by `ca`.
fn probe_cert(
    w: &TwoWorkloads,
    name: &str,
    ca: &hbone::FileCa,
    id: &hbone::SpiffeId,
    expired: bool,
) -> Vec<String> {
    let cert = if expired {
        let now = std::time::SystemTime::now();
        ca.issue_between(
            id,
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap()
    } else {
        ca.issue(id, Duration::from_secs(3600)).unwrap()
    };
    let (chain, key) = w.mesh.write_cert(name, &cert).unwrap();
    vec![
        "--cert".into(),
        chain.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

fn probe(w: &TwoWorkloads, from: &Host, extra: &[String]) -> String {
    let mut args: Vec<String> = vec![
        "probe".into(),
        "--connect".into(),
        format!("{SERVER_IP}:15008"),
    ];
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    app(w, from, &args).trim().to_string()
}

#[test]
fn peers_that_cannot_prove_identity_are_refused() {
    let mut w = start("refusals");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let outsider = w.outsider.clone();
    let authority = vec!["--authority".to_string(), format!("{SERVER_IP}:8080")];
    let mesh_ca = w.mesh.ca().unwrap();
    let client_id = spiffe("demo", "client");

    // Control: a certificate from the mesh CA is accepted, so the refusals below are real.
    let good = [
        probe_cert(&w, "good", &mesh_ca, &client_id, false),
        authority.clone(),
    ]
    .concat();
    assert_eq!(probe(&w, &outsider, &good), "status 200");

    let other_dir = w.mesh.dir.join("other-ca");
    let other_ca = hbone::FileCa::generate(&other_dir, "intruder").unwrap();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "another CA",
            probe_cert(&w, "other", &other_ca, &client_id, false),
            "chain does not verify",
        ),
        (
            "expired",
            probe_cert(&w, "expired", &mesh_ca, &client_id, true),
            "certificate expired",
        ),
        (
            "wrong trust domain",
            probe_cert(
                &w,
                "td",
                &mesh_ca,
                &hbone::SpiffeId::new("evil.local", "demo", "client").unwrap(),
                false,
            ),
            "is not in trust domain",
        ),
        ("no client certificate", vec![], "peer sent no certificates"),
    ];
    for (what, args, reason) in cases {
        let out = probe(&w, &outsider, &[args, authority.clone()].concat());
        assert!(out.starts_with("refused:"), "{what}: {out}");
        let log = w
            .zt_server
            .wait_for(reason, T)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(log.contains("refused") || log.contains("failed"), "{what}");
    }
    // The server is still serving.
    assert_eq!(probe(&w, &outsider, &good), "status 200");
}

#[test]
fn server_with_unexpected_identity_is_refused_by_the_client() {
    let mut w = start_with(
        "wrongid",
        Options {
            client_view_of_server_sa: Some("imposter"),
            ..Options::default()
        },
    );
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let out = w.mesh.run_app(
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            "x",
        ],
        T,
    );
    let err = out
        .expect_err("connection through an unverified server must fail")
        .to_string();
    assert!(err.contains("reset") || err.contains("read"), "{err}");
    w.zt_client
        .wait_for("refused server certificate: server identity spiffe://cluster.local/ns/demo/sa/server is not one of", T)
        .unwrap();
    assert!(!w.zt_server.log().contains("connection complete"));
}

#[test]
fn malformed_connect_requests_get_400() {
    let mut w = start("malformed");
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let outsider = w.outsider.clone();
    let cert = probe_cert(
        &w,
        "good",
        &w.mesh.ca().unwrap(),
        &spiffe("demo", "client"),
        false,
    );
    let with =
        |extra: &[&str]| [cert.clone(), extra.iter().map(|s| s.to_string()).collect()].concat();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "not CONNECT",
            with(&["--method", "GET", "--authority", "10.244.0.2:8080"]),
            "status 400",
        ),
        // RFC 9113 8.1.1: a CONNECT without :authority is malformed HTTP/2, a stream error of
        // type PROTOCOL_ERROR; the HTTP/2 layer resets it before any handler sees it.
        (
            "no authority",
            with(&[]),
            "refused: response: stream error received: unspecific protocol error detected",
        ),
        (
            "authority without port",
            with(&["--authority", "10.244.0.2"]),
            "status 400",
        ),
        (
            "authority with bad host",
            with(&["--authority", "bad_host!:80"]),
            "status 400",
        ),
        (
            "IP of another workload",
            with(&["--authority", "10.244.0.99:8080"]),
            "status 400",
        ),
        (
            "ztunnel's own port",
            with(&["--authority", "10.244.0.2:15008"]),
            "status 503",
        ),
        (
            "nothing listening",
            with(&["--authority", "10.244.0.2:8081"]),
            "status 503",
        ),
        (
            "well-formed",
            with(&["--authority", "10.244.0.2:8080"]),
            "status 200",
        ),
    ];
    for (what, args, want) in cases {
        assert_eq!(probe(&w, &outsider, &args), want, "{what}");
    }
    // No panic, still serving ordinary traffic.
    assert!(!w.zt_server.log().contains("panicked"));
    let out = app(
        &w,
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8080",
            "--message",
            "still here",
        ],
    );
    assert_eq!(out.trim(), "received: still here");
}

#[test]
fn certificate_renewal_does_not_break_a_long_transfer() {
    let mut w = start_with(
        "renewal",
        Options {
            env: vec![("SECRET_TTL", "3s")],
            ..Options::default()
        },
    );
    serve_pattern(&mut w);
    // 64 MiB at 8 MB/s: about 8 s, across several renewals on both sides.
    let out = send_pattern(
        &w,
        "67108864",
        &["--rate", "8000000"],
        Duration::from_secs(60),
    );
    assert!(out.starts_with("OK 67108864 "), "{out}");
    for (side, z) in [("client", &w.zt_client), ("server", &w.zt_server)] {
        let renewals = z.log().matches("certificate renewed").count();
        assert!(renewals >= 2, "{side} renewed {renewals} times");
    }
    // New connections after the renewals still work.
    let out = send_pattern(&w, "1000", &[], T);
    assert!(out.starts_with("OK 1000 "), "{out}");
}

#[test]
fn config_changes_apply_without_restart_and_bad_config_keeps_the_last_good() {
    // The client starts with a wrong view of the server's identity: tunnels are refused.
    let mut w = start_with(
        "reload",
        Options {
            client_view_of_server_sa: Some("imposter"),
            ..Options::default()
        },
    );
    let server = w.server.clone();
    serve(
        &mut w,
        &server,
        "echo",
        &["echo", "--listen", "0.0.0.0:8080"],
    );
    let args = [
        "roundtrip",
        "--connect",
        "10.244.0.2:8080",
        "--message",
        "reload",
    ];
    assert!(w.mesh.run_app(&w.client, &args, T).is_err());

    // Fix the file in place: the next connection works.
    w.mesh
        .write("client.yaml", &e2e::topology::config("server"))
        .unwrap();
    w.zt_client.wait_for("config reloaded", T).unwrap();
    assert_eq!(app(&w, &w.client, &args).trim(), "received: reload");

    // A broken file is rejected, named, and the last good config stays in force.
    w.mesh
        .write(
            "client.yaml",
            "workloads:\n- name: x\n  namespace: demo\n  workloadIps: [\"nope\"]\n",
        )
        .unwrap();
    let log = w
        .zt_client
        .wait_for("config rejected; keeping the last good config", T)
        .unwrap();
    assert!(
        log.contains("client.yaml: workloads[0] (demo/x): field workloadIps[0]"),
        "{log}"
    );
    assert_eq!(app(&w, &w.client, &args).trim(), "received: reload");
}
