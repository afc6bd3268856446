//! What meshd's cluster controllers need to see of the cluster, taken from the updates meshd
//! already receives: one list+watch per kind serves the translation and the controllers.
//!
//! Rules, in order:
//! 1. [`tee`] passes every update on to the pipeline unchanged, and folds it into a [`View`]
//!    behind a `watch` channel: [`Observed`] keeps the Gateways, and which Services,
//!    Deployments and ServiceAccounts a waypoint controller manages
//!    (`gateway.istio.io/managed`), for the deployer; the root-cert
//!    publisher keeps its own view (`root_cert::Namespaces`).
//! 2. Writing to it never waits: a slow or backing-off controller holds back neither the
//!    pipeline nor the source; it reads the latest state when it is ready, and intermediate
//!    states fold into it.

use std::collections::{BTreeMap, BTreeSet};

use kube_source::{Gateway, Object, Service, Update};
use tokio::sync::{mpsc, watch};

use crate::translate::labels::GATEWAY_MANAGED;

/// `(namespace, name)`.
pub type Key = (String, String);

/// The Gateways of the cluster and the managed Services, as last seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub gateways: BTreeMap<Key, Gateway>,
    pub services: BTreeMap<Key, Service>,
    /// Whether they are there, and which object at which generation: the deployer puts back
    /// one that goes, and applies again over an edit of one or one made again by someone.
    pub deployments: BTreeMap<Key, Stamp>,
    /// The same for the ServiceAccounts.
    pub service_accounts: BTreeSet<Key>,
}

/// Which object, at which `metadata.generation` (bumped by each change of its spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub uid: String,
    pub generation: i64,
}

impl Stamp {
    /// The stamp of an object as the API server answered it.
    pub fn of(object: &serde_json::Value) -> Option<Stamp> {
        let m = &object["metadata"];
        Some(Stamp {
            uid: m["uid"].as_str()?.to_string(),
            generation: m["generation"].as_i64()?,
        })
    }
}

/// A controller's view of the cluster, kept up to date by [`tee`].
pub trait View: Clone + Default + Send + Sync + 'static {
    /// Applies one update; whether anything the view holds changed.
    fn apply(&mut self, update: &Update) -> bool;
}

impl View for Observed {
    fn apply(&mut self, update: &Update) -> bool {
        let mut changed = false;
        for (object, _) in &update.applied {
            let key = (object.meta().namespace.clone(), object.meta().name.clone());
            match object {
                Object::Gateway(g) => {
                    changed |= self.gateways.get(&key) != Some(g);
                    self.gateways.insert(key, g.clone());
                }
                Object::Service(s) if s.metadata.labels.contains_key(GATEWAY_MANAGED) => {
                    changed |= self.services.get(&key) != Some(s);
                    self.services.insert(key, s.clone());
                }
                // A Service that lost the label is no longer one of ours.
                Object::Service(_) => changed |= self.services.remove(&key).is_some(),
                Object::Deployment(d) if d.metadata.labels.contains_key(GATEWAY_MANAGED) => {
                    let stamp = Stamp {
                        uid: d.metadata.uid.clone(),
                        generation: d.metadata.generation,
                    };
                    changed |= self.deployments.get(&key) != Some(&stamp);
                    self.deployments.insert(key, stamp);
                }
                Object::Deployment(_) => changed |= self.deployments.remove(&key).is_some(),
                Object::ServiceAccount(a) if a.metadata.labels.contains_key(GATEWAY_MANAGED) => {
                    changed |= self.service_accounts.insert(key);
                }
                Object::ServiceAccount(_) => changed |= self.service_accounts.remove(&key),
                _ => {}
            }
        }
        for key in &update.deleted {
            let k = (key.namespace.clone(), key.name.clone());
            changed |= match key.kind {
                kube_source::Kind::Gateway => self.gateways.remove(&k).is_some(),
                kube_source::Kind::Service => self.services.remove(&k).is_some(),
                kube_source::Kind::Deployment => self.deployments.remove(&k).is_some(),
                kube_source::Kind::ServiceAccount => self.service_accounts.remove(&k),
                _ => false,
            };
        }
        changed
    }
}

