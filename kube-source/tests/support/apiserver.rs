//! A stand-in for the Kubernetes API server, over real HTTP on 127.0.0.1: the list/watch
//! protocol for the kinds the mesh reads, and TokenReview. Tests script it through [`Cluster`].
//!
//! What it does as kube-apiserver does:
//! - One revision counter for everything (etcd's); every write bumps it and becomes the
//!   object's `metadata.resourceVersion`.
//! - `GET /api/v1/pods` (and the other collections over all namespaces) answers a `PodList`
//!   with `metadata.resourceVersion`; `limit` pages it with a `continue` token. Items of core
//!   lists omit `apiVersion` and `kind`; items of custom resources carry them.
//! - `?watch=true&resourceVersion=N` answers 200 and a stream of newline-delimited events
//!   after N: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` (only with
//!   `allowWatchBookmarks=true`), and ends after `timeoutSeconds`. A watch from before the
//!   compacted history gets one `ERROR` event carrying a `Status` with code 410 (reason
//!   `Expired`, "too old resource version"), as the watch cache sends it, or a plain 410
//!   answer when [`Cluster::stale_watch_as_http_410`] is set (the etcd path).
//! - A kind that is not served (CRD not installed) answers 404 with a `Status`.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` answers 201 with a TokenReview
//!   whose status is filled from [`Cluster::tokens`].
//! - `PATCH` of one object (`.../namespaces/<ns>/<plural>/<name>`) with a JSON merge patch
//!   (`application/merge-patch+json`, RFC 7386) answers 200 with the patched object, which
//!   watchers see `MODIFIED`; 404 when it does not exist, 415 for other patch types.
//! - Server-side apply: `PATCH` of one object with `application/apply-patch+yaml` and a
//!   `fieldManager` (400 without one, as the real server) creates the object when it does not
//!   exist (`ADDED`, with a `metadata.uid`, and for a Service without one a `clusterIP` from
//!   10.96.0.0/16, as the allocator would) and otherwise merges the body into it
//!   (`MODIFIED`). `.../<name>/status` applies only the body's `status`, to an object that
//!   must exist. An apply that changes nothing writes nothing (no resourceVersion, no event).
//!   Each apply is recorded with its manager and `force` ([`Cluster::applies`]).
//! - `metadata.generation` is 1 on create and goes up by one with each write that changes
//!   more than `metadata` and `status` (unless the write sets it itself).
//!   `Deployment` (`apps/v1`) is served for this, and `ConfigMap` (meshd's
//!   `istio-ca-root-cert`).
//!
//! - `fieldSelector` of equalities (`spec.nodeName=node-a`, `metadata.name=x`,
//!   comma-separated) filters lists and watch events; each request's selector is recorded
//!   ([`Cluster::field_selectors`]). So does a `labelSelector` of equalities
//!   (`gateway.istio.io/managed=x`; [`Cluster::label_selectors`]).
//!
//! Simplified: a continued list pages over the current objects, not a snapshot. An apply
//! body is read as JSON (what `kube` sends; YAML's JSON subset) and merged as a JSON merge
//! patch: no field ownership, no conflicts, lists replaced whole, nothing removed that an
//! earlier apply set and a later one left out.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

/// How long [`ApiServer::wait_for`] waits before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// The collections served, as the mesh reads them (and Deployments, which meshd writes):
/// kind, apiVersion, plural, namespaced.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("Namespace", "v1", "namespaces", false),
    ("ConfigMap", "v1", "configmaps", true),
    ("Deployment", "apps/v1", "deployments", true),
    ("Pod", "v1", "pods", true),
    ("Service", "v1", "services", true),
    ("ServiceAccount", "v1", "serviceaccounts", true),
    ("Gateway", "gateway.networking.k8s.io/v1", "gateways", true),
    (
        "AuthorizationPolicy",
        "security.istio.io/v1",
        "authorizationpolicies",
        true,
    ),
    (
        "PeerAuthentication",
        "security.istio.io/v1",
        "peerauthentications",
        true,
    ),
    (
        "RequestAuthentication",
        "security.istio.io/v1",
        "requestauthentications",
        true,
    ),
];

