//! Tests of the manifest directory: a realistic file, errors located to file, line and
//! field, the keep-what-a-bad-edit-held rules step by step, and the watcher end to end.
//! Files live in a unique directory under the system temp dir; watcher tests poll every
//! 20 ms and wait on the channel with a 10 s timeout, never on fixed sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::objects::{IntOrString, Kind};

/// A directory under the system temp dir, unique per test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "kube-source-{name}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Writes `rel` whole, as editors do: a hidden temporary file renamed over it, so a
    /// poller never sees half of it.
    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path(rel);
        let parent = path.parent().expect("file has a parent");
        fs::create_dir_all(parent).expect("create parent");
        let tmp = parent.join(".writing.tmp");
        fs::write(&tmp, content).expect("write temp file");
        fs::rename(&tmp, &path).expect("rename into place");
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).expect("remove file");
    }

    /// An origin as displayed, with the directory left out.
    fn show_origin(&self, o: &Origin) -> String {
        o.to_string().replace(&format!("{}/", self.0.display()), "")
    }

    /// An error as displayed, with the directory left out.
    fn show(&self, e: &ManifestError) -> String {
        e.to_string().replace(&format!("{}/", self.0.display()), "")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The 1-based line of the `nth` (0-based) line containing `needle`.
fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in the text"))
}

/// An update as (applied keys, deleted keys, errors as displayed).
fn summary(dir: &TempDir, u: &Update) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        u.applied.iter().map(|(o, _)| o.key().to_string()).collect(),
        u.deleted.iter().map(ToString::to_string).collect(),
        u.errors.iter().map(|e| dir.show(e)).collect(),
    )
}

fn keys(d: &ManifestDir) -> Vec<String> {
    d.objects().keys().map(ToString::to_string).collect()
}

/// Refreshes until a change shows: a changed file is parsed on the second read that agrees.
fn settle(d: &mut ManifestDir) -> Option<Update> {
    (0..3).find_map(|_| d.refresh())
}

const APP: &str = r#"# The shop namespace, in the ambient mesh.
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "2024-05-01T10:00:00Z"
  generateName: web-7d4b9c-
  labels:
    app: web
    pod-template-hash: 7d4b9c
  name: web-7d4b9c-x2x9z
  namespace: shop
  ownerReferences:
  - apiVersion: apps/v1
    blockOwnerDeletion: true
    controller: true
    kind: ReplicaSet
    name: web-7d4b9c
    uid: 1c0e6a4e-58c1-4c1a-9d0e-3b7a1e2b9f10
  resourceVersion: "1234"
  uid: 8a0c2f7e-4a55-4f5e-9a0b-2f8d6c1e7a33
spec:
  containers:
  - image: nginx:1.27
    imagePullPolicy: IfNotPresent
    name: web
    ports:
    - containerPort: 8080
      name: http
      protocol: TCP
    resources: {}
  dnsPolicy: ClusterFirst
  nodeName: node-a
  serviceAccountName: web
status:
  conditions:
  - lastProbeTime: null
    lastTransitionTime: "2024-05-01T10:00:05Z"
    status: "True"
    type: Ready
  hostIP: 172.18.0.2
  phase: Running
  podIP: 10.244.1.5
  podIPs:
  - ip: 10.244.1.5
  - ip: fd00:10:244:1::5
  qosClass: BestEffort
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.20.1
  clusterIPs:
  - 10.96.20.1
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: http
  selector:
    app: web
  type: ClusterIP
---   # the policy
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: web-allow
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/client"]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
status:
  addresses:
  - type: IPAddress
    value: 10.96.30.1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 1
---
apiVersion: v1
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: web
    namespace: shop
- apiVersion: v1
  kind: Pod
  metadata:
    labels: {app: client}
    name: client
    namespace: shop
  spec:
    containers: [{name: curl, image: curlimages/curl}]
    nodeName: node-b
  status:
    podIPs: [{ip: 10.244.2.7}]
