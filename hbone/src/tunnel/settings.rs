//! HTTP/2 settings for HBONE, with Istio's defaults (protocol.md 2.5, 2.6).

use std::time::Duration;

/// Tunables shared by the HBONE client and server.
#[derive(Debug, Clone)]
pub struct H2Settings {
    /// `HTTP2_STREAM_WINDOW_SIZE`.
    pub stream_window: u32,
    /// `HTTP2_CONNECTION_WINDOW_SIZE`.
    pub connection_window: u32,
    /// `HTTP2_FRAME_SIZE`.
    pub frame_size: u32,
    /// Streams one client connection carries at most (`POOL_MAX_STREAMS_PER_CONNECTION`).
    pub max_streams_per_connection: usize,
    /// Streams the server lets a client open on one connection.
    pub server_max_concurrent_streams: u32,
    /// Idle pooled connections are closed after this (`POOL_UNUSED_RELEASE_TIMEOUT`).
    pub pool_idle_timeout: Duration,
    /// A key's idle connections beyond the first are closed after this (or
    /// `pool_idle_timeout`, if shorter): after a burst, one warm connection per destination is
    /// enough, and each idle one holds ~100 KB of TLS and HTTP/2 state at both ends.
    pub pool_surplus_idle_timeout: Duration,
    /// A handshake that takes longer than this fails.
    pub handshake_timeout: Duration,
    /// How often an HTTP/2 PING checks the peer is alive.
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long drops the connection.
    pub keepalive_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            frame_size: 1024 * 1024,
            max_streams_per_connection: 100,
            server_max_concurrent_streams: 200,
            pool_idle_timeout: Duration::from_secs(300),
            pool_surplus_idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

pub(crate) const CLIENT_MAX_HEADER_LIST: u32 = 16 * 1024;
pub(crate) const SERVER_MAX_HEADER_LIST: u32 = 64 * 1024;
pub(crate) const SERVER_MAX_SEND_BUFFER: usize = 400 * 1024;
