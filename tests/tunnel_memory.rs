//! Measures the user-space memory of idle tunnels (a measurement, not a
//! check): `cargo test --test tunnel_memory -- --ignored --nocapture`.

mod tunnel_common;

use std::time::Duration;

use bytes::Bytes;
use sluice::proxy::tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tunnel_common::{pair, timeouts};

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn idle_tunnel_memory() {
    const N: usize = 3000; // 4 fds each
    let mut sockets = Vec::with_capacity(N);
    let mut peers = Vec::with_capacity(N);
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let (client, proxy_client) = pair().await;
        let (upstream, proxy_upstream) = pair().await;
        sockets.push((proxy_client, proxy_upstream));
        peers.push((client, upstream));
    }
    // Everything but the tunnels exists: the delta is the tunnels' own cost.
    let before = rss_bytes();
    for (proxy_client, proxy_upstream) in sockets {
        tasks.push(tokio::spawn(tunnel::run(
            proxy_client,
            Bytes::new(),
            proxy_upstream,
            Bytes::new(),
            timeouts(Duration::from_secs(600)),
            CancellationToken::new(),
        )));
    }
    // One message each way through every tunnel, then all are idle.
    let mut buf = [0u8; 5];
    for (client, upstream) in peers.iter_mut() {
        client.write_all(b"hello").await.expect("write");
        upstream.read_exact(&mut buf).await.expect("read");
        upstream.write_all(b"world").await.expect("write");
        client.read_exact(&mut buf).await.expect("read");
    }
    let after = rss_bytes();
    println!(
        "{N} idle tunnels: {} bytes of RSS each (task + future; sockets excluded), {} bytes buffered",
        after.saturating_sub(before) / N,
        tunnel::buffered_bytes()
    );
}