kind: List
metadata:
  resourceVersion: ""
"#;

#[test]
fn reads_a_realistic_file() {
    let dir = TempDir::new("realistic");
    dir.write("app.yaml", APP);
    let mut d = ManifestDir::new(&dir.0);
    let update = d.refresh().expect("first refresh reports");
    assert_eq!(update, d.snapshot());
    assert_eq!(update.errors, []);
    assert_eq!(
        keys(&d),
        [
            "Namespace shop",
            "Pod shop/client",
            "Pod shop/web-7d4b9c-x2x9z",
            "Service shop/web",
            "ServiceAccount shop/web",
            "Gateway shop/waypoint",
            "AuthorizationPolicy shop/web-allow",
        ]
    );
    let get = |kind, namespace: &str, name: &str| {
        let key = ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        d.objects().get(&key).cloned().expect("object present")
    };
    let origin = |line| Origin {
        file: dir.path("app.yaml"),
        line,
    };

    let (ns, o) = get(Kind::Namespace, "", "shop");
    assert_eq!(o, origin(2), "first line with content, after the comment");
    assert_eq!(ns.meta().labels["istio.io/dataplane-mode"], "ambient");

    let (Object::Pod(pod), o) = get(Kind::Pod, "shop", "web-7d4b9c-x2x9z") else {
        panic!("not a pod");
    };
    assert_eq!(o, origin(line_of(APP, "kind: Pod", 0) - 1));
    assert_eq!(pod.spec.node_name, "node-a");
    assert_eq!(pod.service_account(), "web");
    assert_eq!(pod.ips(), ["10.244.1.5", "fd00:10:244:1::5"]);
    assert!(pod.is_ready());
    assert_eq!(pod.metadata.owner_references[0].name, "web-7d4b9c");

    let (Object::Service(svc), _) = get(Kind::Service, "shop", "web") else {
        panic!("not a service");
    };
    assert_eq!(
        svc.spec.ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );

    let (Object::AuthorizationPolicy(policy), o) =
        get(Kind::AuthorizationPolicy, "shop", "web-allow")
    else {
        panic!("not a policy");
    };
    assert_eq!(o, origin(line_of(APP, "kind: AuthorizationPolicy", 0) - 1));
    assert_eq!(policy.value["spec"]["action"], "ALLOW");

    let (Object::Gateway(gw), _) = get(Kind::Gateway, "shop", "waypoint") else {
        panic!("not a gateway");
    };
    assert_eq!(gw.spec.gateway_class_name, "istio-waypoint");
    assert_eq!(gw.status.addresses[0].value, "10.96.30.1");

    // List items carry the List document's origin.
    let list_line = line_of(APP, "kind: Deployment", 0) + 7;
    let (Object::Pod(client), o) = get(Kind::Pod, "shop", "client") else {
        panic!("not a pod");
    };
    assert_eq!(o, origin(list_line));
    assert_eq!(client.spec.node_name, "node-b");
    assert_eq!(client.ips(), ["10.244.2.7"]);
    assert_eq!(
        get(Kind::ServiceAccount, "shop", "web").1,
        origin(list_line)
    );

    assert_eq!(d.refresh(), None, "nothing changed");
}

