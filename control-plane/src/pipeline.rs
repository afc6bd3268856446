//! Source updates -> index -> translation -> published snapshot, debounced.
//!
//! Rules, in order:
//! 1. Every update is applied to the index at once; a burst of updates is folded into one
//!    translation: after the first change we wait until `debounce` passes without another
//!    (at most `MAX_DEBOUNCE` in all), as istiod does.
//! 2. Only the namespaces touched since the last translation are translated again, unless a
//!    change can reach across namespaces (a Namespace, a Gateway, anything in the root
//!    namespace): then everything is.
//! 3. A translation that changes no resource and no node's identities publishes nothing.
//!    What changed is tracked as it happens (the translator's changed names, the identity
//!    counts per node), never by comparing everything, so a one-pod change costs O(1) here.
//! 4. The current problems (unreadable documents, untranslatable objects) are kept whole,
//!    each named by file and line when the object came from a manifest; new ones are logged.
//! 5. A new mesh config is a change like any other, of global reach: everything is
//!    translated again with it.
//! 6. ConfigMaps (read for the root-cert publisher, `deploy::root_cert`) and Deployments (read
//!    for the waypoint deployer, `deploy::controller`, and found in manifests) are not the
//!    translation's: they are skipped, so what those controllers write translates nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_source::{Kind, Object, ObjectKey, Origin, Update};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::index::Index;
use crate::mesh_config::MeshConfig;
use crate::metrics::Metrics;
use crate::snapshot::{Delta, NodeIdentities, Snapshot, SnapshotTx};
use crate::translate::{self, Options, Scope, Translator};

/// Longest a stream of changes can hold back a push.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Shared list of current config problems, for `/debug/config_errors`.
pub type ConfigErrors = Arc<Mutex<Vec<String>>>;

/// Told the scheduled nodes when they change (meshd writes local secrets for new ones).
pub type NodesHook = Box<dyn Fn(&BTreeSet<String>) + Send>;

/// Runs until the source closes its channel.
pub struct Pipeline {
    pub options: Options,
    pub debounce: Duration,
    pub snapshots: SnapshotTx,
    pub metrics: Metrics,
    pub errors: ConfigErrors,
    /// Called with the scheduled nodes whenever that set changes (local secrets for new nodes).
    pub on_nodes: NodesHook,
    /// New versions of the mesh config file (`mesh_reload`), when meshd has one.
    pub mesh: Option<mpsc::Receiver<MeshConfig>>,
}

/// What the pipeline waits for.
enum Input {
    /// From the source; `None` when it closed.
    Source(Option<Update>),
    Mesh(MeshConfig),
}

