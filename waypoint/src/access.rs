//! The access-log line of one HTTP request, written without the formatting machinery.
//!
//! Every request writes one, so it is on the hot path: through `tracing`'s formatter (each
//! field visited, every character of the message checked for escapes) a line cost more
//! instructions than the rest of the request's telemetry. So the line is built here by
//! appending strings and digits.
//!
//! Rules:
//! 1. The line reads as `tracing` prints the same event: time, level, target `access`, then
//!    `request complete` and `key=value` pairs in a fixed order; a field with no value is
//!    left out. One parser reads the whole log.
//! 2. Free text that may hold spaces (the deciding policy, a gRPC status) is quoted with
//!    Rust's escapes, as `tracing` quotes a string; identities, addresses, methods, paths and
//!    numbers are written bare. A control character, which no valid request carries, is
//!    written `?`, so no peer can forge a line or a terminal escape.
//! 3. The `access` target obeys the log filter (`RUST_LOG`, `/logging`) as a `tracing` event
//!    would. In the binary the line goes straight into the process's [`LogSink`]; where no
//!    sink was named (the library in tests) it is logged as a `tracing` event.

use std::cell::RefCell;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use hbone::SpiffeId;

use crate::log_sink::LogSink;
use crate::metrics::ResponseFlags;

static SINK: OnceLock<&'static LogSink> = OnceLock::new();

/// Rule 3: access lines go straight to `sink` from now on.
pub fn write_to(sink: &'static LogSink) {
    let _ = SINK.set(sink);
}

/// Logs `request`'s line if the `access` target is enabled (rule 3).
pub fn log(request: &Request<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    match SINK.get() {
        Some(sink) => {
            let mut out = String::with_capacity(320 + request.path.len());
            timestamp(&mut out, SystemTime::now());
            out.push_str("  INFO access: ");
            request.write(&mut out);
            out.push('\n');
            sink.write_line(out.as_bytes());
        }
        None => {
            let line = request.line();
            tracing::info!(target: "access", "{line}");
        }
    }
}

/// The fields of one request's line.
#[derive(Debug)]
pub struct Request<'a> {
    pub version: http::Version,
    /// The peer's identity and the address it dialled, rendered once per connection.
    pub peer: &'a str,
    pub addressed: &'a str,
    pub service: &'a str,
    pub upstream: Option<&'a SpiffeId>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub grpc_status: Option<&'a str>,
    pub duration_ms: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub flags: ResponseFlags,
    pub policy: Option<&'a str>,
}

impl Request<'_> {
    /// The line after the level and target (rule 1).
    pub fn line(&self) -> String {
        let mut out = String::with_capacity(256 + self.path.len());
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        let start = out.len();
        self.write_fields(out);
        // Rule 2.
        // A fold, not `any`: no early exit, so it runs over whole vectors of bytes.
        let control = out.as_bytes()[start..]
            .iter()
            .fold(false, |seen, &b| seen | (b < 0x20) | (b == 0x7f));
        if control {
            let clean: String = out[start..]
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            out.truncate(start);
            out.push_str(&clean);
        }
    }

    fn write_fields(&self, out: &mut String) {
        out.push_str("request complete protocol=");
        out.push_str(version(self.version));
        out.push_str(" src.identity=");
        out.push_str(self.peer);
        out.push_str(" dst.addr=");
        out.push_str(self.addressed);
        out.push_str(" dst.service=");
        out.push_str(self.service);
        if let Some(id) = self.upstream {
            out.push_str(" dst.identity=");
            spiffe(out, id);
        }
        out.push_str(" method=");
        out.push_str(self.method);
        out.push_str(" path=");
        out.push_str(self.path);
        out.push_str(" status=");
        number(out, u64::from(self.status));
        if let Some(s) = self.grpc_status {
            out.push_str(" grpc_status=");
            quoted(out, s);
        }
        out.push_str(" duration_ms=");
        number(out, self.duration_ms);
        out.push_str(" bytes_received=");
        number(out, self.bytes_received);
        out.push_str(" bytes_sent=");
        number(out, self.bytes_sent);
        out.push_str(" response_flags=");
        out.push_str(self.flags.as_str());
        if let Some(p) = self.policy {
            out.push_str(" policy=");
            quoted(out, p);
        }
    }
}

/// As `http::Version`'s `Debug` writes it.
fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn spiffe(out: &mut String, id: &SpiffeId) {
    out.push_str("spiffe://");
    out.push_str(id.trust_domain());
    out.push_str("/ns/");
    out.push_str(id.namespace());
    out.push_str("/sa/");
    out.push_str(id.service_account());
}

