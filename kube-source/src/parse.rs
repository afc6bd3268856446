//! One Kubernetes document (YAML text) or API object (JSON value) into typed [`Object`]s.
//!
//! Both sources go through one generic path, [`parse_with`], over any serde `Deserializer`
//! it can create afresh for the same input: a `serde_yaml::Deserializer` over the document
//! text, which knows lines and field paths, or a `&serde_json::Value`, which knows neither.
//! Deserializing from the text (not from a `serde_yaml::Value`) is what keeps positions.
//!
//! The rules, in order:
//! 1. The envelope (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`, `items`) is
//!    read first. If it cannot be read (YAML syntax error, a document that is not a mapping)
//!    the document yields one error with no key.
//! 2. A `List` (`kind: List`, or `PodList`... with `items`), as `kubectl get -o yaml` prints
//!    it, yields one outcome per item, in order. Items of a `FooList` that omit `kind` and
//!    `apiVersion` (as the API server sends them) take `Foo` and the list's `apiVersion`.
//!    A List inside a List is an error. All items are decoded in one pass; only when one of
//!    them fails is each item decoded again on its own from the whole document (that is what
//!    keeps lines and tells the good items from the bad), which costs the items times the
//!    document's size: past [`LIST_REREAD_BUDGET`] the List yields the first error alone,
//!    not a parse that stalls the source for minutes.
//! 3. A missing `apiVersion` or `kind` is an error; a kind the mesh does not read (Secret,
//!    DaemonSet, ...; a manifest's Deployment, while the cluster's are read) is
//!    [`Parsed::Skipped`], not an error.
//! 4. A missing or empty `metadata.name` is an error (no key: the object cannot be named).
//! 5. Namespaced kinds with no `metadata.namespace` get `default`, as `kubectl apply` does;
//!    cluster-scoped kinds (Namespace) always have an empty namespace.
//! 6. The typed fields are deserialized; a wrong type is an error carrying the object's key,
//!    so a source can keep the last good version. Istio security kinds are kept whole
//!    ([`RawPolicy`]): only their `metadata` is checked here.
//!
//! Errors carry the line within the document (YAML only) and the field path that serde_yaml
//! puts in its messages (`spec.ports[0].port: invalid type ...`), split out into `field`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::objects::{Kind, Meta, Object, ObjectKey, RawPolicy};

/// What one object of a document turned out to be.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "Skipped is rare and short-lived; boxing would cost an allocation per object"
)]
pub enum Parsed {
    Object(Object),
    /// A kind the mesh does not read (Deployment, Secret, ...): not an error, worth a
    /// debug line.
    Skipped {
        api_version: String,
        kind: String,
        name: String,
    },
}

/// Why one document, or one item of a List, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.line, .field, .message))]
pub struct ParseError {
    /// The object the error belongs to, when its kind, namespace and name could be read:
    /// a source keeps the last good version of that object.
    pub key: Option<ObjectKey>,
    /// 1-based line within the document (YAML only), when the parser knows it.
    pub line: Option<usize>,
    /// The field at fault, like `spec.ports[0].port` or `items[2].metadata.name`.
    pub field: Option<String>,
    /// What is wrong, without the field and position.
    pub message: String,
}

