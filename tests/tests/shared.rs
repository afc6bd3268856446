//! End-to-end, shared mode: one ztunnel serving two pods, each in its own network namespace,
//! handed over ZDS (the node agent's side is played here through the `zds` crate, the same
//! protocol code the agent uses). Needs root.

use std::path::Path;
use std::time::Duration;

use e2e::mesh::{Binaries, Mesh, wait_for_file};
use e2e::netns::{Host, Net, run};
use e2e::topology::{self, CLIENT_IP, SERVER_IP};
use zds::message::{decode_ack, decode_hello, encode_request};
use zds::{Ack, Conn, Listener, Netns, Request, WorkloadInfo};

const T: Duration = Duration::from_secs(30);

fn bins() -> Binaries {
    Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries")
}

/// The node agent's side of one connection.
struct Agent {
    conn: Conn,
}

impl Agent {
    /// Accepts ztunnel's connection and checks its hello.
    async fn accept(listener: &Listener) -> Agent {
        let conn = tokio::time::timeout(T, listener.accept())
            .await
            .expect("ztunnel connects")
            .expect("accept");
        let hello = conn.recv().await.expect("hello").expect("not closed");
        decode_hello(&hello.bytes, hello.fds).expect("a V1 hello");
        Agent { conn }
    }

    /// Sends a request; returns ztunnel's ack.
    async fn send(&self, request: &Request) -> Ack {
        let (bytes, fd) = encode_request(request);
        self.send_raw(&bytes, fd).await
    }

    async fn send_raw(&self, bytes: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) -> Ack {
        self.conn.send(bytes, fd).await.expect("send");
        let got = tokio::time::timeout(T, self.conn.recv())
            .await
            .expect("an ack in time")
            .expect("recv")
            .expect("not closed before the ack");
        decode_ack(&got.bytes, got.fds).expect("an ack")
    }

    /// A replay: each request acked, then the snapshot.
    async fn replay(&self, requests: &[Request]) {
        for r in requests {
            assert_eq!(self.send(r).await, Ack::Ok, "{} {:?}", r.kind(), r.uid());
        }
        assert_eq!(self.send(&Request::SnapshotSent).await, Ack::Ok);
    }

    /// Whether ztunnel closed the connection.
    async fn closed(&self) -> bool {
        matches!(
            tokio::time::timeout(T, self.conn.recv()).await,
            Ok(Ok(None)) | Ok(Err(_))
        )
    }
}

fn add(uid: &str, host: &Host, name: &str, sa: &str) -> Request {
    Request::Add {
        uid: uid.into(),
        info: WorkloadInfo {
            name: name.into(),
            namespace: "demo".into(),
            service_account: sa.into(),
        },
        netns: Netns::open(Path::new("/var/run/netns").join(&host.ns)).expect("pod netns"),
    }
}

/// An echo server on port 8080 of `host`, listening before this returns.
fn serve_echo(mesh: &mut Mesh, host: &Host) {
    let out = mesh
        .spawn_app(host, "echo", &["echo", "--listen", "0.0.0.0:8080"])
        .expect("echo");
    wait_for_file(&out, "listening", T).expect("echo up");
}

fn roundtrip(mesh: &Mesh, client: &Host, target: &str, message: &str) -> anyhow::Result<String> {
    let out = mesh.run_app(
        client,
        &["roundtrip", "--connect", target, "--message", message],
        Duration::from_secs(10),
    )?;
    Ok(out.trim().to_string())
}

