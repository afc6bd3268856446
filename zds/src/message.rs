//! ZDS messages as typed values: the one place wire messages are checked.
//!
//! Rules (protocol.md 3.2, 3.3):
//! 1. ztunnel opens with `ZdsHello{version: V1}`; the agent refuses other versions.
//! 2. A `WorkloadRequest` carries exactly one payload. `AddWorkload` needs a uid and its
//!    `workload_info` and comes with exactly one descriptor, a network namespace; every other
//!    request comes with none.
//! 3. Each request is answered by one `Ack`, in order; a non-empty `error` is a NACK.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use prost::Message;
use proto::zds;

use crate::netns::{Netns, NetnsError};

/// Who a pod is: what ztunnel needs to serve it with its own identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadInfo {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

/// What the agent asks of ztunnel.
#[derive(Debug)]
pub enum Request {
    /// Start serving a pod inside its network namespace.
    Add {
        uid: String,
        info: WorkloadInfo,
        netns: Netns,
    },
    /// During the replay after a (re)connect: a pod the agent knows but holds no namespace
    /// for; ztunnel keeps it if it serves it.
    Keep { uid: String },
    /// Stop serving a pod.
    Del { uid: String },
    /// The replay is over: ztunnel drops every pod the replay did not name.
    SnapshotSent,
}

impl Request {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Add { .. } => "AddWorkload",
            Request::Keep { .. } => "KeepWorkload",
            Request::Del { .. } => "DelWorkload",
            Request::SnapshotSent => "SnapshotSent",
        }
    }

    pub fn uid(&self) -> Option<&str> {
        match self {
            Request::Add { uid, .. } | Request::Keep { uid } | Request::Del { uid } => Some(uid),
            Request::SnapshotSent => None,
        }
    }
}

/// ztunnel's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Ok,
    Nack(String),
}

/// Why a message could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message longer than {max} bytes (truncated)", max = crate::MAX_MESSAGE)]
    Truncated,
    #[error("ancillary data truncated (more descriptors than expected)")]
    ControlTruncated,
    #[error("not a valid {what}: {source}")]
    Protobuf {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("WorkloadRequest without a payload")]
    NoPayload,
    #[error("WorkloadResponse without a payload")]
    NoResponsePayload,
    #[error("{kind} without a uid")]
    NoUid { kind: &'static str },
    #[error("AddWorkload {uid} without workload_info")]
    NoWorkloadInfo { uid: String },
    #[error("AddWorkload {uid}: workload_info needs a name and a namespace")]
    IncompleteWorkloadInfo { uid: String },
    #[error("{kind} came with {got} file descriptors; it takes {expected}")]
    Descriptors {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("AddWorkload {uid}: {source}")]
    Netns {
        uid: String,
        #[source]
        source: NetnsError,
    },
    #[error("unsupported ZDS version {0} (this side speaks V1)")]
    Version(i32),
}

/// The hello ztunnel sends first.
pub fn encode_hello() -> Vec<u8> {
    zds::ZdsHello {
        version: zds::Version::V1.into(),
    }
    .encode_to_vec()
}

/// Checks a hello (rule 1).
pub fn decode_hello(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), DecodeError> {
    no_descriptors("ZdsHello", &fds)?;
    let hello = zds::ZdsHello::decode(bytes).map_err(|source| DecodeError::Protobuf {
        what: "ZdsHello",
        source,
    })?;
    if hello.version != i32::from(zds::Version::V1) {
        return Err(DecodeError::Version(hello.version));
    }
    Ok(())
}

/// An `AddWorkload`'s bytes; the pod's namespace goes with it as the one descriptor.
pub fn encode_add(uid: &str, info: &WorkloadInfo) -> Vec<u8> {
    zds::WorkloadRequest {
        payload: Some(zds::workload_request::Payload::Add(zds::AddWorkload {
            uid: uid.to_string(),
            workload_info: Some(zds::WorkloadInfo {
                name: info.name.clone(),
                namespace: info.namespace.clone(),
                service_account: info.service_account.clone(),
            }),
        })),
    }
    .encode_to_vec()
}

/// A request as bytes plus the descriptor to send with it (rule 2).
pub fn encode_request(request: &Request) -> (Vec<u8>, Option<BorrowedFd<'_>>) {
    use zds::workload_request::Payload;
    let (payload, fd) = match request {
        Request::Add { uid, info, netns } => return (encode_add(uid, info), Some(netns.as_fd())),
        Request::Keep { uid } => (Payload::Keep(zds::KeepWorkload { uid: uid.clone() }), None),
        Request::Del { uid } => (Payload::Del(zds::DelWorkload { uid: uid.clone() }), None),
        Request::SnapshotSent => (Payload::SnapshotSent(zds::SnapshotSent {}), None),
    };
    let bytes = zds::WorkloadRequest {
        payload: Some(payload),
    }
    .encode_to_vec();
    (bytes, fd)
}

