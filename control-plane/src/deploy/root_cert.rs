//! The `istio-ca-root-cert` ConfigMap that istiod's namespace controller keeps in every
//! namespace, so pods there (our waypoints, Istio's proxies) can mount the mesh's roots:
//! which namespaces get it, what it holds, and when it must be written. Pure; `publisher`
//! writes it.
//!
//! Rules, in order:
//! 1. Every namespace gets it except the ones istiod skips: `kube-public`, `kube-node-lease`
//!    and `local-path-storage` (kind's volume provisioner). `kube-system` gets it (istiod
//!    stopped skipping it so that ztunnel can run there). A terminating namespace gets
//!    nothing: the API server refuses new objects in it.
//! 2. The ConfigMap is named `istio-ca-root-cert`, labeled `istio.io/config: "true"`, and
//!    holds the mesh's root certificates (PEM) under `root-cert.pem`. Nothing else is set:
//!    keys and labels others add stay theirs.
//! 3. It is written when it is missing, when its `root-cert.pem` is not the mesh's roots
//!    (someone edited it, or the roots changed: a new CA), or when it lost its label. With no
//!    roots to publish nothing is written.

use std::collections::BTreeMap;

use kube_source::{ConfigMap, Kind, Object, Update};
use serde_json::{Value, json};

use super::observed::View;

/// The ConfigMap's name (istiod's `CACertNamespaceConfigMap`).
pub const ROOT_CERT_CONFIG_MAP: &str = "istio-ca-root-cert";
/// The data key holding the roots (what pods mount as `root-cert.pem`).
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// The label istiod puts on the ConfigMaps it writes.
pub const CONFIG_LABEL: (&str, &str) = ("istio.io/config", "true");

/// Rule 1: namespaces istiod's namespace controller leaves alone.
const SKIPPED: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];

/// What the publisher sees of the cluster: the namespaces and our ConfigMap in each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Namespaces {
    /// Every namespace, and whether it is terminating.
    pub namespaces: BTreeMap<String, bool>,
    /// The `istio-ca-root-cert` ConfigMaps, by namespace, as last seen.
    pub published: BTreeMap<String, Published>,
}

/// What one `istio-ca-root-cert` holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Its `root-cert.pem`, if it has one.
    pub root: Option<String>,
    /// Whether it carries `istio.io/config: "true"`.
    pub labelled: bool,
}

impl From<&ConfigMap> for Published {
    fn from(cm: &ConfigMap) -> Self {
        let (label, value) = CONFIG_LABEL;
        Published {
            root: cm.data.get(ROOT_CERT_KEY).cloned(),
            labelled: cm.metadata.labels.get(label).map(String::as_str) == Some(value),
        }
    }
}

impl View for Namespaces {
    fn apply(&mut self, update: &Update) -> bool {
        let mut changed = false;
        for (object, _) in &update.applied {
            match object {
                Object::Namespace(ns) => {
                    let terminating = ns.is_terminating();
                    let before = self
                        .namespaces
                        .insert(ns.metadata.name.clone(), terminating);
                    changed |= before != Some(terminating);
                }
                // The cluster source reads no other name; a manifest might hold one.
                Object::ConfigMap(cm) if cm.metadata.name == ROOT_CERT_CONFIG_MAP => {
                    let now = Published::from(cm);
                    let before = self
                        .published
                        .insert(cm.metadata.namespace.clone(), now.clone());
                    changed |= before != Some(now);
                }
                _ => {}
            }
        }
        for key in &update.deleted {
            changed |= match key.kind {
                Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
                Kind::ConfigMap if key.name == ROOT_CERT_CONFIG_MAP => {
                    self.published.remove(&key.namespace).is_some()
                }
                _ => false,
            };
        }
        changed
    }
}

/// Rule 1: whether the namespace `name` gets the ConfigMap.
pub fn receives(name: &str, terminating: bool) -> bool {
    !terminating && !SKIPPED.contains(&name)
}

/// Rule 1: the namespaces of `view` that get the ConfigMap, by name.
pub fn targets(view: &Namespaces) -> impl Iterator<Item = &str> {
    view.namespaces
        .iter()
        .filter(|(name, terminating)| receives(name, **terminating))
        .map(|(name, _)| name.as_str())
}

/// Rule 3: whether a namespace whose ConfigMap is `current` needs it written with `roots`.
pub fn needs_write(current: Option<&Published>, roots: &str) -> bool {
    if roots.is_empty() {
        return false;
    }
    match current {
        None => true,
        Some(p) => p.root.as_deref() != Some(roots) || !p.labelled,
    }
}

