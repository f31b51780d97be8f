//! Graceful end of WebSocket tunnels on shutdown: when the tunnel's token is
//! cancelled, wait for the tunnel's turn in the drain window, let the frame in
//! flight each way finish, send both sides a close frame with status 1001
//! ("going away"), wait (bounded) for their close replies, then close.
//!
//! The close sent to the client is unmasked, as from a server; the one sent
//! to the upstream is masked, as RFC 6455 section 5.3 requires of a client.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::tunnel::{self, Leftover, TunnelEnd, TunnelStats, TunnelTimeouts};
use super::wsframe::{self, FrameTracker, WsFrames, GOING_AWAY};

/// How long the frame in flight may take to finish, each way.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peers' close replies.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a tunnel; if `websocket`, a cancelled tunnel is closed with close
/// frames after its turn in `window` (picked from `conn_id`, so closes are
/// spread evenly rather than all at once). Other tunnels end as
/// [`tunnel::run`] ends them.
///
/// A plain `fn` returning the future, which holds the one running tunnel
/// future inline and nothing else of size: an idle tunnel's task is sized by
/// it. What only a cancelled tunnel runs (its turn, the close frames) is in a
/// boxed future, allocated when the drain comes.
#[allow(clippy::too_many_arguments)]
pub fn run_tunnel(
    client: TcpStream,
    client_pending: Bytes,
    upstream: TcpStream,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
    websocket: bool,
    conn_id: u64,
    window: Duration,
) -> impl std::future::Future<Output = TunnelStats> + Send {
    let gauge = websocket.then(crate::runtime::metrics::TunnelGauge::open);
    // Only this is kept beside the tunnel for the drain (not the window and
    // id it comes from, nor the timeouts, which the leftover carries).
    let offset = spread(conn_id, window);
    let ws = websocket.then(|| WsFrames::new(&client_pending, &upstream_pending));
    let tunnel = tunnel::run_ws(
        client,
        client_pending,
        upstream,
        upstream_pending,
        timeouts,
        cancel,
        ws,
    );
    // `then`, not an async block awaiting `tunnel`: an async block would
    // keep the captured future and the awaited one as two copies.
    futures_util::FutureExt::then(tunnel, move |stats| async move {
        let Some(gauge) = gauge else {
            return stats;
        };
        let stats = if stats.leftover.is_some() {
            Box::pin(drain_ws(stats, offset)).await
        } else {
            stats
        };
        gauge.bytes(stats.client_to_upstream, stats.upstream_to_client);
        stats
    })
}

/// A cancelled WebSocket tunnel (`stats.leftover` set): keeps it going for
/// `offset` (its turn in the drain window), then closes it with close frames.
async fn drain_ws(mut stats: TunnelStats, offset: Duration) -> TunnelStats {
    if !offset.is_zero() {
        let Some(left) = stats.leftover.take() else {
            return stats;
        };
        // Keep the tunnel going until its turn.
        let turn = CancellationToken::new();
        let fut = tunnel::run_ws(
            left.client,
            left.to_upstream,
            left.upstream,
            left.to_client,
            left.timeouts,
            turn.clone(),
            left.ws,
        );
        tokio::pin!(fut);
        let more = tokio::select! {
            s = &mut fut => s,
            _ = tokio::time::sleep(offset) => {
                turn.cancel();
                fut.await
            }
        };
        stats.client_to_upstream += more.client_to_upstream;
        stats.upstream_to_client += more.upstream_to_client;
        stats.end = more.end;
        stats.leftover = more.leftover;
    }
    if let Some(left) = stats.leftover.take() {
        let (c2u, u2c) = close(left).await;
        stats.client_to_upstream += c2u;
        stats.upstream_to_client += u2c;
        stats.end = TunnelEnd::Cancelled;
    }
    stats
}

