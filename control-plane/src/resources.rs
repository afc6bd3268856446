//! The xDS resources meshd serves, each with a name, aliases and a content-derived version.
//!
//! Translation produces a whole [`Resources`] set; the server diffs it against what each
//! client holds, so a change sends only the resources whose version moved.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One xDS resource, encoded once and shared by every client it is sent to. Every field is
/// shared, so a clone is a few reference counts: the translator, each published snapshot and
/// every client's session hold the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Workload: its uid; Service: `namespace/hostname`; Authorization: `namespace/name`.
    pub name: Arc<str>,
    /// Other names a client may subscribe by: `<network>/<IP>` per address.
    pub aliases: Arc<[String]>,
    /// Hex of a hash of the encoded body: equal bodies, equal versions, across restarts.
    pub version: Arc<str>,
    pub body: Arc<prost_types::Any>,
}

impl Resource {
    /// Encodes `message` as an `Any` of its type URL and versions it by content.
    pub fn new<M: prost::Name>(name: String, aliases: Vec<String>, message: &M) -> Resource {
        let value = prost::Message::encode_to_vec(message);
        let version = content_version(&value);
        Resource {
            name: name.into(),
            aliases: aliases.into(),
            version: version.into(),
            body: Arc::new(prost_types::Any {
                type_url: M::type_url(),
                value,
            }),
        }
    }

    /// Same name, version and aliases: what a client holding one needs no update for.
    pub fn same_as(&self, other: &Resource) -> bool {
        self.name == other.name && self.version == other.version && self.aliases == other.aliases
    }
}

/// First 16 hex digits of the SHA-256 of `bytes`.
pub fn content_version(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every resource of one type URL, by name (the resource's own shared name).
pub type ResourceSet = BTreeMap<Arc<str>, Resource>;

/// Everything meshd serves, by type URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// `type.googleapis.com/istio.workload.Address`: workloads and services.
    pub addresses: ResourceSet,
    /// `type.googleapis.com/istio.security.Authorization`.
    pub authorizations: ResourceSet,
}

impl Resources {
    /// The set served under `type_url`, if meshd serves that type.
    pub fn by_type(&self, type_url: &str) -> Option<&ResourceSet> {
        match type_url {
            proto::ADDRESS_TYPE_URL => Some(&self.addresses),
            proto::AUTHORIZATION_TYPE_URL => Some(&self.authorizations),
            _ => None,
        }
    }

    pub fn insert_address(&mut self, r: Resource) {
        self.addresses.insert(r.name.clone(), r);
    }

    pub fn insert_authorization(&mut self, r: Resource) {
        self.authorizations.insert(r.name.clone(), r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_content() {
        let a = proto::security::Authorization {
            name: "a".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        let r1 = Resource::new("ns/a".into(), vec![], &a);
        let r2 = Resource::new("ns/a".into(), vec![], &a.clone());
        assert_eq!(r1.version, r2.version);
        assert_eq!(r1.version.len(), 16);
        assert_eq!(r1.body.type_url, proto::AUTHORIZATION_TYPE_URL);
        let b = proto::security::Authorization { dry_run: true, ..a };
        assert_ne!(Resource::new("ns/a".into(), vec![], &b).version, r1.version);
    }
}