/// One ztunnel, two pods: traffic between them is HBONE with each pod's own identity, the
/// replay after a reconnect keeps them served, bad requests are NACKed with the reason, and
/// a removed pod's listeners go while the other pod keeps working.
#[test]
fn one_ztunnel_serves_pods_in_their_namespaces() {
    let mut net = Net::new("shared").expect("net");
    let client = net.host("client", CLIENT_IP).expect("client");
    let server = net.host("server", SERVER_IP).expect("server");
    let node = net.host("node", "10.244.0.20").expect("node");
    let mut mesh = Mesh::new("shared", bins()).expect("mesh");
    for pod in [&client, &server] {
        run(pod
            .command(&mesh.bins.ztunnel)
            .args(["redirect", "install"]))
        .expect("capture");
    }
    let config = mesh
        .write("mesh.yaml", &topology::config("server"))
        .expect("config");
    let socket = mesh.dir.join("ztunnel.sock");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(async { Listener::bind(&socket) })
        .expect("bind");
    let zt = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("ztunnel");

    // The replay: both pods, then the snapshot.
    let agent = rt.block_on(Agent::accept(&listener));
    let both = || {
        [
            add("uid-client", &client, "client", "client"),
            add("uid-server", &server, "server", "server"),
        ]
    };
    rt.block_on(async {
        agent.replay(&both()).await;
    });
    zt.wait_for("ZDS snapshot received", T).expect("snapshot");
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, body) = mesh
            .http_get(&node, "127.0.0.1:15021", "/healthz/ready")
            .expect("readiness");
        if status.contains("200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pod to pod, through the one ztunnel, each side with its own identity.
    serve_echo(&mut mesh, &server);
    assert_eq!(
        roundtrip(&mesh, &client, "10.244.0.2:8080", "hello shared").expect("roundtrip"),
        "received: hello shared"
    );
    let log = zt
        .wait_for("direction=\"inbound\"", T)
        .expect("inbound log");
    let inbound = log
        .lines()
        .find(|l| l.contains("direction=\"inbound\""))
        .expect("inbound line");
    assert!(
        inbound.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client")
            && inbound.contains("dst.identity=spiffe://cluster.local/ns/demo/sa/server"),
        "{inbound}"
    );
    let outbound = log
        .lines()
        .find(|l| l.contains("direction=\"outbound\""))
        .expect("outbound line");
    assert!(
        outbound.contains("dst.hbone_addr=10.244.0.2:15008"),
        "{outbound}"
    );

    // Bad input: each NACKed with what is wrong; the protocol breach ends the connection.
    rt.block_on(async {
        let not_netns = std::fs::File::open("/dev/null").expect("a file");
        let (bytes, _) = encode_request(&add("uid-x", &client, "x", "x"));
        match agent
            .send_raw(&bytes, Some(std::os::fd::AsFd::as_fd(&not_netns)))
            .await
        {
            Ack::Nack(reason) => assert!(reason.contains("not a network namespace"), "{reason}"),
            Ack::Ok => panic!("a file taken for a namespace"),
        }
    });
    // The connection was dropped after that NACK; ztunnel reconnects and the replay names
    // both pods again: nothing is restarted.
    assert!(rt.block_on(agent.closed()));
    let agent = rt.block_on(Agent::accept(&listener));
    rt.block_on(async {
        assert_eq!(
            agent
                .send(&add("uid-client", &client, "client", "client"))
                .await,
            Ack::Ok
        );
        assert_eq!(
            agent
                .send(&Request::Keep {
                    uid: "uid-server".into()
                })
                .await,
            Ack::Ok
        );
        assert_eq!(agent.send(&Request::SnapshotSent).await, Ack::Ok);
        match agent
            .send(&Request::Keep {
                uid: "uid-server".into(),
            })
            .await
        {
            Ack::Nack(reason) => assert!(reason.contains("after SnapshotSent"), "{reason}"),
            Ack::Ok => panic!("Keep after the snapshot accepted"),
        }
    });
    assert!(rt.block_on(agent.closed()));
    assert_eq!(
        zt.log().matches("serving workload").count(),
        2,
        "the replays restarted no pod proxy:\n{}",
        zt.log()
    );
    assert_eq!(
        roundtrip(&mesh, &client, "10.244.0.2:8080", "still here").expect("roundtrip"),
        "received: still here"
    );

    // The server pod goes: its listeners close, the client pod keeps its own.
    let agent = rt.block_on(Agent::accept(&listener));
    rt.block_on(async {
        agent.replay(&both()).await;
        assert_eq!(
            agent
                .send(&Request::Del {
                    uid: "uid-server".into()
                })
                .await,
            Ack::Ok
        );
    });
    zt.wait_for("pod no longer served", T)
        .expect("server removed");
    // (Connections already open, such as the client's pooled HBONE connection to it, end
    // on their own; only the listeners are checked here.)
    let listening = run(server.command("ss").args(["-Htln"])).expect("ss");
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(!listening.contains(":15008"), "{listening}");
    let listening = run(client.command("ss").args(["-Htln"])).expect("ss");
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(
        listening.contains(":15001") && listening.contains(":15008"),
        "{listening}"
    );
    drop(zt);
}

