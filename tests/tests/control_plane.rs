//! End-to-end with the control plane: `meshd` serves a copy of `examples/mesh` (the manifests a
//! user runs) to two dedicated ztunnels on two nodes, which get their config and certificates
//! only from it. One topology, walked through in steps (each step says what it checks):
//! traffic over HBONE, a live policy edit, meshd killed and restarted, and a NACK.
//! Delays are printed (run with `--nocapture`); they are bounded by the timeout, not asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::mesh::{Binaries, metric_sum};
use e2e::netns::Host;
use e2e::topology::{
    CLIENT_IP, Options, SERVER_IP, SERVICE_HOST, TwoWorkloads, VIP, example_manifests,
};

const T: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "spiffe://cluster.local/ns/demo/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/demo/sa/server";
/// The example's policy file, which the steps rewrite.
const POLICY_FILE: &str = "authorization-policy.yaml";

/// An ALLOW policy on the server for `sa` only, as the CRD.
fn allow_only(sa: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server-allow
  namespace: demo
spec:
  selector:
    matchLabels:
      app: server
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/demo/sa/{sa}]
"
    )
}

/// A pod meshd accepts (it does not validate names as the API server would) and ztunnel
/// rejects: its service account cannot be part of a SPIFFE ID.
const BAD_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: demo
spec:
  nodeName: node-a
  serviceAccountName: \"bad:sa\"
status:
  phase: Running
  podIPs:
  - ip: 10.244.0.9
";

fn step(what: &str) {
    eprintln!("\n== {what}");
}

