//! A TCP stream that reads ahead in large chunks, for the TLS layer above it.
//!
//! rustls asks its transport for at most 4 KiB per read, so a 16 KiB record costs four
//! `recvmsg` calls and a busy HBONE connection spends much of its time in syscalls. This
//! adapter turns those into one read of up to [`CHUNK`] bytes and serves rustls from memory.
//!
//! Reads go straight into the caller's buffer until one fills it completely (more is likely
//! waiting: a transfer is under way); only then does the adapter read ahead into its own
//! buffer, until the socket runs dry. So small request/response traffic never allocates, and
//! an idle connection holds no buffer: thousands of pooled but quiet HBONE connections cost
//! nothing here. Writes pass straight through (vectored, as h2 and rustls issue them).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket per syscall while data is flowing.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct ReadAhead {
    tcp: TcpStream,
    /// Read from the socket, not yet handed up. Capacity 0 unless a transfer is under way.
    buf: BytesMut,
    /// The last direct read filled the caller's buffer: read ahead from now on.
    streaming: bool,
}

impl ReadAhead {
    pub fn new(tcp: TcpStream) -> ReadAhead {
        ReadAhead {
            tcp,
            buf: BytesMut::new(),
            streaming: false,
        }
    }

    /// Bytes currently held in memory.
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Fills `buf` from the socket. `Ready(Ok(0))` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            // An empty buffer gives its allocation back for reuse (or was freed when idle).
            self.buf.reserve(CHUNK);
            match self.tcp.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // Readiness was stale; `try_read_buf` cleared it, so poll again to register.
                // (The buffer stays for that retry; the caller frees it if we end up Pending.)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if !this.streaming || out.remaining() >= CHUNK {
                // Straight into the caller's buffer: no copy, no allocation.
                this.buf = BytesMut::new();
                let room = out.remaining();
                let before = out.filled().len();
                let read = Pin::new(&mut this.tcp).poll_read(cx, out);
                if let Poll::Ready(Ok(())) = read {
                    this.streaming = room > 0 && out.filled().len() - before == room;
                }
                return read;
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Drained: the transfer paused. Hold no memory while waiting.
                    this.buf = BytesMut::new();
                    this.streaming = false;
                    return Poll::Pending;
                }
            }
        }
        let n = out.remaining().min(this.buf.len());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (ReadAhead, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ReadAhead::new(client.unwrap()), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_socket_read_and_bytes_stay_in_order() {
        let (mut ra, mut peer) = pair().await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            peer.write_all(&sent).await.unwrap();
            peer.shutdown().await.unwrap();
            peer
        });
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        let mut read_ahead = false;
        loop {
            let n = ra.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            read_ahead |= ra.buffered_capacity() > 0;
            assert!(ra.buffered_capacity() <= 2 * CHUNK);
            got.extend_from_slice(&small[..n]);
        }
        assert!(read_ahead, "a bulk transfer never read ahead");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes reordered or corrupted");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer() {
        let (mut ra, mut peer) = pair().await;
        peer.write_all(b"hello").await.unwrap();
        let mut small = [0u8; 16];
        let n = ra.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"hello");
        // A message smaller than the caller's buffer is read straight into it.
        assert_eq!(ra.buffered_capacity(), 0);
        // Nothing more is coming: the next read waits, and while it waits there is no buffer.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), ra.read(&mut small)).await;
        assert!(waited.is_err(), "read should still be waiting");
        assert_eq!(ra.buffered_capacity(), 0);
        // Writes go straight through.
        ra.write_all(b"back").await.unwrap();
        let mut four = [0u8; 4];
        peer.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"back");
    }
}