/// A running fake API server; dropping it stops it.
pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    cluster: Mutex<Cluster>,
    /// Bumped after every change to `cluster` (writes, requests): open watches and
    /// [`ApiServer::wait_for`] look again.
    changed: watch::Sender<()>,
}

/// A service account a token stands for.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub namespace: String,
    pub service_account: String,
    /// Audiences the token was issued for.
    pub audiences: Vec<String>,
    pub pod: Option<String>,
    pub node: Option<String>,
}

/// The server's state, scripted by tests.
#[derive(Default)]
pub struct Cluster {
    revision: u64,
    collections: BTreeMap<&'static str, Collection>,
    /// Answer a watch from a compacted resourceVersion with HTTP 410 instead of an `ERROR`
    /// event in a 200 stream.
    pub stale_watch_as_http_410: bool,
    /// The next continued list page gets 410, as when its token expired between pages.
    pub expire_next_continue: bool,
    /// Bearer tokens TokenReview accepts.
    pub tokens: HashMap<String, TokenUser>,
    /// Answer TokenReview with 403 (meshd lacks `create` on tokenreviews).
    pub token_review_forbidden: bool,
    /// TokenReviews received.
    pub token_reviews: usize,
    /// Merge patches applied.
    pub patches: usize,
    /// The next this many patches (merge or apply) answer 500 (an API server in trouble).
    pub fail_patches: usize,
    /// Server-side applies accepted, in order.
    pub applies: Vec<ApplyRequest>,
    /// Service VIPs handed out so far.
    allocated_ips: u32,
    open_watches: usize,
}

/// One server-side apply the fixture took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    pub field_manager: String,
    pub force: bool,
}

