//! A client that stops reading slows the upstream down instead of growing
//! sluice's memory. Alone in its test binary so that the process-wide
//! `buffered_bytes` gauge belongs to this one tunnel.

mod tunnel_common;

use sluice::proxy::tunnel::{buffered_bytes, TunnelEnd, SCRATCH_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tunnel_common::{pattern, rig, Rig, RigOptions};

/// Far more than every kernel buffer on the path can hold.
const TOTAL: usize = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_blocks_the_writer_with_bounded_buffering() {
    let Rig {
        mut client,
        upstream,
        tunnel,
        ..
    } = rig(RigOptions {
        // Small, but above twice the loopback MSS (64 KiB): a receive buffer
        // under one MSS leaves the sender on zero-window probes after a
        // stall, which only makes the test slow.
        client_rcvbuf: Some(256 * 1024),
        ..RigOptions::default()
    })
    .await;

    // The upstream writes as fast as it can. Each time its socket would
    // block it reports how much it has written and how much the tunnel
    // buffers at that moment.
    let (blocked_tx, mut blocked_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        let mut w = upstream;
        let mut sent = 0;
        while sent < TOTAL {
            match w.try_write(&pattern(3, sent, CHUNK.min(TOTAL - sent))) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = blocked_tx.send((sent, buffered_bytes()));
                    w.writable().await.expect("writable");
                }
                Err(e) => panic!("upstream write: {e}"),
            }
        }
        w.shutdown().await.expect("shutdown");
        w
    });

    // The client reads nothing until the writer is seen blocked while the
    // tunnel holds a pending remainder: the client socket is full and the
    // tunnel stopped reading the upstream.
    let mut max_buffered = 0;
    let mut blocked_at = None;
    while let Some((sent, buffered)) = blocked_rx.recv().await {
        max_buffered = max_buffered.max(buffered);
        if buffered > 0 {
            blocked_at = Some(sent);
            break;
        }
    }
    let blocked_at = blocked_at.expect("the writer finished without being held back");
    assert!(blocked_at < TOTAL);
    assert!(
        max_buffered <= SCRATCH_SIZE as u64,
        "tunnel buffered {max_buffered} bytes"
    );

    // Reading again releases the writer; the stream arrives intact.
    let mut got = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = client.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        assert!(
            buf[..n] == pattern(3, got, n)[..],
            "mismatch near byte {got}"
        );
        got += n;
        max_buffered = max_buffered.max(buffered_bytes());
    }
    assert_eq!(got, TOTAL);
    assert!(max_buffered <= SCRATCH_SIZE as u64);
    drop(client);
    drop(writer.await.expect("writer"));
    let stats = tunnel.await.expect("join");
    assert!(matches!(stats.end, TunnelEnd::Closed), "{:?}", stats.end);
    assert_eq!(stats.upstream_to_client, TOTAL as u64);
    assert_eq!(buffered_bytes(), 0);
}
