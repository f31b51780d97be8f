//! `busy_poll`: a worker that keeps polling for events for a while after its
//! last task ran, instead of sleeping in `epoll_wait`.
//!
//! Why: a worker that sleeps between a request and its response pays, at
//! every wake, the kernel's wake-up of an idle CPU, and inside a virtual
//! machine the hypervisor's as well. At one connection on the machines the
//! benchmark ran on, that is most of the latency a proxy adds (two such
//! wake-ups of the proxy's core per round trip). HAProxy's `busy-polling`
//! spins for the same reason, always; this spinning stops once no traffic
//! task has run for the window, so an idle worker still sleeps and costs
//! nothing. The price is CPU while traffic flows: at low rates the worker's
//! core stays busy.
//!
//! How: a task of the worker's own (`spin`) yields while it spins; the
//! current-thread runtime then polls epoll with a zero timeout, runs whatever
//! became ready, and runs the spinner again. Tasks that carry traffic are
//! spawned inside [`Active`], which counts their polls (so the spinner sees
//! that the worker is still busy) and wakes the spinner at the first poll
//! after it went to sleep. Each worker (workers.rs) has its own loop, spinner
//! and counters.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// Polls of traffic tasks on this thread.
    static POLLS: Cell<u64> = const { Cell::new(0) };
    /// Set while the spinner sleeps and waits for the next poll.
    static ASLEEP: Cell<bool> = const { Cell::new(false) };
    static SPINNER: Cell<Option<Waker>> = const { Cell::new(None) };
    /// Whether this worker's spinner task is running.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// The window in nanoseconds, 0 when off (the same for every worker).
static WINDOW_NS: AtomicU64 = AtomicU64::new(0);

/// Applies a (re)loaded configuration's `busy_poll` to the worker it runs
/// on: starts its spinner, or lets it stop.
pub fn configure(window: Option<Duration>) {
    let ns = window.map_or(0, |w| u64::try_from(w.as_nanos()).unwrap_or(u64::MAX));
    WINDOW_NS.store(ns, Relaxed);
    if ns != 0 && !RUNNING.replace(true) {
        tokio::spawn(spin());
    }
}

fn window() -> Option<Duration> {
    match WINDOW_NS.load(Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

/// Notes a poll of a traffic task, and wakes the spinner if it sleeps.
#[inline]
fn note() {
    POLLS.set(POLLS.get().wrapping_add(1));
    if ASLEEP.get() {
        ASLEEP.set(false);
        if let Some(w) = SPINNER.take() {
            w.wake();
        }
    }
}

/// A task whose polls keep a busy-polling worker awake.
pub struct Active<F>(F);

/// Wraps a task that carries traffic (a connection, a tunnel, an upstream
/// connection), before it is spawned.
pub fn active<F: Future>(task: F) -> Active<F> {
    Active(task)
}

impl<F: Future> Future for Active<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        note();
        // SAFETY: the field is pinned whenever `Active` is (structural
        // pinning): `Active` has no `Drop`, is `Unpin` only when `F` is, and
        // never moves the field out.
        unsafe { self.map_unchecked_mut(|a| &mut a.0) }.poll(cx)
    }
}

/// Sleeps until a traffic task is polled, then spins until none has been
/// for the window; ends when `busy_poll` is turned off. The window is read
/// afresh at every check, so that a reload applies at once.
async fn spin() {
    loop {
        asleep_until_active().await;
        if window().is_none() {
            RUNNING.set(false);
            return;
        }
        let mut seen = POLLS.get();
        let mut quiet_since: Option<Instant> = None;
        loop {
            // The runtime polls epoll (zero timeout) and runs what is ready
            // before it runs this task again.
            tokio::task::yield_now().await;
            let polls = POLLS.get();
            if polls != seen {
                seen = polls;
                quiet_since = None;
            } else {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= window().unwrap_or_default() {
                    break;
                }
            }
        }
    }
}

fn asleep_until_active() -> impl Future<Output = ()> {
    let mut armed = false;
    std::future::poll_fn(move |cx| {
        if armed && !ASLEEP.get() {
            return Poll::Ready(());
        }
        ASLEEP.set(true);
        SPINNER.set(Some(cx.waker().clone()));
        armed = true;
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A traffic task's poll wakes the sleeping spinner, and the spinner
    // counts it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_traffic_poll_wakes_the_sleeping_spinner() {
        let before = POLLS.get();
        let mut sleeper = Box::pin(asleep_until_active());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(sleeper.as_mut().poll(&mut cx).is_pending());
        assert!(ASLEEP.get());
        // Still asleep without traffic.
        assert!(sleeper.as_mut().poll(&mut cx).is_pending());
        active(async {}).await;
        assert!(!ASLEEP.get());
        assert_eq!(POLLS.get(), before + 1);
        assert!(sleeper.as_mut().poll(&mut cx).is_ready());
    }
}
