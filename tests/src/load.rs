//! Load generators for the benchmark harness. Each prints one JSON object on stdout, so the
//! harness can run them inside network namespaces and read the figures back.
//!
//! At a fixed rate, latency is measured from when a request was due to be sent whenever the
//! generator fell behind (a stalled path shows up as latency instead of hiding as fewer
//! requests: coordinated omission), and from the actual send otherwise, so the timer's
//! millisecond granularity is not counted as latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Raises the open-file limit: the idle-connection benchmark holds thousands.
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Accepts connections and discards what they send.
pub async fn sink(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// `streams` connections each writing as fast as they can for `secs`; prints bytes and rate.
pub async fn bulk(connect: SocketAddr, streams: usize, secs: f64) -> anyhow::Result<()> {
    let total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(connect).await.context("connect")?;
            let buf = vec![0x5au8; 128 * 1024];
            while Instant::now() < deadline {
                s.write_all(&buf).await?;
                total.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            s.shutdown().await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = total.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({ "bytes": bytes, "secs": elapsed, "mbps": bytes as f64 * 8.0 / elapsed / 1e6 })
    );
    Ok(())
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

async fn exchange(s: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> anyhow::Result<()> {
    s.write_all(msg).await?;
    s.read_exact(buf).await.context("echo")?;
    Ok(())
}

fn http_request(authority: SocketAddr, size: usize) -> Vec<u8> {
    let mut m = format!(
        "POST /bench HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: meshapp-bench\r\nContent-Length: {size}\r\n\r\n"
    )
    .into_bytes();
    m.resize(m.len() + size, b'x');
    m
}

/// Sends `msg`, reads one response (head, then `Content-Length` bytes); it must be a 200.
async fn http_exchange(s: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> anyhow::Result<()> {
    s.write_all(msg).await?;
    let mut have = 0;
    let end = loop {
        if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(
            have < buf.len(),
            "response head larger than {} bytes",
            buf.len()
        );
        let n = s.read(&mut buf[have..]).await?;
        anyhow::ensure!(n > 0, "connection closed before a response");
        have += n;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(status == "200", "status {status}: {head:?}");
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .context("a content-length")?;
    // The server answers one request at a time, so nothing follows the body.
    let mut left = (end + length).saturating_sub(have);
    let cap = buf.len();
    while left > 0 {
        let n = s.read(&mut buf[..left.min(cap)]).await?;
        anyhow::ensure!(n > 0, "connection closed mid-body");
        left -= n;
    }
    Ok(())
}

/// One connection, one `size`-byte request at a time against an echo server, for `secs`.
pub async fn pingpong(connect: SocketAddr, size: usize, secs: f64) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(connect).await.context("connect")?;
    s.set_nodelay(true)?;
    let msg = vec![1u8; size];
    let mut buf = vec![0u8; size];
    // Warm up the path (pools, caches) before measuring.
    for _ in 0..100 {
        exchange(&mut s, &msg, &mut buf).await?;
    }
    let mut h = histogram();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        let t = Instant::now();
        exchange(&mut s, &msg, &mut buf).await?;
        h.saturating_record(t.elapsed().as_micros() as u64);
    }
    println!("{}", percentiles(&h));
    Ok(())
}

/// How late a timer may wake without that counting as the generator falling behind.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// `rps` requests per second spread over `conns` connections, for `secs`; latency from each
/// request's scheduled time.
pub async fn rate(
    connect: SocketAddr,
    rps: f64,
    conns: usize,
    size: usize,
    secs: f64,
) -> anyhow::Result<()> {
    rate_of(connect, rps, conns, size, secs, Exchange::Echo).await
}

/// As [`rate`], each request an HTTP/1.1 `POST` with a `size`-byte body on kept-alive
/// connections (against `meshapp http-serve`); any status but 200 fails the run.
pub async fn http_rate(
    connect: SocketAddr,
    rps: f64,
    conns: usize,
    size: usize,
    secs: f64,
) -> anyhow::Result<()> {
    rate_of(connect, rps, conns, size, secs, Exchange::Http).await
}

#[derive(Debug, Clone, Copy)]
enum Exchange {
    /// `size` bytes echoed back.
    Echo,
    /// One HTTP/1.1 request and its response.
    Http,
}

async fn rate_of(
    connect: SocketAddr,
    rps: f64,
    conns: usize,
    size: usize,
    secs: f64,
    kind: Exchange,
) -> anyhow::Result<()> {
    let per_conn = rps / conns as f64;
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let mut tasks = Vec::new();
    let begin = Instant::now() + Duration::from_millis(100);
    for k in 0..conns {
        // Connection k is offset by k/conns of an interval, so requests arrive evenly spaced
        // at `rps` rather than in bursts of `conns` at once.
        let start = begin + interval.mul_f64(k as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(connect).await.context("connect")?;
            s.set_nodelay(true)?;
            let msg = match kind {
                Exchange::Echo => vec![1u8; size],
                Exchange::Http => http_request(connect, size),
            };
            let mut buf = vec![0u8; size.max(4096)];
            let mut h = histogram();
            let n = (secs * per_conn) as u64;
            for i in 0..n {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let now = Instant::now();
                // Woken late by the timer alone: measure from now. Behind schedule because the
                // previous exchange was slow: measure from when this one was due.
                let from = if now.duration_since(due) < TIMER_SLACK {
                    now
                } else {
                    due
                };
                match kind {
                    Exchange::Echo => exchange(&mut s, &msg, &mut buf[..size]).await?,
                    Exchange::Http => http_exchange(&mut s, &msg, &mut buf).await?,
                }
                h.saturating_record(from.elapsed().as_micros() as u64);
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    let mut all = histogram();
    for t in tasks {
        all.add(t.await??).context("merging histograms")?;
    }
    println!("{}", percentiles(&all));
    Ok(())
}

/// New connections as fast as `concurrency` workers can: connect, one small echo, close.
pub async fn connrate(connect: SocketAddr, concurrency: usize, secs: f64) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            while Instant::now() < deadline {
                let ok = async {
                    let mut s = TcpStream::connect(connect).await?;
                    exchange(&mut s, b"0123456789abcdef", &mut buf).await
                }
                .await;
                match ok {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({ "connections": n, "failed": failed.load(Ordering::Relaxed), "secs": elapsed, "per_sec": n as f64 / elapsed })
    );
    Ok(())
}

/// Opens `count` connections (one echo each so they are surely established end to end), prints
/// `{"open": n}`, holds them until stdin closes or `hold` passes, then closes them all.
pub async fn idle(connect: SocketAddr, count: usize, hold: Duration) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(count);
    // A bounded number in flight, so the SYN backlog is not the thing measured.
    for chunk in (0..count).collect::<Vec<_>>().chunks(200) {
        let mut tasks = Vec::with_capacity(chunk.len());
        for _ in chunk {
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(connect).await.context("connect")?;
                let mut buf = [0u8; 4];
                exchange(&mut s, b"idle", &mut buf).await?;
                Ok::<_, anyhow::Error>(s)
            }));
        }
        for t in tasks {
            open.push(t.await??);
        }
    }
    println!("{}", json!({ "open": open.len() }));
    tokio::time::sleep(hold).await;
    drop(open);
    println!("{}", json!({ "closed": count }));
    Ok(())
}
