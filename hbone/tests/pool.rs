//! In-process HBONE: a real server and pool on loopback, asserting stream caps, connection
//! reuse, idle release, refusals with status, and identity checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{echo_through, fixture, pool};
use hbone::{H2Settings, SpiffeId};
use http::StatusCode;

#[tokio::test]
async fn streams_share_connections_up_to_the_cap() {
    let f = fixture("cap").await;
    let p = pool(H2Settings {
        max_streams_per_connection: 2,
        ..H2Settings::default()
    });
    let port = f.echo_addr.port();
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(f.open(&p, &f.server_id, port).await.unwrap());
    }
    assert_eq!(
        f.accepted.load(Ordering::SeqCst),
        3,
        "5 streams at 2 per connection"
    );
    assert_eq!(p.connection_count(), 3);
    // Freed streams make room: no new connection for the next ones.
    open.truncate(1);
    let s = f.open(&p, &f.server_id, port).await.unwrap();
    assert_eq!(echo_through(s, b"reused").await, b"reused");
    assert_eq!(f.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let f = fixture("idle").await;
    let p = pool(H2Settings {
        pool_idle_timeout: Duration::from_millis(200),
        ..H2Settings::default()
    });
    let s = f.open(&p, &f.server_id, f.echo_addr.port()).await.unwrap();
    assert_eq!(echo_through(s, b"once").await, b"once");
    assert_eq!(p.connection_count(), 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(p.connection_count(), 0, "idle connection kept");
    assert_eq!(
        f.ended.load(Ordering::SeqCst),
        1,
        "server still holds the connection"
    );
}

#[tokio::test]
async fn surplus_idle_connections_go_first_and_one_stays_warm() {
    let f = fixture("surplus").await;
    let p = pool(H2Settings {
        max_streams_per_connection: 1,
        pool_surplus_idle_timeout: Duration::from_millis(200),
        ..H2Settings::default()
    });
    let port = f.echo_addr.port();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(f.open(&p, &f.server_id, port).await.unwrap());
    }
    assert_eq!(p.connection_count(), 3, "one stream per connection");
    for s in open {
        assert_eq!(echo_through(s, b"burst").await, b"burst");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(p.connection_count(), 1, "surplus idle connections kept");
    assert_eq!(f.ended.load(Ordering::SeqCst), 2, "server still holds them");
    // The one kept is reused: no new handshake.
    let s = f.open(&p, &f.server_id, port).await.unwrap();
    assert_eq!(echo_through(s, b"warm").await, b"warm");
    assert_eq!(f.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refusal_status_reaches_the_client_and_the_connection_survives() {
    let f = fixture("refuse").await;
    let p = pool(H2Settings::default());
    let err = f.open(&p, &f.server_id, 401).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");
    let s = f.open(&p, &f.server_id, f.echo_addr.port()).await.unwrap();
    assert_eq!(echo_through(s, b"after").await, b"after");
    assert_eq!(f.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_with_unexpected_identity_is_refused() {
    let f = fixture("identity").await;
    let p = pool(H2Settings::default());
    let other: SpiffeId = "spiffe://cluster.local/ns/a/sa/someone-else"
        .parse()
        .unwrap();
    let err = f.open(&p, &other, f.echo_addr.port()).await.unwrap_err();
    assert!(err.status().is_none(), "{err}");
    assert!(format!("{:?}", err).contains("not one of"), "{err:?}");
    assert_eq!(p.connection_count(), 0);
}

#[tokio::test]
async fn an_open_stream_costs_little() {
    // The copy future lives as long as the tunneled connection: it is per-connection memory.
    let f = fixture("size").await;
    let p = pool(H2Settings::default());
    let stream = f.open(&p, &f.server_id, f.echo_addr.port()).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _app = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (mut side, _) = l.accept().await.unwrap();
    let copy = hbone::copy_bidirectional(&mut side, stream);
    let size = std::mem::size_of_val(&copy);
    eprintln!("copy future: {size} bytes");
    assert!(size <= 1024, "copy future is {size} bytes");
}
