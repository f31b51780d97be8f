//! The workers: one thread each, each with an event loop of its own (a
//! current-thread tokio runtime), as nginx's worker processes each run
//! theirs. The main thread is the first worker and also runs the control
//! loop (signals, reload, health checks); `worker_processes N` adds N - 1
//! threads.
//!
//! Every worker accepts on every listen address: on the same socket,
//! registered in each worker's epoll (as nginx's workers share theirs with
//! `accept_mutex off`), or with `listen ... reuseport` on a socket of its own
//! (as nginx does), which spreads connections evenly. A connection stays on
//! the worker that accepted it, with its upstream connections and tunnel.
//! Against one work-stealing runtime this saves the scheduler's atomics and
//! cross-thread wake-ups on every poll, and gives each worker one loop that
//! `busy_poll` can keep awake.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::conf::model::LogLevel;
use crate::log::writer::os_error;
use crate::server::vhost::ListenOptions;
use crate::server::{conn, Generation};

/// How many workers the process runs (set once, before any state that keeps
/// something per worker, such as the upstream keepalive caches, is made).
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The worker this thread is (0: the main thread, and any thread that is
    /// not a worker).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

pub fn set_count(n: usize) {
    COUNT.store(n.max(1), Relaxed);
}

pub fn count() -> usize {
    COUNT.load(Relaxed)
}

/// The calling thread's worker, below [`count`].
pub fn index() -> usize {
    INDEX.get()
}

/// Makes the calling thread worker `i`, for tests of per-worker state.
#[cfg(test)]
pub fn become_worker(i: usize) {
    INDEX.set(i);
}

pub struct Workers {
    /// Every worker's runtime, the main thread's first.
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    exit: CancellationToken,
}

impl Workers {
    /// Starts `count - 1` worker threads beside the calling one, which must
    /// run a runtime (the first worker).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let exit = CancellationToken::new();
        let mut handles = vec![Handle::current()];
        let mut threads = Vec::new();
        for i in 1..count {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let exit = exit.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    INDEX.set(i);
                    rt.block_on(exit.cancelled())
                })?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            threads,
            exit,
        })
    }

    /// Runs `task()` on every worker.
    fn spawn_each<F>(&self, task: impl Fn() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for h in &self.handles {
            h.spawn(task());
        }
    }

    /// Applies a configuration's `busy_poll` in every worker.
    pub fn busy_poll(&self, window: Option<std::time::Duration>) {
        self.spawn_each(move || async move { super::busy::configure(window) });
    }

    /// Accepts on `listener` in every worker until `stop`. With
    /// `reuseport`, as in nginx, each worker after the first gets a socket of
    /// its own bound to the same address, and the kernel spreads new
    /// connections over them; otherwise all share `listener`.
    pub fn accept(
        &self,
        addr: SocketAddr,
        opts: ListenOptions,
        listener: &std::net::TcpListener,
        current: &Arc<ArcSwap<Generation>>,
        permits: &Arc<Semaphore>,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        for (i, h) in self.handles.iter().enumerate() {
            // A descriptor of its own per worker, registered in that
            // worker's epoll.
            let l = if i > 0 && opts.reuseport {
                crate::server::listen::bind_std(addr, opts)?
            } else {
                listener.try_clone()?
            };
            let (current, permits, stop) = (current.clone(), permits.clone(), stop.clone());
            h.spawn(async move {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => conn::accept_loop(l, current, permits, stop).await,
                    Err(e) => crate::error_log!(
                        LogLevel::Emerg,
                        "cannot listen on {addr} in a worker ({})",
                        os_error(&e)
                    ),
                }
            });
        }
        Ok(())
    }

    /// Ends the other workers' loops and waits for their threads; what
    /// still runs there (after a fast shutdown) is dropped.
    pub fn stop(self) {
        self.exit.cancel();
        for t in self.threads {
            let _ = t.join();
        }
    }
}
