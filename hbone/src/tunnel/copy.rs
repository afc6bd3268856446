//! Moving bytes between a TCP connection and an HBONE stream, in both directions at once.
//!
//! Rules:
//! - A FIN from TCP becomes END_STREAM on the tunnel, and END_STREAM becomes a TCP write
//!   shutdown; the other direction keeps flowing (half-close).
//! - Backpressure both ways: we only read from TCP once HTTP/2 flow control has given us
//!   capacity for what we already read, and we release HTTP/2 window only after the bytes are
//!   written to TCP. Per-stream buffering is therefore bounded by the windows.
//! - Idle streams hold no read buffer: it is released before waiting for the socket.

use std::future::poll_fn;
use std::io;

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Bytes read from the socket per read call while data is flowing.
const READ_CHUNK: usize = 64 * 1024;

/// One HBONE stream: the send and receive halves of an HTTP/2 CONNECT.
pub struct H2Stream {
    pub(crate) send: SendStream<Bytes>,
    pub(crate) recv: RecvStream,
    /// Keeps a pooled connection's stream count right until the stream is gone.
    pub(crate) _lease: Option<super::pool::Lease>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("id", &self.send.stream_id().as_u32())
            .finish()
    }
}

/// What a finished or failed copy moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes read from TCP and sent into the tunnel.
    pub to_tunnel: u64,
    /// Bytes received from the tunnel and written to TCP.
    pub from_tunnel: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("TCP side failed")]
    Tcp(#[source] io::Error),
    #[error("tunnel stream failed")]
    Tunnel(#[source] h2::Error),
    #[error("tunnel stream closed while sending")]
    TunnelClosed,
    #[error("stopped by the proxy")]
    Stopped,
}

impl CopyError {
    /// Whether the peer reset the stream: Istio answers that by resetting the TCP connection.
    pub fn is_reset(&self) -> bool {
        match self {
            CopyError::Tunnel(e) => e.is_reset() || e.is_go_away() || e.is_io(),
            CopyError::TunnelClosed | CopyError::Stopped => true,
            CopyError::Tcp(_) => false,
        }
    }
}

/// Copies until both directions have finished. On error, returns what was moved so far.
pub async fn copy_bidirectional(
    tcp: &mut TcpStream,
    stream: H2Stream,
) -> Result<Transferred, (CopyError, Transferred)> {
    copy_bidirectional_until(tcp, stream, std::future::pending()).await
}

/// As [`copy_bidirectional`], but gives up with [`CopyError::Stopped`] when `stop` completes
/// (e.g. a policy change revoked the connection).
pub async fn copy_bidirectional_until(
    tcp: &mut TcpStream,
    stream: H2Stream,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Transferred, (CopyError, Transferred)> {
    let H2Stream {
        mut send,
        mut recv,
        _lease,
    } = stream;
    let (read, write) = tcp.split();
    let mut to_tunnel = 0u64;
    let mut from_tunnel = 0u64;
    let result = tokio::select! {
        r = async {
            tokio::try_join!(
                tcp_to_tunnel(read, &mut send, &mut to_tunnel),
                tunnel_to_tcp(&mut recv, write, &mut from_tunnel),
            )
        } => r.map(|_| ()),
        () = stop => Err(CopyError::Stopped),
    };
    let moved = Transferred {
        to_tunnel,
        from_tunnel,
    };
    match result {
        Ok(_) => Ok(moved),
        Err(e) => {
            // Tell the peer we are gone rather than leaving the stream half-open.
            send.send_reset(h2::Reason::CANCEL);
            Err((e, moved))
        }
    }
}

async fn tcp_to_tunnel(
    read: ReadHalf<'_>,
    send: &mut SendStream<Bytes>,
    total: &mut u64,
) -> Result<(), CopyError> {
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() == 0 {
            // Wait without a buffer, so an idle stream costs no read memory.
            read.readable().await.map_err(CopyError::Tcp)?;
            buf.reserve(READ_CHUNK);
        }
        match read.try_read_buf(&mut buf) {
            Ok(0) => {
                send.send_data(Bytes::new(), true)
                    .map_err(CopyError::Tunnel)?;
                return Ok(());
            }
            Ok(n) => *total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf = BytesMut::new();
                continue;
            }
            Err(e) => return Err(CopyError::Tcp(e)),
        }
        let data = buf.split().freeze();
        send_all(send, data).await?;
        if buf.capacity() < READ_CHUNK / 4 {
            // Reclaims the allocation once the tunnel has released the previous chunk.
            buf.reserve(READ_CHUNK);
        }
    }
}

/// Sends `data` as flow control allows, waiting for window when there is none.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), CopyError> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(CopyError::Tunnel(e)),
            None => return Err(CopyError::TunnelClosed),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, false).map_err(CopyError::Tunnel)?;
    }
    Ok(())
}

async fn tunnel_to_tcp(
    recv: &mut RecvStream,
    mut write: WriteHalf<'_>,
    total: &mut u64,
) -> Result<(), CopyError> {
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(CopyError::Tunnel)?;
        write.write_all(&chunk).await.map_err(CopyError::Tcp)?;
        *total += chunk.len() as u64;
        // Window goes back only once the bytes left us: this is the backpressure.
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    write.shutdown().await.map_err(CopyError::Tcp)
}

/// Closes a TCP connection with RST instead of FIN, as Istio does when the tunnel fails.
pub fn reset_tcp(tcp: &TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
}
