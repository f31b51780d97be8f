//! The tunnel of an upgraded connection with TLS on either side (`wss://`
//! clients, `proxy_pass https://` upstreams).
//!
//! The plain tunnel (`tunnel`) copies on socket readiness with a per-thread
//! scratch buffer, so an idle tunnel owns no buffer. A TLS stream cannot be
//! read that way (a readable socket may hold only part of a record), so this
//! variant copies through a small buffer per direction, owned by the tunnel
//! for its life: 2 x [`BUF_SIZE`] per TLS tunnel, on top of rustls' own
//! buffers. The timeouts are nginx's, as in `tunnel`: `proxy_read_timeout`
//! without traffic either way, `proxy_send_timeout` / `send_timeout` while a
//! write is blocked. On shutdown a TLS tunnel is closed (TLS close_notify
//! and FIN) rather than drained with WebSocket close frames.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tunnel::{TimeoutKind, TunnelEnd, TunnelStats, TunnelTimeouts};
use crate::server::tls::{ClientStream, UpstreamStream};

/// Copy buffer per direction of a TLS tunnel.
pub const BUF_SIZE: usize = 8 * 1024;

/// [`super::drain::run_tunnel`] for streams that may be TLS: plain ones on
/// both sides take the lean path unchanged.
#[allow(clippy::too_many_arguments)]
pub async fn run_tunnel(
    client: ClientStream,
    client_pending: Bytes,
    upstream: UpstreamStream,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
    websocket: bool,
    conn_id: u64,
    window: Duration,
) -> TunnelStats {
    match (client, upstream) {
        (ClientStream::Plain(c), UpstreamStream::Plain(upstream)) => {
            super::drain::run_tunnel(
                c,
                client_pending,
                upstream,
                upstream_pending,
                timeouts,
                cancel,
                websocket,
                conn_id,
                window,
            )
            .await
        }
        (c, u) => {
            let gauge = websocket.then(crate::runtime::metrics::TunnelGauge::open);
            let stats = run(c, client_pending, u, upstream_pending, timeouts, cancel).await;
            if let Some(g) = gauge {
                g.bytes(stats.client_to_upstream, stats.upstream_to_client);
            }
            stats
        }
    }
}

/// Copies both ways between any two streams until both are done, an error,
/// an idle timeout or `cancel`.
pub async fn run<C, U>(
    client: C,
    client_pending: Bytes,
    upstream: U,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
) -> TunnelStats
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let t0 = Instant::now();
    let last = AtomicU64::new(0);
    let c2u = AtomicU64::new(0);
    let u2c = AtomicU64::new(0);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let up = pipe(
        &mut cr,
        &mut uw,
        client_pending,
        Side::ToUpstream,
        timeouts.upstream_send,
        Clock { t0, last: &last },
        &c2u,
    );
    let down = pipe(
        &mut ur,
        &mut cw,
        upstream_pending,
        Side::ToClient,
        timeouts.client_send,
        Clock { t0, last: &last },
        &u2c,
    );
    let idle = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = t0 + since + timeouts.upstream_read;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        r = async { tokio::try_join!(up, down) } => match r {
            Ok(_) => TunnelEnd::Closed,
            Err(e) => e,
        },
        _ = idle => TunnelEnd::Timeout(TimeoutKind::UpstreamRead),
        _ = cancel.cancelled() => TunnelEnd::Cancelled,
    };
    if matches!(end, TunnelEnd::Cancelled) {
        // Best effort, bounded: close_notify to the client, FIN upstream.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = cw.shutdown().await;
            let _ = uw.shutdown().await;
        })
        .await;
    }
    TunnelStats {
        client_to_upstream: c2u.load(Ordering::Relaxed),
        upstream_to_client: u2c.load(Ordering::Relaxed),
        end,
        leftover: None,
    }
}

#[derive(Clone, Copy)]
enum Side {
    ToUpstream,
    ToClient,
}

#[derive(Clone, Copy)]
struct Clock<'a> {
    t0: Instant,
    last: &'a AtomicU64,
}

impl Clock<'_> {
    fn touch(&self) {
        self.last
            .store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// One direction; EOF from `src` becomes a shutdown of `dst`.
async fn pipe<R, W>(
    src: &mut R,
    dst: &mut W,
    pending: Bytes,
    side: Side,
    send_timeout: Duration,
    clock: Clock<'_>,
    count: &AtomicU64,
) -> Result<(), TunnelEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    type ToEnd = fn(std::io::Error) -> TunnelEnd;
    let (read_err, write_err, write_timeout): (ToEnd, ToEnd, _) = match side {
        Side::ToUpstream => (
            TunnelEnd::ClientError,
            TunnelEnd::UpstreamError,
            TimeoutKind::UpstreamSend,
        ),
        Side::ToClient => (
            TunnelEnd::UpstreamError,
            TunnelEnd::ClientError,
            TimeoutKind::ClientSend,
        ),
    };
    if !pending.is_empty() {
        match write_timed(dst, &pending, send_timeout).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(write_err(e)),
            Err(_) => return Err(TunnelEnd::Timeout(write_timeout)),
        }
        count.fetch_add(pending.len() as u64, Ordering::Relaxed);
        clock.touch();
    }
    drop(pending);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => {
                clock.touch();
                let _ = dst.shutdown().await;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => return Err(read_err(e)),
        };
        clock.touch();
        match write_timed(dst, &buf[..n], send_timeout).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(write_err(e)),
            Err(_) => return Err(TunnelEnd::Timeout(write_timeout)),
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        clock.touch();
    }
}

async fn write_timed<W: AsyncWrite + Unpin>(
    dst: &mut W,
    data: &[u8],
    limit: Duration,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async {
        dst.write_all(data).await?;
        dst.flush().await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_with_pending_bytes_and_half_close() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let t = TunnelTimeouts {
            upstream_read: Duration::from_secs(30),
            upstream_send: Duration::from_secs(30),
            client_send: Duration::from_secs(30),
            client_read: None,
        };
        let task = tokio::spawn(run(
            client,
            Bytes::from_static(b"early"),
            upstream,
            Bytes::from_static(b"hello"),
            t,
            CancellationToken::new(),
        ));
        client_peer.write_all(b" client").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early client");
        upstream_peer.write_all(b" upstream").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello upstream");
        let stats = task.await.unwrap();
        assert!(matches!(stats.end, TunnelEnd::Closed));
        assert_eq!(
            (stats.client_to_upstream, stats.upstream_to_client),
            (12, 14)
        );
    }

    #[tokio::test]
    async fn idle_tunnel_ends_after_proxy_read_timeout() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let t = TunnelTimeouts {
            upstream_read: Duration::from_millis(50),
            upstream_send: Duration::from_secs(30),
            client_send: Duration::from_secs(30),
            client_read: None,
        };
        let stats = run(
            client,
            Bytes::new(),
            upstream,
            Bytes::new(),
            t,
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(
            stats.end,
            TunnelEnd::Timeout(TimeoutKind::UpstreamRead)
        ));
    }
}