/// True when a `101` response switched to WebSocket (`Upgrade: websocket`).
pub fn is_websocket(h: &http::HeaderMap) -> bool {
    h.get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// This tunnel's delay within the drain window: a fixed fraction of it
/// derived from the connection id (Fibonacci hashing spreads consecutive ids).
pub fn spread(conn_id: u64, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let frac = (conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(frac)
}

/// Closes a cancelled WebSocket tunnel; returns the bytes written to the
/// upstream and to the client.
pub async fn close(left: Leftover) -> (u64, u64) {
    let Leftover {
        mut client,
        mut upstream,
        to_client,
        to_upstream,
        ws,
        ..
    } = left;
    let WsFrames {
        c2u: mut fc,
        u2c: mut fu,
    } = ws.unwrap_or_default();
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mask = wsframe::mask_key();
    let (c2u, u2c) = tokio::join!(
        tokio::time::timeout(
            FINISH_TIMEOUT,
            finish_and_close(&mut cr, &mut uw, &to_upstream, &mut fc, Some(mask))
        ),
        tokio::time::timeout(
            FINISH_TIMEOUT,
            finish_and_close(&mut ur, &mut cw, &to_client, &mut fu, None)
        ),
    );
    let c2u = c2u.unwrap_or(Err(0));
    let u2c = u2c.unwrap_or(Err(0));
    // A side we could not send a close to is not waited for.
    let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
        tokio::join!(
            async {
                if u2c.is_ok() {
                    await_close(&mut cr, &mut fc).await;
                }
            },
            async {
                if c2u.is_ok() {
                    await_close(&mut ur, &mut fu).await;
                }
            },
        )
    })
    .await;
    let _ = cw.shutdown().await;
    let _ = uw.shutdown().await;
    let n = |r: Result<u64, u64>| match r {
        Ok(n) | Err(n) => n,
    };
    (n(c2u), n(u2c))
}

/// One direction: writes the pending bytes, forwards the rest of the frame in
/// flight, then a close frame unless one already passed this way. `Ok(bytes)` once a close frame has
/// gone (or had gone) to `dst`.
async fn finish_and_close<R, W>(
    src: &mut R,
    dst: &mut W,
    pending: &[u8],
    frames: &mut FrameTracker,
    mask: Option<[u8; 4]>,
) -> Result<u64, u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut written = 0u64;
    if dst.write_all(pending).await.is_err() {
        return Err(written);
    }
    written += pending.len() as u64;
    let mut buf = Vec::new();
    while !frames.at_boundary() {
        let want = frames.at_least_left().min(tunnel::SCRATCH_SIZE as u64) as usize;
        buf.resize(want, 0);
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => return Err(written),
            Ok(n) => n,
        };
        frames.consume(&buf[..n]);
        if dst.write_all(&buf[..n]).await.is_err() {
            return Err(written);
        }
        written += n as u64;
    }
    if frames.close_seen() {
        return Ok(written);
    }
    let frame = wsframe::close_frame(GOING_AWAY, "going away", mask);
    if dst.write_all(&frame).await.is_err() || dst.flush().await.is_err() {
        return Err(written);
    }
    Ok(written + frame.len() as u64)
}

/// Reads and drops frames until a close frame has come, or EOF.
async fn await_close<R: tokio::io::AsyncRead + Unpin>(src: &mut R, frames: &mut FrameTracker) {
    // On the heap: this future is boxed anyway, and 4 KiB arrays inflate it.
    let mut buf = vec![0u8; 4096];
    while !frames.close_seen() {
        match src.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => frames.consume(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_within_the_window_and_varies() {
        let w = Duration::from_secs(10);
        let d: Vec<_> = (1..50).map(|id| spread(id, w)).collect();
        assert!(d.iter().all(|x| *x < w));
        assert!(d.iter().any(|x| *x < w / 4) && d.iter().any(|x| *x > w * 3 / 4));
        assert_eq!(spread(7, Duration::ZERO), Duration::ZERO);
    }
}
