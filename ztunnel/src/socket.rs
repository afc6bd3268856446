//! Socket plumbing: packet marks, original destinations, listeners.
//!
//! Every socket ztunnel opens carries its packet mark (Istio's 0x539 by default) so the
//! redirection rules let ztunnel's own traffic through instead of capturing it again.
//!
//! In shared mode a pod's sockets are created inside the pod's network namespace
//! ([`zds::Netns::run`], on a helper thread) and used from here like any other: a socket
//! belongs to the namespace it was created in, whichever thread uses it.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use zds::Netns;

/// A listener with the mark set, `SO_REUSEADDR` on, in `netns` (or ours).
pub fn listen(
    addr: SocketAddr,
    mark: Option<u32>,
    netns: Option<&Netns>,
) -> io::Result<TcpListener> {
    // In a pod (shared mode), an old and a new ztunnel may listen there at once during an
    // upgrade (Istio's INPOD_PORT_REUSE). ztunnel's own ports are not shared.
    let reuse_port = netns.is_some();
    let socket = in_netns(netns, || listening_socket(addr, mark, reuse_port))?;
    TcpListener::from_std(socket.into())
}

fn listening_socket(addr: SocketAddr, mark: Option<u32>, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // IPv4 has its own listener; keep the families apart so both can bind the port.
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

/// Runs `f` in `netns`, or right here when there is none.
fn in_netns<T: Send>(
    netns: Option<&Netns>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    match netns {
        None => f(),
        Some(ns) => ns.run(f).map_err(io::Error::other)?,
    }
}

/// The next connection on `listener`. Accept errors (out of file descriptors and the like)
/// are logged and retried after a short pause instead of spinning or ending the listener.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to `dst` with the mark set, optionally from `local`, from `netns` (or ours).
pub async fn connect(
    dst: SocketAddr,
    local: Option<std::net::IpAddr>,
    mark: Option<u32>,
    netns: Option<&Netns>,
) -> io::Result<TcpStream> {
    let socket = in_netns(netns, || {
        // Non-blocking from creation: saves the two fcntl calls per connection of setting it
        // after.
        let socket = Socket::new(
            Domain::for_address(dst),
            Type::STREAM.nonblocking(),
            Some(Protocol::TCP),
        )?;
        if let Some(mark) = mark {
            socket.set_mark(mark)?;
        }
        Ok(socket)
    })?;
    let socket = TcpSocket::from_std_stream(socket.into());
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The destination the application dialled before REDIRECT sent it to us.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an IP socket address"))
}

/// Raises the open-file limit to the hard limit: each proxied connection costs two.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}