/// The next input: a source update, or a new mesh config (rule 5).
async fn next(
    updates: &mut mpsc::Receiver<Update>,
    mesh: &mut Option<mpsc::Receiver<MeshConfig>>,
) -> Input {
    let mesh_config = async {
        match mesh {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        u = updates.recv() => Input::Source(u),
        Some(m) = mesh_config => Input::Mesh(m),
    }
}

impl Pipeline {
    pub async fn run(mut self, initial: Update, mut updates: mpsc::Receiver<Update>) {
        let mut mesh = self.mesh.take();
        let mut state = State {
            root_namespace: self.options.root_namespace.clone(),
            ..State::default()
        };
        let mut translator = Translator::new(self.options.clone());
        state.apply(initial);
        state.scope = Scope::All;
        let mut version = 0u64;
        let mut last: Option<Arc<Snapshot>> = None;
        let mut changed_at = Some(Instant::now());
        let mut known_nodes = BTreeSet::new();
        loop {
            if let Some(first) = changed_at {
                // Rule 1: fold in whatever else arrives within the debounce window.
                loop {
                    let deadline = (Instant::now() + self.debounce).min(first + MAX_DEBOUNCE);
                    match tokio::time::timeout_at(deadline, next(&mut updates, &mut mesh)).await {
                        Ok(Input::Source(Some(u))) => {
                            state.apply(u);
                        }
                        Ok(Input::Mesh(m)) => {
                            new_mesh(&mut translator, &mut state, m);
                        }
                        Ok(Input::Source(None)) | Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let scope = std::mem::replace(&mut state.scope, Scope::Namespaces(BTreeSet::new()));
                let t = translator.translate(&state.index, &scope);
                self.metrics
                    .translation
                    .observe(started.elapsed().as_secs_f64());
                state.report(&t, &self.errors, &self.metrics);
                // Rule 3: the translator names what changed; no walk over every resource.
                let identities_changed = std::mem::take(&mut state.identities_changed);
                if last.is_none() || !t.unchanged() || identities_changed {
                    let delta = last.as_ref().map(|l| Delta {
                        from: l.version,
                        names: t.changed,
                    });
                    version += 1;
                    let snapshot = Arc::new(Snapshot {
                        version,
                        resources: t.resources,
                        identities: state.identities.clone(),
                        changed_at: Some(first),
                        delta,
                    });
                    tracing::info!(
                        version,
                        addresses = snapshot.resources.addresses.len(),
                        authorizations = snapshot.resources.authorizations.len(),
                        waypoints = snapshot.resources.waypoints.by_waypoint.len(),
                        objects = state.index.len(),
                        translate_ms = started.elapsed().as_millis() as u64,
                        "config published"
                    );
                    self.snapshots.send_replace(snapshot.clone());
                    let nodes: BTreeSet<String> =
                        state.identities.nodes().map(str::to_string).collect();
                    if nodes != known_nodes {
                        (self.on_nodes)(&nodes);
                        known_nodes = nodes;
                    }
                    last = Some(snapshot);
                }
                changed_at = None;
            }
            match next(&mut updates, &mut mesh).await {
                Input::Source(Some(u)) => {
                    if state.apply(u) {
                        changed_at = Some(Instant::now());
                    }
                }
                Input::Mesh(m) => {
                    if new_mesh(&mut translator, &mut state, m) {
                        changed_at = Some(Instant::now());
                    }
                }
                Input::Source(None) => return,
            }
        }
    }
}

/// Rule 5: a mesh config different from the translator's; whether it was.
fn new_mesh(translator: &mut Translator, state: &mut State, mesh: MeshConfig) -> bool {
    if translator.options().mesh == mesh {
        return false;
    }
    translator.set_mesh(mesh);
    state.scope = Scope::All;
    true
}

/// The index and what is known about where its objects came from.
struct State {
    index: Index,
    root_namespace: String,
    /// What the next translation must redo (rule 2).
    scope: Scope,
    origins: HashMap<ObjectKey, Origin>,
    source_errors: Vec<String>,
    reported: BTreeSet<String>,
    /// Who may hold which identity, kept pod by pod.
    identities: NodeIdentities,
    /// Whether `identities` changed since the last publish.
    identities_changed: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            index: Index::default(),
            root_namespace: String::new(),
            scope: Scope::Namespaces(BTreeSet::new()),
            origins: HashMap::new(),
            source_errors: Vec::new(),
            reported: BTreeSet::new(),
            identities: NodeIdentities::default(),
            identities_changed: false,
        }
    }
}

/// Rule 6: whether the translation reads objects of `kind`.
fn translated(kind: Kind) -> bool {
    !matches!(kind, Kind::ConfigMap | Kind::Deployment)
}

impl State {
    /// Rule 2: widens the next translation's scope for a change to `key`.
    fn touch(&mut self, key: &ObjectKey) {
        let global = matches!(key.kind, Kind::Namespace | Kind::Gateway)
            || key.namespace.is_empty()
            || key.namespace == self.root_namespace;
        match &mut self.scope {
            Scope::All => {}
            _ if global => self.scope = Scope::All,
            Scope::Namespaces(set) => {
                set.insert(key.namespace.clone());
            }
        }
    }

    /// Applies an update; true when anything (objects or errors) changed.
    fn apply(&mut self, u: Update) -> bool {
        let mut changed = false;
        for (object, origin) in u.applied {
            if !translated(object.kind()) {
                continue;
            }
            let key = object.key();
            let before = self.index.get(&key).and_then(placement);
            let after = placement(&object);
            if self.index.apply(object) {
                self.touch(&key);
                self.place(before, after);
                changed = true;
            }
            self.origins.insert(key, origin);
        }
        for key in u.deleted.iter().filter(|k| translated(k.kind)) {
            self.origins.remove(key);
            let before = self.index.get(key).and_then(placement);
            if self.index.delete(key) {
                self.touch(key);
                self.place(before, None);
                changed = true;
            }
        }
        let errors: Vec<String> = u.errors.iter().map(|e| e.to_string()).collect();
        if errors != self.source_errors {
            self.source_errors = errors;
            changed = true;
        }
        changed
    }

    /// Moves one pod's identity count from where it was to where it is.
    fn place(&mut self, before: Option<Placement>, after: Option<Placement>) {
        if before == after {
            return;
        }
        if let Some((node, ns, sa)) = before {
            self.identities_changed |= self.identities.remove(&node, &ns, &sa);
        }
        if let Some((node, ns, sa)) = after {
            self.identities_changed |= self.identities.add(&node, &ns, &sa);
        }
    }

    /// Rule 3: keeps the full list current and logs what is new.
    fn report(&mut self, t: &translate::Translation, errors: &ConfigErrors, metrics: &Metrics) {
        let located = |key: &ObjectKey, msg: &str| match self.origins.get(key) {
            Some(o) => format!("{o}: {key}: {msg}"),
            None => format!("{key}: {msg}"),
        };
        let mut all: Vec<String> = self.source_errors.clone();
        all.extend(t.errors.iter().map(|(k, m)| located(k, m)));
        let warnings: Vec<String> = t.warnings.iter().map(|(k, m)| located(k, m)).collect();
        let mesh: Vec<String> = t
            .mesh_warnings
            .iter()
            .map(|m| format!("mesh config: {m}"))
            .collect();
        let current: BTreeSet<String> = all.iter().chain(&warnings).chain(&mesh).cloned().collect();
        // A mesh-wide setting that does not work (a tracing collector nowhere) is worth more
        // than an object's caveat.
        for w in &mesh {
            if !self.reported.contains(w) {
                tracing::warn!(warning = %w, "mesh config accepted with a caveat");
            }
        }
        for e in &all {
            if !self.reported.contains(e) {
                tracing::warn!(error = %e, "config rejected; the rest keeps working");
            }
        }
        for w in &warnings {
            if !self.reported.contains(w) {
                tracing::info!(warning = %w, "config accepted with a caveat");
            }
        }
        self.reported = current;
        metrics.config_errors.set(all.len() as i64);
        *errors.lock().unwrap_or_else(|p| p.into_inner()) = all;
    }
}

/// A scheduled pod's node, namespace and service account.
type Placement = (String, String, String);

fn placement(object: &Object) -> Option<Placement> {
    match object {
        Object::Pod(pod) if !pod.spec.node_name.is_empty() => Some((
            pod.spec.node_name.clone(),
            pod.metadata.namespace.clone(),
            pod.service_account().to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::{Meta, Pod};
    use std::path::PathBuf;

    fn pod(ns: &str, name: &str, sa: &str, node: &str) -> (Object, Origin) {
        let mut p = Pod {
            metadata: Meta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        p.spec.service_account_name = sa.into();
        p.spec.node_name = node.into();
        let origin = Origin {
            file: PathBuf::from("pods.yaml"),
            line: 1,
        };
        (Object::Pod(p), origin)
    }

    fn applied(objects: Vec<(Object, Origin)>) -> Update {
        Update {
            applied: objects,
            ..Default::default()
        }
    }

    /// Which identities each node may hold, as the CA asks, after each step of pods arriving,
    /// moving and leaving: counted per pod, so a node keeps an identity while any of its pods
    /// has it, and a step that changes none of them is not an identity change.
    #[test]
    fn node_identities_follow_pods() {
        let mut state = State::default();
        let holds = |s: &State, node: &str, ns: &str, sa: &str| s.identities.holds(node, ns, sa);

        state.apply(applied(vec![
            pod("shop", "cart-1", "cart", "n1"),
            pod("shop", "cart-2", "cart", "n1"),
            pod("shop", "web-1", "", "n1"),
            pod("shop", "pending", "cart", ""),
        ]));
        assert!(std::mem::take(&mut state.identities_changed));
        assert!(holds(&state, "n1", "shop", "cart"));
        assert!(
            holds(&state, "n1", "shop", "default"),
            "no serviceAccountName: default"
        );
        assert!(
            !holds(&state, "", "shop", "cart"),
            "an unscheduled pod gives no node anything"
        );
        assert_eq!(state.identities.nodes().collect::<Vec<_>>(), ["n1"]);

        // A second pod of the same identity leaves: the node still holds it, nothing changed.
        state.apply(Update {
            deleted: vec![pod("shop", "cart-2", "", "").0.key()],
            ..Default::default()
        });
        assert!(!std::mem::take(&mut state.identities_changed));
        assert!(holds(&state, "n1", "shop", "cart"));

        // The last one moves to n2: n1 loses the identity, n2 gains it.
        state.apply(applied(vec![pod("shop", "cart-1", "cart", "n2")]));
        assert!(std::mem::take(&mut state.identities_changed));
        assert!(!holds(&state, "n1", "shop", "cart"));
        assert!(holds(&state, "n2", "shop", "cart"));

        // A change that keeps node and account (a new label, say) is no identity change.
        let (mut relabeled, origin) = pod("shop", "cart-1", "cart", "n2");
        relabeled
            .meta_mut()
            .labels
            .insert("version".into(), "v2".into());
        state.apply(applied(vec![(relabeled, origin)]));
        assert!(!std::mem::take(&mut state.identities_changed));

        // The node's last pod goes: the node goes with it.
        state.apply(Update {
            deleted: vec![pod("shop", "web-1", "", "").0.key()],
            ..Default::default()
        });
        assert!(std::mem::take(&mut state.identities_changed));
        assert_eq!(state.identities.nodes().collect::<Vec<_>>(), ["n2"]);
    }

    /// Rule 6: the root-cert ConfigMaps meshd publishes (and their echoes) change nothing
    /// here, neither applied nor deleted; a pod in the same update still counts.
    #[test]
    fn config_maps_are_not_the_translations() {
        let mut state = State::default();
        let config_map = Object::ConfigMap(kube_source::ConfigMap {
            metadata: Meta {
                name: "istio-ca-root-cert".into(),
                namespace: "shop".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let origin = Origin {
            file: PathBuf::from("/api/v1/namespaces/shop/configmaps/istio-ca-root-cert"),
            line: 0,
        };
        let key = config_map.key();
        assert!(!state.apply(applied(vec![(config_map.clone(), origin.clone())])));
        assert!(state.index.is_empty());
        assert_eq!(state.scope, Scope::Namespaces(BTreeSet::new()));
        assert!(!state.apply(Update {
            deleted: vec![key],
            ..Default::default()
        }));
        assert!(state.apply(applied(vec![
            (config_map, origin),
            pod("shop", "cart-1", "cart", "n1"),
        ])));
        assert_eq!(state.index.len(), 1, "the pod only");
    }
}
