//! End-to-end observability: Prometheus metrics after known traffic (exact counts and bytes,
//! parsed with a Prometheus text-format parser), readiness, and the admin endpoints.

use std::time::Duration;

use e2e::mesh::Binaries;
use e2e::netns::Host;
use e2e::topology::{Options, TwoWorkloads};

const T: Duration = Duration::from_secs(30);

fn start(test: &str) -> TwoWorkloads {
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
    TwoWorkloads::start(test, bins, Options::default()).expect("topology")
}

/// `GET` (or another method) from inside `host`; (status, body).
fn http(w: &TwoWorkloads, host: &Host, method: &str, addr: &str, path: &str) -> (String, String) {
    let out = w
        .mesh
        .run_app(
            host,
            &["http", "--addr", addr, "--method", method, "--path", path],
            T,
        )
        .expect("http");
    let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
    (status.to_string(), body.to_string())
}

/// Samples of `metric` whose labels include all of `want`.
fn samples(text: &str, metric: &str, want: &[(&str, &str)]) -> Vec<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .collect()
}

#[test]
fn metrics_count_known_traffic_exactly() {
    let mut w = start("metrics");
    w.serve_echo(8080).unwrap();
    let messages = ["one", "twenty-two bytes long!", "x"];
    for m in messages {
        assert_eq!(w.roundtrip("10.244.0.2:8080", m).unwrap(), m);
    }
    let total: usize = messages.iter().map(|m| m.len()).sum();
    // Every connection is logged once closed; then its metrics are in.
    let deadline = std::time::Instant::now() + T;
    while w.zt_server.log().matches("connection complete").count() < 3
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let server_ip = w.server.ip.to_string();
    let (status, text) = http(
        &w,
        &w.server,
        "GET",
        &format!("{server_ip}:15020"),
        "/metrics",
    );
    assert_eq!(status, "200");
    let dest = [
        ("reporter", "destination"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/demo/sa/client",
        ),
        ("source_workload", "client"),
        ("source_workload_namespace", "demo"),
        ("destination_workload", "server"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/demo/sa/server",
        ),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
        ("source_region", "unknown"),
        ("destination_zone", "unknown"),
    ];
    assert_eq!(
        samples(&text, "istio_tcp_connections_opened_total", &dest),
        vec![3.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "istio_tcp_connections_closed_total", &dest),
        vec![3.0]
    );
    assert_eq!(
        samples(&text, "istio_tcp_received_bytes_total", &dest),
        vec![total as f64]
    );
    assert_eq!(
        samples(&text, "istio_tcp_sent_bytes_total", &dest),
        vec![total as f64]
    );
    assert_eq!(
        samples(&text, "istio_build", &[("component", "ztunnel")]),
        vec![1.0]
    );
    let expiry = samples(
        &text,
        "ztunnel_certificate_expiration_timestamp_seconds",
        &[("identity", "spiffe://cluster.local/ns/demo/sa/server")],
    );
    assert_eq!(expiry.len(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry[0] > now + 23.0 * 3600.0 && expiry[0] < now + 25.0 * 3600.0,
        "{expiry:?}"
    );

    // The client's ztunnel reports the same connections as the source; /stats/prometheus too.
    let client_ip = w.client.ip.to_string();
    let (status, text) = http(
        &w,
        &w.client,
        "GET",
        &format!("{client_ip}:15020"),
        "/stats/prometheus",
    );
    assert_eq!(status, "200");
    let src = [
        ("reporter", "source"),
        ("destination_workload", "server"),
        ("connection_security_policy", "mutual_tls"),
        ("source_region", "unknown"),
        ("destination_zone", "unknown"),
    ];
    assert_eq!(
        samples(&text, "istio_tcp_connections_opened_total", &src),
        vec![3.0],
        "{text}"
    );
    assert_eq!(
        samples(&text, "istio_tcp_sent_bytes_total", &src),
        vec![total as f64]
    );

    // A refused connection counts as failed, with the reason in response_flags.
    let bad = w.mesh.run_app(
        &w.client,
        &[
            "roundtrip",
            "--connect",
            "10.244.0.2:8081",
            "--message",
            "nobody",
        ],
        T,
    );
    assert!(bad.is_err(), "connection to a closed port succeeded");
    let (_, text) = http(
        &w,
        &w.server,
        "GET",
        &format!("{server_ip}:15020"),
        "/metrics",
    );
    let failed = samples(
        &text,
        "istio_tcp_connections_failed_total",
        &[("reporter", "destination"), ("response_flags", "CONNECT")],
    );
    assert_eq!(failed, vec![1.0], "{text}");
}

#[test]
fn readiness_and_admin_endpoints() {
    let w = start("admin");
    let ip = w.server.ip.to_string();
    assert_eq!(
        http(
            &w,
            &w.server,
            "GET",
            &format!("{ip}:15021"),
            "/healthz/ready"
        ),
        ("200".into(), "ready\n".into())
    );
    // Readiness and metrics are reachable from another host: capture leaves their ports alone.
    let (status, _) = http(
        &w,
        &w.outsider,
        "GET",
        &format!("{ip}:15021"),
        "/healthz/ready",
    );
    assert_eq!(status, "200");

    // Admin listens on localhost only.
    let (status, dump) = http(&w, &w.server, "GET", "127.0.0.1:15000", "/config_dump");
    assert_eq!(status, "200");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config_dump is JSON");
    let workloads: Vec<&str> = dump["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["client", "server"]);
    assert_eq!(
        dump["services"][0]["hostname"],
        "server.demo.svc.cluster.local"
    );
    assert_eq!(
        dump["certificates"][0]["identity"],
        "spiffe://cluster.local/ns/demo/sa/server"
    );
    assert!(
        dump["certificates"][0]["expirationTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let outside = w.mesh.run_app(
        &w.outsider,
        &[
            "http",
            "--addr",
            &format!("{ip}:15000"),
            "--path",
            "/config_dump",
        ],
        T,
    );
    assert!(
        outside.is_err(),
        "admin reachable from another host: {outside:?}"
    );

    // Log levels change at run time, and a bad filter is refused with a reason.
    assert_eq!(
        http(
            &w,
            &w.server,
            "POST",
            "127.0.0.1:15000",
            "/logging?level=debug"
        )
        .0,
        "200"
    );
    assert_eq!(
        http(&w, &w.server, "GET", "127.0.0.1:15000", "/logging")
            .1
            .trim(),
        "debug"
    );
    let (status, body) = http(
        &w,
        &w.server,
        "POST",
        "127.0.0.1:15000",
        "/logging?level=no%20such%20level%3D%3D",
    );
    assert_eq!(status, "400", "{body}");
    w.zt_server.wait_for("log filter changed", T).unwrap();

    // quitquitquit ends the process.
    assert_eq!(
        http(&w, &w.server, "POST", "127.0.0.1:15000", "/quitquitquit").0,
        "200"
    );
    w.zt_server
        .wait_for("shutting down (admin /quitquitquit)", T)
        .unwrap();
}

#[test]
fn json_access_log_carries_istio_fields() {
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
    let opts = Options {
        env: vec![("LOG_FORMAT", "json")],
        ..Options::default()
    };
    let mut w = TwoWorkloads::start("jsonlog", bins, opts).expect("topology");
    w.serve_echo(8080).unwrap();
    assert_eq!(w.roundtrip("10.244.0.2:8080", "json").unwrap(), "json");
    let log = w.zt_server.wait_for("connection complete", T).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("connection complete"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["target"], "access");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "connection complete");
    assert_eq!(
        v["src.identity"],
        "spiffe://cluster.local/ns/demo/sa/client"
    );
    assert_eq!(v["dst.addr"], "10.244.0.2:8080");
    assert_eq!(v["direction"], "inbound");
    assert_eq!(v["bytes_sent"], 4);
    assert_eq!(v["bytes_recv"], 4);
}
