//! End-to-end: `meshctl local` makes a manifest directory real on this machine (nodes and pods
//! in network namespaces, meshd, a node agent and a shared ztunnel per node) and removes it.
//! Needs root.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::capture::Capture;
use e2e::mesh::Binaries;

const T: Duration = Duration::from_secs(30);
const NAME: &str = "e2e-local";

fn bins() -> Binaries {
    Binaries::beside(env!("CARGO_BIN_EXE_meshapp")).expect("binaries")
}

/// `meshctl local <args>` with this test's cluster name and state; (success, stdout+stderr).
fn meshctl(bins: &Binaries, state: &Path, args: &[&str]) -> (bool, String) {
    let (sub, rest) = args.split_first().expect("a subcommand");
    let out = Command::new(&bins.meshctl)
        .args(["local", sub, "--name", NAME, "--state"])
        .arg(state)
        .args(rest)
        .output()
        .expect("meshctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pods_yaml(meshapp: &Path) -> String {
    let pod = |ns: &str, name: &str, node: &str, ip: &str, serve: bool| {
        let command = if serve {
            format!(
                "  containers:\n  - name: app\n    command: [\"{}\", echo, --listen, \"0.0.0.0:8080\"]\n",
                meshapp.display()
            )
        } else {
            String::new()
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {name}\n{command}status:\n  podIPs:\n  - ip: {ip}\n"
        )
    };
    [
        pod("demo", "client", "node-a", "10.244.0.1", false),
        pod("demo", "other", "node-a", "10.244.0.5", true),
        pod("demo", "server", "node-b", "10.244.0.2", true),
        pod("plain", "legacy", "node-b", "10.244.0.6", true),
    ]
    .concat()
}

fn namespaces(plain_ambient: bool) -> String {
    let label = if plain_ambient {
        "  labels:\n    istio.io/dataplane-mode: ambient\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    istio.io/dataplane-mode: ambient\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: plain\n{label}"
    )
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn roundtrip(bins: &Binaries, state: &Path, from: &str, to: &str, message: &str) -> (bool, String) {
    let meshapp = bins.meshapp.display().to_string();
    meshctl(
        bins,
        state,
        &[
            "exec",
            from,
            "--",
            &meshapp,
            "roundtrip",
            "--connect",
            to,
            "--message",
            message,
        ],
    )
}

/// Two nodes, pods on both, an AuthorizationPolicy from the examples: cross-node traffic goes
/// through the node proxies with both identities, the policy refuses the pod it names, a pod
/// of an unlabeled namespace is not captured until its namespace is labeled, and `down`
/// leaves nothing behind.
#[test]
fn local_cluster_from_manifests() {
    let bins = bins();
    bins.meshctl().expect("meshctl and what it runs");
    let dir = std::env::temp_dir().join("e2e-local");
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("dir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mesh");
    for f in [
        "service.yaml",
        "serviceaccounts.yaml",
        "authorization-policy.yaml",
    ] {
        std::fs::copy(examples.join(f), manifests.join(f)).expect("copy example");
    }
    write(&manifests.join("namespaces.yaml"), &namespaces(false));
    write(&manifests.join("pods.yaml"), &pods_yaml(&bins.meshapp));
    let state = dir.join("state");
    // Whatever happens, nothing is left running (a failed run's watcher would edit the next).
    struct Down<'a>(&'a Binaries, &'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            meshctl(self.0, self.1, &["down"]);
        }
    }
    let _down = Down(&bins, &state);

    let (ok, out) = meshctl(&bins, &state, &["up", manifests.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    for line in ["demo/client", "demo/server", "demo/other"] {
        let l = out.lines().find(|l| l.contains(line)).unwrap_or_default();
        assert!(l.contains("captured by ztunnel"), "{line}: {out}");
    }
    let legacy = out
        .lines()
        .find(|l| l.contains("plain/legacy"))
        .unwrap_or_default();
    assert!(legacy.contains("not captured"), "{out}");

    // Cross-node, allowed: the server ztunnel (node-b) logs the client's identity.
    let deadline = Instant::now() + T;
    loop {
        let (ok, out) = roundtrip(
            &bins,
            &state,
            "demo/client",
            "10.244.0.2:8080",
            "cross node",
        );
        if ok && out.contains("received: cross node") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let zt_b =
        std::fs::read_to_string(state.join(NAME).join("logs/ztunnel-node-b.log")).expect("log");
    assert!(
        zt_b.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client"),
        "{zt_b}"
    );
    // Both node proxies logged it: node-a's outbound names the server's identity.
    let zt_a =
        std::fs::read_to_string(state.join(NAME).join("logs/ztunnel-node-a.log")).expect("log");
    assert!(
        zt_a.lines().any(|l| l.contains("direction=\"outbound\"")
            && l.contains("dst.identity=spiffe://cluster.local/ns/demo/sa/server")),
        "{zt_a}"
    );

    // Same node: client -> other, both on node-a, through the one node proxy.
    let (ok, out) = roundtrip(&bins, &state, "demo/client", "10.244.0.5:8080", "same node");
    assert!(ok && out.contains("received: same node"), "{out}");
    let zt_a =
        std::fs::read_to_string(state.join(NAME).join("logs/ztunnel-node-a.log")).expect("log");
    assert!(
        zt_a.lines().any(|l| l.contains("direction=\"inbound\"")
            && l.contains("dst.identity=spiffe://cluster.local/ns/demo/sa/other")
            && l.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client")),
        "{zt_a}"
    );

    // The link between the nodes carries TLS, never the application's bytes.
    let capture = Capture::on(&format!("{NAME}.sw"), "n0", dir.join("uplink.pcap"))
        .expect("tcpdump on node-a's uplink");
    let (ok, out) = roundtrip(
        &bins,
        &state,
        "demo/client",
        "10.244.0.2:8080",
        "PLAINTEXT-MARKER-ON-THE-LINK",
    );
    assert!(ok, "{out}");
    let bytes = capture.stop().expect("capture");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(b"PLAINTEXT-MARKER-ON-THE-LINK"),
        "plaintext on the link"
    );
    assert!(
        has(&[0x17, 0x03, 0x03]),
        "no TLS application data on the link ({} bytes)",
        bytes.len()
    );

    // The example policy refuses demo/other.
    let (ok, _) = roundtrip(&bins, &state, "demo/other", "10.244.0.2:8080", "refused");
    assert!(!ok, "demo/other must be refused by the example policy");

    // Labeling plain captures its running pod.
    write(&manifests.join("namespaces.yaml"), &namespaces(true));
    let deadline = Instant::now() + T;
    loop {
        let (_, out) = meshctl(&bins, &state, &["status"]);
        let legacy = out
            .lines()
            .find(|l| l.contains("plain/legacy"))
            .unwrap_or_default();
        if legacy.contains("captured by ztunnel") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (ok, out) = meshctl(&bins, &state, &["down"]);
    assert!(ok, "{out}");
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{NAME}."))),
        "{left}"
    );
}