/// Copies the example manifests to a directory of the test's own, which the steps edit.
fn copy_examples(to: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(example_manifests()).expect("examples/mesh") {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    to.to_path_buf()
}

/// Replaces `dir/name` whole (a temporary file renamed over it, as editors do); the instant
/// the new content is in place.
fn write_manifest(dir: &Path, name: &str, contents: &str) -> Instant {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    Instant::now()
}

/// One connection from the client to the server's echo port: whether it went through, and
/// what the client saw.
fn client_attempt(w: &TwoWorkloads) -> (bool, String) {
    let out = w.mesh.run_app(
        &w.client,
        &[
            "roundtrip",
            "--connect",
            &format!("{SERVER_IP}:8080"),
            "--message",
            "knock",
        ],
        Duration::from_secs(10),
    );
    match out {
        Ok(s) => (s.trim() == "received: knock", s),
        Err(e) => (false, format!("{e:#}")),
    }
}

fn client_gets_through(w: &TwoWorkloads) -> bool {
    client_attempt(w).0
}

/// Connects from the client, as fast as connections finish, until the outcome is `through`;
/// the time from `since`. A refusal must be the server's ztunnel's, by policy: the number of
/// its denials must then pass `denied_before`.
fn until_client(
    w: &TwoWorkloads,
    through: bool,
    since: Instant,
    denied_before: usize,
    what: &str,
) -> Duration {
    loop {
        let (ok, seen) = client_attempt(w);
        if ok == through {
            let took = since.elapsed();
            if !through {
                // The log line follows the refusal by a moment: wait for it.
                let deadline = Instant::now() + T;
                while denials(w) <= denied_before {
                    assert!(
                        Instant::now() < deadline,
                        "{what}: the client was refused, not by policy ({seen}); server's ztunnel:\n{}",
                        w.zt_server.log()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            return took;
        }
        assert!(
            since.elapsed() < T,
            "{what}: the client still {} after {T:?} (last: {seen})\nserver's ztunnel:\n{}\nmeshd:\n{}",
            if through { "refused" } else { "gets through" },
            w.zt_server.log(),
            w.meshd.as_ref().map(|m| m.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connections the server's ztunnel refused by policy so far: at admission, or (one caught
/// open by the change) closed when the new policy was applied.
fn denials(w: &TwoWorkloads) -> usize {
    let log = w.zt_server.log();
    log.matches("denied by policy").count() + log.matches("closed: policy now denies it").count()
}

/// The last access-log line of `log` that has all of `needles`.
fn access_line(log: &str, needles: &[&str]) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains("connection complete") && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no access-log line with {needles:?} in:\n{log}"))
        .to_string()
}

fn ztunnel_metrics(w: &TwoWorkloads, host: &Host) -> String {
    let (status, body) = w
        .mesh
        .http_get(host, "127.0.0.1:15020", "/metrics")
        .unwrap();
    assert_eq!(status, "200", "{body}");
    body
}

fn json(w: &TwoWorkloads, host: &Host, addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = w.mesh.http_get(host, addr, path).unwrap();
    assert_eq!(status, "200", "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Waits until `check` holds for `host`'s ztunnel metrics.
fn wait_metrics(w: &TwoWorkloads, host: &Host, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let text = ztunnel_metrics(w, host);
        if check(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} ({}):\n{text}", host.ns);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ztunnels_configured_only_by_meshd() {
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
    let manifests = copy_examples(&std::env::temp_dir().join("e2e-controlplane-manifests"));
    let mut w = TwoWorkloads::start(
        "controlplane",
        bins,
        Options {
            meshd: Some(&manifests),
            ..Options::default()
        },
    )
    .expect("topology: meshd and two ztunnels joining it");
    w.serve_echo(8080).unwrap();
    let (meshd_host, meshd_addr) = {
        let m = w.meshd.as_ref().unwrap();
        (m.host.clone(), m.monitoring_addr())
    };
    eprintln!(
        "meshd at {} serving {}",
        w.meshd.as_ref().unwrap().grpc_addr(),
        manifests.display()
    );

    step("0. both ztunnels run on meshd's config and certificates only");
    for (zt, id) in [(&w.zt_client, CLIENT_ID), (&w.zt_server, SERVER_ID)] {
        let log = zt.log();
        assert!(log.contains("config from xDS"), "{log}");
        assert!(log.contains("xDS stream up"), "{log}");
        assert!(
            log.contains(&format!("certificate issued identity={id}")),
            "{log}"
        );
    }
    let meshd_log = w.meshd.as_ref().unwrap().log();
    for id in [CLIENT_ID, SERVER_ID] {
        assert!(
            meshd_log
                .lines()
                .any(|l| l.contains("certificate issued") && l.contains(&format!("identity={id}"))),
            "meshd issued no certificate for {id}:\n{meshd_log}"
        );
    }
    let (_, metrics) = w
        .mesh
        .http_get(&meshd_host, &meshd_addr, "/metrics")
        .unwrap();
    assert!(
        metric_sum(
            &metrics,
            "citadel_server_success_cert_issuance_count_total",
            &[]
        ) >= 2.0,
        "{metrics}"
    );
    let connections = json(&w, &meshd_host, &meshd_addr, "/debug/connections");
    assert_eq!(
        connections.as_array().map(Vec::len),
        Some(2),
        "{connections:#}"
    );
    let dump = json(&w, &w.client, "127.0.0.1:15000", "/config_dump");
    let mut uids: Vec<&str> = dump["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["uid"].as_str())
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        [
            "Kubernetes//Pod/demo/client",
            "Kubernetes//Pod/demo/other",
            "Kubernetes//Pod/demo/server"
        ],
        "{dump:#}"
    );
    assert_eq!(dump["services"][0]["hostname"], SERVICE_HOST, "{dump:#}");
    assert_eq!(
        dump["policies"][0]["name"], "server-only-client",
        "{dump:#}"
    );

    step("a. client -> server over HBONE, each side proving its identity");
    assert!(client_gets_through(&w), "{}", w.zt_client.log());
    let vip = w
        .roundtrip(&format!("{VIP}:80"), "via the service")
        .unwrap();
    assert_eq!(vip, "via the service");
    let inbound = access_line(
        &w.zt_server.wait_for("direction=\"inbound\"", T).unwrap(),
        &["direction=\"inbound\"", "bytes_sent=5 "],
    );
    assert!(
        inbound.contains(&format!("src.identity={CLIENT_ID}")),
        "{inbound}"
    );
    assert!(
        inbound.contains(&format!("dst.addr={SERVER_IP}:8080")),
        "{inbound}"
    );
    let outbound = access_line(
        &w.zt_client.wait_for("direction=\"outbound\"", T).unwrap(),
        &["direction=\"outbound\"", "bytes_sent=5 "],
    );
    assert!(
        outbound.contains(&format!("dst.hbone_addr={SERVER_IP}:15008")),
        "{outbound}"
    );
    assert!(
        outbound.contains(&format!("dst.identity={SERVER_ID}")),
        "{outbound}"
    );
    assert!(
        outbound.contains(&format!("src.addr={CLIENT_IP}:")),
        "{outbound}"
    );

    step("b. a policy edit in the manifests reaches the server's ztunnel live");
    let denied = denials(&w);
    let t0 = write_manifest(&manifests, POLICY_FILE, &allow_only("other"));
    let took = until_client(&w, false, t0, denied, "ALLOW only demo/other");
    eprintln!("edit (ALLOW only other) -> client refused: {took:?}");
    // A new connection is refused at admission, and the log says why.
    let (through, seen) = client_attempt(&w);
    assert!(!through, "{seen}");
    let log = w
        .zt_server
        .wait_for("policy=\"no ALLOW policy matched\"", T)
        .unwrap();
    let refused = access_line(&log, &["denied by policy"]);
    assert!(
        refused.contains("policy=\"no ALLOW policy matched\"")
            && refused.contains(&format!("src.identity={CLIENT_ID}")),
        "{refused}"
    );
    let t0 = write_manifest(&manifests, POLICY_FILE, &allow_only("client"));
    let took = until_client(&w, true, t0, 0, "ALLOW only demo/client");
    eprintln!("edit (ALLOW client) -> first connection through: {took:?}");

    step("c. meshd killed: the ztunnels keep their config; restarted, they resync");
    w.meshd.as_mut().unwrap().kill().unwrap();
    let (client, server) = (w.client.clone(), w.server.clone());
    for host in [&client, &server] {
        wait_metrics(&w, host, "xDS still connected after meshd died", |m| {
            metric_sum(m, "xds_connected", &[]) == 0.0
        });
        let (status, _) = w
            .mesh
            .http_get(host, "127.0.0.1:15021", "/healthz/ready")
            .unwrap();
        assert_eq!(status, "200", "{} not ready without meshd", host.ns);
    }
    assert!(
        client_gets_through(&w),
        "a new connection failed while meshd was down:\n{}\n{}",
        w.zt_client.log(),
        w.zt_server.log()
    );
    eprintln!("meshd down: a new connection still goes through");
    // Edited while meshd is down: it reads the new policy when it starts.
    write_manifest(&manifests, POLICY_FILE, &allow_only("other"));
    let denied = denials(&w);
    let t0 = Instant::now();
    w.meshd.as_mut().unwrap().restart().unwrap();
    let ready = t0.elapsed();
    let took = until_client(&w, false, t0, denied, "edit made while meshd was down");
    eprintln!(
        "meshd restarted (ready after {ready:?}) -> edit made while down in effect: {took:?}"
    );
    for zt in [&w.zt_client, &w.zt_server] {
        zt.wait_for_count("xDS stream up", 2, T).unwrap();
    }
    let t0 = write_manifest(&manifests, POLICY_FILE, &allow_only("client"));
    let took = until_client(&w, true, t0, 0, "edit after meshd returned");
    eprintln!("edit after the restart -> first connection through: {took:?}");

    step("d. a resource meshd serves and ztunnel rejects: NACKed, the rest keeps working");
    write_manifest(&manifests, "bad-pod.yaml", BAD_POD);
    for host in [&client, &server] {
        wait_metrics(&w, host, "no resource rejected", |m| {
            metric_sum(m, "xds_rejected_resources_total", &[]) >= 1.0
        });
    }
    let nack = w
        .zt_client
        .wait_for("xDS resources rejected (NACK)", T)
        .unwrap();
    let line = nack
        .lines()
        .find(|l| l.contains("xDS resources rejected (NACK)"))
        .unwrap();
    assert!(line.contains("Kubernetes//Pod/demo/bad"), "{line}");
    eprintln!("ztunnel: {line}");
    let deadline = Instant::now() + T;
    loop {
        let (_, metrics) = w
            .mesh
            .http_get(&meshd_host, &meshd_addr, "/metrics")
            .unwrap();
        if metric_sum(&metrics, "pilot_total_xds_rejects_total", &[]) >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "meshd counted no NACKs:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let connections = json(&w, &meshd_host, &meshd_addr, "/debug/connections");
    for c in connections.as_array().unwrap() {
        assert!(c["nacks"].as_u64() >= Some(1), "{connections:#}");
    }
    let dump = json(&w, &w.client, "127.0.0.1:15000", "/config_dump");
    assert!(
        !dump.to_string().contains("demo/bad"),
        "the rejected pod was applied: {dump:#}"
    );
    assert!(client_gets_through(&w), "{}", w.zt_client.log());
    // The stream still carries updates after the NACK.
    let denied = denials(&w);
    let t0 = write_manifest(&manifests, POLICY_FILE, &allow_only("other"));
    let took = until_client(&w, false, t0, denied, "an edit after the NACK");
    eprintln!("edit after the NACK -> client refused: {took:?}");
}
