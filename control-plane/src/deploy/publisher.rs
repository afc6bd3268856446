//! The root-cert publisher: keeps `istio-ca-root-cert` (see `root_cert`) in every namespace,
//! as istiod's namespace controller does.
//!
//! Rules, in order:
//! 1. Each time the view changes, the roots change, or a retry falls due, every namespace
//!    `root_cert::targets` names is checked and its ConfigMap written when
//!    `root_cert::needs_write` says so. Our own write, echoed by the watch, matches and is
//!    not written again; a pass that runs before the echo arrives writes the same content
//!    once more, which changes nothing.
//! 2. Writes are server-side applies (`apply`) by [`ROOT_CERT_FIELD_MANAGER`] with `force`:
//!    `root-cert.pem` and the label are ours, whoever edited them last.
//! 3. A failed write is logged and retried for that namespace after a backoff that doubles
//!    from `min_backoff` to `max_backoff`; a success resets it. The other namespaces go on.
//! 4. Nothing is deleted here: a namespace that goes takes its ConfigMap with it, and is
//!    forgotten.
//! 5. The publisher stops when the view's sender (the source) goes away. When the roots'
//!    sender goes away the last roots stay published.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::apply::{ApplyError, apply, backoff, chain, sleep_until};
use super::root_cert::{self, Namespaces, ROOT_CERT_CONFIG_MAP};

/// The field manager of the root-cert ConfigMaps. Named after istiod's "namespace
/// controller", which writes them with create and update and so has no apply manager to copy.
pub const ROOT_CERT_FIELD_MANAGER: &str = "istio.io/namespace-controller";

/// What the publisher remembers of a namespace whose write failed.
#[derive(Debug, Default)]
struct Retry {
    /// Failed attempts in a row, and when to try again.
    failures: u32,
    at: Option<Instant>,
}

/// Publishes the mesh's roots in every namespace (see the module rules).
pub struct RootCertPublisher {
    pub client: kube::Client,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl RootCertPublisher {
    /// Runs until `view`'s sender goes away; `roots` is the PEM to publish.
    pub async fn run(
        self,
        mut view: watch::Receiver<Namespaces>,
        mut roots: watch::Receiver<String>,
    ) {
        let mut retries: HashMap<String, Retry> = HashMap::new();
        let mut roots_open = true;
        loop {
            let current = view.borrow_and_update().clone();
            let pem = roots.borrow_and_update().clone();
            self.pass(&current, &pem, &mut retries).await;
            // Rule 5, and the earliest retry.
            let next = retries.values().filter_map(|r| r.at).min();
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                changed = roots.changed(), if roots_open => roots_open = changed.is_ok(),
                _ = sleep_until(next) => {}
            }
        }
    }

    /// One pass over every namespace.
    async fn pass(&self, view: &Namespaces, pem: &str, retries: &mut HashMap<String, Retry>) {
        // Rule 4: forget what is gone.
        retries.retain(|ns, _| view.namespaces.contains_key(ns));
        let now = Instant::now();
        let mut written = 0usize;
        for ns in root_cert::targets(view) {
            if !root_cert::needs_write(view.published.get(ns), pem) {
                retries.remove(ns);
                continue;
            }
            if retries
                .get(ns)
                .and_then(|r| r.at)
                .is_some_and(|at| at > now)
            {
                continue;
            }
            match self.write(ns, pem).await {
                Ok(()) => {
                    debug!(namespace = %ns, "root certificate written");
                    retries.remove(ns);
                    written += 1;
                }
                Err(e) => {
                    let r = retries.entry(ns.to_string()).or_default();
                    let wait = backoff(self.min_backoff, self.max_backoff, r.failures);
                    r.failures = r.failures.saturating_add(1);
                    r.at = Some(Instant::now() + wait);
                    warn!(error = %chain(&e), retry_in = ?wait,
                          "cannot publish the root certificate");
                }
            }
        }
        if written > 0 {
            info!(
                namespaces = written,
                "root certificate published (istio-ca-root-cert)"
            );
        }
    }

    /// Rule 2.
    async fn write(&self, ns: &str, pem: &str) -> Result<(), ApplyError> {
        let body = root_cert::config_map(ns, pem);
        let collection = format!("/api/v1/namespaces/{ns}/configmaps");
        apply(
            &self.client,
            ROOT_CERT_FIELD_MANAGER,
            &collection,
            ROOT_CERT_CONFIG_MAP,
            None,
            &body,
        )
        .await
        .map(|_| ())
        .map_err(ApplyError::of("ConfigMap", ns, ROOT_CERT_CONFIG_MAP))
    }
}
