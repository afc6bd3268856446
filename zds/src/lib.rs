//! ZDS: how a node agent hands pods to a node-wide ztunnel (Istio's `istio.workload.zds`,
//! protocol.md section 3), shared by both ends.
//!
//! - [`transport`]: a `SOCK_SEQPACKET` Unix socket, one protobuf message per datagram, with
//!   the pod's network namespace passed as a file descriptor (`SCM_RIGHTS`);
//! - [`message`]: the messages as typed values, checked at this one boundary (a request with
//!   a missing field, a wrong number of descriptors or a descriptor that is not a network
//!   namespace is an error naming what is wrong, never a panic);
//! - [`netns`]: a network namespace held by descriptor, and running code inside it on a
//!   helper thread (so sockets are created there while the caller's thread stays put).

pub mod message;
pub mod netns;
pub mod transport;

pub use message::{Ack, DecodeError, Request, WorkloadInfo};
pub use netns::{Netns, NetnsError};
pub use transport::{Conn, Listener, Received};

/// Where istio-cni listens and ztunnel connects (`INPOD_UDS`).
pub const DEFAULT_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";

/// The largest message either side sends; ztunnel reads into a buffer of this size and a
/// longer datagram is refused as truncated (as Istio's ztunnel does).
pub const MAX_MESSAGE: usize = 1024;
