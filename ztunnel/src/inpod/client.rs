//! ztunnel's end of ZDS: connect to the node agent, say hello, answer each request with an
//! ack, and reconnect when the agent goes away (pods keep being served meanwhile).
//!
//! Rules:
//! 1. Connect attempts back off from 10 ms, doubling, up to 15 s (Istio's ztunnel).
//! 2. Each request is acked in order once handled. A request that cannot be decoded, or one
//!    that breaks the protocol (`session`), is NACKed with the reason and the connection is
//!    dropped; the next connection starts a new replay.
//! 3. Readiness task `zds` is done when a connection's snapshot has been handled, and pending
//!    again while disconnected.

use std::path::PathBuf;
use std::time::Duration;

use zds::message::{decode_request, encode_ack, encode_hello};
use zds::{Ack, Conn, Request};

use super::pods::{Pods, RETRY};
use super::session::Session;
use crate::readiness::Ready;

/// The readiness task this module owns.
pub const READY_TASK: &str = "zds";

const CONNECT_INITIAL: Duration = Duration::from_millis(10);
const CONNECT_MAX: Duration = Duration::from_secs(15);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("the node agent closed the connection")]
    Closed,
    #[error("ZDS socket")]
    Io(#[from] std::io::Error),
    #[error("refused a request: {0}")]
    Refused(String),
}

/// Serves the agent at `socket` forever.
pub async fn run(socket: PathBuf, mut pods: Pods, ready: Ready) {
    let mut delay = CONNECT_INITIAL;
    let mut warned = false;
    loop {
        let conn = match Conn::connect(&socket).await {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(socket = %socket.display(), error = %e, "node agent not reachable; retrying");
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CONNECT_MAX);
                continue;
            }
        };
        delay = CONNECT_INITIAL;
        warned = false;
        tracing::info!(socket = %socket.display(), "connected to the node agent");
        let end = serve(&conn, &mut pods, &ready).await;
        ready.undo(READY_TASK);
        tracing::warn!(reason = %end, served = pods.served().len(), "node agent connection ended; pods stay served");
        tokio::time::sleep(CONNECT_INITIAL).await;
    }
}

async fn serve(conn: &Conn, pods: &mut Pods, ready: &Ready) -> End {
    if let Err(e) = conn.send(&encode_hello(), None).await {
        return End::Io(e);
    }
    let mut session = Session::new();
    let mut retry = tokio::time::interval(RETRY);
    retry.tick().await;
    loop {
        tokio::select! {
            got = conn.recv() => {
                let got = match got {
                    Ok(Some(g)) => g,
                    Ok(None) => return End::Closed,
                    Err(e) => return End::Io(e),
                };
                let decoded = if got.truncated {
                    Err(zds::DecodeError::Truncated.to_string())
                } else if got.control_truncated {
                    Err(zds::DecodeError::ControlTruncated.to_string())
                } else {
                    decode_request(&got.bytes, got.fds).map_err(|e| e.to_string())
                };
                let (ack, fatal) = match decoded {
                    Ok(request) => handle(request, &mut session, pods).await,
                    Err(e) => (Ack::Nack(e), true),
                };
                if let Ack::Nack(reason) = &ack {
                    tracing::warn!(%reason, "ZDS request NACKed");
                }
                if let Err(e) = conn.send(&encode_ack(&ack), None).await {
                    return End::Io(e);
                }
                if fatal {
                    let Ack::Nack(reason) = ack else { return End::Closed };
                    return End::Refused(reason);
                }
                if session.synced() {
                    ready.done(READY_TASK);
                }
            }
            _ = retry.tick() => pods.retry_waiting().await,
        }
    }
}

/// One request: its ack, and whether the connection must end (rule 2).
async fn handle(request: Request, session: &mut Session, pods: &mut Pods) -> (Ack, bool) {
    tracing::debug!(
        request = request.kind(),
        uid = request.uid().unwrap_or_default(),
        "ZDS request"
    );
    let outcome = match request {
        Request::Add { uid, info, netns } => {
            session.add(&uid);
            pods.add(&uid, info, netns).await.map_err(|e| (e, false))
        }
        Request::Keep { uid } => session.keep(&uid).map_err(|e| (e.to_string(), true)),
        Request::Del { uid } => {
            session.del(&uid);
            pods.remove(&uid);
            Ok(())
        }
        Request::SnapshotSent => match session.snapshot() {
            Ok(keep) => {
                let gone = pods.retain(&keep);
                tracing::info!(
                    served = pods.served().len(),
                    waiting = pods.waiting(),
                    stopped = gone.len(),
                    "ZDS snapshot received"
                );
                Ok(())
            }
            Err(e) => Err((e.to_string(), true)),
        },
    };
    match outcome {
        Ok(()) => (Ack::Ok, false),
        Err((reason, fatal)) => (Ack::Nack(reason), fatal),
    }
}
