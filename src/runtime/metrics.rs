//! Process-wide counters, as nginx's stub_status keeps them (they survive
//! reloads): connections accepted, handled, active; requests; connections
//! reading a request head and writing a response. Waiting is derived, as in
//! nginx: `active - (reading + writing)`.
//!
//! nginx's states of a client connection, mirrored by [`ConnGauge`]:
//! accepted and idle (waiting) -> first bytes of a request (reading; the
//! request is counted here) -> head parsed (writing, until the request is
//! finalized: for an upgraded connection, until its tunnel ends) -> idle again
//! (waiting) on keep-alive.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub static ACCEPTED: AtomicU64 = AtomicU64::new(0);
pub static HANDLED: AtomicU64 = AtomicU64::new(0);
pub static REQUESTS: AtomicU64 = AtomicU64::new(0);
pub static ACTIVE: AtomicU64 = AtomicU64::new(0);
pub static READING: AtomicU64 = AtomicU64::new(0);
pub static WRITING: AtomicU64 = AtomicU64::new(0);

const WAITING: u8 = 0;
const READ: u8 = 1;
const WRITE: u8 = 2;

/// A snapshot of the connection counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    pub active: u64,
    pub accepted: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

pub fn connections() -> Connections {
    let active = ACTIVE.load(Relaxed);
    let reading = READING.load(Relaxed);
    let writing = WRITING.load(Relaxed);
    Connections {
        active,
        accepted: ACCEPTED.load(Relaxed),
        handled: HANDLED.load(Relaxed),
        requests: REQUESTS.load(Relaxed),
        reading,
        writing,
        waiting: active.saturating_sub(reading + writing),
    }
}

/// nginx's stub_status page, byte for byte.
pub fn stub_status_text() -> String {
    let c = connections();
    format!(
        "Active connections: {} \nserver accepts handled requests\n {} {} {} \nReading: {} Writing: {} Waiting: {} \n",
        c.active, c.accepted, c.handled, c.requests, c.reading, c.writing, c.waiting
    )
}

/// One client connection's place in the counters; undone on drop.
#[derive(Debug)]
pub struct ConnGauge {
    state: AtomicU8,
}

fn gauge_of(state: u8) -> Option<&'static AtomicU64> {
    match state {
        READ => Some(&READING),
        WRITE => Some(&WRITING),
        _ => None,
    }
}

impl ConnGauge {
    /// Counts a connection just accepted (and handled: sluice refuses none
    /// it has accepted).
    pub fn accepted() -> Arc<ConnGauge> {
        super::trim::connection_event();
        ACCEPTED.fetch_add(1, Relaxed);
        HANDLED.fetch_add(1, Relaxed);
        ACTIVE.fetch_add(1, Relaxed);
        Arc::new(ConnGauge {
            state: AtomicU8::new(WAITING),
        })
    }

    fn set(&self, new: u8) -> u8 {
        let old = self.state.swap(new, Relaxed);
        if old != new {
            if let Some(g) = gauge_of(old) {
                g.fetch_sub(1, Relaxed);
            }
            if let Some(g) = gauge_of(new) {
                g.fetch_add(1, Relaxed);
            }
        }
        old
    }

    /// Bytes arrived: an idle connection starts reading a request.
    fn bytes_read(&self) {
        if self.state.load(Relaxed) == WAITING
            && self
                .state
                .compare_exchange(WAITING, READ, Relaxed, Relaxed)
                .is_ok()
        {
            READING.fetch_add(1, Relaxed);
            REQUESTS.fetch_add(1, Relaxed);
        }
    }

    /// The request head is parsed; the request is being processed.
    pub fn request_start(&self) {
        if self.set(WRITE) != READ {
            // Its bytes came while the previous request was still writing.
            REQUESTS.fetch_add(1, Relaxed);
        }
    }

    /// The request is finalized (response sent, or its tunnel ended).
    pub fn request_done(&self) {
        let _ = self
            .state
            .compare_exchange(WRITE, WAITING, Relaxed, Relaxed)
            .map(|_| WRITING.fetch_sub(1, Relaxed));
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        // The connection and its tunnel, if any, are gone.
        super::trim::connection_event();
        if let Some(g) = gauge_of(*self.state.get_mut()) {
            g.fetch_sub(1, Relaxed);
        }
        ACTIVE.fetch_sub(1, Relaxed);
    }
}

/// A client socket that tells its [`ConnGauge`] when request bytes arrive.
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    gauge: Arc<ConnGauge>,
}