fn describe(line: &Option<usize>, field: &Option<String>, message: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(field) = field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// The most YAML text a broken List's items may make the parser read again to locate its
/// errors (rule 2), a few seconds of parsing at worst: a List of about 110 pods of 5 KB.
/// Without it a List of 1000 small pods (450 KB) is 450 MB of parsing, tens of seconds, and
/// each further item makes every item dearer. A List whose items all decode is read once.
pub(crate) const LIST_REREAD_BUDGET: usize = 64 << 20;

/// Parses one YAML document (the text between two `---` lines). A document with nothing but
/// blank lines and comments yields nothing; a List yields one outcome per item.
pub fn parse_yaml_document(doc: &str) -> Vec<Result<Parsed, ParseError>> {
    if !doc.lines().any(is_content_line) {
        return Vec::new();
    }
    parse_with(
        || serde_yaml::Deserializer::from_str(doc),
        doc.len(),
        Read::FromManifest,
    )
}

/// Parses one object (or List) as the API server sends it. Errors have no line, and no
/// field path except for the envelope fields checked here.
pub fn parse_json_object(value: &serde_json::Value) -> Vec<Result<Parsed, ParseError>> {
    // Skipping the items before the one decoded is cheap in a `Value`: no budget needed.
    parse_with(|| value, 0, Read::FromCluster)
}

/// Whether a line holds YAML content (not blank, not only a comment).
pub(crate) fn is_content_line(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// A deserializer error that may know its line.
trait DecodeError: fmt::Display {
    fn line(&self) -> Option<usize>;
}

impl DecodeError for serde_yaml::Error {
    fn line(&self) -> Option<usize> {
        self.location().map(|l| l.line())
    }
}

impl DecodeError for serde_json::Error {
    fn line(&self) -> Option<usize> {
        // Errors from deserializing a `Value` have no position.
        None
    }
}

/// The envelope every object shares, read before its kind is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a Kubernetes object")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: EnvelopeMeta,
    #[serde(default)]
    items: Option<Vec<Envelope>>,
}

#[derive(Default, Deserialize)]
struct EnvelopeMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

impl Envelope {
    fn is_list(&self) -> bool {
        self.kind == "List" || (self.kind.ends_with("List") && self.items.is_some())
    }
}

/// Where a document comes from: a manifest's Deployments are the apps', which the mesh does not
/// read; the cluster source lists only meshd's own (by label), so it reads those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    FromManifest,
    FromCluster,
}

impl Read {
    fn reads(self, kind: Kind) -> bool {
        self == Read::FromCluster || kind != Kind::Deployment
    }
}

/// The one parsing path: `new_de` makes a fresh deserializer over the same input each time
/// it is called (once for the envelope, once per typed item); each call reads `reread` bytes.
fn parse_with<'de, D, F>(new_de: F, reread: usize, from: Read) -> Vec<Result<Parsed, ParseError>>
where
    F: Fn() -> D,
    D: Deserializer<'de>,
    D::Error: DecodeError,
{
    let envelope = match Envelope::deserialize(new_de()) {
        Ok(envelope) => envelope,
        Err(e) => return vec![Err(ParseError::decode(None, &e))],
    };
    if !envelope.is_list() {
        let Envelope {
            api_version,
            kind,
            metadata,
            ..
        } = &envelope;
        let outcome = check_item(None, api_version, kind, metadata, from).and_then(|c| match c {
            Checked::Skipped(s) => Ok(*s),
            Checked::Decode(key) => decode_kind(&new_de, None, key.kind)
                .map(|object| finish(key.clone(), object))
                .map_err(|e| ParseError::decode(Some(key), &e)),
        });
        return vec![outcome];
    }
    let item_kind = envelope.kind.strip_suffix("List").unwrap_or_default();
    let items = envelope.items.as_deref().unwrap_or_default();
    // What each item is: its checks (rules 3 to 5) and the kind to decode it as.
    let checked: Vec<Result<Checked, ParseError>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.is_list() {
                return Err(ParseError::plain(
                    format!("items[{i}].kind"),
                    "a List inside a List is not supported",
                ));
            }
            let (api_version, kind) = item_type(&envelope, item_kind, item);
            check_item(Some(i), api_version, kind, &item.metadata, from)
        })
        .collect();
    let kinds: Vec<Option<Kind>> = checked
        .iter()
        .map(|c| match c {
            Ok(Checked::Decode(key)) => Some(key.kind),
            _ => None,
        })
        .collect();
    // The common case, a List whose items all decode: one pass over the document.
    let first_error = match decode_items(new_de(), &kinds) {
        Ok(objects) => {
            return checked
                .into_iter()
                .zip(objects)
                .map(|(c, object)| match (c?, object) {
                    (Checked::Decode(key), Some(object)) => Ok(finish(key, object)),
                    (Checked::Skipped(s), _) => Ok(*s),
                    // `kinds` asked for every `Decode` item, so this is not reached.
                    (Checked::Decode(key), None) => Err(ParseError::plain(
                        "items".to_string(),
                        &format!("{key} was not decoded"),
                    )),
                })
                .collect();
        }
        Err(e) => e,
    };
    let decoded = kinds.iter().flatten().count();
    if decoded.saturating_mul(reread) > LIST_REREAD_BUDGET {
        let mut error = ParseError::decode(None, &first_error);
        error.message = format!(
            "{}; this List of {decoded} objects in {reread} bytes is too large to locate \
             every error item by item, so none of its objects is applied: fix this one, or \
             split it into one document per object (separated by `---` lines)",
            error.message
        );
        return vec![Err(error)];
    }
    checked
        .into_iter()
        .enumerate()
        .map(|(i, c)| match c? {
            Checked::Skipped(s) => Ok(*s),
            Checked::Decode(key) => decode_kind(&new_de, Some(i), key.kind)
                .map(|object| finish(key.clone(), object))
                .map_err(|e| ParseError::decode(Some(key), &e)),
        })
        .collect()
}

