//! One ZDS connection's protocol state: what each request means for the set of served pods.
//!
//! Rules (protocol.md 3.3), in order:
//! 1. After connecting, the agent replays its pods: `AddWorkload` for those it holds a
//!    namespace for, `KeepWorkload` for the others; then `SnapshotSent`.
//! 2. At `SnapshotSent`, every served pod the replay did not name is stopped: it left while
//!    ztunnel was away from the agent.
//! 3. After the snapshot only `AddWorkload` and `DelWorkload` are valid; a `KeepWorkload` or a
//!    second `SnapshotSent` is a protocol error (NACKed, then the connection is dropped).
//! 4. A `DelWorkload` during the replay also takes the pod out of the replayed set.

use std::collections::HashSet;

/// Where a connection is.
#[derive(Debug, Default)]
pub struct Session {
    /// The uids named so far, until the snapshot ends the replay.
    replay: Option<HashSet<String>>,
}

/// A request that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("KeepWorkload {0} after SnapshotSent (only valid during the replay)")]
    KeepAfterSnapshot(String),
    #[error("a second SnapshotSent")]
    SecondSnapshot,
}

impl Session {
    /// A new connection: the replay starts.
    pub fn new() -> Self {
        Session {
            replay: Some(HashSet::new()),
        }
    }

    /// Whether the snapshot was received on this connection.
    pub fn synced(&self) -> bool {
        self.replay.is_none()
    }

    pub fn add(&mut self, uid: &str) {
        if let Some(named) = &mut self.replay {
            named.insert(uid.to_string());
        }
    }

    pub fn keep(&mut self, uid: &str) -> Result<(), ProtocolError> {
        match &mut self.replay {
            Some(named) => {
                named.insert(uid.to_string());
                Ok(())
            }
            None => Err(ProtocolError::KeepAfterSnapshot(uid.to_string())),
        }
    }

    pub fn del(&mut self, uid: &str) {
        if let Some(named) = &mut self.replay {
            named.remove(uid);
        }
    }

    /// Ends the replay; returns the uids it named (rule 2: every other pod goes).
    pub fn snapshot(&mut self) -> Result<HashSet<String>, ProtocolError> {
        self.replay.take().ok_or(ProtocolError::SecondSnapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step {
        Add(&'static str),
        Keep(&'static str),
        Del(&'static str),
        Snapshot,
    }
    use Step::*;

    /// Each sequence of requests, and what the snapshot keeps or which error ends it.
    #[test]
    fn sequences() {
        type Row<'a> = (&'a str, Vec<Step>, Result<Vec<&'a str>, ProtocolError>);
        let rows: Vec<Row> = vec![
            (
                "adds and keeps are kept",
                vec![Add("a"), Keep("b"), Snapshot],
                Ok(vec!["a", "b"]),
            ),
            ("an empty replay keeps nothing", vec![Snapshot], Ok(vec![])),
            (
                "a delete during the replay drops the pod",
                vec![Add("a"), Keep("b"), Del("a"), Snapshot],
                Ok(vec!["b"]),
            ),
            (
                "keep after the snapshot",
                vec![Snapshot, Keep("a")],
                Err(ProtocolError::KeepAfterSnapshot("a".into())),
            ),
            (
                "a second snapshot",
                vec![Add("a"), Snapshot, Add("b"), Del("a"), Snapshot],
                Err(ProtocolError::SecondSnapshot),
            ),
        ];
        for (name, steps, want) in rows {
            let mut s = Session::new();
            let mut kept = None;
            let mut error = None;
            for step in steps {
                let r = match step {
                    Add(u) => {
                        s.add(u);
                        Ok(())
                    }
                    Keep(u) => s.keep(u),
                    Del(u) => {
                        s.del(u);
                        Ok(())
                    }
                    Snapshot => s.snapshot().map(|k| {
                        let mut k: Vec<String> = k.into_iter().collect();
                        k.sort();
                        kept = Some(k);
                    }),
                };
                if let Err(e) = r {
                    error = Some(e);
                    break;
                }
            }
            match want {
                Ok(w) => {
                    assert_eq!(error, None, "{name}");
                    assert_eq!(kept.unwrap(), w, "{name}");
                    assert!(s.synced(), "{name}");
                }
                Err(e) => assert_eq!(error, Some(e), "{name}"),
            }
        }
    }
}
