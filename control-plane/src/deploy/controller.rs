//! The deployer: keeps, for every waypoint Gateway in the cluster, the objects `render` says it
//! needs, and its status, applied through the API server.
//!
//! Rules, in order:
//! 1. Each time the observed state changes (or a retry falls due) every Gateway is rendered
//!    and [`plan`] decides, per Gateway, what to do: apply its objects when they differ from
//!    what was last applied successfully (a Gateway edit, e.g. a label, changes them), when
//!    its Service, Deployment or ServiceAccount is not there (someone deleted it; or our
//!    apply's echo is still on its way, which makes one more, idempotent, apply), or when its
//!    Deployment's `metadata.generation` is past the one our last apply left (someone edited
//!    its spec: the apply takes our fields back and leaves theirs, such as an autoscaler's
//!    `replicas`), or when the Deployment there is another object than the one that apply
//!    left (deleted and made again); then write its status when it differs from what was
//!    last written (after an apply too: each write restamps its conditions). Equal
//!    content is never written again, so our own writes (which the watch reports back) do
//!    not loop.
//! 2. Writes are server-side apply, as istiod's controller does them: `PATCH` with
//!    `application/apply-patch+yaml`, `fieldManager=istio.io/gateway-controller` and
//!    `force=true`, objects in the order ServiceAccount, Service, Deployment, then the
//!    Gateway's `status` subresource.
//! 3. A failed write is logged with the object and retried for that Gateway after a backoff
//!    that doubles from `min_backoff` to `max_backoff`; a success resets it. A Gateway that
//!    cannot be rendered (a bad name) is logged once per distinct error and waits for an edit.
//! 4. Nothing is ever deleted here: every object carries the Gateway as its owner, so when the
//!    Gateway goes, Kubernetes' garbage collector deletes them. A Gateway that goes, or stops
//!    being a waypoint, is only forgotten.
//! 5. The deployer stops when the observed state's sender (the source) goes away.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::apply::{ApplyError, apply, backoff, chain, sleep_until};
use super::observed::{Key, Observed, Stamp};
use super::render::{self, Child, RenderError, Rendered, Settings, Status};

/// The field manager istiod's gateway controller applies with.
pub const FIELD_MANAGER: &str = "istio.io/gateway-controller";

/// What one Gateway needs now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply these objects, then write this status.
    Apply(Rendered, Status),
    /// The objects are in place; write this status.
    Status(Status),
}

/// What the deployer remembers of one Gateway.
#[derive(Debug, Default)]
struct Memory {
    /// The objects last applied successfully.
    applied: Option<Rendered>,
    /// The Deployment as that apply left it (the API server's answer): another object of
    /// that name (deleted and made again) or a later generation (an edit) is not as applied.
    deployment: Option<Stamp>,
    /// The status last written successfully.
    written: Option<Status>,
    /// Failed attempts in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
    /// The render error last logged.
    refused: Option<RenderError>,
}

/// Rule 1: what `gw` needs, given what was done for it. `children_as_applied`: its objects
/// are all there, none edited since.
fn plan(
    rendered: Rendered,
    status: Status,
    children_as_applied: bool,
    memory: &Memory,
) -> Option<Action> {
    if memory.applied.as_ref() != Some(&rendered) || !children_as_applied {
        return Some(Action::Apply(rendered, status));
    }
    (memory.written.as_ref() != Some(&status)).then_some(Action::Status(status))
}

