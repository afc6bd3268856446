//! A request body as the waypoint forwards it: the frames an external authorizer's check had to
//! read first (Istio's `includeRequestBodyInCheck`), given again in order, then the rest as the
//! client sends it. Without a check that reads, it is the client's body, streamed.
//!
//! Rules, in order:
//! 1. Reading for a check stops at the body's end or trailers, or once the limit is reached
//!    when a partial body will do (Envoy's buffer is then full), else once the body is longer
//!    than the limit; a declared `Content-Length` over the limit is known without reading.
//! 2. Nothing read is lost: every frame read is replayed upstream before the rest.
//! 3. The check gets at most the limit's bytes (a slice of the frame that holds them, copied
//!    only when they span frames), and whether more was read (partial).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The request body forwarded upstream (module doc); `B` is other than hyper's only in tests.
#[derive(Debug)]
pub struct RequestBody<B = Incoming> {
    /// Rule 2: frames read for a check, not yet forwarded.
    read: VecDeque<Frame<Bytes>>,
    rest: B,
}

/// The part of a body an authorizer is shown (rule 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub bytes: Bytes,
    /// The body is longer than `bytes`.
    pub partial: bool,
}

impl<B: Body<Data = Bytes> + Unpin> RequestBody<B> {
    pub fn new(rest: B) -> RequestBody<B> {
        RequestBody {
            read: VecDeque::new(),
            rest,
        }
    }

    /// Whether the body is declared longer than `max` bytes (rule 1's `Content-Length`).
    pub fn declared_over(&self, max: usize) -> bool {
        self.rest.size_hint().lower() > max as u64
    }

    /// Rules 1 and 3: reads up to `max` bytes (past it unless `partial_ok`) and gives the first
    /// `max`. Call once, before the body is forwarded; an `Err` is the client's body failing
    /// (reset, bad framing).
    pub async fn read_prefix(&mut self, max: usize, partial_ok: bool) -> Result<Prefix, B::Error> {
        let mut total = 0usize;
        let enough = |total: usize| {
            if partial_ok {
                total >= max
            } else {
                total > max
            }
        };
        while !enough(total) && !self.rest.is_end_stream() {
            let Some(frame) = self.rest.frame().await.transpose()? else {
                break;
            };
            let trailers = frame.is_trailers();
            if let Some(data) = frame.data_ref() {
                total = total.saturating_add(data.len());
            }
            self.read.push_back(frame);
            if trailers {
                break;
            }
        }
        Ok(Prefix {
            bytes: self.first_bytes(max),
            partial: total > max,
        })
    }

    /// Rule 3: the first `max` bytes read.
    fn first_bytes(&self, max: usize) -> Bytes {
        let mut data = self.read.iter().filter_map(Frame::data_ref);
        let Some(first) = data.next() else {
            return Bytes::new();
        };
        if first.len() >= max || data.clone().next().is_none() {
            return first.slice(..first.len().min(max));
        }
        let mut out = BytesMut::with_capacity(max);
        for d in std::iter::once(first).chain(data) {
            let room = max - out.len();
            out.extend_from_slice(&d[..d.len().min(room)]);
            if out.len() == max {
                break;
            }
        }
        out.freeze()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.read.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(read));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::HeaderMap;

    use super::*;

    /// A client's body, frame by frame; then its end, or (`waits`) nothing more for now.
    #[derive(Debug)]
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        waits: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if self.waits => Poll::Pending,
                None => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.waits
        }
    }

    fn body(chunks: &[&str], trailers: bool) -> RequestBody<Frames> {
        let mut frames: VecDeque<Frame<Bytes>> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-sum", http::HeaderValue::from_static("1"));
            frames.push_back(Frame::trailers(t));
        }
        RequestBody::new(Frames {
            frames,
            waits: false,
        })
    }

    /// Every data byte and whether trailers came, as forwarded.
    async fn forwarded(mut b: RequestBody<Frames>) -> (String, bool) {
        let (mut data, mut trailers) = (String::new(), false);
        while let Some(frame) = b.frame().await {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(d) => data.push_str(std::str::from_utf8(&d).unwrap()),
                Err(f) => trailers |= f.is_trailers(),
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn the_check_sees_the_first_bytes_and_upstream_gets_them_all() {
        // (chunks, trailers, max, partial ok, shown, partial)
        type Row = (
            &'static [&'static str],
            bool,
            usize,
            bool,
            &'static str,
            bool,
        );
        let rows: &[Row] = &[
            (&[], false, 4, false, "", false),
            (&["abc"], false, 4, false, "abc", false),
            (&["ab", "cd"], false, 4, false, "abcd", false),
            (&["ab", "cd", "e"], false, 4, false, "abcd", true),
            (&["abcdef"], false, 4, false, "abcd", true),
            (&["ab", "cdef", "gh"], true, 4, false, "abcd", true),
            (&["ab"], true, 4, false, "ab", false),
            (&["a", "b", "c"], false, 1, false, "a", true),
            // A partial body will do: reading stops once the limit is reached.
            (&["ab", "cd", "e"], false, 4, true, "abcd", false),
            (&["abcdef", "g"], false, 4, true, "abcd", true),
            (&["abc"], true, 4, true, "abc", false),
        ];
        for (chunks, trailers, max, partial_ok, shown, partial) in rows {
            let mut b = body(chunks, *trailers);
            let prefix = b.read_prefix(*max, *partial_ok).await.unwrap();
            let want = Prefix {
                bytes: Bytes::copy_from_slice(shown.as_bytes()),
                partial: *partial,
            };
            assert_eq!(prefix, want, "{chunks:?} max {max}");
            let (data, got_trailers) = forwarded(b).await;
            assert_eq!(data, chunks.concat(), "{chunks:?}: rule 2");
            assert_eq!(got_trailers, *trailers, "{chunks:?}: rule 2, trailers");
        }
    }

    /// A client that sends the limit's bytes and waits (a streaming call): a partial body is
    /// checked without waiting for more; a whole one waits.
    #[tokio::test]
    async fn reading_a_partial_body_does_not_wait_past_the_limit() {
        let waits = || {
            RequestBody::new(Frames {
                frames: [Frame::data(Bytes::from_static(b"abcd"))].into(),
                waits: true,
            })
        };
        let mut b = waits();
        let prefix = b.read_prefix(4, true).await.unwrap();
        assert_eq!((&prefix.bytes[..], prefix.partial), (&b"abcd"[..], false));
        let mut b = waits();
        let whole = tokio::time::timeout(Duration::from_millis(50), b.read_prefix(4, false));
        assert!(whole.await.is_err(), "a whole body waits for its end");
    }

    #[tokio::test]
    async fn a_body_not_read_for_a_check_streams_unchanged() {
        let (data, trailers) = forwarded(body(&["x", "yz"], true)).await;
        assert_eq!((data.as_str(), trailers), ("xyz", true));
    }

    #[test]
    fn a_declared_length_over_the_limit_is_known_without_reading() {
        let b = RequestBody::new(http_body_util::Full::new(Bytes::from_static(b"12345")));
        assert!(b.declared_over(4));
        assert!(!b.declared_over(5));
        assert_eq!(b.size_hint().exact(), Some(5));
    }
}