fn manifests(dir: &Path, plain_ambient: bool, with_server: bool) {
    let pod = |ns: &str, name: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  nodeName: node-a\n  serviceAccountName: {name}\nstatus:\n  podIPs:\n  - ip: {ip}\n"
        )
    };
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    istio.io/dataplane-mode: ambient\n",
    );
    yaml += "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: plain\n";
    if plain_ambient {
        yaml += "  labels:\n    istio.io/dataplane-mode: ambient\n";
    }
    yaml += &pod("demo", "client", CLIENT_IP);
    if with_server {
        yaml += &pod("demo", "server", SERVER_IP);
    }
    yaml += &pod("plain", "legacy", LEGACY_IP);
    // Written whole and renamed, as an editor would.
    let tmp = dir.join(".mesh.yaml.tmp");
    std::fs::write(&tmp, yaml).expect("write manifests");
    std::fs::rename(&tmp, dir.join("mesh.yaml")).expect("rename manifests");
}

const LEGACY_IP: &str = "10.244.0.6";

/// A node of three pods (client and server in ambient `demo`, legacy in unlabeled `plain`),
/// their manifests, the ztunnel config and the ZDS socket's path. Nothing runs yet.
struct AgentNode {
    // Field order is drop order: processes (the mesh) before their namespaces.
    mesh: Mesh,
    client: Host,
    server: Host,
    legacy: Host,
    node: Host,
    manifest_dir: std::path::PathBuf,
    config: std::path::PathBuf,
    socket: std::path::PathBuf,
    net: Net,
}

impl AgentNode {
    fn new(test: &str) -> AgentNode {
        let mut net = Net::new(test).expect("net");
        let client = net.host("client", CLIENT_IP).expect("client");
        let server = net.host("server", SERVER_IP).expect("server");
        let legacy = net.host("legacy", LEGACY_IP).expect("legacy");
        let node = net.host("node", "10.244.0.20").expect("node");
        let mesh = Mesh::new(test, bins()).expect("mesh");
        let manifest_dir = mesh.dir.join("manifests");
        std::fs::create_dir_all(&manifest_dir).expect("manifest dir");
        manifests(&manifest_dir, false, true);
        // The legacy pod is in the config too: once its namespace is labeled it is a mesh
        // workload like the others.
        let legacy_entry = e2e::mesh::workload_yaml(
            "legacy",
            "plain",
            "legacy",
            &format!("\"{LEGACY_IP}\""),
            "HBONE",
            "",
        );
        let config = mesh
            .write(
                "mesh.yaml",
                &topology::config_with("server", &legacy_entry, ""),
            )
            .expect("config");
        let socket = mesh.dir.join("ztunnel.sock");
        AgentNode {
            mesh,
            client,
            server,
            legacy,
            node,
            manifest_dir,
            config,
            socket,
            net,
        }
    }
}

/// Starts `node-agent` for node-a in `node` on `manifest_dir`, serving ZDS at `socket`.
fn start_agent(
    mesh: &Mesh,
    node: &Host,
    manifest_dir: &Path,
    socket: &Path,
) -> (std::process::Child, std::path::PathBuf) {
    let agent_bin = mesh.bins.node_agent().expect("node-agent").to_path_buf();
    let log = mesh.dir.join("node-agent.log");
    let child = node
        .command(&agent_bin)
        .arg("--manifests")
        .arg(manifest_dir)
        .args(["--node", "node-a", "--poll", "50ms"])
        .arg("--socket")
        .arg(socket)
        // Other tests' hosts have the same addresses: look only among this test's.
        .arg("--pod-netns-prefix")
        .arg(
            node.ns
                .rsplit_once('.')
                .map_or(node.ns.as_str(), |(p, _)| p),
        )
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("node-agent");
    wait_for_file(&log, "node agent started", T).expect("agent up");
    (child, log)
}

