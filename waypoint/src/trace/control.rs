//! Which tracer the waypoint runs, decided again at each push of meshd's Tracing resource.
//!
//! Rules, in order:
//! 1. meshd's Tracing, once received, overrides the flags (`--tracing-zipkin-address`,
//!    `--tracing-sampling`); its exporter NONE turns tracing off.
//! 2. The resource removed (the mesh config no longer configures tracing): back to the flags.
//! 3. A resource that does not convert is rejected (the NACK names it and why) and the last
//!    good one stays.
//! 4. The tracer is replaced only when what is wanted changed, so an unchanged push keeps the
//!    exporter and its connection.

use std::sync::Arc;

use proto::waypoint as wire;
use xds_client::{Changes, Rejection};

use super::{Identity, Settings, Tracer};
use crate::Waypoint;

/// meshd's Tracing pushes (or the flags) applied to a waypoint.
pub struct TracingControl {
    waypoint: Arc<Waypoint>,
    flags: Option<Settings>,
    identity: Identity,
    /// meshd's last good: `None` when none was received (or it was removed), `Some(None)`
    /// when it turns tracing off.
    from_meshd: Option<Option<Settings>>,
}

impl TracingControl {
    /// Starts with the flags' tracer (`flags`: `None` for no tracing). Inside a runtime.
    pub fn new(waypoint: Arc<Waypoint>, flags: Option<Settings>, identity: Identity) -> Self {
        let control = TracingControl {
            waypoint,
            flags,
            identity,
            from_meshd: None,
        };
        control.install();
        control
    }

    /// The waypoint whose tracer this controls.
    pub fn waypoint(&self) -> &Arc<Waypoint> {
        &self.waypoint
    }

    /// Rules 1-4 for one push; returns what was rejected.
    pub fn on_changes(&mut self, changes: Changes<wire::Tracing>) -> Vec<Rejection> {
        let before = self.wanted().cloned();
        if changes
            .removed
            .iter()
            .any(|n| n == proto::WAYPOINT_TRACING_NAME)
        {
            self.from_meshd = None;
        }
        let mut rejected = Vec::new();
        for (name, t) in &changes.upserts {
            match crate::config::convert_tracing(name, t) {
                Ok(settings) => self.from_meshd = Some(settings),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "tracing rejected; the last good stays");
                    rejected.push(Rejection {
                        name: name.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        if self.wanted() != before.as_ref() {
            self.install();
        }
        rejected
    }

    /// Rules 1-2.
    fn wanted(&self) -> Option<&Settings> {
        match &self.from_meshd {
            Some(from_meshd) => from_meshd.as_ref(),
            None => self.flags.as_ref(),
        }
    }

    fn install(&self) {
        let source = if self.from_meshd.is_some() {
            "meshd"
        } else {
            "flags"
        };
        match self.wanted() {
            Some(s) => {
                let (kind, collector) = (s.exporter.kind(), s.exporter.collector());
                tracing::info!(source, kind, %collector, sampling = s.sampling, "exporting spans");
                self.waypoint
                    .set_tracer(Tracer::new(s.clone(), self.identity.clone()));
            }
            None => {
                tracing::info!(source, "tracing off");
                self.waypoint.clear_tracer();
            }
        }
    }
}