/// Rule 2: the ConfigMap for `namespace`, as an apply body.
pub fn config_map(namespace: &str, roots: &str) -> Value {
    let (label, value) = CONFIG_LABEL;
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CERT_CONFIG_MAP,
            "namespace": namespace,
            "labels": {label: value},
        },
        "data": {ROOT_CERT_KEY: roots},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::{Meta, Namespace, NamespaceStatus, ObjectKey, Origin};

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn which_namespaces_receive_it() {
        let cases = [
            ("default", false, true),
            ("shop", false, true),
            ("istio-system", false, true),
            ("kube-system", false, true),
            ("kube-public", false, false),
            ("kube-node-lease", false, false),
            ("local-path-storage", false, false),
            ("shop", true, false),
            ("kube-system", true, false),
        ];
        for (name, terminating, want) in cases {
            assert_eq!(receives(name, terminating), want, "{name} {terminating}");
        }
    }

    #[test]
    fn when_it_is_written() {
        let published = |root: Option<&str>, labelled| Published {
            root: root.map(str::to_string),
            labelled,
        };
        let cases = [
            ("missing", None, ROOT, true),
            ("in place", Some(published(Some(ROOT), true)), ROOT, false),
            ("edited", Some(published(Some("x"), true)), ROOT, true),
            ("key removed", Some(published(None, true)), ROOT, true),
            (
                "label removed",
                Some(published(Some(ROOT), false)),
                ROOT,
                true,
            ),
            ("new roots", Some(published(Some(ROOT), true)), "NEW", true),
            ("no roots", None, "", false),
        ];
        for (what, current, roots, want) in cases {
            assert_eq!(needs_write(current.as_ref(), roots), want, "{what}");
        }
    }

    #[test]
    fn the_config_map() {
        assert_eq!(
            config_map("shop", ROOT),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": "shop",
                             "labels": {"istio.io/config": "true"}},
                "data": {"root-cert.pem": ROOT},
            })
        );
    }

    fn applied(objects: Vec<Object>) -> Update {
        let origin = || Origin {
            file: "/test".into(),
            line: 0,
        };
        Update {
            applied: objects.into_iter().map(|o| (o, origin())).collect(),
            ..Update::default()
        }
    }

    fn deleted(kind: Kind, namespace: &str, name: &str) -> Update {
        Update {
            deleted: vec![ObjectKey {
                kind,
                namespace: namespace.into(),
                name: name.into(),
            }],
            ..Update::default()
        }
    }

    fn namespace(name: &str, phase: &str) -> Object {
        Object::Namespace(Namespace {
            metadata: Meta {
                name: name.into(),
                ..Meta::default()
            },
            status: NamespaceStatus {
                phase: phase.into(),
            },
        })
    }

    fn config_map_object(ns: &str, name: &str, root: &str, labelled: bool) -> Object {
        let (label, value) = CONFIG_LABEL;
        Object::ConfigMap(ConfigMap {
            metadata: Meta {
                name: name.into(),
                namespace: ns.into(),
                labels: labelled
                    .then(|| (label.to_string(), value.to_string()))
                    .into_iter()
                    .collect(),
                ..Meta::default()
            },
            data: [(ROOT_CERT_KEY.to_string(), root.to_string())].into(),
        })
    }

    #[test]
    fn the_view_follows_namespaces_and_our_config_maps() {
        let mut v = Namespaces::default();
        let ours = ROOT_CERT_CONFIG_MAP;
        // What happened, whether the view changed, the targets, the ConfigMaps seen.
        type Step = (
            &'static str,
            Update,
            bool,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let steps: Vec<Step> = vec![
            (
                "namespaces",
                applied(vec![
                    namespace("shop", "Active"),
                    namespace("kube-public", "Active"),
                    namespace("web", ""),
                ]),
                true,
                vec!["shop", "web"],
                vec![],
            ),
            (
                "the same again",
                applied(vec![namespace("shop", "Active")]),
                false,
                vec!["shop", "web"],
                vec![],
            ),
            (
                "our config map",
                applied(vec![config_map_object("shop", ours, ROOT, true)]),
                true,
                vec!["shop", "web"],
                vec!["shop"],
            ),
            (
                "another config map",
                applied(vec![config_map_object("web", "settings", ROOT, true)]),
                false,
                vec!["shop", "web"],
                vec!["shop"],
            ),
            (
                "ours edited",
                applied(vec![config_map_object("shop", ours, "x", true)]),
                true,
                vec!["shop", "web"],
                vec!["shop"],
            ),
            (
                "web terminating",
                applied(vec![namespace("web", "Terminating")]),
                true,
                vec!["shop"],
                vec!["shop"],
            ),
            (
                "another config map deleted",
                deleted(Kind::ConfigMap, "web", "settings"),
                false,
                vec!["shop"],
                vec!["shop"],
            ),
            (
                "ours deleted",
                deleted(Kind::ConfigMap, "shop", ours),
                true,
                vec!["shop"],
                vec![],
            ),
            (
                "shop deleted",
                deleted(Kind::Namespace, "", "shop"),
                true,
                vec![],
                vec![],
            ),
        ];
        for (what, update, changed, want_targets, want_published) in steps {
            assert_eq!(v.apply(&update), changed, "{what}");
            assert_eq!(targets(&v).collect::<Vec<_>>(), want_targets, "{what}");
            let published: Vec<&str> = v.published.keys().map(String::as_str).collect();
            assert_eq!(published, want_published, "{what}");
        }
        assert_eq!(v.namespaces.len(), 2, "web and kube-public remain");
    }
}
