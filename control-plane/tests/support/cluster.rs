//! meshd in cluster mode on the API-server fixture (`kube-source/tests/support/apiserver.rs`),
//! for the tests of what meshd writes there. Included with `#[path]` beside `mod apiserver;`
//! and `mod support;` by the tests that need a cluster, so the others need no fixture.

#![allow(dead_code)]

use control_plane::meshd::{self, Config};
use serde_json::{Value, json};

use crate::apiserver::ApiServer;
use crate::support;

/// Starts meshd on `api`'s cluster, its CA and secrets in a fresh directory named after
/// `name` (a new name, a new CA), the config's controllers set by `configure` (none by
/// default).
pub async fn start_meshd(
    api: &ApiServer,
    name: &str,
    configure: impl FnOnce(&mut Config),
) -> meshd::Running {
    let dir = support::tempdir(name);
    let mut config = support::config(&dir, "127.0.0.1:0".parse().expect("addr"));
    configure(&mut config);
    meshd::start_with_client(config, api.client())
        .await
        .expect("meshd starts on the fixture")
}

/// A Namespace object with `labels`.
pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}})
}