/// A request from its bytes and the descriptors that came with it (rule 2).
pub fn decode_request(bytes: &[u8], mut fds: Vec<OwnedFd>) -> Result<Request, DecodeError> {
    use zds::workload_request::Payload;
    let request = zds::WorkloadRequest::decode(bytes).map_err(|source| DecodeError::Protobuf {
        what: "WorkloadRequest",
        source,
    })?;
    let uid = |kind: &'static str, uid: String| {
        if uid.is_empty() {
            Err(DecodeError::NoUid { kind })
        } else {
            Ok(uid)
        }
    };
    match request.payload.ok_or(DecodeError::NoPayload)? {
        Payload::Add(add) => {
            let uid = uid("AddWorkload", add.uid)?;
            let info = add
                .workload_info
                .ok_or_else(|| DecodeError::NoWorkloadInfo { uid: uid.clone() })?;
            if info.name.is_empty() || info.namespace.is_empty() {
                return Err(DecodeError::IncompleteWorkloadInfo { uid });
            }
            if fds.len() != 1 {
                return Err(DecodeError::Descriptors {
                    kind: "AddWorkload",
                    expected: 1,
                    got: fds.len(),
                });
            }
            let fd = fds.remove(0);
            let netns = Netns::from_fd(fd).map_err(|source| DecodeError::Netns {
                uid: uid.clone(),
                source,
            })?;
            Ok(Request::Add {
                uid,
                info: WorkloadInfo {
                    name: info.name,
                    namespace: info.namespace,
                    // Kubernetes' default when a pod names none.
                    service_account: if info.service_account.is_empty() {
                        "default".to_string()
                    } else {
                        info.service_account
                    },
                },
                netns,
            })
        }
        Payload::Keep(keep) => {
            no_descriptors("KeepWorkload", &fds)?;
            Ok(Request::Keep {
                uid: uid("KeepWorkload", keep.uid)?,
            })
        }
        Payload::Del(del) => {
            no_descriptors("DelWorkload", &fds)?;
            Ok(Request::Del {
                uid: uid("DelWorkload", del.uid)?,
            })
        }
        Payload::SnapshotSent(_) => {
            no_descriptors("SnapshotSent", &fds)?;
            Ok(Request::SnapshotSent)
        }
    }
}

pub fn encode_ack(ack: &Ack) -> Vec<u8> {
    let error = match ack {
        Ack::Ok => String::new(),
        Ack::Nack(e) => e.clone(),
    };
    zds::WorkloadResponse {
        payload: Some(zds::workload_response::Payload::Ack(zds::Ack { error })),
    }
    .encode_to_vec()
}

