//! `meshapp`: the application the end-to-end tests run inside network namespaces.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use e2e::app;

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
    /// HTTP/1.1 request; prints the status code, then the body.
    Http {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        path: String,
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
    match Cli::parse().cmd {
        Cmd::Echo { listen } => app::echo(listen).await,
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
        Cmd::Http { addr, method, path } => app::http(addr, &method, &path).await,
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