/// Whether `host` has the capture rules.
fn captured(host: &Host) -> bool {
    host.command("nft")
        .args(["list", "table", "inet", capture::TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The node agent, from manifests: it captures the ambient pods of its node and hands them to
/// the shared ztunnel; a pod of an unlabeled namespace is left alone until its namespace is
/// labeled (then captured without restarting it); a pod that leaves is released.
#[test]
fn node_agent_captures_ambient_pods() {
    let AgentNode {
        mut mesh,
        client,
        server,
        legacy,
        node,
        manifest_dir,
        config,
        socket,
        net: _net,
    } = AgentNode::new("agent");
    let (mut agent, agent_log) = start_agent(&mesh, &node, &manifest_dir, &socket);
    let zt = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("ztunnel");
    zt.wait_for("ZDS snapshot received", T).expect("snapshot");
    zt.wait_for_count("serving workload", 2, T)
        .expect("two pods served");
    assert!(captured(&client) && captured(&server));
    assert!(
        !captured(&legacy),
        "a pod of an unlabeled namespace is not captured"
    );

    serve_echo(&mut mesh, &server);
    assert_eq!(
        roundtrip(&mesh, &client, "10.244.0.2:8080", "via the agent").expect("roundtrip"),
        "received: via the agent"
    );
    let inbound = zt
        .wait_for("direction=\"inbound\"", T)
        .expect("inbound log");
    assert!(
        inbound.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "{inbound}"
    );

    // Labeling the namespace captures its running pod, which keeps running.
    let (legacy_out, legacy_pid) = mesh
        .spawn_app_pid(&legacy, "legacy", &["echo", "--listen", "0.0.0.0:8080"])
        .expect("legacy app");
    wait_for_file(&legacy_out, "listening", T).expect("legacy up");
    manifests(&manifest_dir, true, true);
    zt.wait_for("workload=plain/legacy/legacy", T)
        .expect("legacy served");
    assert!(captured(&legacy));
    assert!(
        Path::new(&format!("/proc/{legacy_pid}")).exists(),
        "the pod's app was not restarted"
    );
    let agent_text = std::fs::read_to_string(&agent_log).expect("agent log");
    assert!(agent_text.contains("pods captured"), "{agent_text}");

    // The server pod leaves the manifests while client talks to legacy through the mesh:
    // the server is released from ztunnel, its listeners closed and its rules removed; the
    // other pods' connection carries on to its end.
    let (ongoing, _) = mesh
        .spawn_app_pid(
            &client,
            "ongoing",
            &[
                "pingpong",
                "--connect",
                &format!("{LEGACY_IP}:8080"),
                "--secs",
                "2",
            ],
        )
        .expect("client -> legacy");
    std::thread::sleep(Duration::from_millis(300));
    manifests(&manifest_dir, true, false);
    zt.wait_for("pod no longer served", T)
        .expect("server released");
    let deadline = std::time::Instant::now() + T;
    while captured(&server) {
        assert!(
            std::time::Instant::now() < deadline,
            "server rules not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let listening = run(server.command("ss").args(["-Htln"])).expect("ss");
    let listening = String::from_utf8_lossy(&listening.stdout).to_string();
    for port in [":15001 ", ":15006 ", ":15008 "] {
        assert!(!listening.contains(port), "{port} still open: {listening}");
    }
    assert!(captured(&client), "the other pods stay captured");
    let done = wait_for_file(&ongoing, "count", T).expect("the other pods' connection ends well");
    assert!(done.contains("\"count\""), "{done}");
    zt.wait_for(&format!("dst.addr={LEGACY_IP}:8080"), T)
        .expect("client -> legacy went through ztunnel");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A ztunnel killed outright is replaced with no manual step (the agent replays its pods to
/// the new one); a ztunnel upgraded by starting the new one beside it and stopping the old
/// drops no established connection: the old one stops accepting and carries what it has
/// until it ends.
#[test]
fn restart_and_upgrade_keep_pods_served() {
    let AgentNode {
        mut mesh,
        client,
        server,
        node,
        manifest_dir,
        config,
        socket,
        mut net,
        ..
    } = AgentNode::new("upgrade");
    // The replacement runs beside the old one: its own admin and metrics ports.
    let node_next = net.host("next", "10.244.0.21").expect("next");
    let (mut agent, _agent_log) = start_agent(&mesh, &node, &manifest_dir, &socket);
    let old = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("ztunnel");
    old.wait_for_count("serving workload", 2, T)
        .expect("pods served");
    serve_echo(&mut mesh, &server);

    // Upgrade: a connection exchanging data through the old ztunnel the whole time.
    let long = mesh
        .spawn_app(
            &client,
            "long",
            &["pingpong", "--connect", "10.244.0.2:8080", "--secs", "4"],
        )
        .expect("long connection");
    std::thread::sleep(Duration::from_millis(500));
    let new = mesh
        .start_ztunnel_shared(&node_next, &config, &socket, &[])
        .expect("new ztunnel");
    new.wait_for_count("serving workload", 2, T)
        .expect("the new ztunnel serves both pods beside the old one");
    run(std::process::Command::new("kill").args(["-TERM", &old.pid.to_string()])).expect("SIGTERM");
    let draining = old.wait_for("draining", T).expect("old drains");
    let carried: usize = draining
        .lines()
        .find(|l| l.contains("draining"))
        .and_then(|l| l.split("active=").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        carried >= 1,
        "the old ztunnel was carrying the long connection: {draining}"
    );
    // New connections go to the new ztunnel while the old one still carries the long one.
    assert_eq!(
        roundtrip(&mesh, &client, "10.244.0.2:8080", "after the upgrade").expect("roundtrip"),
        "received: after the upgrade"
    );
    new.wait_for("direction=\"inbound\"", T)
        .expect("new carries new connections");
    let done = wait_for_file(&long, "count", T).expect("the long connection completes");
    assert!(done.contains("\"count\""), "{done}");
    old.wait_for("drained; exiting", T)
        .expect("old exits once drained");
    assert!(
        !old.log().contains("drain deadline passed"),
        "{}",
        old.log()
    );

    // Restart: the new ztunnel killed outright; a third one takes over from the replay.
    run(std::process::Command::new("kill").args(["-KILL", &new.pid.to_string()])).expect("kill");
    let third = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("third ztunnel");
    third
        .wait_for_count("serving workload", 2, T)
        .expect("replayed to the restarted ztunnel");
    let deadline = std::time::Instant::now() + T;
    loop {
        match roundtrip(&mesh, &client, "10.244.0.2:8080", "after the restart") {
            Ok(out) if out == "received: after the restart" => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// 100 pods on one node: the agent captures them all and the one ztunnel serves each in its
/// own namespace. Reports the time (a figure, not a threshold).
#[test]
fn hundred_pods_on_one_node() {
    const PODS: usize = 100;
    let mut net = Net::new("hundred").expect("net");
    let node = net.host("node", "10.244.0.20").expect("node");
    let ip = |i: usize| format!("10.245.{}.{}", i / 200, i % 200 + 1);
    let made = std::time::Instant::now();
    let pods = net.bare_hosts("pod", PODS, ip).expect("pod namespaces");
    eprintln!("{PODS} pod namespaces made in {:?}", made.elapsed());
    let mut mesh = Mesh::new("hundred", bins()).expect("mesh");
    let manifest_dir = mesh.dir.join("manifests");
    std::fs::create_dir_all(&manifest_dir).expect("manifest dir");
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: many\n  labels:\n    istio.io/dataplane-mode: ambient\n",
    );
    for (i, pod) in pods.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: many\n  uid: uid-{i}\nspec:\n  nodeName: node-a\n  serviceAccountName: sa-{}\nstatus:\n  podIPs:\n  - ip: {}\n",
            i % 10,
            pod.ip
        );
    }
    std::fs::write(manifest_dir.join("pods.yaml"), yaml).expect("manifests");
    let config = mesh
        .write("mesh.yaml", &topology::config("server"))
        .expect("config");
    let socket = mesh.dir.join("ztunnel.sock");
    let zt = mesh
        .start_ztunnel_shared(&node, &config, &socket, &[])
        .expect("ztunnel");
    mesh.bins
        .node_agent()
        .expect("node-agent built before the clock starts");
    let started = std::time::Instant::now();
    let (mut agent, agent_log) = start_agent(&mesh, &node, &manifest_dir, &socket);
    zt.wait_for_count("serving workload", PODS, Duration::from_secs(120))
        .expect("every pod served");
    let took = started.elapsed();
    eprintln!(
        "{PODS} pods captured by node-agent and served by ztunnel in {took:?} ({:.0} pods/s, from the agent's start)",
        PODS as f64 / took.as_secs_f64()
    );
    let agent_text = std::fs::read_to_string(&agent_log).expect("agent log");
    let line = agent_text
        .lines()
        .find(|l| l.contains("pods captured"))
        .expect("the agent reports its rate");
    eprintln!("agent: {line}");
    assert!(line.contains("added=100"), "{line}");
    for pod in pods.iter().step_by(33) {
        assert!(captured(pod), "{} has its rules", pod.ns);
        let listening = run(pod.command("ss").args(["-Htln"])).expect("ss");
        let listening = String::from_utf8_lossy(&listening.stdout).to_string();
        assert!(listening.contains(":15008"), "{}: {listening}", pod.ns);
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