impl<T> Tracked<T> {
    pub fn new(io: T, gauge: Arc<ConnGauge>) -> Self {
        Tracked { io, gauge }
    }

    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.gauge.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Responses by status class (1xx..5xx), as logged.
pub static RESPONSES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Open WebSocket tunnels, all WebSocket tunnels so far, and their bytes
/// (added when a tunnel ends).
pub static TUNNELS_OPEN: AtomicU64 = AtomicU64::new(0);
pub static TUNNELS: AtomicU64 = AtomicU64::new(0);
pub static TUNNEL_BYTES_TO_UPSTREAM: AtomicU64 = AtomicU64::new(0);
pub static TUNNEL_BYTES_TO_CLIENT: AtomicU64 = AtomicU64::new(0);
pub static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
pub static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);
/// The id of the configuration generation in force.
pub static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Upper bounds (seconds) of the duration histograms' buckets, +Inf implied.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free histogram of durations (prometheus-client's own takes a
/// mutex per observation).
#[derive(Debug)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((secs * 1e9) as u64, Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (self.sum_ns.load(Relaxed) as f64 / 1e9, count, buckets)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// `$request_time` of finished requests (tunnels excluded).
pub static REQUEST_TIME: Histogram = Histogram::new();
/// `$upstream_response_time` of proxied requests (all attempts added).
pub static UPSTREAM_TIME: Histogram = Histogram::new();

/// A request is finalized (its access log line is due): the connection goes
/// back to waiting, and the response counts.
pub fn request_logged(
    gauge: &ConnGauge,
    status: u16,
    elapsed: std::time::Duration,
    upstream_time: Option<std::time::Duration>,
) {
    gauge.request_done();
    if let Some(c) = RESPONSES.get(usize::from(status / 100).wrapping_sub(1)) {
        c.fetch_add(1, Relaxed);
    }
    if status == 101 {
        // A tunnel's lifetime is no response time.
        return;
    }
    REQUEST_TIME.observe(elapsed.as_secs_f64());
    if let Some(t) = upstream_time {
        UPSTREAM_TIME.observe(t.as_secs_f64());
    }
}

/// Counts an open WebSocket tunnel until dropped.
pub struct TunnelGauge;

impl TunnelGauge {
    pub fn open() -> TunnelGauge {
        TUNNELS.fetch_add(1, Relaxed);
        TUNNELS_OPEN.fetch_add(1, Relaxed);
        TunnelGauge
    }

    pub fn bytes(&self, to_upstream: u64, to_client: u64) {
        TUNNEL_BYTES_TO_UPSTREAM.fetch_add(to_upstream, Relaxed);
        TUNNEL_BYTES_TO_CLIENT.fetch_add(to_client, Relaxed);
    }
}

impl Drop for TunnelGauge {
    fn drop(&mut self) {
        TUNNELS_OPEN.fetch_sub(1, Relaxed);
    }
}

/// A reload was tried: `Some(id)` of the new generation, or `None` if it
/// was refused.
pub fn reloaded(generation: Option<u64>) {
    match generation {
        Some(id) => {
            RELOADS_OK.fetch_add(1, Relaxed);
            GENERATION.store(id, Relaxed);
        }
        None => {
            RELOADS_FAILED.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::new();
        h.observe(0.001);
        h.observe(0.3);
        h.observe(60.0);
        let (sum, count, b) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.301).abs() < 1e-6);
        assert_eq!(b[0], (0.005, 1));
        assert_eq!(b[6], (0.5, 1));
        assert_eq!(b[11], (f64::INFINITY, 1));
    }

    use super::*;

    // The counters are process-wide; this is the only unit test touching
    // them, and it checks differences.
    #[test]
    fn a_connection_walks_through_nginx_states() {
        let c0 = connections();
        let g = ConnGauge::accepted();
        let c = connections();
        assert_eq!(c.active, c0.active + 1);
        assert_eq!(c.accepted, c0.accepted + 1);
        g.bytes_read();
        g.bytes_read();
        assert_eq!(READING.load(Relaxed), c0.reading + 1);
        assert_eq!(REQUESTS.load(Relaxed), c0.requests + 1);
        g.request_start();
        assert_eq!(READING.load(Relaxed), c0.reading);
        assert_eq!(WRITING.load(Relaxed), c0.writing + 1);
        g.request_done();
        assert_eq!(WRITING.load(Relaxed), c0.writing);
        // A pipelined request whose bytes were read while writing.
        g.request_start();
        assert_eq!(REQUESTS.load(Relaxed), c0.requests + 2);
        drop(g);
        let c = connections();
        assert_eq!((c.active, c.writing), (c0.active, c0.writing));
    }

    #[test]
    fn stub_status_has_nginx_layout() {
        let t = stub_status_text();
        let lines: Vec<&str> = t.split('\n').collect();
        assert!(lines[0].starts_with("Active connections: ") && lines[0].ends_with(' '));
        assert_eq!(lines[1], "server accepts handled requests");
        assert!(lines[2].starts_with(' ') && lines[2].ends_with(' '));
        assert!(lines[3].starts_with("Reading: ") && lines[3].contains(" Writing: "));
        assert_eq!(lines[4], "");
    }
}