/// A List item's `apiVersion` and `kind`: its own, or the List's when it has neither.
fn item_type<'a>(list: &'a Envelope, item_kind: &'a str, item: &'a Envelope) -> (&'a str, &'a str) {
    if item.kind.is_empty() && item.api_version.is_empty() {
        (list.api_version.as_str(), item_kind)
    } else {
        (item.api_version.as_str(), item.kind.as_str())
    }
}

/// Rules 3 to 5 for one object, the document itself (`item` None) or `items[item]`: what to
/// decode it as, or why not.
enum Checked {
    Decode(ObjectKey),
    /// Boxed: skipped kinds are rare, and the key is what most items carry.
    Skipped(Box<Parsed>),
}

fn check_item(
    item: Option<usize>,
    api_version: &str,
    kind_name: &str,
    meta: &EnvelopeMeta,
    from: Read,
) -> Result<Checked, ParseError> {
    let field = |name: &str| match item {
        Some(i) => format!("items[{i}].{name}"),
        None => name.to_string(),
    };
    if api_version.is_empty() {
        return Err(ParseError::plain(
            field("apiVersion"),
            "missing field `apiVersion`",
        ));
    }
    if kind_name.is_empty() {
        return Err(ParseError::plain(field("kind"), "missing field `kind`"));
    }
    let Some(kind) = Kind::from_type(api_version, kind_name).filter(|k| from.reads(*k)) else {
        return Ok(Checked::Skipped(Box::new(Parsed::Skipped {
            api_version: api_version.to_string(),
            kind: kind_name.to_string(),
            name: meta.name.clone(),
        })));
    };
    if meta.name.is_empty() {
        return Err(ParseError::plain(
            field("metadata.name"),
            "missing field `name`",
        ));
    }
    let namespace = match (kind.namespaced(), meta.namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => "default".to_string(),
        (true, false) => meta.namespace.clone(),
    };
    Ok(Checked::Decode(ObjectKey {
        kind,
        namespace,
        name: meta.name.clone(),
    }))
}

/// Rule 5 applied to a decoded object: the namespace its key says.
fn finish(key: ObjectKey, mut object: Object) -> Parsed {
    if object.meta().namespace != key.namespace {
        object.meta_mut().namespace = key.namespace.clone();
        // Keep a policy's raw value saying the same as its metadata.
        let raw_meta = match &mut object {
            Object::AuthorizationPolicy(p)
            | Object::PeerAuthentication(p)
            | Object::RequestAuthentication(p) => p.value.get_mut("metadata"),
            _ => None,
        };
        if let Some(serde_yaml::Value::Mapping(m)) = raw_meta {
            m.insert("namespace".into(), key.namespace.into());
        }
    }
    Parsed::Object(object)
}

/// An Istio security resource's envelope: only `metadata` is checked here.
#[derive(Deserialize)]
#[serde(expecting = "a Kubernetes object")]
struct PolicyEnvelope {
    #[serde(default)]
    metadata: Meta,
}

