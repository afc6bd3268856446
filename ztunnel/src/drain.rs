//! What a stopping ztunnel waits for: the connections it is carrying.
//!
//! Every application connection (15001, 15006) and every inbound HBONE stream holds an
//! [`ActiveGuard`] while it is carried. On SIGTERM a shared-mode ztunnel closes its listeners
//! (a new ztunnel, already listening beside it with `SO_REUSEPORT`, takes every new
//! connection) and waits until [`Active::count`] is zero, or a limit, before it exits: an
//! upgrade drops no established connection. Idle pooled HBONE connections are not counted:
//! peers open new ones to the new ztunnel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Connections being carried, process-wide.
#[derive(Debug, Default)]
pub struct Active {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts one connection while it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Active>);

impl Active {
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no connection is being carried.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_the_last_guard() {
        let active = Arc::new(Active::default());
        active.idle().await;
        let a = active.track();
        let b = active.track();
        assert_eq!(active.count(), 2);
        let waiter = tokio::spawn({
            let active = active.clone();
            async move { active.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one connection is still carried");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle once the last guard goes")
            .unwrap();
    }
}
