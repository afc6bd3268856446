//! `meshapp`: the application the end-to-end tests run inside network namespaces.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use e2e::{app, load};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// HTTP/1.1 server (keep-alive): answers 200 with `<METHOD> <path> from <peer IP>`.
    HttpServe {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// HTTP server answering every request with the current content of a file.
    FileServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// HTTP collector: prints each request's line and body, answers 202.
    Record {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// HTTP external authorizer: allows requests with `x-ext-authz: allow`, denies others (403).
    ExtAuthz {
        #[arg(long)]
        listen: SocketAddr,
    },
    PatternServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    PatternSend {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        bytes: u64,
        /// Bytes per second, to stretch a transfer over time.
        #[arg(long)]
        rate: Option<u64>,
    },
    Roundtrip {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        message: String,
    },
    Greet {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        message: String,
    },
    Answer {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        message: String,
    },
    Many {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        hold_secs: u64,
    },
    /// Discards everything sent to it.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Benchmark: bulk throughput over `streams` connections.
    Bulk {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Benchmark: sequential request/response latency on one connection.
    Pingpong {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Benchmark: HTTP/1.1 latency at a fixed request rate (against `http-serve`).
    HttpRate {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000.0)]
        rps: f64,
        #[arg(long, default_value_t = 10)]
        conns: usize,
        /// Request body bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Benchmark: latency at a fixed request rate.
    Rate {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 2000.0)]
        rps: f64,
        #[arg(long, default_value_t = 10)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Benchmark: new connections per second.
    Connrate {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Benchmark: hold many idle connections open.
    Idle {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        hold_secs: f64,
    },
    /// HTTP/1.1 request; prints the status code, then the body.
    Http {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "meshapp")]
        user_agent: String,
        /// An extra request header, `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Raw HBONE request to a ztunnel's 15008.
    Probe {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value = "CONNECT")]
        method: String,
        /// Omit for a request with no :authority.
        #[arg(long)]
        authority: Option<String>,
        /// Client certificate chain (PEM); omit to present none.
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        #[arg(long)]
        key: Option<std::path::PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    load::raise_fd_limit();
    match Cli::parse().cmd {
        Cmd::Echo { listen } => app::echo(listen).await,
        Cmd::HttpServe { listen } => app::http_serve(listen).await,
        Cmd::FileServe { listen, file } => app::file_serve(listen, file).await,
        Cmd::Record { listen } => app::record(listen).await,
        Cmd::ExtAuthz { listen } => app::ext_authz_serve(listen).await,
        Cmd::PatternServer { listen } => app::pattern_server(listen).await,
        Cmd::PatternSend {
            connect,
            bytes,
            rate,
        } => app::pattern_send(connect, bytes, rate).await,
        Cmd::Roundtrip { connect, message } => app::roundtrip(connect, &message).await,
        Cmd::Greet { listen, message } => app::greet(listen, message).await,
        Cmd::Answer { connect, message } => app::answer(connect, &message).await,
        Cmd::Many {
            connect,
            count,
            hold_secs,
        } => app::many(connect, count, Duration::from_secs(hold_secs)).await,
        Cmd::Sink { listen } => load::sink(listen).await,
        Cmd::Bulk {
            connect,
            streams,
            secs,
        } => load::bulk(connect, streams, secs).await,
        Cmd::Pingpong {
            connect,
            size,
            secs,
        } => load::pingpong(connect, size, secs).await,
        Cmd::HttpRate {
            connect,
            rps,
            conns,
            size,
            secs,
        } => load::http_rate(connect, rps, conns, size, secs).await,
        Cmd::Rate {
            connect,
            rps,
            conns,
            size,
            secs,
        } => load::rate(connect, rps, conns, size, secs).await,
        Cmd::Connrate {
            connect,
            concurrency,
            secs,
        } => load::connrate(connect, concurrency, secs).await,
        Cmd::Idle {
            connect,
            count,
            hold_secs,
        } => load::idle(connect, count, Duration::from_secs_f64(hold_secs)).await,
        Cmd::Http {
            addr,
            method,
            path,
            user_agent,
            headers,
        } => app::http(addr, &method, &path, &user_agent, &headers).await,
        Cmd::Probe {
            connect,
            method,
            authority,
            cert,
            key,
        } => {
            let cert = match (cert, key) {
                (Some(c), Some(k)) => {
                    Some((std::fs::read_to_string(c)?, std::fs::read_to_string(k)?))
                }
                _ => None,
            };
            app::probe(app::Probe {
                connect,
                method: method.parse()?,
                authority,
                cert,
            })
            .await
        }
    }
}
