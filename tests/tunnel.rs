//! The upgraded-connection tunnel over real loopback sockets.

mod tunnel_common;

use std::time::Duration;

use bytes::Bytes;
use sluice::proxy::tunnel::{self, TimeoutKind, TunnelEnd, TunnelTimeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_common::{pair, pattern, rig, timeouts, Rig, RigOptions};

const MIB: usize = 1024 * 1024;

async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read to end");
    out
}

#[tokio::test]
async fn pending_bytes_go_first_both_ways() {
    let Rig {
        mut client,
        mut upstream,
        tunnel,
        ..
    } = rig(RigOptions {
        client_pending: Bytes::from_static(b"client-preread|"),
        upstream_pending: Bytes::from_static(b"upstream-preread|"),
        ..RigOptions::default()
    })
    .await;

    client.write_all(b"client-live").await.expect("write");
    upstream.write_all(b"upstream-live").await.expect("write");
    client.shutdown().await.expect("shutdown");
    upstream.shutdown().await.expect("shutdown");

    assert_eq!(
        read_to_end(&mut upstream).await,
        b"client-preread|client-live"
    );
    assert_eq!(
        read_to_end(&mut client).await,
        b"upstream-preread|upstream-live"
    );

    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
    assert_eq!(stats.client_to_upstream, 26);
    assert_eq!(stats.upstream_to_client, 30);
    assert!(stats.leftover.is_none());
}

/// Writes `total` pattern bytes in uneven chunks, then half-closes.
async fn send_pattern(mut w: tokio::net::tcp::OwnedWriteHalf, seed: u8, total: usize) {
    let mut sent = 0;
    let mut chunk = 1;
    while sent < total {
        let n = chunk.min(total - sent);
        w.write_all(&pattern(seed, sent, n)).await.expect("write");
        sent += n;
        chunk = chunk * 7 % 200_003 + 1;
    }
    w.shutdown().await.expect("shutdown");
}

/// Reads to EOF, checking every byte against the pattern; returns the count.
async fn check_pattern(mut r: tokio::net::tcp::OwnedReadHalf, seed: u8) -> usize {
    let mut got = 0;
    let mut buf = vec![0u8; 100_000];
    loop {
        let n = r.read(&mut buf).await.expect("read");
        if n == 0 {
            return got;
        }
        assert!(
            buf[..n] == pattern(seed, got, n)[..],
            "mismatch near byte {got}"
        );
        got += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_each_way_concurrently() {
    let total = 16 * MIB;
    let Rig {
        client,
        upstream,
        tunnel,
        ..
    } = rig(RigOptions::default()).await;
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let (_, _, to_upstream, to_client) = tokio::join!(
        tokio::spawn(send_pattern(cw, 1, total)),
        tokio::spawn(send_pattern(uw, 2, total)),
        tokio::spawn(check_pattern(ur, 1)),
        tokio::spawn(check_pattern(cr, 2)),
    );
    assert_eq!(to_upstream.expect("join"), total);
    assert_eq!(to_client.expect("join"), total);
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
    assert_eq!(stats.client_to_upstream, total as u64);
    assert_eq!(stats.upstream_to_client, total as u64);
}

#[tokio::test]
async fn half_close_from_client_then_upstream() {
    let Rig {
        mut client,
        mut upstream,
        tunnel,
        ..
    } = rig(RigOptions::default()).await;
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("shutdown");
    // The upstream sees the client's EOF ...
    assert_eq!(read_to_end(&mut upstream).await, b"request");
    // ... and can still answer through the other direction.
    upstream.write_all(b"response").await.expect("write");
    let mut buf = [0u8; 8];
    client.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"response");
    upstream.shutdown().await.expect("shutdown");
    assert_eq!(read_to_end(&mut client).await, b"");
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
}

#[tokio::test]
async fn half_close_from_upstream_then_client() {
    let Rig {
        mut client,
        mut upstream,
        tunnel,
        ..
    } = rig(RigOptions::default()).await;
    upstream.write_all(b"banner").await.expect("write");
    upstream.shutdown().await.expect("shutdown");
    assert_eq!(read_to_end(&mut client).await, b"banner");
    client.write_all(b"late words").await.expect("write");
    let mut buf = [0u8; 10];
    upstream.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"late words");
    client.shutdown().await.expect("shutdown");
    assert_eq!(read_to_end(&mut upstream).await, b"");
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
    assert_eq!(stats.client_to_upstream, 10);
    assert_eq!(stats.upstream_to_client, 6);
}

