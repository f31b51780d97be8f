//! STUB: replaced by the tunnel branch.
use bytes::Bytes;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
pub struct TunnelTimeouts {
    pub upstream_read: Duration,
    pub upstream_send: Duration,
    pub client_send: Duration,
    pub client_read: Option<Duration>,
}
#[derive(Debug)]
pub enum TimeoutKind {
    UpstreamRead,
}
#[derive(Debug)]
pub enum TunnelEnd {
    Closed,
    ClientError(std::io::Error),
    UpstreamError(std::io::Error),
    Timeout(TimeoutKind),
    Cancelled,
}
pub struct TunnelStats {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub end: TunnelEnd,
}
pub async fn run(
    mut client: TcpStream,
    cp: Bytes,
    mut upstream: TcpStream,
    up: Bytes,
    _t: TunnelTimeouts,
    cancel: tokio_util::sync::CancellationToken,
) -> TunnelStats {
    let _ = upstream.write_all(&cp).await;
    let _ = client.write_all(&up).await;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
            Ok((a, b)) => TunnelStats { client_to_upstream: a, upstream_to_client: b, end: TunnelEnd::Closed },
            Err(e) => TunnelStats { client_to_upstream: 0, upstream_to_client: 0, end: TunnelEnd::ClientError(e) },
        },
        _ = cancel.cancelled() => TunnelStats { client_to_upstream: 0, upstream_to_client: 0, end: TunnelEnd::Cancelled },
    }
}
