//! Typed handlers: the client decodes each resource into `T` and hands the handler whole
//! batches, so one push is applied (and ACKed or NACKed) as a unit.

use prost::Message;

/// One response's worth of changes to resources of type `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes<T> {
    /// Added or changed resources, by resource name.
    pub upserts: Vec<(String, T)>,
    /// Names of resources the server removed.
    pub removed: Vec<String>,
}

/// A resource the handler (or the decoder) refused; the NACK names it with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

/// Applies changes to one resource type. Valid resources of a batch must still be applied
/// when others are rejected; a rejected resource keeps its previous version (if any).
pub trait Handler<T>: Send + 'static {
    fn apply(&mut self, changes: Changes<T>) -> Vec<Rejection>;
}

impl<T, F> Handler<T> for F
where
    F: FnMut(Changes<T>) -> Vec<Rejection> + Send + 'static,
{
    fn apply(&mut self, changes: Changes<T>) -> Vec<Rejection> {
        self(changes)
    }
}

/// A resource as it arrived, before decoding.
pub(crate) struct Raw {
    pub name: String,
    pub type_url: String,
    pub value: bytes::Bytes,
}

/// A handler behind a type-erased face, so the client can hold one per type URL.
pub(crate) trait ErasedHandler: Send {
    fn apply_raw(&mut self, upserts: Vec<Raw>, removed: Vec<String>) -> Vec<Rejection>;
}

pub(crate) struct Typed<T, H> {
    pub type_url: String,
    pub handler: H,
    pub _marker: std::marker::PhantomData<fn() -> T>,
}

impl<T, H> ErasedHandler for Typed<T, H>
where
    T: Message + Default + 'static,
    H: Handler<T>,
{
    fn apply_raw(&mut self, upserts: Vec<Raw>, removed: Vec<String>) -> Vec<Rejection> {
        let mut rejected = Vec::new();
        let mut decoded = Vec::with_capacity(upserts.len());
        for raw in upserts {
            if raw.type_url != self.type_url {
                rejected.push(Rejection {
                    reason: format!(
                        "resource type {:?} sent on the {:?} subscription",
                        raw.type_url, self.type_url
                    ),
                    name: raw.name,
                });
                continue;
            }
            match T::decode(raw.value) {
                Ok(v) => decoded.push((raw.name, v)),
                Err(e) => rejected.push(Rejection {
                    name: raw.name,
                    reason: format!("cannot decode: {e}"),
                }),
            }
        }
        if !decoded.is_empty() || !removed.is_empty() {
            rejected.extend(self.handler.apply(Changes {
                upserts: decoded,
                removed,
            }));
        }
        rejected
    }
}