/// Applies waypoint Gateways' objects and status (see the module rules).
pub struct Deployer {
    pub client: kube::Client,
    pub settings: Settings,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Deployer {
    pub async fn run(self, mut observed: watch::Receiver<Observed>) {
        let mut memory: HashMap<Key, Memory> = HashMap::new();
        loop {
            let view = observed.borrow_and_update().clone();
            self.pass(&view, &mut memory).await;
            // Rule 5, and the earliest retry.
            let next = memory.values().filter_map(|m| m.retry_at).min();
            tokio::select! {
                changed = observed.changed() => if changed.is_err() { return },
                _ = sleep_until(next) => {}
            }
        }
    }

    /// One pass over every Gateway.
    async fn pass(&self, view: &Observed, memory: &mut HashMap<Key, Memory>) {
        // Rule 4: forget what is gone; its objects go with it by garbage collection.
        memory.retain(|key, _| view.gateways.contains_key(key));
        let now = Instant::now();
        for (key, gw) in &view.gateways {
            let rendered = match render::render(gw, &self.settings) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    memory.remove(key);
                    continue;
                }
                Err(e) => {
                    let m = memory.entry(key.clone()).or_default();
                    if m.refused.as_ref() != Some(&e) {
                        warn!(gateway = %format!("{}/{}", key.0, key.1), error = %e,
                              "waypoint not deployed");
                        m.refused = Some(e);
                    }
                    continue;
                }
            };
            let m = memory.entry(key.clone()).or_default();
            m.refused = None;
            if m.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let service = view
                .services
                .get(&(key.0.clone(), rendered.service.clone()));
            let status = render::status(gw, &rendered, service, &self.settings);
            let key_of = |kind| {
                rendered
                    .name_of(kind)
                    .map(|n| (key.0.clone(), n.to_string()))
            };
            let account = key_of(Child::ServiceAccount);
            let account_there = account.is_none_or(|k| view.service_accounts.contains(&k));
            // There, and not edited or made again since our last apply (of which the echo
            // may be on its way: an older generation of the same object).
            let deployment_as_applied = key_of(Child::Deployment).is_none_or(|k| {
                view.deployments.get(&k).is_some_and(|seen| {
                    m.deployment.as_ref().is_none_or(|ours| {
                        seen.uid == ours.uid && seen.generation <= ours.generation
                    })
                })
            });
            let as_applied = service.is_some() && account_there && deployment_as_applied;
            let Some(action) = plan(rendered, status, as_applied, m) else {
                continue;
            };
            match self.act(key, action, m).await {
                Ok(()) => {
                    m.failures = 0;
                    m.retry_at = None;
                }
                Err(e) => {
                    let wait = backoff(self.min_backoff, self.max_backoff, m.failures);
                    m.failures = m.failures.saturating_add(1);
                    m.retry_at = Some(Instant::now() + wait);
                    warn!(error = %chain(&e), retry_in = ?wait,
                          "waypoint deployment failed");
                }
            }
        }
    }

    async fn act(&self, key: &Key, action: Action, m: &mut Memory) -> Result<(), ApplyError> {
        let (ns, name) = key;
        let status = match action {
            Action::Apply(rendered, status) => {
                for o in &rendered.objects {
                    let stored = apply(
                        &self.client,
                        FIELD_MANAGER,
                        &o.kind.collection(&o.namespace),
                        &o.name,
                        None,
                        &o.body,
                    )
                    .await
                    .map_err(ApplyError::of(
                        o.kind.as_str(),
                        &o.namespace,
                        &o.name,
                    ))?;
                    if o.kind == Child::Deployment {
                        m.deployment = Stamp::of(&stored);
                    }
                    debug!(kind = o.kind.as_str(), namespace = %o.namespace, name = %o.name,
                           "applied");
                }
                info!(gateway = %format!("{ns}/{name}"), "waypoint deployed");
                m.applied = Some(rendered);
                status
            }
            Action::Status(status) => status,
        };
        // Written only when it changed: each write restamps its conditions' transition time.
        if m.written.as_ref() == Some(&status) {
            return Ok(());
        }
        let body = status.to_apply(ns, name, &now_rfc3339());
        let gateways = format!("/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways");
        apply(
            &self.client,
            FIELD_MANAGER,
            &gateways,
            name,
            Some("status"),
            &body,
        )
        .await
        .map_err(ApplyError::of("Gateway status", ns, name))?;
        debug!(gateway = %format!("{ns}/{name}"), addresses = status.addresses.len(),
               "gateway status written");
        m.written = Some(status);
        Ok(())
    }
}

/// Now, RFC 3339 to the second (what `lastTransitionTime` holds).
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::render::{Address, Child};

    fn rendered(image: &str) -> Rendered {
        Rendered {
            objects: vec![render::Object {
                kind: Child::Deployment,
                namespace: "shop".into(),
                name: "waypoint".into(),
                body: serde_json::json!({"image": image}),
            }],
            service: "waypoint".into(),
        }
    }

    fn status(ip: Option<&str>) -> Status {
        Status {
            generation: 1,
            addresses: ip
                .map(|ip| Address {
                    kind: "IPAddress",
                    value: ip.into(),
                })
                .into_iter()
                .collect(),
            programmed: ip.map(str::to_string).ok_or_else(|| "no VIP".to_string()),
        }
    }

    #[test]
    fn plan_table() {
        let done = || Memory {
            applied: Some(rendered("a")),
            written: Some(status(Some("10.0.0.1"))),
            ..Memory::default()
        };
        let apply =
            |image: &str, ip: Option<&str>| Some(Action::Apply(rendered(image), status(ip)));
        // What happened, what is remembered, the image rendered now, the Service's VIP now,
        // whether the Service is there, and the plan.
        type Case = (
            &'static str,
            Memory,
            &'static str,
            Option<&'static str>,
            bool,
            Option<Action>,
        );
        let cases: Vec<Case> = vec![
            (
                "new gateway",
                Memory::default(),
                "a",
                None,
                false,
                apply("a", None),
            ),
            ("nothing changed", done(), "a", Some("10.0.0.1"), true, None),
            (
                "gateway edited",
                done(),
                "b",
                Some("10.0.0.1"),
                true,
                apply("b", Some("10.0.0.1")),
            ),
            (
                "service not there (deleted, or our echo on its way)",
                done(),
                "a",
                None,
                false,
                apply("a", None),
            ),
            (
                "service got a new VIP",
                done(),
                "a",
                Some("10.0.0.2"),
                true,
                Some(Action::Status(status(Some("10.0.0.2")))),
            ),
        ];
        for (what, memory, image, ip, present, want) in cases {
            assert_eq!(
                plan(rendered(image), status(ip), present, &memory),
                want,
                "{what}"
            );
        }
    }
}