#[tokio::test]
async fn upstream_close_reaches_client_as_eof() {
    let Rig {
        mut client,
        upstream,
        tunnel,
        ..
    } = rig(RigOptions::default()).await;
    drop(upstream);
    assert_eq!(read_to_end(&mut client).await, b"");
    drop(client);
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
}

#[tokio::test]
async fn client_reset_closes_upstream() {
    let Rig {
        client,
        mut upstream,
        tunnel,
        ..
    } = rig(RigOptions::default()).await;
    // SO_LINGER 0 makes close() send RST instead of FIN.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(client);
    let mut buf = [0u8; 16];
    match upstream.read(&mut buf).await {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let stats = tunnel.await.expect("join");
    assert!(
        matches!(stats.end, TunnelEnd::ClientError(_)),
        "{:?}",
        stats.end
    );
}

#[tokio::test]
async fn idle_tunnel_times_out() {
    let Rig {
        mut client,
        tunnel,
        upstream: _upstream,
        ..
    } = rig(RigOptions {
        timeouts: timeouts(Duration::from_millis(200)),
        ..RigOptions::default()
    })
    .await;
    let stats = tunnel.await.expect("join");
    assert!(
        matches!(stats.end, TunnelEnd::Timeout(TimeoutKind::UpstreamRead)),
        "{:?}",
        stats.end
    );
    // The proxy closed its side: the client sees EOF.
    assert_eq!(read_to_end(&mut client).await, b"");
}

#[tokio::test]
async fn client_that_stops_reading_hits_send_timeout() {
    // With reset_timedout_connection the client's socket is reset; without
    // it, what was queued arrives, then the end of stream.
    for reset in [false, true] {
        let Rig {
            mut client,
            upstream,
            tunnel,
            ..
        } = rig(RigOptions {
            timeouts: TunnelTimeouts {
                client_send: Duration::from_millis(200),
                reset_timedout: reset,
                ..timeouts(Duration::from_secs(3600))
            },
            client_rcvbuf: Some(4096),
            ..RigOptions::default()
        })
        .await;
        let (_ur, mut uw) = upstream.into_split();
        // Floods until the tunnel gives up and the write fails (bounded).
        let flood = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..100_000 {
                if uw.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            panic!("the tunnel never pushed back");
        });
        let stats = tunnel.await.expect("join");
        assert!(
            matches!(stats.end, TunnelEnd::Timeout(TimeoutKind::ClientSend)),
            "{:?}",
            stats.end
        );
        flood.await.expect("flood");
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match client.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        let was_reset = matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert_eq!(was_reset, reset, "{end:?}");
    }
}

#[tokio::test]
async fn cancel_hands_back_working_sockets() {
    let Rig {
        mut client,
        mut upstream,
        tunnel,
        cancel,
    } = rig(RigOptions::default()).await;
    client.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    upstream.read_exact(&mut buf).await.expect("read");
    cancel.cancel();
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Cancelled), "{:?}", stats.end);
    let mut left = stats.leftover.expect("leftover on cancel");
    assert!(left.to_client.is_empty() && left.to_upstream.is_empty());
    // The proxy can still talk on both sockets (e.g. to send close frames).
    left.client.write_all(b"bye").await.expect("write");
    let mut buf = [0u8; 3];
    client.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"bye");
    left.upstream.write_all(b"bye").await.expect("write");
    upstream.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"bye");
}

#[tokio::test]
async fn the_future_is_small() {
    let (_a, proxy_client) = pair().await;
    let (_b, proxy_upstream) = pair().await;
    let fut = tunnel::run(
        proxy_client,
        Bytes::new(),
        proxy_upstream,
        Bytes::new(),
        timeouts(Duration::from_secs(60)),
        tokio_util::sync::CancellationToken::new(),
    );
    let size = std::mem::size_of_val(&fut);
    println!("tunnel future: {size} bytes");
    // 496 bytes when written; the brief allows up to 1 KiB.
    assert!(size < 640, "tunnel future is {size} bytes");
}
