//! Readiness (`GET /healthz/ready` on 15021): 200 once every startup task has finished
//! (config loaded, certificate issued, listeners bound), 503 naming what is still pending.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;

use crate::http::{self, Body};

/// Startup tasks still pending.
#[derive(Clone, Debug, Default)]
pub struct Ready(Arc<Mutex<BTreeSet<&'static str>>>);

impl Ready {
    /// Ready once each of `tasks` is marked done.
    pub fn new(tasks: &[&'static str]) -> Self {
        Ready(Arc::new(Mutex::new(tasks.iter().copied().collect())))
    }

    pub fn done(&self, task: &'static str) {
        self.lock().remove(task);
    }

    /// Marks `task` pending again (shared mode: the node agent went away).
    pub fn undo(&self, task: &'static str) {
        self.lock().insert(task);
    }

    pub fn pending(&self) -> Vec<&'static str> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn response(&self, path: &str) -> hyper::Response<Body> {
        if path != "/healthz/ready" {
            return http::text(StatusCode::NOT_FOUND, "not found\n");
        }
        let pending = self.pending();
        if pending.is_empty() {
            http::text(StatusCode::OK, "ready\n")
        } else {
            http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: waiting for {}\n", pending.join(", ")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_done() {
        let r = Ready::new(&["config", "certificate"]);
        assert_eq!(
            r.response("/healthz/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        r.done("config");
        assert_eq!(r.pending(), vec!["certificate"]);
        r.done("certificate");
        assert_eq!(r.response("/healthz/ready").status(), StatusCode::OK);
        assert_eq!(r.response("/other").status(), StatusCode::NOT_FOUND);
    }
}