/// Splits `updates` (after `initial`) into the pipeline's stream and a controller's view.
pub fn tee<V: View>(
    initial: &Update,
    mut updates: mpsc::Receiver<Update>,
) -> (mpsc::Receiver<Update>, watch::Receiver<V>) {
    let mut first = V::default();
    first.apply(initial);
    let (view_tx, view_rx) = watch::channel(first);
    // The pipeline's side keeps the source's capacity: back-pressure stays where it was.
    let (tx, rx) = mpsc::channel(updates.max_capacity().max(1));
    // Ends with the source, or when the pipeline stops (dropping `updates` then stops the
    // source's tasks, and dropping `view_tx` the controller).
    tokio::spawn(async move {
        loop {
            let update = tokio::select! {
                update = updates.recv() => update,
                _ = tx.closed() => return,
            };
            let Some(update) = update else { return };
            view_tx.send_if_modified(|view| view.apply(&update));
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    (rx, view_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::{Kind, Meta, ObjectKey, Origin};

    fn meta(name: &str, labels: &[(&str, &str)]) -> Meta {
        Meta {
            name: name.into(),
            namespace: "shop".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn applied(objects: Vec<Object>) -> Update {
        Update {
            applied: objects
                .into_iter()
                .map(|o| {
                    let origin = Origin {
                        file: "/test".into(),
                        line: 0,
                    };
                    (o, origin)
                })
                .collect(),
            ..Update::default()
        }
    }

    fn deleted(kind: Kind, name: &str) -> Update {
        Update {
            deleted: vec![ObjectKey {
                kind,
                namespace: "shop".into(),
                name: name.into(),
            }],
            ..Update::default()
        }
    }

    fn service(name: &str, labels: &[(&str, &str)]) -> Object {
        Object::Service(Service {
            metadata: meta(name, labels),
            ..Default::default()
        })
    }

    fn gateway(name: &str) -> Object {
        Object::Gateway(Gateway {
            metadata: meta(name, &[]),
            ..Default::default()
        })
    }

    #[test]
    fn keeps_which_managed_deployments_and_accounts_are_there() {
        let managed = [(GATEWAY_MANAGED, "istio.io-mesh-controller")];
        let deployment = |labels: &[(&str, &str)]| {
            Object::Deployment(kube_source::Deployment {
                metadata: meta("wp", labels),
            })
        };
        let edited = |generation| {
            let mut metadata = meta("wp", &managed);
            metadata.generation = generation;
            Object::Deployment(kube_source::Deployment { metadata })
        };
        let mut o = Observed::default();
        let steps: Vec<(&str, Update, bool, usize)> = vec![
            (
                "an app's deployment",
                applied(vec![deployment(&[])]),
                false,
                0,
            ),
            (
                "a managed one",
                applied(vec![deployment(&managed)]),
                true,
                1,
            ),
            (
                "the same again",
                applied(vec![deployment(&managed)]),
                false,
                1,
            ),
            (
                "edited (a new generation)",
                applied(vec![edited(2)]),
                true,
                1,
            ),
            (
                "its status only (the same generation)",
                applied(vec![edited(2)]),
                false,
                1,
            ),
            (
                "made again by someone (another object, generation 1)",
                applied(vec![Object::Deployment(kube_source::Deployment {
                    metadata: {
                        let mut m = meta("wp", &managed);
                        m.uid = "another".into();
                        m.generation = 1;
                        m
                    },
                })]),
                true,
                1,
            ),
            (
                "it loses the label",
                applied(vec![deployment(&[])]),
                true,
                0,
            ),
            (
                "labelled again",
                applied(vec![deployment(&managed)]),
                true,
                1,
            ),
            ("deleted", deleted(Kind::Deployment, "wp"), true, 0),
            ("deleted again", deleted(Kind::Deployment, "wp"), false, 0),
        ];
        for (what, update, changed, deployments) in steps {
            assert_eq!(o.apply(&update), changed, "{what}");
            assert_eq!(o.deployments.len(), deployments, "{what}");
        }
        let account = |labels: &[(&str, &str)]| {
            Object::ServiceAccount(kube_source::ServiceAccount {
                metadata: meta("wp", labels),
            })
        };
        assert!(!o.apply(&applied(vec![account(&[])])), "an app's account");
        assert!(o.apply(&applied(vec![account(&managed)])));
        assert_eq!(o.service_accounts.len(), 1);
        assert!(o.apply(&deleted(Kind::ServiceAccount, "wp")));
        assert!(o.service_accounts.is_empty());
    }

    #[test]
    fn keeps_gateways_and_managed_services_only() {
        let managed = [(GATEWAY_MANAGED, "istio.io-mesh-controller")];
        let mut o = Observed::default();
        let steps: Vec<(&str, Update, bool, usize, usize)> = vec![
            ("a gateway", applied(vec![gateway("wp")]), true, 1, 0),
            ("the same again", applied(vec![gateway("wp")]), false, 1, 0),
            (
                "an app's service",
                applied(vec![service("cart", &[])]),
                false,
                1,
                0,
            ),
            (
                "a managed service",
                applied(vec![service("wp", &managed)]),
                true,
                1,
                1,
            ),
            (
                "it loses the label",
                applied(vec![service("wp", &[])]),
                true,
                1,
                0,
            ),
            (
                "labelled again",
                applied(vec![service("wp", &managed)]),
                true,
                1,
                1,
            ),
            ("a pod is deleted", deleted(Kind::Pod, "wp"), false, 1, 1),
            (
                "the service is deleted",
                deleted(Kind::Service, "wp"),
                true,
                1,
                0,
            ),
            (
                "the gateway is deleted",
                deleted(Kind::Gateway, "wp"),
                true,
                0,
                0,
            ),
        ];
        for (what, update, changed, gateways, services) in steps {
            assert_eq!(o.apply(&update), changed, "{what}");
            assert_eq!(
                (o.gateways.len(), o.services.len()),
                (gateways, services),
                "{what}"
            );
        }
    }
}