pub fn decode_ack(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<Ack, DecodeError> {
    no_descriptors("WorkloadResponse", &fds)?;
    let response =
        zds::WorkloadResponse::decode(bytes).map_err(|source| DecodeError::Protobuf {
            what: "WorkloadResponse",
            source,
        })?;
    match response.payload.ok_or(DecodeError::NoResponsePayload)? {
        zds::workload_response::Payload::Ack(a) if a.error.is_empty() => Ok(Ack::Ok),
        zds::workload_response::Payload::Ack(a) => Ok(Ack::Nack(a.error)),
    }
}

fn no_descriptors(kind: &'static str, fds: &[OwnedFd]) -> Result<(), DecodeError> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Descriptors {
            kind,
            expected: 0,
            got: fds.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn netns_fd() -> OwnedFd {
        File::open("/proc/self/ns/net").unwrap().into()
    }

    fn file_fd() -> OwnedFd {
        File::open("/dev/null").unwrap().into()
    }

    fn add(uid: &str, name: &str, ns: &str, sa: &str) -> Vec<u8> {
        zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Add(zds::AddWorkload {
                uid: uid.into(),
                workload_info: Some(zds::WorkloadInfo {
                    name: name.into(),
                    namespace: ns.into(),
                    service_account: sa.into(),
                }),
            })),
        }
        .encode_to_vec()
    }

    /// Every request kind, well-formed and not, with the descriptors it came with.
    #[test]
    fn requests() {
        type Fds = fn() -> Vec<OwnedFd>;
        let none: Fds = Vec::new;
        let one_netns: Fds = || vec![netns_fd()];
        let two_netns: Fds = || vec![netns_fd(), netns_fd()];
        let a_file: Fds = || vec![file_fd()];
        let keep = zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Keep(zds::KeepWorkload {
                uid: "u1".into(),
            })),
        }
        .encode_to_vec();
        let del = zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Del(zds::DelWorkload {
                uid: "u1".into(),
            })),
        }
        .encode_to_vec();
        let snapshot = encode_request(&Request::SnapshotSent).0;
        let no_info = zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Add(zds::AddWorkload {
                uid: "u1".into(),
                workload_info: None,
            })),
        }
        .encode_to_vec();
        type Row<'a> = (&'a str, Vec<u8>, Fds, Result<&'a str, &'a str>);
        let rows: Vec<Row> = vec![
            (
                "add",
                add("u1", "web", "shop", "web-sa"),
                one_netns,
                Ok("AddWorkload u1 shop/web web-sa"),
            ),
            (
                "add, default account",
                add("u1", "web", "shop", ""),
                one_netns,
                Ok("AddWorkload u1 shop/web default"),
            ),
            (
                "add without a descriptor",
                add("u1", "web", "shop", "sa"),
                none,
                Err("AddWorkload came with 0 file descriptors; it takes 1"),
            ),
            (
                "add with two",
                add("u1", "web", "shop", "sa"),
                two_netns,
                Err("AddWorkload came with 2 file descriptors; it takes 1"),
            ),
            (
                "add with a file, not a namespace",
                add("u1", "web", "shop", "sa"),
                a_file,
                Err(
                    "AddWorkload u1: the descriptor is not a network namespace (it is \"/dev/null\")",
                ),
            ),
            (
                "add without uid",
                add("", "web", "shop", "sa"),
                one_netns,
                Err("AddWorkload without a uid"),
            ),
            (
                "add without info",
                no_info,
                one_netns,
                Err("AddWorkload u1 without workload_info"),
            ),
            (
                "add without a name",
                add("u1", "", "shop", "sa"),
                one_netns,
                Err("AddWorkload u1: workload_info needs a name and a namespace"),
            ),
            ("keep", keep.clone(), none, Ok("KeepWorkload u1")),
            (
                "keep with a descriptor",
                keep,
                one_netns,
                Err("KeepWorkload came with 1 file descriptors; it takes 0"),
            ),
            ("del", del, none, Ok("DelWorkload u1")),
            ("snapshot", snapshot, none, Ok("SnapshotSent")),
            (
                "empty message",
                Vec::new(),
                none,
                Err("WorkloadRequest without a payload"),
            ),
            (
                "garbage",
                vec![0xff, 0xff, 0xff],
                none,
                Err("not a valid WorkloadRequest"),
            ),
        ];
        for (name, bytes, fds, want) in rows {
            let got = decode_request(&bytes, fds()).map(|r| match r {
                Request::Add { uid, info, netns } => {
                    assert!(netns.id().starts_with("net:["));
                    format!(
                        "AddWorkload {uid} {}/{} {}",
                        info.namespace, info.name, info.service_account
                    )
                }
                other => format!("{} {}", other.kind(), other.uid().unwrap_or_default())
                    .trim()
                    .to_string(),
            });
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
                (Err(e), Err(w)) => assert!(e.to_string().starts_with(w), "{name}: {e}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn requests_round_trip() {
        let netns = Netns::current().unwrap();
        let req = Request::Add {
            uid: "u1".into(),
            info: WorkloadInfo {
                name: "web".into(),
                namespace: "shop".into(),
                service_account: "sa".into(),
            },
            netns,
        };
        let (bytes, fd) = encode_request(&req);
        let fd = fd.unwrap().try_clone_to_owned().unwrap();
        match decode_request(&bytes, vec![fd]).unwrap() {
            Request::Add { uid, info, .. } => {
                assert_eq!(uid, "u1");
                assert_eq!(info.service_account, "sa");
            }
            other => panic!("{other:?}"),
        }
        assert!(bytes.len() < crate::MAX_MESSAGE);
    }

    #[test]
    fn hello_and_acks() {
        decode_hello(&encode_hello(), Vec::new()).unwrap();
        let v2 = zds::ZdsHello { version: 2 }.encode_to_vec();
        assert_eq!(
            decode_hello(&v2, Vec::new()).unwrap_err().to_string(),
            "unsupported ZDS version 2 (this side speaks V1)"
        );
        let unset = zds::ZdsHello { version: 0 }.encode_to_vec();
        assert!(decode_hello(&unset, Vec::new()).is_err());
        for ack in [Ack::Ok, Ack::Nack("no certificate yet".into())] {
            assert_eq!(decode_ack(&encode_ack(&ack), Vec::new()).unwrap(), ack);
        }
        assert!(matches!(
            decode_ack(&[], Vec::new()),
            Err(DecodeError::NoResponsePayload)
        ));
    }
}
