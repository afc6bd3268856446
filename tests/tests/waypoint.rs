//! End to end, the waypoint: meshd serves a Gateway waypoint and the L7 policies attached to
//! it; the client's ztunnel sends traffic for the bound service (by its VIP, and by the pod's
//! IP) to the waypoint, which decides each HTTP request and forwards what it allows to the
//! server's ztunnel with its own identity. Everything configured by meshd only. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::mesh::{Binaries, wait_for_file};
use e2e::topology::{CLIENT_IP, Options, SERVER_IP, TwoWorkloads, VIP};

const T: Duration = Duration::from_secs(30);
const WAYPOINT_IP: &str = "10.244.0.30";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/demo/sa/waypoint";

fn pod(name: &str, sa: &str, node: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: demo
  labels: {{app: {name}{labels}}}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
status:
  phase: Running
  conditions: [{{type: Ready, status: \"True\"}}]
  podIP: {ip}
  podIPs: [{{ip: {ip}}}]
"
    )
}

/// The mesh: `server` (its Service and its pod) bound to waypoint `waypoint` (for services
/// and workloads), whose pod is outside ambient; policies on the waypoint: the client may GET
/// under /api/ only, and no scanner's user agent passes; /api/limited takes 2 requests, then
/// one a second, per caller.
fn manifests() -> String {
    let docs = [
        "apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
"
        .to_string(),
        pod("client", "client", "node-a", CLIENT_IP, ""),
        pod(
            "server",
            "server",
            "node-b",
            SERVER_IP,
            ", istio.io/use-waypoint: waypoint",
        ),
        pod(
            "waypoint-0",
            "waypoint",
            "node-a",
            WAYPOINT_IP,
            ", gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none",
        ),
        format!(
            "apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: demo
  labels: {{istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: {VIP}
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"
        ),
        "apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: demo
spec:
  clusterIP: 10.96.0.30
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
"
        .to_string(),
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: demo
  labels: {istio.io/waypoint-for: all}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"
        .to_string(),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: client-reads-api
  namespace: demo
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/demo/sa/client]}}]
    to: [{operation: {methods: [GET], paths: [/api/*]}}]
"
        .to_string(),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-scanners
  namespace: demo
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - when: [{key: \"request.headers[User-Agent]\", values: [\"*sqlmap*\"]}]
"
        .to_string(),
        "apiVersion: policy.mesh.dev/v1alpha1
kind: LocalRateLimit
metadata:
  name: limited
  namespace: demo
spec:
  targetRefs: [{kind: Service, group: \"\", name: server}]
  limits:
  - per: sourcePrincipal
    maxTokens: 2
    tokensPerFill: 1
    fillInterval: 1s
    match: [{paths: [/api/limited]}]
"
        .to_string(),
    ];
    docs.join("---\n")
}

#[test]
fn the_waypoint_decides_each_request_for_its_service() {
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
    let waypoint_bin = bins.waypoint().expect("waypoint binary").to_path_buf();
    let dir = std::env::temp_dir().join("e2e-waypoint-manifests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), manifests()).unwrap();
    let mut w = TwoWorkloads::start(
        "waypoint",
        bins,
        Options {
            meshd: Some(&dir),
            ..Options::default()
        },
    )
    .expect("topology: meshd and two ztunnels joining it");
    w.serve(
        &w.server.clone(),
        "http",
        &["http-serve", "--listen", "0.0.0.0:8080"],
    )
    .expect("server app");

    // The waypoint: its own host, a token for its service account, Istio's settings.
    let host = w.net.host("waypoint", WAYPOINT_IP).expect("waypoint host");
    let meshd = w.meshd.as_ref().unwrap();
    let token = meshd.mint_token("demo/waypoint/waypoint-0").expect("token");
    let mut env = meshd.ztunnel_env("node-a", T).expect("meshd settings");
    env.retain(|(k, _)| *k != "AUTH_TOKEN");
    let log = w.mesh.dir.join("waypoint.log");
    let mut waypoint = host
        .command(&waypoint_bin)
        .envs(env)
        .env("AUTH_TOKEN", &token)
        .env("POD_NAME", "waypoint-0")
        .env("POD_NAMESPACE", "demo")
        .env("SERVICE_ACCOUNT", "waypoint")
        .env("INSTANCE_IP", WAYPOINT_IP)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("waypoint");
    let ready = wait_for_file(&log, "serving HBONE", T).expect("waypoint configured by meshd");
    // The service and, bound as a workload too, its pod.
    assert!(ready.contains("targets=2"), "{ready}");

    let request = |addr: &str, method: &str, path: &str, agent: &str| -> (String, String) {
        let out = w
            .mesh
            .run_app(
                &w.client,
                &[
                    "http",
                    "--addr",
                    addr,
                    "--method",
                    method,
                    "--path",
                    path,
                    "--user-agent",
                    agent,
                ],
                T,
            )
            .expect("http");
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.trim().to_string(), body.to_string())
    };
    let vip = format!("{VIP}:80");
    let pod = format!("{SERVER_IP}:8080");
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);
    let rows: &[Row] = &[
        (&vip, "GET", "/api/orders", "curl/8", "200"),
        (&vip, "POST", "/api/orders", "curl/8", "403"),
        (&vip, "GET", "/admin", "curl/8", "403"),
        (&vip, "GET", "/api/orders", "sqlmap/1.7", "403"),
        // Around the VIP, straight to the pod: still through the waypoint.
        (&pod, "GET", "/api/orders", "curl/8", "200"),
        (&pod, "DELETE", "/api/orders", "curl/8", "403"),
    ];
    for (addr, method, path, agent, want) in rows {
        let (status, body) = request(addr, method, path, agent);
        assert_eq!(
            &status,
            want,
            "{method} {addr}{path} as {agent}: {body}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if *want == "200" {
            // The app got the request as sent (its server ztunnel delivers it locally).
            assert!(
                body.starts_with(&format!("{method} {path} from ")),
                "{body}"
            );
        } else {
            assert_eq!(body, "RBAC: access denied");
        }
    }
    // A rate limit: the burst, a 429, then a token a fill interval later.
    let limited = [("200", ""), ("200", ""), ("429", "local_rate_limited")];
    for (want, want_body) in limited {
        let (status, body) = request(&vip, "GET", "/api/limited", "curl/8");
        assert_eq!(status, want, "{body}");
        if !want_body.is_empty() {
            assert_eq!(body, want_body);
        }
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(request(&vip, "GET", "/api/limited", "curl/8").0, "200");

    // Every request above counted once in Istio's metrics, by outcome.
    let scrape = || {
        let out = host
            .command(env!("CARGO_BIN_EXE_meshapp"))
            .args([
                "http",
                "--addr",
                "127.0.0.1:15020",
                "--method",
                "GET",
                "--path",
                "/metrics",
            ])
            .output()
            .expect("scrape");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let count = |text: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let from_client = "source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"";
    let want = [
        (vec!["response_code=\"200\"", "response_flags=\"-\""], 5.0),
        (vec!["response_code=\"403\""], 4.0),
        (vec!["response_code=\"429\"", "response_flags=\"RL\""], 1.0),
    ];
    // Recorded as each response ends, just after the client has it.
    let mut text = scrape();
    for _ in 0..50 {
        if want.iter().all(|(l, n)| count(&text, l) == *n) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = scrape();
    }
    for (labels, n) in &want {
        let mut labels = labels.clone();
        labels.extend(["reporter=\"waypoint\"", from_client]);
        assert_eq!(count(&text, &labels), *n, "{labels:?}\n{text}");
    }

    // The server's ztunnel saw the waypoint's identity; the client's sent to the waypoint.
    let inbound = w
        .zt_server
        .wait_for(&format!("src.identity={WAYPOINT_ID}"), T)
        .expect("server side: the waypoint's identity");
    assert!(inbound.contains("direction=\"inbound\""));
    w.zt_client
        .wait_for("dst.waypoint=", T)
        .expect("client side: sent to the waypoint");
    let _ = waypoint.kill();
    let _ = waypoint.wait();
}
