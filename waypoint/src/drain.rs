//! The drain signal (`proxy.rs` rule 5), which every HBONE connection and every HTTP connection
//! races on each of its wakes, so waiting on it must cost next to nothing.
//!
//! Rules:
//! 1. [`Drain::start`] sets the flag, once, and wakes every waiter registered by then.
//! 2. A [`Draining`] future is ready once the flag is set. Its first poll registers its waker
//!    (a lock, once per connection); a later poll loads the flag and stores the waker only if
//!    it changed (an atomic compare), with no lock.
//! 3. A waiter dropped unfinished unregisters itself (the lock again, once).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Where draining starts; [`Drain::waiter`] hands out the futures that see it.
#[derive(Debug, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    started: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

impl Inner {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drain {
    /// Rule 1.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        for waker in self.inner.waiters().wakers.values() {
            waker.wake();
        }
    }

    pub fn started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// A future that is ready once draining has started.
    pub fn waiter(&self) -> Draining {
        Draining {
            inner: self.inner.clone(),
            slot: None,
        }
    }
}

/// Ready once draining has started (rules 2-3).
#[derive(Debug)]
pub struct Draining {
    inner: Arc<Inner>,
    slot: Option<(u64, Arc<AtomicWaker>)>,
}

impl Future for Draining {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.inner.started.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        match &this.slot {
            Some((_, waker)) => waker.register(cx.waker()),
            None => {
                let waker = Arc::new(AtomicWaker::new());
                waker.register(cx.waker());
                let mut waiters = this.inner.waiters();
                let id = waiters.next;
                waiters.next += 1;
                waiters.wakers.insert(id, waker.clone());
                this.slot = Some((id, waker));
            }
        }
        // Loaded again after registering: a start in between is not missed (it either sees
        // the waker or set the flag before this load).
        match this.inner.started.load(Ordering::SeqCst) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if let Some((id, _)) = self.slot.take() {
            self.inner.waiters().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_once_draining_starts_and_unregister_when_dropped() {
        let drain = Drain::default();
        let mut first = tokio_test_poll(drain.waiter());
        let second = drain.waiter();
        assert!(first.as_mut().poll(&mut noop_cx()).is_pending());
        assert_eq!(
            drain.inner.waiters().wakers.len(),
            1,
            "registered on first poll"
        );
        drop(second);
        let third = drain.waiter();
        let mut third = tokio_test_poll(third);
        assert!(third.as_mut().poll(&mut noop_cx()).is_pending());
        drop(third);
        assert_eq!(
            drain.inner.waiters().wakers.len(),
            1,
            "a dropped waiter leaves"
        );
        let woken = tokio::spawn(first);
        tokio::task::yield_now().await;
        assert!(!drain.started());
        drain.start();
        assert!(drain.started());
        woken.await.expect("the waiter finishes");
        // One that starts waiting afterwards is ready at once.
        drain.waiter().await;
    }

    fn tokio_test_poll(d: Draining) -> Pin<Box<Draining>> {
        Box::pin(d)
    }

    fn noop_cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }
}
