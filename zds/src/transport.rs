//! The ZDS socket: Unix `SOCK_SEQPACKET`, one message per datagram, descriptors passed with
//! `SCM_RIGHTS`. The agent listens ([`Listener`]); ztunnel connects ([`Conn::connect`]).
//!
//! Datagrams longer than [`MAX_MESSAGE`](crate::MAX_MESSAGE) or carrying more descriptors
//! than the receive buffer holds come back flagged ([`Received::truncated`],
//! [`Received::control_truncated`]) for the message layer to refuse; descriptors that did
//! arrive are owned (closed on drop) whatever happens to the message.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::MAX_MESSAGE;

/// Descriptors a receive accepts before flagging the control data as truncated: one is all
/// the protocol sends; room for a few more lets the message layer name the count.
const MAX_FDS: usize = 4;

/// One connection, either end.
///
/// The socket is registered with tokio as a `UnixDatagram`: tokio has no seqpacket type, and
/// all it does with the socket is wait for readiness (the messages go through `sendmsg` /
/// `recvmsg` here), which is the same for both kinds.
#[derive(Debug)]
pub struct Conn {
    fd: UnixDatagram,
}

/// Registers a non-blocking socket with the runtime (see [`Conn`]).
fn register(fd: OwnedFd) -> io::Result<UnixDatagram> {
    UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))
}

/// One datagram as received.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    /// More descriptors came than the buffer holds (the rest were closed by the kernel).
    pub control_truncated: bool,
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?)
}

impl Conn {
    /// Connects to the agent's socket at `path`.
    pub async fn connect(path: &Path) -> io::Result<Conn> {
        let fd = seqpacket()?;
        let addr = SocketAddrUnix::new(path)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => {}
            // A Unix socket connect either completes or fails at once, except when the
            // listener's backlog is full; then it is as busy as refused.
            Err(e) => return Err(e.into()),
        }
        Ok(Conn { fd: register(fd)? })
    }

    /// Sends one message, with `fd` attached when given.
    pub async fn send(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        loop {
            self.fd.writable().await?;
            let sent = self.fd.try_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                    return Err(io::Error::other("no room for the descriptor"));
                }
                let n = rustix::net::sendmsg(
                    &self.fd,
                    &[IoSlice::new(bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?;
                Ok(n)
            });
            match sent {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "sent {n} of {} bytes of one datagram",
                        bytes.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one datagram; `None` when the peer closed the connection.
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        loop {
            self.fd.readable().await?;
            let got = self.fd.try_io(Interest::READABLE, || {
                let mut bytes = vec![0u8; MAX_MESSAGE];
                let mut space =
                    [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    &self.fd,
                    &mut [IoSliceMut::new(&mut bytes)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                Ok((msg, bytes, fds))
            });
            let (msg, mut bytes, fds) = match got {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            // A zero-length read is the peer's orderly close (no message of the protocol is
            // empty: even an empty SnapshotSent has its oneof tag).
            if msg.bytes == 0 && fds.is_empty() {
                return Ok(None);
            }
            bytes.truncate(msg.bytes.min(MAX_MESSAGE));
            return Ok(Some(Received {
                bytes,
                fds,
                truncated: msg.flags.contains(ReturnFlags::TRUNC),
                control_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
            }));
        }
    }

    /// Whether the peer has closed (or sent something unasked), without waiting or taking a
    /// message: for the agent between requests, as ztunnel never speaks unprompted.
    pub fn peer_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match rustix::net::recv(&self.fd, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok(_) => true,
            Err(e) => e != rustix::io::Errno::AGAIN,
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The agent's listening socket.
#[derive(Debug)]
pub struct Listener {
    fd: UnixDatagram,
}

impl Listener {
    /// Listens at `path`, replacing a stale socket file left by an earlier run.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = seqpacket()?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 16)?;
        Ok(Listener { fd: register(fd)? })
    }

    pub async fn accept(&self) -> io::Result<Conn> {
        loop {
            self.fd.readable().await?;
            match self.fd.try_io(Interest::READABLE, || {
                Ok(rustix::net::accept_with(
                    &self.fd,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                )?)
            }) {
                Ok(fd) => return Ok(Conn { fd: register(fd)? }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn socket_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("zds-{name}-{}.sock", std::process::id()))
    }

    #[tokio::test]
    async fn datagrams_and_descriptors_cross() {
        let path = socket_path("cross");
        let listener = Listener::bind(&path).unwrap();
        let client = Conn::connect(&path).await.unwrap();
        let server = listener.accept().await.unwrap();

        // One message per datagram, boundaries kept.
        client.send(b"hello", None).await.unwrap();
        client.send(b"world!", None).await.unwrap();
        let a = server.recv().await.unwrap().unwrap();
        let b = server.recv().await.unwrap().unwrap();
        assert_eq!(
            (a.bytes.as_slice(), b.bytes.as_slice()),
            (&b"hello"[..], &b"world!"[..])
        );
        assert!(a.fds.is_empty() && !a.truncated);

        // A descriptor arrives as a new descriptor of the same file.
        let ns: OwnedFd = File::open("/proc/self/ns/net").unwrap().into();
        server.send(b"add", Some(ns.as_fd())).await.unwrap();
        let got = client.recv().await.unwrap().unwrap();
        assert_eq!(got.fds.len(), 1);
        let netns = crate::Netns::from_fd(got.fds.into_iter().next().unwrap()).unwrap();
        assert_eq!(netns.id(), crate::Netns::current().unwrap().id());

        // Too long: flagged, not silently cut.
        server
            .send(&vec![7u8; MAX_MESSAGE + 1], None)
            .await
            .unwrap();
        let long = client.recv().await.unwrap().unwrap();
        assert!(long.truncated);
        assert_eq!(long.bytes.len(), MAX_MESSAGE);

        // Nothing pending: not gone. Closed: gone.
        assert!(!client.peer_gone());
        // Close: the other side reads the end.
        drop(server);
        assert!(client.peer_gone());
        assert!(client.recv().await.unwrap().is_none());
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn nobody_listening_is_an_error() {
        let err = Conn::connect(&socket_path("nobody")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