/// Rule 2.
fn quoted(out: &mut String, s: &str) {
    let _ = write!(out, "{s:?}");
}

fn number(out: &mut String, n: u64) {
    decimal(out, n, 1);
}

/// As `tracing`'s default timer writes it: RFC 3339, UTC, microseconds. The date and time of
/// day change once a second: they are written once a second, not once a line.
fn timestamp(out: &mut String, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            text.clear();
            second(text, secs);
            *at = secs;
        }
        out.push_str(text);
    });
    out.push('.');
    decimal(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch.
fn second(out: &mut String, secs: u64) {
    let (year, month, day) = civil(secs / 86_400);
    let of_day = secs % 86_400;
    decimal(out, year, 4);
    out.push('-');
    decimal(out, month, 2);
    out.push('-');
    decimal(out, day, 2);
    out.push('T');
    decimal(out, of_day / 3600, 2);
    out.push(':');
    decimal(out, of_day / 60 % 60, 2);
    out.push(':');
    decimal(out, of_day % 60, 2);
}

/// `n` in decimal, zeros in front to at least `width` digits.
fn decimal(out: &mut String, mut n: u64, width: usize) {
    // u64::MAX has 20 digits.
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    start = start.min(digits.len().saturating_sub(width));
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", ns, sa).unwrap()
    }

    #[test]
    fn a_line_reads_as_tracing_prints_its_fields() {
        let upstream = id("bench", "server");
        let mut r = Request {
            version: http::Version::HTTP_11,
            peer: "spiffe://cluster.local/ns/bench/sa/client",
            addressed: "10.96.0.41:80",
            service: "via.bench.svc.cluster.local",
            upstream: Some(&upstream),
            method: "POST",
            path: "/bench?x=1",
            status: 200,
            grpc_status: None,
            duration_ms: 887,
            bytes_received: 1024,
            bytes_sent: 0,
            flags: ResponseFlags::None,
            policy: None,
        };
        assert_eq!(
            r.line(),
            "request complete protocol=HTTP/1.1 \
             src.identity=spiffe://cluster.local/ns/bench/sa/client dst.addr=10.96.0.41:80 \
             dst.service=via.bench.svc.cluster.local \
             dst.identity=spiffe://cluster.local/ns/bench/sa/server method=POST path=/bench?x=1 \
             status=200 duration_ms=887 bytes_received=1024 bytes_sent=0 response_flags=-"
        );
        // A denial: no endpoint, the deciding policy quoted; gRPC's status quoted.
        r.upstream = None;
        r.status = 403;
        r.version = http::Version::HTTP_2;
        r.grpc_status = Some("7");
        r.policy = Some("shop/deny \"ua\" rule 0");
        r.duration_ms = u64::MAX;
        assert_eq!(
            r.line(),
            "request complete protocol=HTTP/2.0 \
             src.identity=spiffe://cluster.local/ns/bench/sa/client dst.addr=10.96.0.41:80 \
             dst.service=via.bench.svc.cluster.local method=POST path=/bench?x=1 status=403 \
             grpc_status=\"7\" duration_ms=18446744073709551615 bytes_received=1024 bytes_sent=0 \
             response_flags=- policy=\"shop/deny \\\"ua\\\" rule 0\""
        );
    }

    #[test]
    fn control_characters_are_written_as_question_marks() {
        let r = Request {
            version: http::Version::HTTP_11,
            peer: "spiffe://cluster.local/ns/bench/sa/client",
            addressed: "10.96.0.41:80",
            service: "via",
            upstream: None,
            method: "GET",
            path: "/a\u{1b}[31mb\nc",
            status: 200,
            grpc_status: None,
            duration_ms: 1,
            bytes_received: 0,
            bytes_sent: 0,
            flags: ResponseFlags::None,
            policy: None,
        };
        assert!(r.line().contains(" path=/a?[31mb?c "), "{}", r.line());
    }

    #[test]
    fn timestamps_as_tracing_writes_them() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            let t = UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros);
            timestamp(&mut s, t);
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_224_182, 873_043), "2026-12-02T15:09:42.873043Z");
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        // The second is kept between lines: the same second again, then the next one.
        assert_eq!(at(4_102_444_799, 1), "2099-12-31T23:59:59.000001Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
        assert_eq!(at(0, 5), "1970-01-01T00:00:00.000005Z");
    }

    #[test]
    fn numbers_as_display_writes_them() {
        for n in [0, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut s = String::new();
            number(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