fn decode_kind<'de, D, F>(new_de: &F, item: Option<usize>, kind: Kind) -> Result<Object, D::Error>
where
    F: Fn() -> D,
    D: Deserializer<'de>,
{
    let policy = || -> Result<RawPolicy, D::Error> {
        let metadata = At::<PolicyEnvelope>::new(item)
            .deserialize(new_de())?
            .metadata;
        let value = At::<serde_yaml::Value>::new(item).deserialize(new_de())?;
        Ok(RawPolicy { metadata, value })
    };
    Ok(match kind {
        Kind::Namespace => Object::Namespace(At::new(item).deserialize(new_de())?),
        Kind::Pod => Object::Pod(At::new(item).deserialize(new_de())?),
        Kind::Service => Object::Service(At::new(item).deserialize(new_de())?),
        Kind::ServiceAccount => Object::ServiceAccount(At::new(item).deserialize(new_de())?),
        Kind::Gateway => Object::Gateway(At::new(item).deserialize(new_de())?),
        Kind::AuthorizationPolicy => Object::AuthorizationPolicy(policy()?),
        Kind::PeerAuthentication => Object::PeerAuthentication(policy()?),
        Kind::RequestAuthentication => Object::RequestAuthentication(policy()?),
        Kind::LocalRateLimit => Object::LocalRateLimit(policy()?),
        Kind::Telemetry => Object::Telemetry(policy()?),
        Kind::ConfigMap => Object::ConfigMap(At::new(item).deserialize(new_de())?),
        Kind::Deployment => Object::Deployment(At::new(item).deserialize(new_de())?),
    })
}

/// Deserializes a `T` from the whole input (`item` None) or from its `items[i]`, skipping the
/// rest, so a deserializer that tracks positions reports them in the whole input.
struct At<T> {
    item: Option<usize>,
    marker: PhantomData<fn() -> T>,
}

impl<T> At<T> {
    fn new(item: Option<usize>) -> Self {
        At {
            item,
            marker: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for At<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        match self.item {
            None => T::deserialize(d),
            Some(index) => d.deserialize_map(ItemsVisitor {
                seed: Nth::<T> {
                    index,
                    marker: PhantomData,
                },
            }),
        }
    }
}

/// Finds `items` in a List and decodes it with `seed`, skipping the other fields.
struct ItemsVisitor<S> {
    seed: S,
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for ItemsVisitor<S> {
    type Value = S::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a List")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S::Value, A::Error> {
        let mut seed = Some(self.seed);
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            match seed.take() {
                Some(s) if key == "items" => found = Some(map.next_value_seed(s)?),
                other => {
                    seed = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        found.ok_or_else(|| de::Error::missing_field("items"))
    }
}

/// Decodes every item of a List in one pass: `kinds[i]` is what to decode `items[i]` as, or
/// None to skip it.
fn decode_items<'de, D: Deserializer<'de>>(
    d: D,
    kinds: &[Option<Kind>],
) -> Result<Vec<Option<Object>>, D::Error> {
    d.deserialize_map(ItemsVisitor {
        seed: AllItems { kinds },
    })
}

struct AllItems<'k> {
    kinds: &'k [Option<Kind>],
}

impl<'de> DeserializeSeed<'de> for AllItems<'_> {
    type Value = Vec<Option<Object>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AllItems<'_> {
    type Value = Vec<Option<Object>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of {} items", self.kinds.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.kinds.len());
        for (i, kind) in self.kinds.iter().enumerate() {
            match seq.next_element_seed(OneItem { kind: *kind })? {
                Some(object) => out.push(object),
                None => return Err(de::Error::invalid_length(i, &self)),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// One List item decoded as `kind`, or skipped.
struct OneItem {
    kind: Option<Kind>,
}

impl<'de> DeserializeSeed<'de> for OneItem {
    type Value = Option<Object>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let Some(kind) = self.kind else {
            IgnoredAny::deserialize(d)?;
            return Ok(None);
        };
        let policy = |d: D| -> Result<RawPolicy, D::Error> {
            let value = serde_yaml::Value::deserialize(d)?;
            let metadata = PolicyEnvelope::deserialize(&value)
                .map_err(de::Error::custom)?
                .metadata;
            Ok(RawPolicy { metadata, value })
        };
        Ok(Some(match kind {
            Kind::Namespace => Object::Namespace(Deserialize::deserialize(d)?),
            Kind::Pod => Object::Pod(Deserialize::deserialize(d)?),
            Kind::Service => Object::Service(Deserialize::deserialize(d)?),
            Kind::ServiceAccount => Object::ServiceAccount(Deserialize::deserialize(d)?),
            Kind::Gateway => Object::Gateway(Deserialize::deserialize(d)?),
            Kind::AuthorizationPolicy => Object::AuthorizationPolicy(policy(d)?),
            Kind::PeerAuthentication => Object::PeerAuthentication(policy(d)?),
            Kind::RequestAuthentication => Object::RequestAuthentication(policy(d)?),
            Kind::LocalRateLimit => Object::LocalRateLimit(policy(d)?),
            Kind::Telemetry => Object::Telemetry(policy(d)?),
            Kind::ConfigMap => Object::ConfigMap(Deserialize::deserialize(d)?),
            Kind::Deployment => Object::Deployment(Deserialize::deserialize(d)?),
        }))
    }
}

/// The `index`th element of a sequence, the others skipped.
struct Nth<T> {
    index: usize,
    marker: PhantomData<fn() -> T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Nth<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Nth<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at least {} items", self.index + 1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        for i in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::invalid_length(i, &self));
            }
        }
        let Some(value) = seq.next_element::<T>()? else {
            return Err(de::Error::invalid_length(self.index, &self));
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(value)
    }
}

impl ParseError {
    /// An error found by the checks here, which know the field but not the line.
    fn plain(field: String, message: &str) -> Self {
        ParseError {
            key: None,
            line: None,
            field: Some(field),
            message: message.to_string(),
        }
    }

