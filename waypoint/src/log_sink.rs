//! Log lines to stderr, written in batches: a waypoint writes an access-log line per request,
//! and a `write` system call for each was a sixth of its CPU at 1,000 requests/s.
//!
//! Rules:
//! 1. Lines are appended to a buffer and written out by a flusher thread every
//!    [`FLUSH_EVERY`], or at once when the buffer passes [`HIGH_WATER`] (so memory stays
//!    bounded and a burst never waits).
//! 2. Warnings and errors go out at once, with whatever is buffered before them, so nothing
//!    an operator needs right away waits, and order is kept.
//! 3. [`LogSink::flush`] at exit writes what is left.
//! 4. A failed write is dropped (stderr is gone; there is no one left to tell).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer (rule 1).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that make a write happen at once (rule 1).
pub const HIGH_WATER: usize = 64 * 1024;

/// The process's batched stderr.
#[derive(Debug)]
pub struct LogSink {
    buf: Mutex<Vec<u8>>,
    /// No flusher thread could be started: every line is written at once.
    unbatched: AtomicBool,
}

impl LogSink {
    /// The sink, its flusher thread started on first use.
    pub fn global() -> &'static LogSink {
        static SINK: OnceLock<LogSink> = OnceLock::new();
        let mut first = false;
        let sink = SINK.get_or_init(|| {
            first = true;
            LogSink::new()
        });
        if first {
            let spawned = std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        sink.flush();
                    }
                });
            if spawned.is_err() {
                sink.unbatched.store(true, Ordering::Relaxed);
                sink.flush();
            }
        }
        sink
    }

    fn new() -> LogSink {
        LogSink {
            buf: Mutex::new(Vec::with_capacity(HIGH_WATER)),
            unbatched: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rule 3: writes out what is buffered.
    pub fn flush(&self) {
        let mut buf = self.lock();
        write_out(&mut buf);
    }

    /// One whole line, made by the caller (the access log, `access.rs`), batched like the rest.
    pub fn write_line(&self, line: &[u8]) {
        self.append(line, false);
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut buf = self.lock();
        buf.extend_from_slice(line);
        if urgent || buf.len() >= HIGH_WATER || self.unbatched.load(Ordering::Relaxed) {
            write_out(&mut buf);
        }
    }
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// One event's writer: the fmt layer formats a whole event, then writes it.
#[derive(Debug)]
pub struct Line {
    sink: &'static LogSink,
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.sink.append(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for &'static LogSink {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            sink: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            sink: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_the_flush_unless_urgent_or_many() {
        let sink: &'static LogSink = Box::leak(Box::new(LogSink::new()));
        let mut info = sink.make_writer();
        info.write_all(b"info line\n").unwrap();
        assert_eq!(sink.lock().as_slice(), b"info line\n", "buffered");
        let mut warn = Line { sink, urgent: true };
        warn.write_all(b"warn line\n").unwrap();
        assert!(sink.lock().is_empty(), "written out, the info line first");
        for _ in 0..HIGH_WATER / 10 + 1 {
            info.write_all(b"info line\n").unwrap();
        }
        assert!(sink.lock().len() < HIGH_WATER, "bounded");
        info.write_all(b"tail\n").unwrap();
        sink.flush();
        assert!(sink.lock().is_empty());
        // Without a flusher thread, nothing waits.
        sink.unbatched.store(true, Ordering::Relaxed);
        info.write_all(b"info line\n").unwrap();
        assert!(sink.lock().is_empty(), "written at once");
    }
}
