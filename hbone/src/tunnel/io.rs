//! An HBONE stream as a byte stream (`AsyncRead` + `AsyncWrite`), for code that speaks a
//! protocol inside the tunnel (the waypoint's HTTP server and client) rather than copying it
//! to a socket.
//!
//! Rules, as for [`copy`](super::copy):
//! - Flow-control window goes back to the peer only for bytes the reader has taken, so an
//!   unread stream stops its sender (backpressure); at most one DATA frame waits here.
//! - A write takes only what the peer's window allows now and waits for window otherwise.
//! - `poll_shutdown` ends the sending half (END_STREAM); the receiving half keeps going.
//! - A reset or a lost connection is an I/O error (`ConnectionReset`); END_STREAM from the
//!   peer is end of file.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::copy::H2Stream;

/// An [`H2Stream`] read and written as bytes.
#[derive(Debug)]
pub struct StreamIo {
    stream: H2Stream,
    /// The rest of the last DATA frame, not yet read.
    pending: Bytes,
    /// END_STREAM sent.
    shut: bool,
}

impl StreamIo {
    pub fn new(stream: H2Stream) -> StreamIo {
        StreamIo {
            stream,
            pending: Bytes::new(),
            shut: false,
        }
    }

    /// Abandons the stream with RST_STREAM(CANCEL) (dropping it without shutdown does too).
    pub fn reset(&mut self) {
        self.stream.send.send_reset(h2::Reason::CANCEL);
    }
}

fn h2_error(e: h2::Error) -> io::Error {
    let kind = if e.is_reset() || e.is_go_away() || e.is_io() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match ready!(this.stream.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                Some(Ok(data)) => this.pending = data,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        let _ = this.stream.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let send = &mut this.stream.send;
        send.reserve_capacity(data.len());
        loop {
            match ready!(send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                Some(Ok(0)) => continue,
                Some(Ok(granted)) => {
                    let n = granted.min(data.len());
                    send.send_data(Bytes::copy_from_slice(&data[..n]), false)
                        .map_err(h2_error)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 frames go out as the connection task writes them; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut {
            this.shut = true;
            this.stream
                .send
                .send_data(Bytes::new(), true)
                .map_err(h2_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
