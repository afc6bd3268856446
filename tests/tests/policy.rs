//! End-to-end L4 authorization and PeerAuthentication: one mesh, policies swapped in through
//! the config file, each row checked from three kinds of peer:
//! - `client`: the meshed client workload, through its ztunnel (HBONE, identity demo/client);
//! - `intruder`: a raw HBONE peer with a valid mesh certificate for `other/intruder`;
//! - `plain`: the outsider host, plaintext with no identity (inbound capture to 15006).

use std::time::Duration;

use e2e::mesh::{Binaries, spiffe, wait_for_file};
use e2e::topology::{Options, SERVER_IP, TwoWorkloads, config_with};

const T: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Peer {
    Client,
    Intruder,
    Plain,
}

struct Row {
    what: &'static str,
    /// Extra lines for the server's workload entry.
    server: &'static str,
    policies: &'static str,
    /// (peer, port, allowed)
    expect: &'static [(Peer, u16, bool)],
    /// Text the server's log must show for this row.
    log: Option<&'static str>,
}

const ALLOW_CLIENT: &str = "\
- name: allow-client
  namespace: demo
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - !Exact cluster.local/ns/demo/sa/client
";

const ROWS: &[Row] = &[
    Row {
        what: "no policies: everything allowed",
        server: "",
        policies: "",
        expect: &[
            (Peer::Client, 8080, true),
            (Peer::Intruder, 8080, true),
            (Peer::Plain, 8080, true),
        ],
        log: None,
    },
    Row {
        what: "default deny: an ALLOW policy with no rules",
        server: "",
        policies: "- name: deny-all\n  namespace: demo\n  scope: Namespace\n  action: Allow\n  rules: []\n",
        expect: &[
            (Peer::Client, 8080, false),
            (Peer::Intruder, 8080, false),
            (Peer::Plain, 8080, false),
        ],
        log: Some("policy=\"no ALLOW policy matched\""),
    },
    Row {
        what: "allow by principal",
        server: "",
        policies: ALLOW_CLIENT,
        expect: &[
            (Peer::Client, 8080, true),
            (Peer::Intruder, 8080, false),
            (Peer::Plain, 8080, false),
        ],
        log: None,
    },
    Row {
        what: "allow by namespace",
        server: "",
        policies: "- name: allow-demo\n  namespace: demo\n  scope: Namespace\n  action: Allow\n  rules:\n  - - - namespaces:\n        - !Exact demo\n",
        expect: &[(Peer::Client, 8080, true), (Peer::Intruder, 8080, false)],
        log: None,
    },
    Row {
        what: "deny by port",
        server: "",
        policies: "- name: no-8080\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  rules:\n  - - - destinationPorts: [8080]\n",
        expect: &[
            (Peer::Client, 8080, false),
            (Peer::Client, 7000, true),
            (Peer::Intruder, 7000, true),
        ],
        log: Some("policy=\"demo/no-8080 rule 0\""),
    },
    Row {
        what: "notPrincipals",
        server: "",
        policies: "- name: only-client\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  rules:\n  - - - notPrincipals:\n        - !Exact cluster.local/ns/demo/sa/client\n",
        expect: &[
            (Peer::Client, 8080, true),
            (Peer::Intruder, 8080, false),
            (Peer::Plain, 8080, false),
        ],
        log: None,
    },
    Row {
        what: "DENY beats ALLOW",
        server: "",
        policies: "- name: allow-all\n  namespace: demo\n  scope: Namespace\n  action: Allow\n  rules:\n  - []\n- name: deny-client\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  rules:\n  - - - principals:\n        - !Exact cluster.local/ns/demo/sa/client\n",
        expect: &[(Peer::Client, 8080, false), (Peer::Intruder, 8080, true)],
        log: Some("policy=\"demo/deny-client rule 0\""),
    },
    Row {
        what: "dry-run is not enforced",
        server: "",
        policies: "- name: would-deny\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  dryRun: true\n  rules:\n  - []\n",
        expect: &[(Peer::Client, 8080, true), (Peer::Intruder, 8080, true)],
        log: Some("dry-run policy policy=demo/would-deny rule=0 would=\"deny\""),
    },
    Row {
        what: "STRICT refuses plaintext",
        server: "  authorizationPolicies: [\"istio-system/istio_converted_static_strict\"]\n",
        policies: "- name: istio_converted_static_strict\n  namespace: istio-system\n  scope: WorkloadSelector\n  action: Deny\n  rules:\n  - - - notPrincipals:\n        - !Presence\n",
        expect: &[
            (Peer::Plain, 8080, false),
            (Peer::Plain, 7000, false),
            (Peer::Client, 8080, true),
        ],
        log: Some("policy=\"istio-system/istio_converted_static_strict rule 0\""),
    },
    Row {
        what: "a port-level DISABLE under STRICT accepts plaintext on that port only",
        server: "  authorizationPolicies: [\"demo/converted_peer_authentication_server\"]\n",
        policies: "- name: converted_peer_authentication_server\n  namespace: demo\n  scope: WorkloadSelector\n  action: Deny\n  rules:\n  - - - notPrincipals:\n        - !Presence\n    - - notDestinationPorts: [7000]\n",
        expect: &[
            (Peer::Plain, 8080, false),
            (Peer::Plain, 7000, true),
            (Peer::Client, 8080, true),
        ],
        log: None,
    },
    Row {
        // istiod publishes the static strict policy whenever any PeerAuthentication exists, and
        // attaches it only to STRICT workloads: unattached, the workload is PERMISSIVE.
        what: "PERMISSIVE: the strict policy exists but is not attached, so plaintext is accepted",
        server: "",
        policies: "- name: istio_converted_static_strict\n  namespace: istio-system\n  scope: WorkloadSelector\n  action: Deny\n  rules:\n  - - - notPrincipals:\n        - !Presence\n",
        expect: &[(Peer::Plain, 8080, true)],
        log: None,
    },
];

