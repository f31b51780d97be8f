//! Graceful shutdown (QUIT): listeners are already closed; HTTP connections
//! finish their requests (hyper's graceful shutdown, see server/conn.rs);
//! WebSocket tunnels run on until `websocket_drain_delay` (a sluice
//! extension; default `worker_shutdown_timeout`), then are closed with close
//! frames, spread over `websocket_drain_window` (see proxy/drain.rs).
//! Without either directive, tunnels are waited for, as nginx waits for them.
//!
//! Reload (HUP): with `websocket_drain_on_reload on`, the WebSocket tunnels
//! of locations the new configuration no longer has are closed the same way
//! ([`reloaded`]); otherwise they run on, as in nginx's old workers.

use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conf::model::MainConf;
use crate::proxy::drain::{FINISH_TIMEOUT, REPLY_TIMEOUT};
use crate::server::Generation;

/// Called with the generation a reload has just built, before it serves:
/// ends the scopes of locations it no longer has (see proxy/drain.rs).
pub fn reloaded(gen: &Generation) {
    let keep = crate::proxy::drain::location_keys(gen.http());
    let drain = gen.config.main.websocket_drain_on_reload;
    let n = gen.tunnel_scopes.retain(&keep, drain);
    if n > 0 {
        crate::error_log!(
            crate::conf::model::LogLevel::Info,
            "closing the WebSocket tunnels of {n} location(s) the new configuration removed"
        );
    }
}

/// Returns once every connection and tunnel has ended, or the bounds above
/// have passed. `shutdown` is the tunnels' token; `permits` holds one permit
/// per open client connection out of `all`.
pub async fn graceful(
    main: &MainConf,
    tunnels: &TaskTracker,
    shutdown: &CancellationToken,
    permits: &Semaphore,
    all: usize,
) {
    tunnels.close();
    let delay = match (main.websocket_drain_delay, main.worker_shutdown_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let window = main.websocket_drain_window;
    let ws = async {
        match delay {
            None => tunnels.wait().await,
            Some(d) => {
                if tokio::time::timeout(d, tunnels.wait()).await.is_err() {
                    shutdown.cancel();
                    let bound = window + FINISH_TIMEOUT + REPLY_TIMEOUT + Duration::from_secs(1);
                    let _ = tokio::time::timeout(bound, tunnels.wait()).await;
                }
            }
        }
    };
    let all = all.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
    let http = async {
        let idle = permits.acquire_many(all);
        match main.worker_shutdown_timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, idle).await;
            }
            None => {
                let _ = idle.await;
            }
        }
    };
    tokio::join!(ws, http);
}
