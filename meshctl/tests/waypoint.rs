//! `meshctl waypoint` as an operator runs it: the built binary on a temporary manifest
//! directory, checked through its output, the files it leaves, and what meshd's manifest
//! reader makes of them. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube_source::{Kind, ManifestDir, Object, ObjectKey};

/// A directory under the system's temporary one, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("meshctl-waypoint-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, file: &str, text: &str) {
        fs::write(self.0.join(file), text).unwrap();
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.0.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn has(&self, file: &str) -> bool {
        self.0.join(file).exists()
    }

    /// What meshd would read here: every object by key, and the errors.
    fn meshd_view(&self) -> (Vec<ObjectKey>, Vec<String>) {
        let mut source = ManifestDir::new(&self.0);
        source.refresh();
        let keys = source.objects().keys().cloned().collect();
        let errors = source.errors().iter().map(|e| e.to_string()).collect();
        (keys, errors)
    }

    /// The Gateway `ns/name` as meshd reads it.
    fn gateway(&self, ns: &str, name: &str) -> Option<kube_source::Gateway> {
        let mut source = ManifestDir::new(&self.0);
        source.refresh();
        let key = ObjectKey {
            kind: Kind::Gateway,
            namespace: ns.into(),
            name: name.into(),
        };
        match source.objects().get(&key) {
            Some((Object::Gateway(g), _)) => Some(g.clone()),
            _ => None,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn meshctl_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("waypoint")
        .args(args)
        .arg("--manifests")
        .arg(dir)
        .env_remove("MESH_MANIFESTS")
        .output()
        .expect("runs meshctl");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn meshctl(dir: &Dir, args: &[&str]) -> Run {
    meshctl_in(&dir.0, args)
}

/// Runs and requires success.
fn ok(dir: &Dir, args: &[&str]) -> String {
    let r = meshctl(dir, args);
    assert!(r.ok, "meshctl {args:?} failed: {}", r.stderr);
    r.stdout
}

/// Runs and requires failure; returns stderr.
fn fails(dir: &Dir, args: &[&str]) -> String {
    let r = meshctl(dir, args);
    assert!(!r.ok, "meshctl {args:?} succeeded: {}", r.stdout);
    r.stderr
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
";

#[test]
fn apply_list_delete_roundtrip() {
    let dir = Dir::new("roundtrip");
    let out = ok(&dir, &["apply", "-n", "shop"]);
    assert!(out.contains("waypoint shop/waypoint written to waypoint-shop-waypoint.yaml"));
    assert_eq!(dir.read("waypoint-shop-waypoint.yaml"), GATEWAY);
    ok(
        &dir,
        &["apply", "-n", "shop", "--service-account", "reviews"],
    );
    ok(
        &dir,
        &["apply", "-n", "infra", "--name", "shared", "--for", "all"],
    );

    let gw = dir
        .gateway("shop", "waypoint-reviews")
        .expect("meshd reads it");
    assert_eq!(gw.spec.gateway_class_name, "istio-waypoint");
    assert_eq!(
        gw.metadata.annotations["istio.io/for-service-account"],
        "reviews"
    );
    assert_eq!(gw.metadata.labels["istio.io/waypoint-for"], "workload");
    assert_eq!(dir.meshd_view().1, Vec::<String>::new());

    let all = ok(&dir, &["list", "-A"]);
    let want = "\
NAMESPACE   NAME               FOR        SERVICE-ACCOUNT   FILE
infra       shared             all        -                 waypoint-infra-shared.yaml
shop        waypoint           service    -                 waypoint-shop-waypoint.yaml
shop        waypoint-reviews   workload   reviews           waypoint-shop-waypoint-reviews.yaml
";
    assert_eq!(all, want);
    let shop = ok(&dir, &["list", "-n", "shop"]);
    assert_eq!(shop.lines().count(), 3, "{shop}");
    assert!(!shop.contains("infra"));
    let r = meshctl(&dir, &["list"]);
    assert!(r.ok && r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("no waypoints in namespace default"));

    let out = ok(&dir, &["delete", "-n", "shop", "waypoint-reviews"]);
    assert!(
        out.contains("waypoint-shop-waypoint-reviews.yaml removed"),
        "{out}"
    );
    assert!(!dir.has("waypoint-shop-waypoint-reviews.yaml"));
    ok(&dir, &["delete", "-n", "shop", "--all"]);
    ok(&dir, &["delete", "-n", "infra", "shared"]);
    let r = meshctl(&dir, &["list", "-A"]);
    assert!(r.ok && r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn apply_refuses_to_overwrite_a_different_gateway() {
    let dir = Dir::new("overwrite");
    ok(&dir, &["apply", "-n", "shop"]);
    let again = ok(&dir, &["apply", "-n", "shop"]);
    assert!(again.contains("unchanged"), "{again}");

    let err = fails(&dir, &["apply", "-n", "shop", "--for", "all"]);
    assert!(err.contains("--overwrite"), "{err}");
    assert!(err.contains("waypoint-shop-waypoint.yaml:1"), "{err}");
    assert_eq!(dir.read("waypoint-shop-waypoint.yaml"), GATEWAY);

    ok(
        &dir,
        &["apply", "-n", "shop", "--for", "all", "--overwrite"],
    );
    let gw = dir.gateway("shop", "waypoint").unwrap();
    assert_eq!(gw.metadata.labels["istio.io/waypoint-for"], "all");

    // A Gateway of that name elsewhere (hand-written, no label) is the one replaced, in place:
    // a second file would define the key twice.
    let dir = Dir::new("overwrite-elsewhere");
    let hand = "# shop's waypoint, by hand.\napiVersion: gateway.networking.k8s.io/v1\nkind: \
                Gateway\nmetadata:\n  name: waypoint\n  namespace: shop\nspec:\n  \
                gatewayClassName: istio-waypoint\n---\napiVersion: v1\nkind: Namespace\n\
                metadata:\n  name: shop\n";
    dir.write("mesh.yaml", hand);
    let err = fails(&dir, &["apply", "-n", "shop"]);
    assert!(err.contains("mesh.yaml:2"), "{err}");
    ok(&dir, &["apply", "-n", "shop", "--overwrite"]);
    assert!(!dir.has("waypoint-shop-waypoint.yaml"));
    let text = dir.read("mesh.yaml");
    assert!(text.starts_with("# shop's waypoint, by hand.\n"), "{text}");
    assert!(text.contains("istio.io/waypoint-for: service"), "{text}");
    assert!(text.ends_with("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"));
    assert_eq!(dir.meshd_view().1, Vec::<String>::new());

    // The file apply would write holds something else.
    let dir = Dir::new("overwrite-file");
    dir.write(
        "waypoint-shop-waypoint.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    );
    let err = fails(&dir, &["apply", "-n", "shop", "--overwrite"]);
    assert!(err.contains("already holds other objects"), "{err}");
}

#[test]
fn delete_takes_only_its_document() {
    let dir = Dir::new("multidoc");
    let ns = "# The shop.\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  \
                  name: p\n  namespace: shop\nspec: {}\n";
    let gw = GATEWAY.replace("name: waypoint\n", "name: wp\n");
    // Gateway in the middle, then first, then last.
    dir.write("a.yaml", &format!("{ns}---\n{gw}---\n{policy}"));
    let ns2 = ns.replace("name: shop", "name: shop2");
    let policy2 = policy.replace("name: p", "name: p2");
    dir.write("b.yaml", &format!("{gw}---\n{ns2}"));
    dir.write("c.yaml", &format!("{policy2}---\n{GATEWAY}"));

    ok(&dir, &["delete", "-n", "shop", "wp"]);
    assert_eq!(dir.read("a.yaml"), format!("{ns}---\n{policy}"));
    // The key was defined twice; meshd (and meshctl) took a.yaml's, now b.yaml's is the one.
    ok(&dir, &["delete", "-n", "shop", "wp"]);
    assert_eq!(dir.read("b.yaml"), ns2);
    ok(&dir, &["delete", "-n", "shop", "waypoint"]);
    assert_eq!(dir.read("c.yaml"), policy2);
    let (keys, errors) = dir.meshd_view();
    assert_eq!(errors, Vec::<String>::new());
    assert!(keys.iter().all(|k| k.kind != Kind::Gateway), "{keys:?}");

    // One item of a List is not cut out of it.
    let dir = Dir::new("multidoc-list");
    dir.write(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: gateway.networking.k8s.io/v1\n  \
         kind: Gateway\n  metadata:\n    name: waypoint\n    namespace: shop\n  spec:\n    \
         gatewayClassName: istio-waypoint\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    \
         name: shop\n",
    );
    assert!(dir.gateway("shop", "waypoint").is_some(), "the List parses");
    let err = fails(&dir, &["delete", "-n", "shop", "waypoint"]);
    assert!(err.contains("List"), "{err}");
}

#[test]
fn enroll_namespace_labels_or_creates_it() {
    let dir = Dir::new("enroll");
    ok(&dir, &["apply", "-n", "shop", "--enroll-namespace"]);
    assert_eq!(
        dir.read("namespace-shop.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels:\n    istio.io/use-waypoint: \
         waypoint\n  name: shop\n"
    );
    let again = ok(&dir, &["apply", "-n", "shop", "--enroll-namespace"]);
    assert!(again.contains("already uses waypoint waypoint"), "{again}");

    // An existing Namespace is labeled where it is; the document before it and its comment stay.
    let dir = Dir::new("enroll-existing");
    let legacy = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: legacy\n";
    dir.write(
        "namespaces.yaml",
        &format!(
            "{legacy}---\n# Ambient.\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
             labels:\n    istio.io/dataplane-mode: ambient\n"
        ),
    );
    ok(
        &dir,
        &["apply", "-n", "shop", "--name", "wp", "--enroll-namespace"],
    );
    let text = dir.read("namespaces.yaml");
    assert!(
        text.starts_with(&format!("{legacy}---\n# Ambient.\napiVersion: v1\n")),
        "{text}"
    );
    let mut source = ManifestDir::new(&dir.0);
    source.refresh();
    let key = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: "shop".into(),
    };
    let (ns, _) = &source.objects()[&key];
    let labels = &ns.meta().labels;
    assert_eq!(labels["istio.io/use-waypoint"], "wp");
    assert_eq!(labels["istio.io/dataplane-mode"], "ambient");

    // Another waypoint already named there: only with --overwrite.
    let err = fails(
        &dir,
        &[
            "apply",
            "-n",
            "shop",
            "--name",
            "other",
            "--enroll-namespace",
        ],
    );
    assert!(err.contains("already uses waypoint \"wp\""), "{err}");
    ok(
        &dir,
        &[
            "apply",
            "-n",
            "shop",
            "--name",
            "other",
            "--enroll-namespace",
            "--overwrite",
        ],
    );
    assert!(
        dir.read("namespaces.yaml")
            .contains("istio.io/use-waypoint: other")
    );

    // Deleting the waypoint says the namespace still names it.
    let r = meshctl(&dir, &["delete", "-n", "shop", "other"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("still has istio.io/use-waypoint=other"),
        "{}",
        r.stderr
    );
}

#[test]
fn errors_name_what_is_wrong() {
    let dir = Dir::new("errors");
    let missing = dir.0.join("nope");
    let r = meshctl_in(&missing, &["list", "-A"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("nope") && r.stderr.contains("MESH_MANIFESTS"),
        "{}",
        r.stderr
    );

    let err = fails(&dir, &["delete", "-n", "shop", "ghost"]);
    assert!(err.contains("no waypoint shop/ghost"), "{err}");

    dir.write(
        "ingress.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: in\n  \
         namespace: shop\nspec:\n  gatewayClassName: istio\n",
    );
    let err = fails(&dir, &["delete", "-n", "shop", "in"]);
    assert!(err.contains("not a waypoint"), "{err}");
    assert!(dir.has("ingress.yaml"));

    let err = fails(&dir, &["apply", "-n", "Shop"]);
    assert!(err.contains("\"Shop\" is not a valid name"), "{err}");
    let err = fails(
        &dir,
        &[
            "apply",
            "-n",
            "shop",
            "--service-account",
            "r",
            "--for",
            "service",
        ],
    );
    assert!(err.contains("--for workload"), "{err}");

    // A broken document stops every command, naming the file and line.
    dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [oops\n",
    );
    for args in [
        &["list", "-A"][..],
        &["apply", "-n", "shop"],
        &["delete", "--all"],
    ] {
        let err = fails(&dir, args);
        assert!(err.contains("broken.yaml:"), "{args:?}: {err}");
    }
    // An error in a kind waypoints do not touch does not.
    dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: 3\n",
    );
    ok(&dir, &["list", "-A"]);

    // The directory from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["waypoint", "apply", "-n", "shop"])
        .env("MESH_MANIFESTS", &dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.has("waypoint-shop-waypoint.yaml"));
}
