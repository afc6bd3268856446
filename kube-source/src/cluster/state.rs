//! One kind as last seen from the API server, without IO: what a list or one line of a watch
//! stream changes ([`Change`]), and where the next watch starts.
//!
//! What it keeps is what a relist must be compared with (rule 3 of the module): the key and
//! resourceVersion of every object seen, readable or not, and the errors of those that were
//! not. Objects themselves are not kept; the consumer has them.

use std::collections::BTreeMap;

use kube::core::ErrorResponse;
use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use super::Resource;
use crate::manifest::{ManifestError, Origin};
use crate::objects::{Kind, Object, ObjectKey};
use crate::parse::{Parsed, parse_json_object};

/// What a list or a watch event changed in one kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub kind: Kind,
    /// New or changed objects, in key order.
    pub applied: Vec<(Object, Origin)>,
    /// Keys gone, in key order.
    pub deleted: Vec<ObjectKey>,
    /// The kind's complete error list, when it changed.
    pub errors: Option<Vec<ManifestError>>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.deleted.is_empty() && self.errors.is_none()
    }
}

/// What one line of a watch stream means.
#[derive(Debug)]
pub(crate) enum Step {
    /// `ADDED`, `MODIFIED` or `DELETED`; possibly an empty change (a bad object whose error
    /// did not change).
    Changed(Change),
    /// `BOOKMARK`: only the resourceVersion moved.
    Bookmark,
    /// `ERROR` with code 410: the history is gone; list again.
    Expired(ErrorResponse),
    /// `ERROR` with another code: watch again from the same resourceVersion, after a pause.
    Failed(ErrorResponse),
    /// Not JSON, or not a watch event.
    Malformed(serde_json::Error),
    /// An event type this client does not know; ignored.
    Unknown(String),
}

/// One line of a watch stream: `{"type": "ADDED", "object": {...}}`.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: Value,
}

#[derive(Debug)]
pub(crate) struct KindState {
    kind: Kind,
    resource: Resource,
    /// Where the next watch starts; `None` before the first list and after a 410.
    resource_version: Option<String>,
    /// Every object seen, readable or not, and its resourceVersion (empty if it had none).
    known: BTreeMap<ObjectKey, String>,
    /// Why objects could not be read, by key.
    errors: BTreeMap<ObjectKey, ManifestError>,
    /// List items that could not even be named; replaced by the next list.
    unnamed: Vec<ManifestError>,
}

/// One object read from the server.
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived, and nearly always an Object; boxing would allocate per object"
)]
enum Read {
    Object(Object),
    /// Unreadable; the key when its kind, namespace and name could be read.
    Error(Option<ObjectKey>, ManifestError),
    /// Not a kind the mesh reads (a server answering with something else).
    Skipped,
}

