//! ztunnel's side of xDS: the node identity istiod expects, and the handlers that turn pushes
//! into a new `State` snapshot (through `state::xds`, the one wire-to-domain boundary).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proto::security::Authorization;
use proto::workload::Address;
use xds_client::{Changes, Client, GrpcTarget, Rejection};

use crate::state::StateHandle;
use crate::state::xds::XdsState;

/// Who this ztunnel is, as istiod reads it from the node id and metadata (protocol.md 4.1).
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    pub pod_name: String,
    pub pod_namespace: String,
    pub instance_ip: String,
    pub node_name: String,
    pub cluster_id: String,
    /// `ISTIO_META_<K>=v` as `K -> v`.
    pub meta: BTreeMap<String, String>,
}

impl NodeIdentity {
    /// `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`: the leading `ztunnel` is the node type
    /// istiod keys on.
    pub fn node_id(&self) -> String {
        format!(
            "ztunnel~{}~{}.{}~{}.svc.cluster.local",
            self.instance_ip, self.pod_name, self.pod_namespace, self.pod_namespace
        )
    }

    pub fn node(&self) -> proto::core::Node {
        use prost_types::value::Kind;
        let s = |v: &str| prost_types::Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        let mut fields = BTreeMap::new();
        for (k, v) in &self.meta {
            fields.insert(k.clone(), s(v));
        }
        fields.insert("NAME".into(), s(&self.pod_name));
        fields.insert("NAMESPACE".into(), s(&self.pod_namespace));
        fields.insert("INSTANCE_IPS".into(), s(&self.instance_ip));
        fields.insert("NODE_NAME".into(), s(&self.node_name));
        fields
            .entry("CLUSTER_ID".into())
            .or_insert_with(|| s(&self.cluster_id));
        proto::core::Node {
            id: self.node_id(),
            metadata: Some(prost_types::Struct { fields }),
            ..Default::default()
        }
    }
}

/// Environment entries with `prefix`, the prefix stripped (`ISTIO_META_`, `XDS_HEADER_`).
pub fn env_with_prefix(
    vars: impl Iterator<Item = (String, String)>,
    prefix: &str,
) -> BTreeMap<String, String> {
    vars.filter_map(|(k, v)| {
        k.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(|rest| (rest.to_string(), v))
    })
    .collect()
}

/// Builds the client: Address and Authorization subscriptions applied to `xds`, each push
/// publishing a new snapshot to `state`.
pub fn client(
    target: GrpcTarget,
    node: proto::core::Node,
    state: StateHandle,
    metrics: xds_client::Metrics,
) -> Client {
    let xds = Arc::new(Mutex::new(XdsState::new()));
    let (xds_a, state_a) = (xds.clone(), state.clone());
    let addresses = move |changes: Changes<Address>| {
        apply(&xds_a, &state_a, |x| {
            x.apply_addresses(&changes.upserts, &changes.removed)
        })
    };
    let authorizations = move |changes: Changes<Authorization>| {
        apply(&xds, &state, |x| {
            x.apply_authorizations(&changes.upserts, &changes.removed)
        })
    };
    Client::builder(target, node)
        .watch::<Address, _>(addresses)
        .watch::<Authorization, _>(authorizations)
        .metrics(metrics)
        .build()
}

fn apply(
    xds: &Mutex<XdsState>,
    state: &StateHandle,
    f: impl FnOnce(&mut XdsState) -> Vec<(String, crate::state::xds::XdsError)>,
) -> Vec<Rejection> {
    let mut x = xds.lock().unwrap_or_else(|p| p.into_inner());
    let rejected = f(&mut x);
    let (w, s, p) = x.counts();
    state.store(x.to_state());
    tracing::debug!(
        workloads = w,
        services = s,
        policies = p,
        "xDS config applied"
    );
    rejected
        .into_iter()
        .map(|(name, e)| Rejection {
            name,
            reason: e.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_and_metadata_as_istio_sends_them() {
        let n = NodeIdentity {
            pod_name: "ztunnel-abc".into(),
            pod_namespace: "istio-system".into(),
            instance_ip: "10.0.0.5".into(),
            node_name: "node-a".into(),
            cluster_id: "Kubernetes".into(),
            meta: [("MESH_ID".to_string(), "m1".to_string())].into(),
        };
        let node = n.node();
        assert_eq!(
            node.id,
            "ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local"
        );
        let fields = node.metadata.unwrap().fields;
        for key in [
            "NAME",
            "NAMESPACE",
            "INSTANCE_IPS",
            "NODE_NAME",
            "CLUSTER_ID",
            "MESH_ID",
        ] {
            assert!(fields.contains_key(key), "{key}");
        }
        let env = vec![
            ("ISTIO_META_CLUSTER_ID".to_string(), "c1".to_string()),
            ("ISTIO_META_".to_string(), "x".to_string()),
            ("OTHER".to_string(), "y".to_string()),
        ];
        let meta = env_with_prefix(env.into_iter(), "ISTIO_META_");
        assert_eq!(meta.len(), 1);
        assert_eq!(meta["CLUSTER_ID"], "c1");
    }
}