#[test]
fn errors_name_file_line_and_field() {
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n";
    /// (case, files written, errors as displayed, keys of the objects read)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "wrong type deep in spec, in the second document",
            &[(
                "app.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n---\n\
                 apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n\
                 \x20 - name: http\n    port: http\n",
            )],
            &["app.yaml:13: spec.ports[0].port: invalid type: string \"http\", expected u16"],
            &["Pod default/web"],
        ),
        (
            "missing name, reported on the document's first line",
            &[(
                "app.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\n\n# b\n\
                 apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {app: b}\n",
            )],
            &["app.yaml:8: metadata.name: missing field `name`"],
            &["Pod default/a"],
        ),
        (
            "YAML syntax error; the documents around it still apply",
            &[(
                "app.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\n\
                 metadata:\n  name: b\n  labels: app: b\n---\napiVersion: v1\nkind: Pod\n\
                 metadata:\n  name: c\n",
            )],
            &["app.yaml:10: mapping values are not allowed in this context"],
            &["Pod default/a", "Pod default/c"],
        ),
        (
            "wrong type inside a List",
            &[(
                "list.yaml",
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n\
                 \x20   name: a\n  spec:\n    containers:\n    - name: c\n      ports:\n\
                 \x20     - containerPort: 99999\n",
            )],
            &[
                "list.yaml:12: items[0].spec.containers[0].ports[0].containerPort: \
                 invalid value: integer `99999`, expected u16",
            ],
            &[],
        ),
        (
            "duplicate across files: the first in path order wins",
            &[("b.yaml", POD), ("a/web.yml", POD)],
            &["b.yaml:1: Pod shop/web is already defined at a/web.yml:1; \
                 this definition is ignored"],
            &["Pod shop/web"],
        ),
        (
            "duplicate in one file",
            &[("a.yaml", &*format!("{POD}---\n{POD}"))],
            &["a.yaml:7: Pod shop/web is already defined at a.yaml:1; \
                 this definition is ignored"],
            &["Pod shop/web"],
        ),
    ];
    for (name, files, want_errors, want_keys) in cases {
        let dir = TempDir::new("errors");
        for (file, content) in *files {
            dir.write(file, content);
        }
        let mut d = ManifestDir::new(&dir.0);
        let update = d.refresh().expect("first refresh reports");
        let errors: Vec<String> = update.errors.iter().map(|e| dir.show(e)).collect();
        assert_eq!(errors, *want_errors, "{name}");
        assert_eq!(keys(&d), *want_keys, "{name}");
    }
}

#[test]
fn not_utf8_names_the_line() {
    let dir = TempDir::new("utf8");
    dir.write(
        "a.yaml",
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: w\xffb\n",
    );
    let mut d = ManifestDir::new(&dir.0);
    let update = d.refresh().expect("first refresh reports");
    let errors: Vec<String> = update.errors.iter().map(|e| dir.show(e)).collect();
    assert_eq!(
        errors,
        ["a.yaml:4: not UTF-8: invalid utf-8 sequence of 1 bytes from index 44"]
    );
}

#[test]
fn error_display() {
    let e = ManifestError {
        file: "examples/app.yaml".into(),
        line: 14,
        field: Some("spec.ports[0].port".into()),
        message: "invalid type: string \"http\", expected u16".into(),
    };
    assert_eq!(
        e.to_string(),
        "examples/app.yaml:14: spec.ports[0].port: invalid type: string \"http\", expected u16"
    );
    let whole_file = ManifestError {
        line: 0,
        field: None,
        message: "cannot read: permission denied".into(),
        ..e
    };
    assert_eq!(
        whole_file.to_string(),
        "examples/app.yaml: cannot read: permission denied"
    );
}

#[test]
fn splits_documents() {
    /// (case, text, each document's (first line, origin line))
    type Case<'a> = (&'a str, &'a str, &'a [(usize, usize)]);
    let cases: &[Case] = &[
        ("one document", "a: 1\n", &[(1, 1)]),
        ("leading separator", "---\na: 1\n", &[(2, 2)]),
        (
            "comments before content; separator with a comment",
            "# c\na: 1\n--- # next\n\n# d\nb: 2\n",
            &[(1, 2), (4, 6)],
        ),
        (
            "empty documents dropped",
            "---\n---\n# only a comment\n---\na: 1\n---\n",
            &[(5, 5)],
        ),
        (
            "indented --- and `--- text` do not split",
            "a: |\n  ---\nb: 1\n--- {c: 1}\n---x\n",
            &[(1, 1)],
        ),
        (
            "CRLF line endings",
            "a: 1\r\n---\r\nb: 2\r\n",
            &[(1, 1), (3, 3)],
        ),
        ("trailing spaces", "a: 1\n---   \nb: 2", &[(1, 1), (3, 3)]),
    ];
    for (name, text, want) in cases {
        let got: Vec<(usize, usize)> = split_documents(text)
            .iter()
            .map(|d| (d.first_line, d.origin_line))
            .collect();
        assert_eq!(got, *want, "{name}");
    }
    let docs = split_documents("a: 1\n---\nb: 2\n");
    assert_eq!(
        docs.iter().map(|d| d.text).collect::<Vec<_>>(),
        ["a: 1\n", "b: 2\n"]
    );
    assert_eq!(docs.iter().map(|d| d.start).collect::<Vec<_>>(), [0, 9]);
}

