//! HBONE hot paths on loopback: opening and closing a stream on a pooled connection, and
//! moving bytes through an established stream (TCP -> HTTP/2 -> TLS -> ... -> TCP echo).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hbone::H2Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (f, pool) = rt.block_on(async {
        let f = common::fixture("bench").await;
        let pool = common::pool(H2Settings::default());
        // Warm: the pooled connection exists before measuring.
        let s = f
            .open(&pool, &f.server_id, f.echo_addr.port())
            .await
            .unwrap();
        assert_eq!(common::echo_through(s, b"warm").await, b"warm");
        (f, pool)
    });

    c.bench_function(
        "stream open, 16-byte echo, close (pooled connection)",
        |b| {
            b.to_async(&rt).iter(|| async {
                let s = f
                    .open(&pool, &f.server_id, f.echo_addr.port())
                    .await
                    .unwrap();
                common::echo_through(s, b"0123456789abcdef").await
            })
        },
    );

    // One long-lived stream; each iteration pushes 1 MiB through it and reads it back.
    let (mut app, copier) = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        app.set_nodelay(true).unwrap();
        let (mut side, _) = l.accept().await.unwrap();
        side.set_nodelay(true).unwrap();
        let stream = f
            .open(&pool, &f.server_id, f.echo_addr.port())
            .await
            .unwrap();
        let copier =
            tokio::spawn(async move { hbone::copy_bidirectional(&mut side, stream).await });
        (app, copier)
    });
    const MIB: usize = 1024 * 1024;
    let payload = vec![7u8; MIB];
    let mut back = vec![0u8; MIB];
    let mut g = c.benchmark_group("bidirectional copy");
    g.throughput(Throughput::Bytes(2 * MIB as u64));
    g.bench_function("1 MiB echoed through one stream", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut r, mut w) = app.split();
                let write = async { w.write_all(&payload).await.unwrap() };
                let read = async { r.read_exact(&mut back).await.unwrap() };
                tokio::join!(write, read);
            })
        })
    });
    g.finish();
    drop(app);
    let _ = rt.block_on(copier);
}

criterion_group!(benches, bench);
criterion_main!(benches);
