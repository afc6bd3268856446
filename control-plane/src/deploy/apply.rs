//! The writing both cluster controllers share (waypoints, the root certificate): one
//! server-side apply, the error that names what failed, and the retry backoff.
//!
//! Rules, in order:
//! 1. Every write is a server-side apply, as istiod's controllers write: `PATCH` with
//!    `application/apply-patch+yaml`, the caller's `fieldManager` and `force=true` (the
//!    fields are ours; someone else's edit of them is taken back).
//! 2. A failed write is an [`ApplyError`] naming the object, with an operator hint for a 403.
//! 3. Retries wait `min` doubled per failure in a row, at most `max`.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::core::Request;
use serde_json::Value;
use tokio::time::Instant;

/// A write the API server refused or could not take.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply {what} {namespace}/{name}{}", hint(.what, .source))]
pub struct ApplyError {
    /// `Deployment`, `Gateway status`, `ConfigMap`, ...
    pub what: &'static str,
    pub namespace: String,
    pub name: String,
    /// Boxed: `kube::Error` is large.
    #[source]
    pub source: Box<kube::Error>,
}

impl ApplyError {
    /// What a failed write of `what` `namespace/name` becomes (rule 2), for `map_err`.
    pub(super) fn of<'a>(
        what: &'static str,
        namespace: &'a str,
        name: &'a str,
    ) -> impl FnOnce(kube::Error) -> ApplyError + 'a {
        move |source| ApplyError {
            what,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

fn hint(what: &str, e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(r) if r.code == 403 && what == "ConfigMap" => {
            ": meshd's service account needs patch on configmaps (ClusterRole)"
        }
        kube::Error::Api(r) if r.code == 403 => {
            ": meshd's service account needs patch on serviceaccounts, services, deployments \
             and gateways/status (ClusterRole)"
        }
        _ => "",
    }
}

/// Rule 1: one server-side apply of `body` to `collection/name` (or its `subresource`); the
/// object as stored.
pub(super) async fn apply(
    client: &kube::Client,
    field_manager: &str,
    collection: &str,
    name: &str,
    subresource: Option<&str>,
    body: &Value,
) -> Result<Value, kube::Error> {
    let params = PatchParams::apply(field_manager).force();
    let request = Request::new(collection);
    let patch = Patch::Apply(body);
    let request = match subresource {
        Some(sub) => request.patch_subresource(sub, name, &params, &patch),
        None => request.patch(name, &params, &patch),
    }
    .map_err(kube::Error::BuildRequest)?;
    client.request::<Value>(request).await
}

/// Rule 3: `min` doubled per earlier failure, at most `max`.
pub(super) fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    min.saturating_mul(1u32 << failures.min(16)).min(max)
}

/// Sleeps until `at`, or forever without one.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The error and its sources on one line.
pub(super) fn chain(e: &ApplyError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u128> = (0..6).map(|f| backoff(min, max, f).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(min, max, u32::MAX), max);
    }

    #[test]
    fn a_refused_write_names_the_permission_it_needs() {
        let forbidden = || {
            Box::new(kube::Error::Api(kube::core::ErrorResponse {
                status: "Failure".into(),
                message: "forbidden".into(),
                reason: "Forbidden".into(),
                code: 403,
            }))
        };
        let error = |what| ApplyError {
            what,
            namespace: "shop".into(),
            name: "x".into(),
            source: forbidden(),
        };
        let config_map = error("ConfigMap").to_string();
        assert!(config_map.contains("patch on configmaps"), "{config_map}");
        let deployment = error("Deployment").to_string();
        assert!(deployment.contains("deployments"), "{deployment}");
        assert!(!deployment.contains("configmaps"), "{deployment}");
    }
}
