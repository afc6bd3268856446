//! The agent's end of ZDS: ztunnel connects here.
//!
//! Rules (protocol.md 3.3):
//! 1. A new connection starts with ztunnel's hello; the agent replays every pod it serves
//!    (`AddWorkload` with the pod's namespace), then `SnapshotSent`, each answered by an ack.
//! 2. New pods go to the newest connection (a new ztunnel during an upgrade takes new pods);
//!    deletions go to every connection (the old ztunnel may still serve the pod).
//! 3. Each request waits up to [`ACK_TIMEOUT`] for its ack. A NACK is logged: ztunnel keeps
//!    the pod and retries on its own. A connection that fails to answer is dropped; ztunnel
//!    reconnects and gets a full replay.
//! 4. ztunnel never speaks unprompted, so a connection readable between requests has closed.
//! 5. Each pod's outcome is reported for its annotation ([`crate::annotate`]): acked -> enabled,
//!    not taken (no connection, NACK, failure) -> pending, deleted -> released.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::annotate::{Redirection, Reports, State};
use zds::message::{decode_ack, decode_hello, encode_add, encode_request};
use zds::{Ack, Conn, Listener, Netns, Request, WorkloadInfo};

/// How long the agent waits for each ack (istio-cni: 5 s).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the agent asks the server to tell ztunnel.
#[derive(Debug)]
pub enum Command {
    Add {
        uid: String,
        info: WorkloadInfo,
        netns: Arc<Netns>,
    },
    Del {
        uid: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("ZDS socket")]
    Io(#[from] std::io::Error),
    #[error("no answer within {ACK_TIMEOUT:?}")]
    Timeout,
    #[error("ztunnel closed the connection")]
    Closed,
    #[error("{0}")]
    Decode(#[from] zds::DecodeError),
}

/// Serves ztunnel connections on `listener`, telling them `commands`, until the sender closes.
/// Outcomes go to `reports` when given (rule 5).
pub async fn serve(
    listener: Listener,
    mut commands: mpsc::Receiver<Command>,
    reports: Option<Reports>,
) {
    let report = |uid: &str, info: &WorkloadInfo, state: Option<State>| {
        if let Some(reports) = &reports {
            let _ = reports.send(Redirection {
                uid: uid.to_string(),
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                state,
            });
        }
    };
    let mut pods: BTreeMap<String, (WorkloadInfo, Arc<Netns>)> = BTreeMap::new();
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let conn = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a ZDS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Rule 4.
                conns.retain(|c| !c.peer_gone());
                match replay(&conn, &pods, &report).await {
                    Ok(()) => {
                        tracing::info!(pods = pods.len(), connections = conns.len() + 1, "ztunnel connected; pods replayed");
                        conns.push(conn);
                    }
                    Err(e) => tracing::warn!(error = %e, "ztunnel connection dropped during the replay"),
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Add { uid, info, netns } => {
                        // Rule 2: the newest connection.
                        let mut state = State::Pending;
                        if let Some(conn) = conns.last() {
                            match add(conn, &uid, &info, &netns).await {
                                Ok(ack) => {
                                    log_ack(&ack, "AddWorkload", &uid);
                                    state = taken(&ack);
                                }
                                Err(e) => {
                                    tracing::warn!(%uid, error = %e, "ztunnel connection dropped");
                                    conns.pop();
                                }
                            }
                        }
                        report(&uid, &info, Some(state));
                        pods.insert(uid, (info, netns));
                    }
                    Command::Del { uid } => {
                        if let Some((info, _)) = pods.remove(&uid) {
                            report(&uid, &info, None);
                        }
                        let mut keep = Vec::new();
                        for conn in conns.drain(..) {
                            match request(&conn, &Request::Del { uid: uid.clone() }).await {
                                Ok(ack) => {
                                    log_ack(&ack, "DelWorkload", &uid);
                                    keep.push(conn);
                                }
                                Err(e) => tracing::warn!(%uid, error = %e, "ztunnel connection dropped"),
                            }
                        }
                        conns = keep;
                    }
                }
            }
        }
    }
}

/// Rule 1.
async fn replay(
    conn: &Conn,
    pods: &BTreeMap<String, (WorkloadInfo, Arc<Netns>)>,
    report: &impl Fn(&str, &WorkloadInfo, Option<State>),
) -> Result<(), ConnError> {
    let hello = recv(conn).await?;
    decode_hello(&hello.bytes, hello.fds)?;
    for (uid, (info, netns)) in pods {
        let ack = add(conn, uid, info, netns).await?;
        log_ack(&ack, "AddWorkload", uid);
        report(uid, info, Some(taken(&ack)));
    }
    let ack = request(conn, &Request::SnapshotSent).await?;
    log_ack(&ack, "SnapshotSent", "");
    Ok(())
}

async fn add(conn: &Conn, uid: &str, info: &WorkloadInfo, netns: &Netns) -> Result<Ack, ConnError> {
    conn.send(&encode_add(uid, info), Some(netns.as_fd()))
        .await?;
    read_ack(conn).await
}

async fn request(conn: &Conn, request: &Request) -> Result<Ack, ConnError> {
    let (bytes, fd) = encode_request(request);
    conn.send(&bytes, fd).await?;
    read_ack(conn).await
}

async fn read_ack(conn: &Conn) -> Result<Ack, ConnError> {
    let got = recv(conn).await?;
    Ok(decode_ack(&got.bytes, got.fds)?)
}

async fn recv(conn: &Conn) -> Result<zds::Received, ConnError> {
    match tokio::time::timeout(ACK_TIMEOUT, conn.recv()).await {
        Err(_) => Err(ConnError::Timeout),
        Ok(Err(e)) => Err(ConnError::Io(e)),
        Ok(Ok(None)) => Err(ConnError::Closed),
        Ok(Ok(Some(r))) => Ok(r),
    }
}

/// Rule 5: what an ack to `AddWorkload` means for the annotation.
fn taken(ack: &Ack) -> State {
    match ack {
        Ack::Ok => State::Enabled,
        Ack::Nack(_) => State::Pending,
    }
}

fn log_ack(ack: &Ack, kind: &str, uid: &str) {
    match ack {
        Ack::Ok => tracing::debug!(kind, uid, "acked"),
        Ack::Nack(reason) => {
            tracing::warn!(kind, uid, %reason, "ztunnel NACKed (it retries on its own)")
        }
    }
}