#[test]
fn walks_manifests_only() {
    let dir = TempDir::new("walk");
    for file in [
        "b.yaml",
        "a/z.yml",
        "a/deeper/x.yaml",
        "a/.hidden.yaml",
        ".git/x.yaml",
        "..data/x.yaml",
        "c.yaml~",
        ".#c.yaml",
        ".c.yaml.swp",
        "c.yaml.swp",
        "notes.txt",
    ] {
        dir.write(file, "");
    }
    let files: Vec<PathBuf> = walk(&dir.0).files.into_iter().collect();
    let want: Vec<PathBuf> = ["a/deeper/x.yaml", "a/z.yml", "b.yaml"]
        .iter()
        .map(|f| dir.path(f))
        .collect();
    assert_eq!(files, want);

    // DIR may name a single file.
    let single = walk(&dir.path("b.yaml"));
    assert_eq!(
        single.files.into_iter().collect::<Vec<_>>(),
        [dir.path("b.yaml")]
    );
    assert!(walk(&dir.path("missing")).unreadable.len() == 1);
}

/// Rule 4, step by step: what a bad edit held stays until it is fixed or really removed.
#[test]
fn bad_edits_keep_what_they_held() {
    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: n1\n";
    const SVC: &str =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
    const DB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n";
    const PORT_ERROR: &str =
        "a.yaml:14: spec.ports[0].port: invalid type: string \"http\", expected u16";
    enum Edit {
        Write(String),
        Remove,
        Nothing,
    }
    let write = |docs: &[&str]| Edit::Write(docs.join("---\n"));
    let web2 = WEB.replace("n1", "n2");
    let svc_bad = SVC.replace("port: 80", "port: http");
    let svc_noname = SVC.replace("  name: web\n", "");
    let db_broken = DB.replace("name: db", "name: db\n  labels: a: b");
    let deployment = web2.replace("v1\nkind: Pod", "apps/v1\nkind: Deployment");
    type Want<'a> = Option<(&'a [&'a str], &'a [&'a str], &'a [&'a str])>;
    let steps: Vec<(&str, Edit, Want)> = vec![
        (
            "a document breaks: its object stays, the error names its line",
            write(&[WEB, &svc_bad, DB]),
            Some((&[], &[], &[PORT_ERROR])),
        ),
        (
            "the rest of the file keeps working",
            write(&[&web2, &svc_bad, DB]),
            Some((&["Pod default/web"], &[], &[PORT_ERROR])),
        ),
        (
            "a missing name and a syntax error keep everything the file held",
            write(&[&svc_noname, &db_broken]),
            Some((
                &[],
                &[],
                &[
                    "a.yaml:1: metadata.name: missing field `name`",
                    "a.yaml:12: mapping values are not allowed in this context",
                ],
            )),
        ),
        ("nothing changed", Edit::Nothing, None),
        (
            "fixed: the errors clear; what really left the file is deleted",
            write(&[&web2, SVC]),
            Some((&[], &["Pod default/db"], &[])),
        ),
        (
            "a kind the mesh does not read replaces a pod: the pod is gone",
            write(&[&deployment, SVC]),
            Some((&[], &["Pod default/web"], &[])),
        ),
        (
            "a deleted file deletes its objects",
            Edit::Remove,
            Some((&[], &["Service default/web"], &[])),
        ),
    ];
    let dir = TempDir::new("keep");
    dir.write("a.yaml", [WEB, SVC, DB].join("---\n"));
    let mut d = ManifestDir::new(&dir.0);
    let first = d.refresh().expect("first refresh reports");
    assert_eq!(
        summary(&dir, &first).0,
        ["Pod default/db", "Pod default/web", "Service default/web"]
    );
    for (name, edit, want) in steps {
        match edit {
            Edit::Write(content) => dir.write("a.yaml", content),
            Edit::Remove => dir.remove("a.yaml"),
            Edit::Nothing => {}
        }
        let strings = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let want = want.map(|(a, del, e)| (strings(a), strings(del), strings(e)));
        assert_eq!(settle(&mut d).map(|u| summary(&dir, &u)), want, "{name}");
    }
    assert!(d.objects().is_empty());
}

/// Rule 5 across edits: only the files an edit touches are merged again, and the winner of a
/// key defined twice follows the edits (the later definition takes over when the first goes).
#[test]
fn duplicates_follow_edits() {
    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: n1\n";
    const DB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n";
    let web_n2 = WEB.replace("n1", "n2");
    let dir = TempDir::new("dups");
    dir.write("a.yaml", WEB);
    dir.write("b.yaml", [web_n2.as_str(), DB].join("---\n"));
    let mut d = ManifestDir::new(&dir.0);
    let first = d.refresh().expect("first refresh reports");
    assert_eq!(
        summary(&dir, &first),
        (
            vec!["Pod default/db".to_string(), "Pod default/web".to_string()],
            vec![],
            vec![
                "b.yaml:1: Pod default/web is already defined at a.yaml:1; this definition \
                  is ignored"
                    .to_string()
            ],
        )
    );
    let node = |d: &ManifestDir| match &d.objects()[&ObjectKey {
        kind: Kind::Pod,
        namespace: "default".into(),
        name: "web".into(),
    }] {
        (Object::Pod(p), origin) => (p.spec.node_name.clone(), dir.show_origin(origin)),
        _ => unreachable!("a pod"),
    };
    assert_eq!(node(&d), ("n1".to_string(), "a.yaml:1".to_string()));

    // An edit to the definition that loses is no update.
    dir.write(
        "b.yaml",
        [web_n2.replace("n2", "n3").as_str(), DB].join("---\n"),
    );
    assert_eq!(settle(&mut d), None);
    assert_eq!(node(&d), ("n1".to_string(), "a.yaml:1".to_string()));

    // The first definition goes: the second takes over, and the error clears.
    dir.write("a.yaml", DB.replace("name: db", "name: cache"));
    let u = settle(&mut d).expect("a.yaml changed");
    assert_eq!(
        summary(&dir, &u),
        (
            vec![
                "Pod default/cache".to_string(),
                "Pod default/web".to_string()
            ],
            vec![],
            vec![],
        )
    );
    assert_eq!(node(&d), ("n3".to_string(), "b.yaml:1".to_string()));

    // The file holding the only definition goes: so does the object.
    dir.remove("b.yaml");
    let u = settle(&mut d).expect("b.yaml removed");
    assert_eq!(
        summary(&dir, &u),
        (
            vec![],
            vec!["Pod default/db".to_string(), "Pod default/web".to_string()],
            vec![],
        )
    );
    assert_eq!(keys(&d), ["Pod default/cache"]);
}

/// A file of many bad documents has as many errors; a refresh after an edit compared each new
/// error with every old one, minutes for a 1 MB file (seen while fuzzing the manifest reader).
#[test]
fn many_errors_refresh_in_linear_time() {
    let dir = TempDir::new("many-errors");
    let bad = "x\n---\n".repeat(20_000);
    dir.write("a.yaml", &bad);
    let mut d = ManifestDir::new(&dir.0);
    assert_eq!(d.refresh().expect("first refresh").errors.len(), 20_000);
    dir.write("a.yaml", format!("{bad}y\n"));
    let update = settle(&mut d).expect("the edit is seen");
    assert_eq!(update.errors.len(), 20_001);
}

/// An edit that keeps the size and the mtime is still seen while the mtime is recent.
#[test]
fn sees_an_edit_in_the_same_clock_tick() {
    let dir = TempDir::new("racy");
    let pod = |node: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: {node}\n")
    };
    dir.write("a.yaml", pod("n1"));
    let path = dir.path("a.yaml");
    let mtime = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut d = ManifestDir::new(&dir.0);
    d.refresh().expect("first refresh reports");
    fs::write(&path, pod("n2")).expect("rewrite");
    fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    let update = settle(&mut d).expect("edit seen");
    let [(Object::Pod(p), _)] = update.applied.as_slice() else {
        panic!("not one pod: {update:?}");
    };
    assert_eq!(p.spec.node_name, "n2");
}

/// Waits for the watcher's next update, generously.
async fn next(rx: &mut mpsc::Receiver<Update>) -> Update {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an update within 10 s")
        .expect("watcher running")
}

#[tokio::test]
async fn watch_reports_edits() {
    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  nodeName: n1\n";
    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n";
    const DB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  namespace: shop\n";
    let dir = TempDir::new("watch");
    dir.write("app.yaml", format!("{WEB}---\n{SVC}"));
    dir.write("db/db.yaml", DB);
    let (initial, mut rx) = watch(dir.0.clone(), Duration::from_millis(20))
        .await
        .expect("watch starts");
    assert_eq!(
        summary(&dir, &initial),
        (
            vec![
                "Pod shop/db".into(),
                "Pod shop/web".into(),
                "Service shop/web".into()
            ],
            vec![],
            vec![]
        )
    );

    // Edit: only the changed object is applied.
    let web2 = WEB.replace("n1", "n2");
    dir.write("app.yaml", format!("{web2}---\n{SVC}"));
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&dir, &u),
        (vec!["Pod shop/web".into()], vec![], vec![])
    );
    let [(Object::Pod(p), origin)] = u.applied.as_slice() else {
        panic!("not one pod: {u:?}");
    };
    assert_eq!((p.spec.node_name.as_str(), origin.line), ("n2", 1));

    // Break the service: kept, error on its line.
    dir.write(
        "app.yaml",
        format!("{web2}---\n{}", SVC.replace("port: 80", "port: [80]")),
    );
    let u = next(&mut rx).await;
    assert_eq!(
        summary(&dir, &u),
        (
            vec![],
            vec![],
            vec!["app.yaml:16: spec.ports[0].port: invalid type: sequence, expected u16".into()]
        )
    );

    // Fix it: the error clears; the service is as it was, so nothing is applied.
    dir.write("app.yaml", format!("{web2}---\n{SVC}"));
    assert_eq!(
        summary(&dir, &next(&mut rx).await),
        (vec![], vec![], vec![])
    );

    // Delete a file: its objects go.
    dir.remove("db/db.yaml");
    assert_eq!(
        summary(&dir, &next(&mut rx).await),
        (vec![], vec!["Pod shop/db".into()], vec![])
    );

    // Add a file: its objects come.
    dir.write("z.yml", DB.replace("db", "cache"));
    assert_eq!(
        summary(&dir, &next(&mut rx).await),
        (vec!["Pod shop/cache".into()], vec![], vec![])
    );
}

#[tokio::test]
async fn watch_needs_the_directory() {
    let dir = TempDir::new("missing");
    let missing = dir.path("nope");
    let err = watch(missing, Duration::from_millis(20)).await.err();
    assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
}
