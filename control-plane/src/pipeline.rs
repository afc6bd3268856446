//! Source updates -> index -> translation -> published snapshot, debounced.
//!
//! Rules, in order:
//! 1. Every update is applied to the index at once; a burst of updates is folded into one
//!    translation: after the first change we wait until `debounce` passes without another
//!    (at most `MAX_DEBOUNCE` in all), as istiod does.
//! 2. Only the namespaces touched since the last translation are translated again, unless a
//!    change can reach across namespaces (a Namespace, a Gateway, anything in the root
//!    namespace): then everything is.
//! 3. A translation that produces the same resources and node identities as the last one
//!    publishes nothing.
//! 4. The current problems (unreadable documents, untranslatable objects) are kept whole,
//!    each named by file and line when the object came from a manifest; new ones are logged.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_source::{Kind, ObjectKey, Origin, Update};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::snapshot::{Delta, Snapshot, SnapshotTx};
use crate::translate::{self, Options, Scope, Translator};

/// Longest a stream of changes can hold back a push.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Shared list of current config problems, for `/debug/config_errors`.
pub type ConfigErrors = Arc<Mutex<Vec<String>>>;

/// Told the scheduled nodes after each publish (meshd writes local secrets for new ones).
pub type NodesHook = Box<dyn Fn(&BTreeSet<String>) + Send>;

/// Runs until the source closes its channel.
pub struct Pipeline {
    pub options: Options,
    pub debounce: Duration,
    pub snapshots: SnapshotTx,
    pub metrics: Metrics,
    pub errors: ConfigErrors,
    /// Called with the scheduled nodes after each publish (local secrets for new nodes).
    pub on_nodes: NodesHook,
}

impl Pipeline {
    pub async fn run(self, initial: Update, mut updates: mpsc::Receiver<Update>) {
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
        loop {
            if let Some(first) = changed_at {
                // Rule 1: fold in whatever else arrives within the debounce window.
                loop {
                    let deadline = (Instant::now() + self.debounce).min(first + MAX_DEBOUNCE);
                    match tokio::time::timeout_at(deadline, updates.recv()).await {
                        Ok(Some(u)) => {
                            state.apply(u);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let scope = std::mem::replace(&mut state.scope, Scope::Namespaces(BTreeSet::new()));
                let t = translator.translate(&state.index, &scope);
                self.metrics
                    .translation
                    .observe(started.elapsed().as_secs_f64());
                state.report(&t, &self.errors, &self.metrics);
                let identities = identities_by_node(&state.index);
                let unchanged = last.as_ref().is_some_and(|l| {
                    l.resources == t.resources && l.identities_by_node == identities
                });
                if !unchanged {
                    let delta = last
                        .as_ref()
                        .map(|l| Delta::between(l.version, &l.resources, &t.resources));
                    version += 1;
                    let snapshot = Arc::new(Snapshot {
                        version,
                        resources: t.resources,
                        identities_by_node: identities,
                        changed_at: Some(first),
                        delta,
                    });
                    tracing::info!(
                        version,
                        addresses = snapshot.resources.addresses.len(),
                        authorizations = snapshot.resources.authorizations.len(),
                        objects = state.index.len(),
                        translate_ms = started.elapsed().as_millis() as u64,
                        "config published"
                    );
                    self.snapshots.send_replace(snapshot.clone());
                    (self.on_nodes)(&state.index.nodes());
                    last = Some(snapshot);
                }
                changed_at = None;
            }
            match updates.recv().await {
                Some(u) => {
                    if state.apply(u) {
                        changed_at = Some(Instant::now());
                    }
                }
                None => return,
            }
        }
    }
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
        }
    }
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
            let key = object.key();
            if self.index.apply(object) {
                self.touch(&key);
                changed = true;
            }
            self.origins.insert(key, origin);
        }
        for key in &u.deleted {
            self.origins.remove(key);
            if self.index.delete(key) {
                self.touch(key);
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

    /// Rule 3: keeps the full list current and logs what is new.
    fn report(&mut self, t: &translate::Translation, errors: &ConfigErrors, metrics: &Metrics) {
        let located = |key: &ObjectKey, msg: &str| match self.origins.get(key) {
            Some(o) => format!("{o}: {key}: {msg}"),
            None => format!("{key}: {msg}"),
        };
        let mut all: Vec<String> = self.source_errors.clone();
        all.extend(t.errors.iter().map(|(k, m)| located(k, m)));
        let warnings: Vec<String> = t.warnings.iter().map(|(k, m)| located(k, m)).collect();
        let current: BTreeSet<String> = all.iter().chain(&warnings).cloned().collect();
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

fn identities_by_node(index: &Index) -> HashMap<String, BTreeSet<(String, String)>> {
    let mut out: HashMap<String, BTreeSet<(String, String)>> = HashMap::new();
    for pod in index.pods() {
        if pod.spec.node_name.is_empty() {
            continue;
        }
        out.entry(pod.spec.node_name.clone()).or_default().insert((
            pod.metadata.namespace.clone(),
            pod.service_account().to_string(),
        ));
    }
    out
}
