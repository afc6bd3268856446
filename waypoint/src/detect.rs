//! Which protocol a stream inside the tunnel speaks, from its first bytes (the client speaks
//! first in HTTP), and a reader that gives those bytes back to whoever serves the stream.
//!
//! Rules, applied to the bytes read so far:
//! 1. They are the HTTP/2 connection preface, whole: HTTP/2 (prior knowledge, gRPC).
//! 2. They are a proper prefix of the preface: read more (`PRI` is also an HTTP/1 token).
//! 3. An HTTP/1 method token (1 to 20 of the characters RFC 9110 allows) then a space:
//!    HTTP/1.x.
//! 4. Anything else, [`MAX_PEEK`] bytes without a decision, end of stream, or nothing within
//!    the detection timeout (a server-first protocol): opaque TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes looked at before calling the stream opaque.
pub const MAX_PEEK: usize = H2_PREFACE.len();

/// How long a stream may stay silent before it is served as TCP.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tcp,
}

/// Rules 1-4 over what was read; `None`: read more.
pub fn classify(seen: &[u8], ended: bool) -> Option<Protocol> {
    if seen.len() >= H2_PREFACE.len() && seen.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    let h2_so_far = H2_PREFACE.starts_with(seen);
    let token_len = seen.iter().take_while(|b| is_tchar(**b)).count();
    let http1 = (1..=20).contains(&token_len) && seen.get(token_len) == Some(&b' ');
    if http1 && !h2_so_far {
        return Some(Protocol::Http1);
    }
    let could_be_http1 = token_len == seen.len() && token_len < 20;
    if ended || seen.len() >= MAX_PEEK || !(h2_so_far || could_be_http1) {
        return Some(if http1 {
            Protocol::Http1
        } else {
            Protocol::Tcp
        });
    }
    None
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until [`classify`] decides (or the timeout), and returns the stream with the bytes
/// read put back in front.
pub async fn detect<IO: AsyncRead + Unpin>(
    mut io: IO,
    timeout: Duration,
) -> io::Result<(Protocol, Rewind<IO>)> {
    let mut seen = BytesMut::with_capacity(MAX_PEEK);
    let deadline = tokio::time::Instant::now() + timeout;
    let protocol = loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut seen)).await;
        let ended = match read {
            Err(_) => break Protocol::Tcp,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(n)) => n == 0,
        };
        if let Some(p) = classify(&seen, ended) {
            break p;
        }
        if seen.capacity() == seen.len() {
            seen.reserve(MAX_PEEK - seen.len().min(MAX_PEEK) + 1);
        }
    };
    Ok((protocol, Rewind { prefix: seen, io }))
}

/// A stream whose first bytes were already read: they are read again first.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: BytesMut,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn into_parts(self) -> (BytesMut, IO) {
        (self.prefix, self.io)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Give the allocation back: the stream may live long.
                self.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        use Protocol::*;
        let rows: &[(&[u8], bool, Option<Protocol>)] = &[
            (b"GET / HTTP/1.1\r\n", false, Some(Http1)),
            (
                b"POST /api/v2/payments/process HTTP/1.1\r\n",
                false,
                Some(Http1),
            ),
            (b"GET", false, None),
            (b"GET", true, Some(Tcp)),
            (b"PRI", false, None),
            (b"PRI * HTTP/2.0\r\n", false, None),
            (H2_PREFACE, false, Some(Http2)),
            (b"PRI * HTTP/1.1\r\n", false, Some(Http1)),
            (b"\x16\x03\x01\x02\x00", false, Some(Tcp)),
            (b"SSH-2.0-OpenSSH_9.6\r\n", false, Some(Tcp)),
            (b"", true, Some(Tcp)),
            (b"", false, None),
            (b"AVERYLONGTOKENWITHOUTANYSPACE", false, Some(Tcp)),
            (b"get / HTTP/1.1\r\n", false, Some(Http1)),
            (b" GET /", false, Some(Tcp)),
        ];
        for (seen, ended, want) in rows {
            assert_eq!(
                classify(seen, *ended),
                *want,
                "{:?} ended={ended}",
                String::from_utf8_lossy(seen)
            );
        }
    }

    #[tokio::test]
    async fn detect_gives_the_bytes_back() {
        let (mut client, server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (p, mut rewound) = detect(server, DETECT_TIMEOUT).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut all = vec![0u8; 27];
        rewound.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_tcp_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let (p, _) = detect(server, DETECT_TIMEOUT).await.unwrap();
        assert_eq!(p, Protocol::Tcp);
    }
}
