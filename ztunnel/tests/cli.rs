//! The `ztunnel` binary's command line: CA generation and the errors an operator sees.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::process::Command;

fn ztunnel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ztunnel"));
    // Only what a test sets reaches the binary.
    for var in [
        "LOCAL_XDS_PATH",
        "LOCAL_XDS",
        "PROXY_MODE",
        "PROXY_WORKLOAD_INFO",
        "XDS_ADDRESS",
        "CA_ADDRESS",
        "CA_CERTS_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ztunnel-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr_of(c: &mut Command) -> (bool, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ca_generate_writes_istio_cacerts_layout_once() {
    let dir = tempdir("ca");
    let ca = dir.join("cacerts");
    let (ok, err) = stderr_of(ztunnel().args(["ca", "generate", "--dir"]).arg(&ca));
    assert!(ok, "{err}");
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(ca.join(f).exists(), "{f}");
    }
    let (ok, err) = stderr_of(ztunnel().args(["ca", "generate", "--dir"]).arg(&ca));
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn run_errors_name_what_is_wrong() {
    let dir = tempdir("run");
    let ca = dir.join("cacerts");
    assert!(
        ztunnel()
            .args(["ca", "generate", "--dir"])
            .arg(&ca)
            .status()
            .unwrap()
            .success()
    );
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"1.2.3.999\"]\n",
    )
    .unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "workloads:\n- name: a\n  namespace: ns\n  serviceAccount: sa\n  workloadIps: [\"10.0.0.1\"]\n",
    )
    .unwrap();
    let os = |s: &str| OsString::from(s);
    let dedicated = ("PROXY_MODE", os("dedicated"));
    let cases: Vec<(Vec<(&str, OsString)>, &str)> = vec![
        // Shared mode (the default) needs config like any other.
        (
            vec![],
            "LOCAL_XDS_PATH (or LOCAL_XDS, or --local-xds-path) is required",
        ),
        (
            vec![
                dedicated.clone(),
                ("PROXY_WORKLOAD_INFO", os("ns/a/sa")),
                ("XDS_ADDRESS", os("https://istiod:15012")),
                ("XDS_ROOT_CA", dir.join("missing-root.pem").into()),
            ],
            "XDS_ROOT_CA",
        ),
        (vec![dedicated.clone()], "PROXY_WORKLOAD_INFO"),
        (
            vec![
                dedicated.clone(),
                ("PROXY_WORKLOAD_INFO", os("ns/a/sa")),
                ("CA_CERTS_DIR", ca.clone().into()),
            ],
            "LOCAL_XDS_PATH",
        ),
        (
            vec![
                dedicated.clone(),
                (
                    "LOCAL_XDS",
                    os("workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"x\"]\n"),
                ),
                ("PROXY_WORKLOAD_INFO", os("ns/a/sa")),
                ("CA_CERTS_DIR", ca.clone().into()),
            ],
            "LOCAL_XDS: workloads[0] (ns/a): field workloadIps[0]",
        ),
        (
            vec![
                dedicated.clone(),
                ("LOCAL_XDS_PATH", good.clone().into()),
                ("PROXY_WORKLOAD_INFO", os("ns/a")),
            ],
            "is not <namespace>/<pod>/<service-account>",
        ),
        (
            vec![
                dedicated.clone(),
                ("LOCAL_XDS_PATH", bad.clone().into()),
                ("PROXY_WORKLOAD_INFO", os("ns/a/sa")),
                ("CA_CERTS_DIR", ca.clone().into()),
            ],
            "bad.yaml: workloads[0] (ns/a): field workloadIps[0]",
        ),
        (
            vec![
                dedicated.clone(),
                ("LOCAL_XDS_PATH", good.clone().into()),
                ("PROXY_WORKLOAD_INFO", os("ns/a/other")),
                ("CA_CERTS_DIR", ca.clone().into()),
            ],
            "PROXY_WORKLOAD_INFO says service account \"other\"",
        ),
        (
            vec![
                dedicated.clone(),
                ("LOCAL_XDS_PATH", good.clone().into()),
                ("PROXY_WORKLOAD_INFO", os("ns/a/sa")),
                ("CA_CERTS_DIR", dir.join("missing").into()),
            ],
            "ca-cert.pem",
        ),
    ];
    for (env, want) in cases {
        let mut c = ztunnel();
        c.envs(env.iter().map(|(k, v)| (k, v)));
        let (ok, err) = stderr_of(&mut c);
        assert!(!ok, "{env:?} succeeded");
        assert!(err.contains(want), "{env:?}: {want:?} not in {err}");
    }
}