impl KindState {
    pub fn new(kind: Kind) -> Self {
        KindState {
            kind,
            resource: Resource::of(kind),
            resource_version: None,
            known: BTreeMap::new(),
            errors: BTreeMap::new(),
            unnamed: Vec::new(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where the next watch starts; `None` when the kind must be listed first.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The watch history is gone (or the kind vanished): the next step is a list.
    pub fn expire(&mut self) {
        self.resource_version = None;
    }

    /// A full list at `resource_version`: applies what is new or changed and deletes what is
    /// known but absent.
    pub fn relisted(&mut self, resource_version: String, items: Vec<Value>) -> Change {
        let errors_before = self.error_list();
        let mut known = BTreeMap::new();
        let mut errors = BTreeMap::new();
        self.unnamed.clear();
        let mut applied = Vec::new();
        for item in items {
            let version = resource_version_of(&item).to_string();
            match self.read(item) {
                Read::Object(object) => {
                    let key = object.key();
                    let unchanged = !version.is_empty()
                        && self.known.get(&key) == Some(&version)
                        && !self.errors.contains_key(&key);
                    if !unchanged {
                        let origin = self.resource.origin(&key.namespace, &key.name);
                        applied.push((object, origin));
                    }
                    known.insert(key, version);
                }
                Read::Error(Some(key), e) => {
                    known.insert(key.clone(), version);
                    errors.insert(key, e);
                }
                Read::Error(None, e) => self.unnamed.push(e),
                Read::Skipped => {}
            }
        }
        applied.sort_by_cached_key(|(o, _)| o.key());
        let deleted = self
            .known
            .keys()
            .filter(|k| !known.contains_key(*k))
            .cloned()
            .collect();
        self.known = known;
        self.errors = errors;
        self.resource_version = Some(resource_version);
        self.change(applied, deleted, errors_before)
    }

    /// The server does not serve the kind (404): it has no objects, and must be listed again.
    pub fn not_served(&mut self) -> Change {
        let errors_before = self.error_list();
        let deleted = std::mem::take(&mut self.known).into_keys().collect();
        self.errors.clear();
        self.unnamed.clear();
        self.resource_version = None;
        self.change(Vec::new(), deleted, errors_before)
    }

    /// One line of a watch stream.
    pub fn event(&mut self, line: &str) -> Step {
        let event: Event = match serde_json::from_str(line) {
            Ok(event) => event,
            Err(e) => return Step::Malformed(e),
        };
        match event.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                self.advance(&event.object);
                Step::Changed(self.upsert(event.object))
            }
            "DELETED" => {
                self.advance(&event.object);
                Step::Changed(self.delete(&event.object))
            }
            "BOOKMARK" => {
                self.advance(&event.object);
                Step::Bookmark
            }
            "ERROR" => {
                let status = status_of(event.object);
                if status.code == 410 {
                    self.expire();
                    Step::Expired(status)
                } else {
                    Step::Failed(status)
                }
            }
            _ => Step::Unknown(event.kind),
        }
    }

    /// Records the resourceVersion an event carries: the next watch starts after it.
    fn advance(&mut self, object: &Value) {
        let version = resource_version_of(object);
        if !version.is_empty() {
            self.resource_version = Some(version.to_string());
        }
    }

    fn upsert(&mut self, object: Value) -> Change {
        let errors_before = self.error_list();
        let version = resource_version_of(&object).to_string();
        let mut applied = Vec::new();
        match self.read(object) {
            Read::Object(object) => {
                let key = object.key();
                self.errors.remove(&key);
                applied.push((object, self.resource.origin(&key.namespace, &key.name)));
                self.known.insert(key, version);
            }
            Read::Error(Some(key), e) => {
                self.known.insert(key.clone(), version);
                self.errors.insert(key, e);
            }
            Read::Error(None, e) => {
                if !self.unnamed.contains(&e) {
                    self.unnamed.push(e);
                }
            }
            Read::Skipped => {}
        }
        self.change(applied, Vec::new(), errors_before)
    }

    fn delete(&mut self, object: &Value) -> Change {
        let errors_before = self.error_list();
        let mut deleted = Vec::new();
        if let Some(key) = self.key_of(object) {
            self.errors.remove(&key);
            if self.known.remove(&key).is_some() {
                deleted.push(key);
            }
        }
        self.change(Vec::new(), deleted, errors_before)
    }

    fn change(
        &self,
        applied: Vec<(Object, Origin)>,
        deleted: Vec<ObjectKey>,
        errors_before: Vec<ManifestError>,
    ) -> Change {
        let errors = self.error_list();
        Change {
            kind: self.kind,
            applied,
            deleted,
            errors: (errors != errors_before).then_some(errors),
        }
    }

    /// The kind's current errors: by key, then the unnamed ones.
    fn error_list(&self) -> Vec<ManifestError> {
        self.errors.values().chain(&self.unnamed).cloned().collect()
    }

    /// Reads one object through the parser both sources share.
    fn read(&self, mut object: Value) -> Read {
        // The API server omits these in the items of core lists.
        if let Value::Object(map) = &mut object {
            map.entry("apiVersion")
                .or_insert_with(|| self.resource.api_version.into());
            map.entry("kind")
                .or_insert_with(|| self.kind.as_str().into());
        }
        let Some(outcome) = parse_json_object(&object).into_iter().next() else {
            return Read::Skipped;
        };
        match outcome {
            Ok(Parsed::Object(o)) if o.kind() == self.kind => Read::Object(o),
            Ok(Parsed::Object(o)) => {
                let key = o.key();
                let message = format!("the server sent a {} for {}", o.kind(), self.kind);
                Read::Error(Some(key.clone()), self.error(Some(&key), None, message))
            }
            Ok(Parsed::Skipped {
                api_version,
                kind,
                name,
            }) => {
                debug!(%api_version, %kind, %name, watched = %self.kind, "skipping another kind");
                Read::Skipped
            }
            Err(e) => {
                let error = self.error(e.key.as_ref(), e.field, e.message);
                Read::Error(e.key, error)
            }
        }
    }

    /// A [`ManifestError`] located at the object's API path (the collection when unnamed).
    fn error(
        &self,
        key: Option<&ObjectKey>,
        field: Option<String>,
        message: String,
    ) -> ManifestError {
        let file = match key {
            Some(k) => self.resource.object(&k.namespace, &k.name),
            None => self.resource.collection().into(),
        };
        ManifestError {
            file,
            line: 0,
            field,
            message,
        }
    }

    /// The key of a deleted object, from its metadata alone (its other fields may not read).
    fn key_of(&self, object: &Value) -> Option<ObjectKey> {
        let name = object.pointer("/metadata/name")?.as_str()?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = match (self.kind.namespaced(), namespace) {
            (false, _) => "",
            (true, "") => "default",
            (true, ns) => ns,
        };
        Some(ObjectKey {
            kind: self.kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

fn resource_version_of(object: &Value) -> &str {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The `Status` of an `ERROR` event, however incomplete.
fn status_of(object: Value) -> ErrorResponse {
    let code = object
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(0);
    serde_json::from_value(object.clone()).unwrap_or_else(|_| ErrorResponse {
        status: "Failure".into(),
        message: object.to_string(),
        reason: String::new(),
        code,
    })
}

#[cfg(test)]
mod tests;