struct Collection {
    api_version: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// False: 404, as when the CRD is not installed.
    served: bool,
    objects: BTreeMap<(String, String), Value>,
    /// Events after `compacted`, with their revision.
    history: Vec<(u64, Value)>,
    /// A watch from before this revision gets 410.
    compacted: u64,
    /// Bumping these ends every open watch: with a 410, normally, or after a bookmark.
    expire_generation: u64,
    close_generation: u64,
    bookmark_generation: u64,
    /// The resourceVersion of each watch request, in order.
    watches: Vec<String>,
    lists: usize,
    /// The `fieldSelector` of each list and watch request ("" for none), in order.
    field_selectors: Vec<String>,
    /// The same for `labelSelector`.
    label_selectors: Vec<String>,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("local addr");
        let mut cluster = Cluster::default();
        for &(kind, api_version, plural, namespaced) in KINDS {
            cluster.collections.insert(
                kind,
                Collection {
                    api_version,
                    plural,
                    namespaced,
                    served: true,
                    objects: BTreeMap::new(),
                    history: Vec::new(),
                    compacted: 0,
                    expire_generation: 0,
                    close_generation: 0,
                    bookmark_generation: 0,
                    watches: Vec::new(),
                    lists: 0,
                    field_selectors: Vec::new(),
                    label_selectors: Vec::new(),
                },
            );
        }
        let shared = Arc::new(Shared {
            cluster: Mutex::new(cluster),
            changed: watch::channel(()).0,
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        ApiServer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` for this server (plain HTTP, no credentials).
    pub fn client(&self) -> kube::Client {
        let uri = self.url().parse().expect("fixture URL");
        kube::Client::try_from(kube::Config::new(uri)).expect("kube client for the fixture")
    }

    /// Changes the cluster in one step (watchers see all of it at once), then wakes watchers.
    pub fn with<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let out = f(&mut self.shared.lock());
        self.shared.changed.send_replace(());
        out
    }

    pub fn apply(&self, object: Value) -> u64 {
        self.with(|c| c.apply(object))
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        self.with(|c| c.delete(kind, namespace, name))
    }

    /// Waits until `done` holds, failing the test after [`WAIT`].
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Cluster) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            loop {
                changed.borrow_and_update();
                if done(&self.shared.lock()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(WAIT, wait).await.is_err() {
            panic!("timed out waiting for {what}");
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Cluster {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn collection(&mut self, kind: &str) -> &mut Collection {
        self.collections
            .get_mut(kind)
            .unwrap_or_else(|| panic!("the fixture does not serve {kind}"))
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its resourceVersion.
    pub fn apply(&mut self, mut object: Value) -> u64 {
        let kind = object["kind"]
            .as_str()
            .expect("object has a kind")
            .to_string();
        self.revision += 1;
        let revision = self.revision;
        let collection = self.collection(&kind);
        object["apiVersion"] = collection.api_version.into();
        object["metadata"]["resourceVersion"] = revision.to_string().into();
        if collection.namespaced && object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = "default".into();
        }
        let key = object_key(&object);
        let stored = collection.objects.get(&key);
        let event = if stored.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if let Some(generation) = generation(stored, &object) {
            object["metadata"]["generation"] = generation.into();
        }
        collection.objects.insert(key, object.clone());
        collection
            .history
            .push((revision, json!({"type": event, "object": object})));
        revision
    }

    /// Deletes an object (`DELETED`, carrying its last state); returns the new revision.
    pub fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        let collection = self.collection(kind);
        let mut object = collection
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to delete"));
        object["metadata"]["resourceVersion"] = revision.to_string().into();
        collection
            .history
            .push((revision, json!({"type": "DELETED", "object": object})));
        revision
    }

    /// Drops the kind's event history: a watch from an older resourceVersion gets 410. Open
    /// watches carry on (and miss what was dropped).
    pub fn compact(&mut self, kind: &str) {
        let revision = self.revision;
        let collection = self.collection(kind);
        collection.history.clear();
        collection.compacted = revision;
    }

    /// [`Cluster::compact`], and the kind's open watches end with a 410 `ERROR` event.
    pub fn expire(&mut self, kind: &str) {
        self.compact(kind);
        self.collection(kind).expire_generation += 1;
    }

    /// Sends a `BOOKMARK` at the current revision to the kind's open watches.
    pub fn bookmark(&mut self, kind: &str) {
        self.collection(kind).bookmark_generation += 1;
    }

    /// Ends the kind's open watches normally, as `timeoutSeconds` does.
    pub fn close_watches(&mut self, kind: &str) {
        self.collection(kind).close_generation += 1;
    }

    /// Stops or starts serving a kind (a CRD removed or installed). Its objects stay stored.
    pub fn set_served(&mut self, kind: &str, served: bool) {
        let collection = self.collection(kind);
        collection.served = served;
        collection.close_generation += 1;
    }

    /// The resourceVersion of each watch request for `kind`, in order.
    pub fn watches(&self, kind: &str) -> &[String] {
        self.collections
            .get(kind)
            .map_or(&[], |c| c.watches.as_slice())
    }

    /// Watch streams open now, over all kinds.
    pub fn open_watches(&self) -> usize {
        self.open_watches
    }

    /// The `fieldSelector` of each list and watch request for `kind` ("" for none).
    pub fn field_selectors(&self, kind: &str) -> &[String] {
        self.collections
            .get(kind)
            .map_or(&[], |c| c.field_selectors.as_slice())
    }

    /// The `labelSelector` of each list and watch request for `kind` ("" for none).
    pub fn label_selectors(&self, kind: &str) -> &[String] {
        self.collections
            .get(kind)
            .map_or(&[], |c| c.label_selectors.as_slice())
    }

    /// The stored object, as a GET would answer it.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.collections
            .get(kind)?
            .objects
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// List requests (pages) for `kind`, answered or 404.
    pub fn lists(&self, kind: &str) -> usize {
        self.collections.get(kind).map_or(0, |c| c.lists)
    }
}

/// A request's `fieldSelector` (`path=value` equalities) and `labelSelector` (`key=value`
/// equalities), all AND-ed.
#[derive(Debug, Clone, Default)]
struct Selector {
    fields: Vec<(String, String)>,
    labels: Vec<(String, String)>,
}

fn selector(query: &HashMap<String, String>) -> Selector {
    let terms = |name: &str| -> Vec<(String, String)> {
        query
            .get(name)
            .map(|s| {
                s.split(',')
                    .filter_map(|term| term.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    Selector {
        fields: terms("fieldSelector"),
        labels: terms("labelSelector"),
    }
}

fn selected(object: &Value, selector: &Selector) -> bool {
    selector.fields.iter().all(|(path, value)| {
        let field = path.split('.').fold(object, |v, key| &v[key]);
        field.as_str().unwrap_or_default() == value
    }) && selector.labels.iter().all(|(key, value)| {
        object["metadata"]["labels"][key.as_str()].as_str() == Some(value.as_str())
    })
}

fn object_key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let field = |f: &str| meta[f].as_str().unwrap_or_default().to_string();
    (field("namespace"), field("name"))
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

fn too_old(requested: u64, compacted: u64) -> Value {
    status(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({compacted})"),
    )
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    let status_code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status_code, &status(code, reason, message))
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `a=1&b=x%3Ay` into a map.
fn query(uri: &http::Uri) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = query(req.uri());
    if req.method() == Method::POST && path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error_response(400, "BadRequest", "unreadable body"),
        };
        let response = token_review(&mut shared.lock(), &body);
        shared.changed.send_replace(());
        return response;
    }
    if req.method() == Method::PATCH {
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error_response(400, "BadRequest", "unreadable body"),
        };
        let response = match content_type.as_slice() {
            b"application/merge-patch+json" => patch(&mut shared.lock(), &path, &body),
            b"application/apply-patch+yaml" => {
                server_side_apply(&mut shared.lock(), &path, &query, &body)
            }
            _ => error_response(
                415,
                "UnsupportedMediaType",
                "the fixture takes only merge patches and server-side applies",
            ),
        };
        shared.changed.send_replace(());
        return response;
    }
    if req.method() != Method::GET {
        return error_response(
            405,
            "MethodNotAllowed",
            "the fixture only lists, watches and merge-patches",
        );
    }
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let kind = {
        let mut cluster = shared.lock();
        let found = cluster
            .collections
            .iter()
            .find(|(_, c)| {
                let prefix = if c.api_version.contains('/') {
                    format!("/apis/{}", c.api_version)
                } else {
                    format!("/api/{}", c.api_version)
                };
                path == format!("{prefix}/{}", c.plural)
            })
            .map(|(kind, c)| (*kind, c.served));
        if let (Some((kind, false)), false) = (found, watching) {
            cluster.collection(kind).lists += 1;
        }
        found
    };
    if let Some((kind, _)) = kind {
        let fields = query.get("fieldSelector").cloned().unwrap_or_default();
        let labels = query.get("labelSelector").cloned().unwrap_or_default();
        let mut cluster = shared.lock();
        let c = cluster.collection(kind);
        c.field_selectors.push(fields);
        c.label_selectors.push(labels);
    }
    let kind = match kind {
        Some((kind, true)) => kind,
        _ => {
            shared.changed.send_replace(());
            return error_response(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let response = if watching {
        watch_response(shared, kind, &query)
    } else {
        list_response(&mut shared.lock(), kind, &query)
    };
    shared.changed.send_replace(());
    response
}

/// The kind, namespace, name and subresource an object's path names
/// (`/api/v1/namespaces/<ns>/<plural>/<name>[/<subresource>]`).
fn object_path(
    cluster: &Cluster,
    path: &str,
) -> Option<(&'static str, String, String, Option<String>)> {
    cluster.collections.iter().find_map(|(kind, c)| {
        let prefix = if c.api_version.contains('/') {
            format!("/apis/{}/namespaces/", c.api_version)
        } else {
            format!("/api/{}/namespaces/", c.api_version)
        };
        let rest = path.strip_prefix(&prefix)?;
        let (namespace, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix(c.plural)?.strip_prefix('/')?;
        let (name, sub) = match rest.split_once('/') {
            Some((name, sub)) => (name, Some(sub.to_string())),
            None => (rest, None),
        };
        Some((*kind, namespace.to_string(), name.to_string(), sub))
    })
}

/// A merge patch of one object at `path` (`/api/v1/namespaces/<ns>/<plural>/<name>`).
fn patch(cluster: &mut Cluster, path: &str, body: &[u8]) -> Response<Body> {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return error_response(400, "BadRequest", "the patch is not JSON");
    };
    let found = object_path(cluster, path)
        .filter(|(_, _, _, sub)| sub.is_none())
        .map(|(kind, ns, name, _)| (kind, ns, name));
    if cluster.fail_patches > 0 {
        cluster.fail_patches -= 1;
        return error_response(500, "InternalError", "etcd is having a bad day");
    }
    let Some((kind, namespace, name)) = found else {
        return error_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let Some(mut object) = cluster
        .collection(kind)
        .objects
        .get(&(namespace.clone(), name.clone()))
        .cloned()
    else {
        return error_response(404, "NotFound", &format!("{kind} \"{name}\" not found"));
    };
    merge_patch(&mut object, &patch);
    cluster.patches += 1;
    cluster.apply(object);
    let stored = cluster.collection(kind).objects[&(namespace, name)].clone();
    json_response(StatusCode::OK, &stored)
}

/// A server-side apply at `path`: create or merge the object, or merge its `status`.
fn server_side_apply(
    cluster: &mut Cluster,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response<Body> {
    if cluster.fail_patches > 0 {
        cluster.fail_patches -= 1;
        return error_response(500, "InternalError", "etcd is having a bad day");
    }
    let Some(field_manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return error_response(
            400,
            "BadRequest",
            "PATCH requests require fieldManager for apply patches",
        );
    };
    let Ok(applied) = serde_json::from_slice::<Value>(body) else {
        return error_response(400, "BadRequest", "the apply body is not JSON");
    };
    let Some((kind, namespace, name, sub)) = object_path(cluster, path) else {
        return error_response(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let collection = cluster.collection(kind);
    if applied["kind"] != kind
        || applied["apiVersion"] != collection.api_version
        || applied["metadata"]["name"] != name.as_str()
    {
        return error_response(
            400,
            "BadRequest",
            &format!(
                "the apply body must be a {} {kind} named {name:?}",
                collection.api_version
            ),
        );
    }
    let existing = collection
        .objects
        .get(&(namespace.clone(), name.clone()))
        .cloned();
    let object = match (existing.clone(), sub.as_deref()) {
        (Some(mut object), Some("status")) => {
            merge_patch(&mut object["status"], &applied["status"]);
            object
        }
        (None, Some("status")) => {
            return error_response(404, "NotFound", &format!("{kind} \"{name}\" not found"));
        }
        (_, Some(other)) => {
            return error_response(404, "NotFound", &format!("no subresource {other:?}"));
        }
        (Some(mut object), None) => {
            merge_patch(&mut object, &applied);
            object
        }
        (None, None) => {
            let mut object = applied;
            object["metadata"]["namespace"] = namespace.clone().into();
            object["metadata"]["uid"] = format!("uid-{kind}-{namespace}-{name}").into();
            if kind == "Service" && object["spec"]["clusterIP"].is_null() {
                cluster.allocated_ips += 1;
                let n = cluster.allocated_ips;
                let ip = format!("10.96.{}.{}", n / 256, n % 256);
                object["spec"]["clusterIP"] = ip.clone().into();
                object["spec"]["clusterIPs"] = json!([ip]);
            }
            object
        }
    };
    cluster.applies.push(ApplyRequest {
        kind: kind.to_string(),
        namespace: namespace.clone(),
        name: name.clone(),
        subresource: sub,
        field_manager: field_manager.clone(),
        force: query.get("force").is_some_and(|f| f == "true"),
    });
    // An apply that changes nothing is no write: no new resourceVersion, no event.
    if existing.as_ref() != Some(&object) {
        cluster.apply(object);
    }
    let stored = cluster.collection(kind).objects[&(namespace, name)].clone();
    json_response(StatusCode::OK, &stored)
}

/// The `metadata.generation` a write of `object` over `stored` leaves, as the API server keeps
/// it: 1 for a new object, one more when anything but `metadata` and `status` changed. A
/// generation the write sets itself (a test scripting one) is kept: `None`.
fn generation(stored: Option<&Value>, object: &Value) -> Option<u64> {
    let before = stored.and_then(|s| s["metadata"]["generation"].as_u64());
    let given = object["metadata"]["generation"].as_u64();
    if given.is_some() && given != before {
        return None;
    }
    let Some(stored) = stored else {
        return Some(1);
    };
    let content = |o: &Value| {
        let mut o = o.clone();
        if let Some(fields) = o.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                fields.remove(k);
            }
        }
        o
    };
    let before = before.unwrap_or(1);
    Some(match content(stored) == content(object) {
        true => before,
        false => before + 1,
    })
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in fields {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn list_response(
    cluster: &mut Cluster,
    kind: &str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let revision = cluster.revision;
    cluster.collection(kind).lists += 1;
    let (list_revision, offset) = match query.get("continue") {
        Some(token) => {
            let parsed = token
                .split_once('.')
                .and_then(|(r, o)| Some((r.parse::<u64>().ok()?, o.parse::<usize>().ok()?)));
            let expire = std::mem::take(&mut cluster.expire_next_continue);
            let compacted = cluster.collection(kind).compacted;
            match parsed {
                Some((r, _)) if r < compacted || expire => {
                    return error_response(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list \
                         result. You can start a new list without the continue parameter.",
                    );
                }
                Some(p) => p,
                None => return error_response(400, "BadRequest", "bad continue token"),
            }
        }
        None => (revision, 0),
    };
    let collection = cluster.collection(kind);
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let custom = collection.api_version.contains('/');
    let selector = selector(query);
    let matching: Vec<&Value> = collection
        .objects
        .values()
        .filter(|o| selected(o, &selector))
        .collect();
    let total = matching.len();
    let items: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|o| {
            let mut o = o.clone();
            if let (false, Value::Object(map)) = (custom, &mut o) {
                map.remove("apiVersion");
                map.remove("kind");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_revision.to_string()});
    let end = offset.saturating_add(limit);
    if end < total {
        metadata["continue"] = format!("{list_revision}.{end}").into();
    }
    let list = json!({
        "kind": format!("{kind}List"),
        "apiVersion": collection.api_version,
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

fn watch_response(
    shared: &Arc<Shared>,
    kind: &'static str,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let mut cluster = shared.lock();
    let revision = cluster.revision;
    let as_http_410 = cluster.stale_watch_as_http_410;
    let requested = query.get("resourceVersion").cloned().unwrap_or_default();
    let collection = cluster.collection(kind);
    collection.watches.push(requested.clone());
    let cursor = match requested.as_str() {
        "" | "0" => revision,
        v => match v.parse::<u64>() {
            Ok(v) => v,
            Err(_) => return error_response(400, "BadRequest", "bad resourceVersion"),
        },
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    if cursor < collection.compacted {
        let status = too_old(cursor, collection.compacted);
        if as_http_410 {
            return json_response(StatusCode::GONE, &status);
        }
        let line = json!({"type": "ERROR", "object": status});
        let _ = tx.try_send(Bytes::from(format!("{line}\n")));
    } else {
        let watcher = Watcher {
            kind,
            cursor,
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true"),
            expire_generation: collection.expire_generation,
            close_generation: collection.close_generation,
            bookmark_generation: collection.bookmark_generation,
            selector: selector(query),
        };
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map_or(Duration::from_secs(290), Duration::from_secs);
        tokio::spawn(watcher.run(shared.clone(), tx, timeout));
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// One open watch.
struct Watcher {
    kind: &'static str,
    /// Events after this revision are still to send.
    cursor: u64,
    bookmarks: bool,
    expire_generation: u64,
    close_generation: u64,
    bookmark_generation: u64,
    selector: Selector,
}

impl Watcher {
    async fn run(mut self, shared: Arc<Shared>, tx: mpsc::Sender<Bytes>, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = shared.changed.subscribe();
        shared.lock().open_watches += 1;
        self.stream(&shared, &tx, deadline, &mut changed).await;
        shared.lock().open_watches -= 1;
        shared.changed.send_replace(());
    }

    async fn stream(
        &mut self,
        shared: &Shared,
        tx: &mpsc::Sender<Bytes>,
        deadline: tokio::time::Instant,
        changed: &mut watch::Receiver<()>,
    ) {
        loop {
            changed.borrow_and_update();
            let (lines, end) = self.step(&mut shared.lock());
            for line in lines {
                if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                    return;
                }
            }
            if end {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    }

    /// The lines to send now, and whether the stream ends after them.
    fn step(&mut self, cluster: &mut Cluster) -> (Vec<Value>, bool) {
        let revision = cluster.revision;
        let c = cluster.collection(self.kind);
        if !c.served {
            return (Vec::new(), true);
        }
        if c.expire_generation != self.expire_generation {
            let line = json!({"type": "ERROR", "object": too_old(self.cursor, c.compacted)});
            return (vec![line], true);
        }
        let mut lines = Vec::new();
        for (rev, event) in &c.history {
            if *rev > self.cursor {
                if selected(&event["object"], &self.selector) {
                    lines.push(event.clone());
                }
                self.cursor = *rev;
            }
        }
        if c.bookmark_generation != self.bookmark_generation {
            self.bookmark_generation = c.bookmark_generation;
            if self.bookmarks {
                self.cursor = self.cursor.max(revision);
                lines.push(json!({"type": "BOOKMARK", "object": {
                    "kind": self.kind, "apiVersion": c.api_version,
                    "metadata": {"resourceVersion": self.cursor.to_string()},
                }}));
            }
        }
        (lines, c.close_generation != self.close_generation)
    }
}

fn token_review(cluster: &mut Cluster, body: &[u8]) -> Response<Body> {
    if cluster.token_review_forbidden {
        return error_response(
            403,
            "Forbidden",
            "tokenreviews.authentication.k8s.io is forbidden: User \
             \"system:serviceaccount:istio-system:meshd\" cannot create resource \
             \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
        );
    }
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return error_response(400, "BadRequest", "TokenReview is not JSON");
    };
    cluster.token_reviews += 1;
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let status = match cluster.tokens.get(token) {
        None => {
            let error = "[invalid bearer token, square/go-jose: error in cryptographic primitive]";
            json!({"user": {}, "error": error})
        }
        Some(user) => {
            let audiences: Vec<&String> = if wanted.is_empty() {
                user.audiences.iter().collect()
            } else {
                wanted
                    .iter()
                    .filter(|a| user.audiences.contains(a))
                    .collect()
            };
            if audiences.is_empty() {
                json!({"user": {}, "error": format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target \
                     audiences {:?}]",
                    user.audiences, wanted)})
            } else {
                let mut extra = serde_json::Map::new();
                if let Some(pod) = &user.pod {
                    extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
                    extra.insert(
                        "authentication.kubernetes.io/pod-uid".into(),
                        json!(["0d4c9d4e-uid"]),
                    );
                }
                if let Some(node) = &user.node {
                    extra.insert(
                        "authentication.kubernetes.io/node-name".into(),
                        json!([node]),
                    );
                }
                let ns = &user.namespace;
                json!({
                    "authenticated": true,
                    "user": {
                        "username": format!("system:serviceaccount:{ns}:{}", user.service_account),
                        "uid": "5b6f3c2a-uid",
                        "groups": [
                            "system:serviceaccounts",
                            format!("system:serviceaccounts:{ns}"),
                            "system:authenticated",
                        ],
                        "extra": extra,
                    },
                    "audiences": audiences,
                })
            }
        }
    };
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"].clone(),
        "status": status,
    });
    json_response(StatusCode::CREATED, &answer)
}
