//! The mesh config file, read again when it changes, so an edit (tracing, extension
//! providers) reaches the waypoints without restarting meshd.
//!
//! Rules, in order:
//! 1. The file is polled; a change is different content, not a newer mtime. The first version
//!    read is sent too (the pipeline ignores a mesh config equal to the one it has), so an
//!    edit made while meshd started is not lost.
//! 2. Each version that parses goes to the pipeline, which translates everything again with
//!    it. One that cannot be read or parsed is logged once and the last good stays: meshd does
//!    not serve half a configuration (the same rule as at start).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::mesh_config::MeshConfig;

/// Watches `path` every `poll` until `tx` is dropped.
pub async fn watch(path: PathBuf, poll: Duration, tx: mpsc::Sender<MeshConfig>) {
    let mut last: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(poll).await;
        }
        let now = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if last.take().is_some() {
                    tracing::warn!(path = %path.display(), error = %e, "mesh config unreadable; the last good one stays");
                }
                continue;
            }
        };
        if last.as_ref() == Some(&now) {
            continue;
        }
        let parsed = std::str::from_utf8(&now)
            .map_err(|e| e.to_string())
            .and_then(|text| MeshConfig::parse(text).map_err(|e| e.to_string()));
        last = Some(now);
        match parsed {
            Ok(mesh) => {
                tracing::info!(path = %path.display(), "mesh config changed");
                if tx.send(mesh).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "mesh config rejected; the last good one stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zipkin(port: u16) -> String {
        format!(
            "defaultConfig: {{tracing: {{zipkin: {{address: 'zipkin.istio-system:{port}'}}}}}}\n"
        )
    }

    fn port_of(m: &MeshConfig) -> Option<u16> {
        m.tracing.as_ref().map(|t| t.collector.port)
    }

    /// Rule 2: each good edit arrives; a bad one in between is skipped (the next one to arrive
    /// is the good edit after it).
    #[tokio::test]
    async fn good_edits_arrive_and_bad_ones_are_skipped() {
        let dir = std::env::temp_dir().join(format!("meshd-mesh-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mesh.yaml");
        let write = |content: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, content).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        };
        write(&zipkin(1));
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(watch(path.clone(), Duration::from_millis(5), tx));
        assert_eq!(port_of(&rx.recv().await.expect("the first")), Some(1));
        write(&zipkin(2));
        assert_eq!(port_of(&rx.recv().await.expect("an edit")), Some(2));
        write("defaultProviders: {tracing: [nope]}\n");
        write(&zipkin(3));
        assert_eq!(port_of(&rx.recv().await.expect("the good edit")), Some(3));
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
