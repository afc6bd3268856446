//! Which pods of a node ambient mode captures, from the current objects.
//!
//! Rules:
//! 1. The pod is scheduled on this node (`spec.nodeName`) and `kube_source::ambient::captured`
//!    says ambient captures it (its namespace's or its own label; not `none`, not host
//!    network, no sidecar).
//! 2. It has an IP (`status.podIPs`): until then it has no network to capture.
//! 3. Its uid is `metadata.uid`; a manifest without one gets `<namespace>/<name>`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use kube_source::{Kind, Namespace, Object, ObjectKey, Pod, Update};

/// A pod to capture, as ZDS and the capture rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
}

/// The namespaces and pods the agent has seen.
#[derive(Debug, Default)]
pub struct Objects {
    namespaces: HashMap<String, Namespace>,
    pods: BTreeMap<(String, String), Pod>,
}

impl Objects {
    /// Applies a source update; true when a namespace or pod changed.
    pub fn apply(&mut self, update: Update) -> bool {
        let mut changed = false;
        for (object, _) in update.applied {
            match object {
                Object::Namespace(ns) => {
                    changed = true;
                    self.namespaces.insert(ns.metadata.name.clone(), ns);
                }
                Object::Pod(pod) => {
                    changed = true;
                    let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
                    self.pods.insert(key, pod);
                }
                _ => {}
            }
        }
        for ObjectKey {
            kind,
            namespace,
            name,
        } in update.deleted
        {
            match kind {
                Kind::Namespace => changed |= self.namespaces.remove(&name).is_some(),
                Kind::Pod => changed |= self.pods.remove(&(namespace, name)).is_some(),
                _ => {}
            }
        }
        changed
    }

    /// Rules 1-3: the pods of `node` to capture, by uid.
    pub fn captured_on(&self, node: &str) -> BTreeMap<String, CapturedPod> {
        self.pods
            .values()
            .filter(|p| !node.is_empty() && p.spec.node_name == node)
            .filter(|p| {
                kube_source::ambient::captured(p, self.namespaces.get(&p.metadata.namespace))
            })
            .filter_map(|p| {
                let ips: Vec<IpAddr> = p
                    .status
                    .pod_ips
                    .iter()
                    .filter_map(|i| i.ip.parse().ok())
                    .collect();
                if ips.is_empty() {
                    return None;
                }
                let m = &p.metadata;
                let uid = if m.uid.is_empty() {
                    format!("{}/{}", m.namespace, m.name)
                } else {
                    m.uid.clone()
                };
                Some((
                    uid.clone(),
                    CapturedPod {
                        uid,
                        namespace: m.namespace.clone(),
                        name: m.name.clone(),
                        service_account: p.service_account().to_string(),
                        ips,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::parse_yaml_document;

    fn objects(docs: &[String]) -> Objects {
        let mut o = Objects::default();
        let applied = docs
            .iter()
            .flat_map(|d| parse_yaml_document(d))
            .map(|r| match r.expect("parses") {
                kube_source::Parsed::Object(obj) => (obj, origin()),
                other => panic!("{other:?}"),
            })
            .collect();
        o.apply(Update {
            applied,
            ..Default::default()
        });
        o
    }

    fn origin() -> kube_source::Origin {
        kube_source::Origin {
            file: "t.yaml".into(),
            line: 1,
        }
    }

    fn ns(name: &str, mode: Option<&str>) -> String {
        let labels = mode.map_or(String::new(), |m| {
            format!("\n  labels: {{istio.io/dataplane-mode: {m}}}")
        });
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{labels}\n")
    }

    fn pod(ns: &str, name: &str, node: &str, ip: Option<&str>, extra_meta: &str) -> String {
        let ips = ip.map_or(String::new(), |ip| {
            format!("status:\n  podIPs:\n  - ip: {ip}\n")
        });
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{extra_meta}spec:\n  nodeName: {node}\n  serviceAccountName: sa-{name}\n{ips}"
        )
    }

    /// Each pod, and whether node-a's agent captures it.
    #[test]
    fn which_pods_are_captured() {
        let o = objects(&[
            ns("mesh", Some("ambient")),
            ns("plain", None),
            ns("off", Some("none")),
            pod("mesh", "web", "node-a", Some("10.0.0.1"), "  uid: u-web\n"),
            pod("mesh", "other-node", "node-b", Some("10.0.0.2"), ""),
            pod("mesh", "no-ip-yet", "node-a", None, ""),
            pod(
                "mesh",
                "opted-out",
                "node-a",
                Some("10.0.0.3"),
                "  labels: {istio.io/dataplane-mode: none}\n",
            ),
            pod(
                "mesh",
                "sidecar",
                "node-a",
                Some("10.0.0.4"),
                "  annotations: {sidecar.istio.io/status: x}\n",
            ),
            pod("plain", "legacy", "node-a", Some("10.0.0.5"), ""),
            pod(
                "plain",
                "opted-in",
                "node-a",
                Some("10.0.0.6"),
                "  labels: {istio.io/dataplane-mode: ambient}\n",
            ),
            pod("off", "db", "node-a", Some("10.0.0.7"), ""),
        ]);
        let got: Vec<(String, String)> = o
            .captured_on("node-a")
            .into_values()
            .map(|p| {
                (
                    p.uid,
                    format!(
                        "{}/{} {} {:?}",
                        p.namespace, p.name, p.service_account, p.ips
                    ),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "plain/opted-in".to_string(),
                    "plain/opted-in sa-opted-in [10.0.0.6]".to_string()
                ),
                (
                    "u-web".to_string(),
                    "mesh/web sa-web [10.0.0.1]".to_string()
                ),
            ]
        );
        assert!(o.captured_on("").is_empty(), "no node name: nothing");
    }

    /// Labeling a namespace captures its pods; deleting a pod releases it.
    #[test]
    fn updates_change_what_is_captured() {
        let mut o = objects(&[
            ns("plain", None),
            pod("plain", "legacy", "node-a", Some("10.0.0.5"), ""),
        ]);
        assert!(o.captured_on("node-a").is_empty());
        let relabeled = objects(&[ns("plain", Some("ambient"))]);
        let ns_obj = relabeled.namespaces["plain"].clone();
        assert!(o.apply(Update {
            applied: vec![(Object::Namespace(ns_obj), origin())],
            ..Default::default()
        }));
        assert_eq!(o.captured_on("node-a").len(), 1);
        assert!(o.apply(Update {
            deleted: vec![ObjectKey {
                kind: Kind::Pod,
                namespace: "plain".into(),
                name: "legacy".into(),
            }],
            ..Default::default()
        }));
        assert!(o.captured_on("node-a").is_empty());
    }
}
