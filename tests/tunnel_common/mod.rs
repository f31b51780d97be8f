//! Loopback plumbing shared by the tunnel tests: a client peer and an
//! upstream peer, with the proxy's two sockets in between.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use sluice::proxy::tunnel::{self, TunnelStats, TunnelTimeouts};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A connected loopback pair: (connecting side, accepted side). `rcvbuf`
/// shrinks the connecting side's receive buffer (set before connect so the
/// window is negotiated with it).
pub async fn pair_with(rcvbuf: Option<u32>, sndbuf: Option<u32>) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sock = TcpSocket::new_v4().expect("socket");
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).expect("rcvbuf");
    }
    if let Some(n) = sndbuf {
        sock.set_send_buffer_size(n).expect("sndbuf");
    }
    let (connected, accepted) = tokio::join!(sock.connect(addr), listener.accept());
    (connected.expect("connect"), accepted.expect("accept").0)
}

pub async fn pair() -> (TcpStream, TcpStream) {
    pair_with(None, None).await
}

pub fn timeouts(idle: Duration) -> TunnelTimeouts {
    TunnelTimeouts {
        upstream_read: idle,
        upstream_send: idle,
        client_send: idle,
        client_read: None,
        reset_timedout: false,
    }
}

pub struct Rig {
    /// The client's end (talks to the proxy's client socket).
    pub client: TcpStream,
    /// The upstream server's end (talks to the proxy's upstream socket).
    pub upstream: TcpStream,
    pub cancel: CancellationToken,
    pub tunnel: JoinHandle<TunnelStats>,
}

pub struct RigOptions {
    pub client_pending: Bytes,
    pub upstream_pending: Bytes,
    pub timeouts: TunnelTimeouts,
    pub client_rcvbuf: Option<u32>,
    pub upstream_sndbuf: Option<u32>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            client_pending: Bytes::new(),
            upstream_pending: Bytes::new(),
            timeouts: timeouts(Duration::from_secs(60)),
            client_rcvbuf: None,
            upstream_sndbuf: None,
        }
    }
}

pub async fn rig(opts: RigOptions) -> Rig {
    let (client, proxy_client) = pair_with(opts.client_rcvbuf, None).await;
    let (upstream, proxy_upstream) = pair_with(None, opts.upstream_sndbuf).await;
    // As the proxy does under `tcp_nodelay on` (nginx's default), before the
    // tunnel starts.
    proxy_client.set_nodelay(true).expect("nodelay");
    proxy_upstream.set_nodelay(true).expect("nodelay");
    let cancel = CancellationToken::new();
    let tunnel = tokio::spawn(tunnel::run(
        proxy_client,
        opts.client_pending,
        proxy_upstream,
        opts.upstream_pending,
        opts.timeouts,
        cancel.clone(),
    ));
    Rig {
        client,
        upstream,
        cancel,
        tunnel,
    }
}

/// Deterministic test payload: byte `i` of a stream seeded by `seed`.
pub fn pattern(seed: u8, start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}