struct Mesh {
    w: TwoWorkloads,
    intruder: Vec<String>,
}

impl Mesh {
    fn start(test: &str) -> Mesh {
        let bins = Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries");
        let mut w = TwoWorkloads::start(test, bins, Options::default()).expect("topology");
        w.serve_echo(8080).unwrap();
        w.serve_echo(7000).unwrap();
        let cert = w
            .mesh
            .ca()
            .unwrap()
            .issue(&spiffe("other", "intruder"), Duration::from_secs(3600))
            .unwrap();
        let (chain, key) = w.mesh.write_cert("intruder", &cert).unwrap();
        let intruder = vec![
            "--cert".into(),
            chain.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        Mesh { w, intruder }
    }

    /// Writes the server's config and waits until its ztunnel has loaded it.
    fn apply(&self, server_extra: &str, policies: &str) {
        let before = self.w.zt_server.log().matches("config reloaded").count();
        let config = config_with("server", server_extra, policies);
        if std::fs::read_to_string(self.w.mesh.dir.join("server.yaml"))
            .ok()
            .as_deref()
            == Some(config.as_str())
        {
            return;
        }
        self.w.mesh.write("server.yaml", &config).unwrap();
        let deadline = std::time::Instant::now() + T;
        loop {
            let log = self.w.zt_server.log();
            if log.matches("config reloaded").count() > before {
                return;
            }
            assert!(!log.contains("config rejected"), "config rejected:\n{log}");
            assert!(
                std::time::Instant::now() < deadline,
                "config not reloaded:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn allowed(&self, peer: Peer, port: u16) -> bool {
        let target = format!("{SERVER_IP}:{port}");
        match peer {
            Peer::Client => self.roundtrip(&self.w.client, &target),
            Peer::Plain => self.roundtrip(&self.w.outsider, &target),
            Peer::Intruder => {
                let mut args: Vec<&str> = vec![
                    "probe",
                    "--connect",
                    "10.244.0.2:15008",
                    "--authority",
                    &target,
                ];
                args.extend(self.intruder.iter().map(String::as_str));
                let out = self.w.mesh.run_app(&self.w.outsider, &args, T).unwrap();
                match out.trim() {
                    "status 200" => true,
                    "status 401" => false,
                    other => panic!("intruder probe on {port}: {other}"),
                }
            }
        }
    }

    fn roundtrip(&self, from: &e2e::netns::Host, target: &str) -> bool {
        let out = self.w.mesh.run_app(
            from,
            &["roundtrip", "--connect", target, "--message", "knock"],
            T,
        );
        matches!(out, Ok(s) if s.trim() == "received: knock")
    }
}

#[test]
fn policy_table_end_to_end() {
    let m = Mesh::start("policytable");
    for row in ROWS {
        m.apply(row.server, row.policies);
        for &(peer, port, want) in row.expect {
            assert_eq!(
                m.allowed(peer, port),
                want,
                "{}: {peer:?} on port {port}",
                row.what
            );
        }
        if let Some(needle) = row.log {
            m.w.zt_server
                .wait_for(needle, T)
                .unwrap_or_else(|e| panic!("{}: {e}", row.what));
        }
    }
}

#[test]
fn a_policy_change_closes_a_now_forbidden_open_connection() {
    let m = Mesh::start("recheck");
    // Hold one connection open through the tunnel.
    let client = m.w.client.clone();
    let mut w = m.w;
    let out = w
        .mesh
        .spawn_app(
            &client,
            "hold",
            &[
                "many",
                "--connect",
                "10.244.0.2:8080",
                "--count",
                "1",
                "--hold-secs",
                "20",
            ],
        )
        .unwrap();
    wait_for_file(&out, "open 1", T).unwrap();
    let before = w.zt_server.log().matches("config reloaded").count();
    w.mesh.write("server.yaml", &config_with("server", "", "- name: deny-all\n  namespace: demo\n  scope: Namespace\n  action: Allow\n  rules: []\n")).unwrap();
    let deadline = std::time::Instant::now() + T;
    while w.zt_server.log().matches("config reloaded").count() == before {
        assert!(std::time::Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = w
        .zt_server
        .wait_for("closed: policy now denies it", Duration::from_secs(5))
        .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("closed: policy now denies it"))
        .unwrap();
    assert!(line.contains("policy=\"no-allow-match\""), "{line}");
    assert!(
        line.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "{line}"
    );
}

#[test]
fn explain_answers_why_without_sending_traffic() {
    let m = Mesh::start("explain");
    m.apply(
        "  authorizationPolicies: [\"istio-system/istio_converted_static_strict\"]\n",
        "- name: deny-client-8080\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  rules:\n  - - - principals:\n        - !Exact cluster.local/ns/demo/sa/client\n    - - destinationPorts: [8080]\n- name: istio_converted_static_strict\n  namespace: istio-system\n  scope: WorkloadSelector\n  action: Deny\n  rules:\n  - - - notPrincipals:\n        - !Presence\n- name: audit\n  namespace: demo\n  scope: Namespace\n  action: Deny\n  dryRun: true\n  rules:\n  - []\n",
    );
    let connections = || {
        m.w.zt_server
            .log()
            .matches("access: connection complete")
            .count()
    };
    let before = connections();
    let explain = |query: &str| -> serde_json::Value {
        let out =
            m.w.mesh
                .run_app(
                    &m.w.server,
                    &[
                        "http",
                        "--addr",
                        "127.0.0.1:15000",
                        "--path",
                        &format!("/explain?{query}"),
                    ],
                    T,
                )
                .unwrap();
        let (status, body) = out.split_once('\n').unwrap();
        assert_eq!(status, "200", "{body}");
        serde_json::from_str(body).unwrap()
    };

    let v = explain(
        "src_identity=spiffe%3A%2F%2Fcluster.local%2Fns%2Fdemo%2Fsa%2Fclient&dst_ip=10.244.0.2&dst_port=8080",
    );
    eprintln!(
        "explain answer: {}",
        serde_json::to_string_pretty(&v).unwrap()
    );
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["decidedBy"]["policy"], "demo/deny-client-8080");
    assert_eq!(v["decidedBy"]["rule"], 0);
    assert_eq!(
        v["source"]["ip"], "10.244.0.1",
        "source IP found from the identity's workload"
    );
    assert_eq!(v["dryRun"][0]["policy"], "demo/audit");
    assert_eq!(v["dryRun"][0]["wouldBe"], "denied");
    let applicable: Vec<&str> = v["applicablePolicies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(applicable.len(), 3, "{applicable:?}");

    let v =
        explain("src_namespace=demo&src_service_account=client&dst_ip=10.244.0.2&dst_port=7000");
    assert_eq!(v["verdict"], "allow");
    assert!(v["decidedBy"].is_null());

    // No identity: plaintext, which STRICT refuses.
    let v = explain("src_ip=10.244.0.3&dst_ip=10.244.0.2&dst_port=7000");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(
        v["decidedBy"]["policy"],
        "istio-system/istio_converted_static_strict"
    );

    // Bad questions get a reason, not a panic.
    for (query, needle) in [
        (
            "dst_ip=10.244.0.2&dst_port=70000&src_ip=1.2.3.4",
            "dst_port",
        ),
        (
            "src_identity=bogus&dst_ip=10.244.0.2&dst_port=80",
            "src_identity",
        ),
        (
            "src_ip=1.2.3.4&dst_ip=10.9.9.9&dst_port=80",
            "no workload has IP",
        ),
    ] {
        let out =
            m.w.mesh
                .run_app(
                    &m.w.server,
                    &[
                        "http",
                        "--addr",
                        "127.0.0.1:15000",
                        "--path",
                        &format!("/explain?{query}"),
                    ],
                    T,
                )
                .unwrap();
        assert!(
            out.starts_with("400\n") && out.contains(needle),
            "{query}: {out}"
        );
    }
    assert_eq!(connections(), before, "explain sent traffic");
}
