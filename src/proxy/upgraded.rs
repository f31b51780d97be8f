//! The task that runs a tunnel after a `101`: waits for both upgrades, runs
//! the tunnel (`drain::run_tunnel`), then logs.
//!
//! # Memory
//!
//! An idle tunnel is mostly this task: tokio allocates one cell per task
//! holding the whole future, so its size is paid per open tunnel for as long
//! as the tunnel lives. The future therefore keeps only what the tunnel needs
//! inline (sockets, timers, timeouts) and the log state behind one `Box`;
//! code only a draining tunnel runs is boxed where it is awaited
//! (`proxy::drain`). The `tunnel_task_is_small` test bounds its size.

use std::future::Future;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::future::{FutureExt, OptionFuture};
use hyper::upgrade::{OnUpgrade, Upgraded};

use crate::server::tls::{ClientStream, UpstreamStream};
use tokio_util::sync::CancellationToken;

use super::driven::{detach, UpstreamUpgrade};
use super::tunnel::{TunnelIo, TunnelStats, TunnelTimeouts};
use crate::conf::model::LogLevel;

/// What the tunnel task reports to when it ends (the access log, the peer's
/// busy count); boxed so the task's future stays small.
pub trait TunnelLog: Send + 'static {
    /// `tcp_nodelay` of the location.
    fn nodelay(&self) -> bool;
    /// TCP_NODELAY is already on for the client socket (set at accept).
    fn client_nodelay_set(&self) -> bool;
    /// The client connection's number (`$connection`).
    fn conn_id(&self) -> u64;
    /// The tunnel ended (`None`: an upgrade failed before it started).
    fn ended(self: Box<Self>, stats: Option<&TunnelStats>);
}

/// The settings of one tunnel.
pub struct TunnelSpec {
    pub timeouts: TunnelTimeouts,
    pub cancel: CancellationToken,
    /// A WebSocket tunnel is closed with close frames on drain.
    pub websocket: bool,
    pub drain_window: Duration,
}

impl TunnelSpec {
    /// The tunnel (`drain::run_tunnel`) over one pair of streams.
    pub fn run<C: TunnelIo, U: TunnelIo>(
        self,
        client: C,
        client_pending: bytes::Bytes,
        upstream: U,
        upstream_pending: bytes::Bytes,
        conn_id: u64,
    ) -> impl Future<Output = TunnelStats<C, U>> + Send {
        super::drain::run_tunnel(
            client,
            client_pending,
            upstream,
            upstream_pending,
            self.timeouts,
            self.cancel,
            self.websocket,
            conn_id,
            self.drain_window,
        )
    }
}

/// The task of one tunnel. Combinators rather than one async block: an
/// async block keeps its captured values (the upgrades, `spec`) beside the
/// tunnel for the tunnel's whole life; `then` keeps the first stage and the
/// tunnel in the same place, one after the other.
pub fn tunnel_task(
    client_up: OnUpgrade,
    upstream_up: UpstreamUpgrade,
    spec: TunnelSpec,
    log: Box<dyn TunnelLog>,
) -> impl Future<Output = ()> + Send + 'static {
    let upgrades = async move { (client_up.await, upstream_up.get().await) };
    upgrades
        .then(move |upgraded| {
            let tunnel = match upgraded {
                (Ok(c), Some(u)) => start(c, u, spec, &*log),
                _ => {
                    log.ended(None);
                    return OptionFuture::from(None);
                }
            };
            OptionFuture::from(tunnel.map(|t| t.map(move |stats| log.ended(Some(&stats)))))
        })
        .map(|_| ())
}

/// The tunnel's future, from the upgraded connections. Apart from the task's
/// future, so the values it takes apart are not kept in it.
fn start(
    client: Upgraded,
    (upstream, upstream_pending): (UpstreamStream, bytes::Bytes),
    spec: TunnelSpec,
    log: &dyn TunnelLog,
) -> Option<impl Future<Output = TunnelStats> + Send + 'static> {
    let Some((client, client_pending)) = crate::server::conn::upgraded_client(client) else {
        crate::error_log!(LogLevel::Error, "upgraded connection is not a TCP stream");
        return None;
    };
    // nginx switches tcp_nodelay on when a connection becomes a tunnel.
    if log.nodelay() {
        if !log.client_nodelay_set() {
            let _ = client.set_nodelay(true);
        }
        let _ = upstream.set_nodelay(true);
    }
    let (client_pending, id) = (detach(client_pending), log.conn_id());
    Some(match (client, upstream) {
        // Plain on both sides: the lean readiness tunnel, inline in the task.
        (ClientStream::Plain(c), UpstreamStream::Plain(up)) => {
            Either::Left(spec.run(c, client_pending, up, upstream_pending, id))
        }
        // TLS on either side: the same tunnel over the TLS streams, boxed so
        // that plain tunnels do not pay for its size.
        (c, up) => Either::Right(Box::pin(
            spec.run(c, client_pending, up, upstream_pending, id)
                .map(TunnelStats::finished),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoLog;

    impl TunnelLog for NoLog {
        fn nodelay(&self) -> bool {
            true
        }
        fn client_nodelay_set(&self) -> bool {
            false
        }
        fn conn_id(&self) -> u64 {
            1
        }
        fn ended(self: Box<Self>, _: Option<&TunnelStats>) {}
    }

    /// Every open tunnel pays for this future: tokio's task cell is the
    /// future plus about 112 bytes, rounded up to 128 (x86_64), so up to 528
    /// bytes the cell takes 640. It was 11.7 KiB when the drain's close
    /// futures were kept inline, 528 bytes when this test was written. Its
    /// size does not depend on the log type (boxed).
    #[test]
    fn tunnel_task_is_small() {
        let none = || hyper::upgrade::on(http::Request::new(()));
        let fut = tunnel_task(
            none(),
            UpstreamUpgrade::Pending(none()),
            TunnelSpec {
                timeouts: TunnelTimeouts {
                    upstream_read: Duration::from_secs(60),
                    upstream_send: Duration::from_secs(60),
                    client_send: Duration::from_secs(60),
                    client_read: None,
                    reset_timedout: false,
                },
                cancel: CancellationToken::new(),
                websocket: true,
                drain_window: Duration::ZERO,
            },
            Box::new(NoLog),
        );
        let size = std::mem::size_of_val(&fut);
        println!("tunnel task future: {size} bytes");
        assert!(size <= 528, "tunnel task future is {size} bytes");
    }
}
