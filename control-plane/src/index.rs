//! The current Kubernetes objects, as the sources last reported them.
//!
//! Keyed by kind first, so each kind is one contiguous range: translation walks a kind
//! without filtering the rest.

use std::collections::BTreeMap;
use std::ops::Bound;

use kube_source::{
    Gateway, Kind, Namespace, Object, ObjectKey, Pod, RawPolicy, Service, ServiceAccount,
};

#[derive(Debug, Default, Clone)]
pub struct Index {
    objects: BTreeMap<ObjectKey, Object>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object; false when it was already there unchanged.
    pub fn apply(&mut self, object: Object) -> bool {
        let key = object.key();
        if self.objects.get(&key) == Some(&object) {
            return false;
        }
        self.objects.insert(key, object);
        true
    }

    /// Removes an object; false when it was not there.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        self.objects.remove(key).is_some()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every object of `kind`, ordered by namespace then name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        let start = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Every object of `kind` in `namespace`, ordered by name.
    pub fn of_kind_in<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Object> {
        let start = ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
            .map(|(_, o)| o)
    }

    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pod> {
        self.of_kind_in(Kind::Pod, namespace)
            .filter_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            })
    }

    pub fn services_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Service> {
        self.of_kind_in(Kind::Service, namespace)
            .filter_map(|o| match o {
                Object::Service(s) => Some(s),
                _ => None,
            })
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.of_kind(Kind::Namespace).filter_map(|o| match o {
            Object::Namespace(n) => Some(n),
            _ => None,
        })
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.objects.get(&ObjectKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: name.to_string(),
        }) {
            Some(Object::Namespace(n)) => Some(n),
            _ => None,
        }
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.of_kind(Kind::Pod).filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self.objects.get(&ObjectKey {
            kind: Kind::Pod,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.of_kind(Kind::Service).filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
    }

    pub fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.of_kind(Kind::ServiceAccount).filter_map(|o| match o {
            Object::ServiceAccount(s) => Some(s),
            _ => None,
        })
    }

    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.of_kind(Kind::Gateway).filter_map(|o| match o {
            Object::Gateway(g) => Some(g),
            _ => None,
        })
    }

    pub fn authorization_policies(&self) -> impl Iterator<Item = &RawPolicy> {
        self.of_kind(Kind::AuthorizationPolicy)
            .filter_map(|o| match o {
                Object::AuthorizationPolicy(p) => Some(p),
                _ => None,
            })
    }

    pub fn peer_authentications(&self) -> impl Iterator<Item = &RawPolicy> {
        self.of_kind(Kind::PeerAuthentication)
            .filter_map(|o| match o {
                Object::PeerAuthentication(p) => Some(p),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::Meta;

    fn pod(ns: &str, name: &str, sa: &str, node: &str) -> Object {
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
        Object::Pod(p)
    }

    #[test]
    fn kinds_are_ranges() {
        let mut idx = Index::new();
        assert!(idx.apply(pod("a", "p1", "web", "n1")));
        assert!(!idx.apply(pod("a", "p1", "web", "n1")), "unchanged apply");
        idx.apply(pod("b", "p2", "", "n1"));
        idx.apply(pod("b", "p3", "db", "n2"));
        idx.apply(Object::Namespace(Namespace {
            metadata: Meta {
                name: "a".into(),
                ..Default::default()
            },
            ..Default::default()
        }));
        assert_eq!(idx.pods().count(), 3);
        assert_eq!(idx.namespaces().count(), 1);
        assert!(idx.namespace("a").is_some());
        assert!(idx.delete(&pod("b", "p3", "db", "n2").key()));
        assert!(
            !idx.delete(&pod("b", "p3", "db", "n2").key()),
            "already gone"
        );
        assert_eq!(idx.pods().count(), 2);
    }
}