    /// A deserializer's error: the field path split out of its message, positions removed
    /// (the line is kept in `line`).
    fn decode(key: Option<ObjectKey>, e: &impl DecodeError) -> Self {
        let (field, message) = split_message(&e.to_string());
        ParseError {
            key,
            line: e.line(),
            field,
            message,
        }
    }
}

/// Splits serde_yaml's `path: message at line N column M` into the path and the message.
/// `missing field `x`` errors name the struct holding it; the field returned names `x` too.
fn split_message(raw: &str) -> (Option<String>, String) {
    let message = strip_marks(raw);
    let (path, rest) = match message.split_once(": ") {
        Some((path, rest)) if looks_like_path(path) => (Some(path), rest),
        _ => (None, message.as_str()),
    };
    let missing = rest
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'));
    let field = match (path, missing) {
        (Some(path), Some(name)) => Some(format!("{path}.{name}")),
        (None, Some(name)) => Some(name.to_string()),
        (path, None) => path.map(str::to_string),
    };
    (field, rest.to_string())
}

/// serde_yaml paths look like `spec.ports[0].port`: no spaces, unlike message prefixes such as
/// `invalid type`.
fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('`')
}

/// Removes ` at line N column M` and ` at position N`: they count within the document, and
/// the caller reports the line in the file.
fn strip_marks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at ".len()..];
        match mark_len(after) {
            Some(n) => rest = &after[n..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of `line N column M` or `position N` at the start of `s`.
fn mark_len(s: &str) -> Option<usize> {
    fn digits(s: &str) -> usize {
        s.bytes().take_while(u8::is_ascii_digit).count()
    }
    if let Some(r) = s.strip_prefix("line ") {
        let n = digits(r);
        let c = r[n..].strip_prefix(" column ")?;
        let m = digits(c);
        (n > 0 && m > 0).then_some("line ".len() + n + " column ".len() + m)
    } else {
        let r = s.strip_prefix("position ")?;
        let n = digits(r);
        (n > 0).then_some("position ".len() + n)
    }
}

#[cfg(test)]
mod tests;
