//! The byte tunnel of an upgraded connection (WebSocket after `101 Switching
//! Protocols`): copies bytes both ways between the client and the upstream
//! until both sides are done, an error, an idle timeout or a shutdown.
//!
//! # Memory
//!
//! An idle tunnel owns no user-space buffer. Each direction waits for the
//! source to become readable, reads into a per-thread scratch buffer
//! ([`SCRATCH_SIZE`]) that is borrowed only for one synchronous read+write, and
//! writes it straight on. Only when the destination would block is the
//! unwritten remainder copied into a pending buffer owned by the tunnel; the
//! source is not read again until that buffer is drained (backpressure), and
//! the buffer is released as soon as it is. So a tunnel holds at most one
//! scratch-sized pending buffer per direction (plus the pre-read bytes handed
//! in by the caller), and [`buffered_bytes`] reports the process-wide total.
//!
//! The tunnel is generic over its two streams: plain TCP sockets (where a
//! read is a readiness wait plus `recv`), TLS streams (rustls keeps only a
//! partial record between reads; a write may stay in its buffer until
//! flushed, so a direction flushes before it reads again) and HTTP/2 streams
//! (RFC 8441), all with the same copy loop, timers and drain.
//!
//! # Timeouts, as nginx applies them to upgraded connections
//!
//! nginx (`ngx_http_upstream_process_upgraded` in `ngx_http_upstream.c`) runs one handler for every read or write event on either socket. At
//! the end of each run it (re)arms:
//!
//! * the upstream read timer with `proxy_read_timeout` whenever the upstream
//!   has nothing to read. Because the handler runs for traffic in *either*
//!   direction, this is the tunnel's idle timer: the tunnel is closed
//!   ("upstream timed out" in the error log) after `proxy_read_timeout` with no
//!   traffic in *either* direction; traffic from the client alone keeps it
//!   open, and so does traffic from the upstream alone;
//! * the upstream write timer with `proxy_send_timeout` while a write to the
//!   upstream is blocked;
//! * the client write timer with `send_timeout` while a write to the client
//!   is blocked ("client timed out");
//! * no timer at all on the client read side (the client header timer is
//!   deleted when the request goes upstream), hence
//!   [`TunnelTimeouts::client_read`] is `None` for nginx semantics.
//!
//! sluice models this with one "last activity" instant (any bytes read or
//! written, or an EOF, in either direction) from which every armed deadline
//! is counted; the timer is re-armed lazily, only when it fires early.
//!
//! Checked against nginx 1.22.1 (`proxy_read_timeout 1s`, raw sockets on
//! both sides): an idle tunnel is closed after 1 s; a byte every 0.3 s from
//! the client alone, or from the upstream alone, keeps it open. nginx logs
//! the timeout at `info` level: `upstream timed out (110: Connection timed
//! out) while proxying upgraded connection`.
//!
//! # Half-close (a deliberate difference)
//!
//! nginx finalizes the whole upgraded connection as soon as either side sends
//! EOF (and its buffered bytes are flushed); checked on 1.22.1: after the
//! client's `shutdown(SHUT_WR)` the upstream sees EOF and nothing it sends
//! afterwards reaches the client, and the same the other way round. sluice
//! passes a half-close through instead: EOF from one side becomes
//! `shutdown(SHUT_WR)` on the other socket while the other direction keeps
//! flowing; both sockets are closed when both directions are done. For WebSocket peers, which close with a
//! close frame exchange, the two behave the same; for other upgraded protocols
//! half-close is what TCP promises. The idle timer stays armed after a
//! half-close, so a half-closed tunnel whose remaining peer goes silent still
//! ends after `proxy_read_timeout`. Two exceptions, where the half-close
//! would change nothing a peer can see: the last EOF is not passed on with
//! `shutdown()` on a TCP socket (closing both sockets sends the FIN), and a
//! WebSocket whose close frames have passed both ways ends at the first EOF,
//! as in nginx (RFC 6455 7.1.1: nothing may follow them).
//!
//! # Cancellation
//!
//! When the cancellation token fires, the tunnel stops copying and returns
//! [`TunnelEnd::Cancelled`] with both sockets and any bytes not yet written in
//! [`TunnelStats::leftover`], so that a graceful drain can finish the job
//! (flush, then send WebSocket close frames) instead of cutting the
//! connection. Dropping the leftover closes the sockets. [`run_ws`] also
//! tracks WebSocket frame boundaries each way (16 bytes per direction, no
//! buffering; see `wsframe`), so the drain (`proxy::drain`) knows how much of
//! the frame in flight is still to forward before its close frame.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use std::pin::Pin;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wsframe::{FrameTracker, WsFrames};

/// Size of the per-thread scratch buffer every tunnel on that thread reads
/// into; also the upper bound of a tunnel's pending buffer per direction.
pub const SCRATCH_SIZE: usize = 32 * 1024;

/// Idle timeouts of a tunnel (see the module documentation for how nginx
/// arms them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTimeouts {
    /// `proxy_read_timeout`: the tunnel's idle timeout (no traffic either way).
    pub upstream_read: Duration,
    /// `proxy_send_timeout`: while a write to the upstream is blocked.
    pub upstream_send: Duration,
    /// `send_timeout`: while a write to the client is blocked.
    pub client_send: Duration,
    /// nginx arms no client read timer on an upgraded connection: `None`.
    pub client_read: Option<Duration>,
    /// `reset_timedout_connection`: a client that timed out on
    /// `client_send` is closed with RST.
    pub reset_timedout: bool,
}

impl TunnelTimeouts {
    /// A proxied upgrade's timeouts, from its location's settings.
    pub fn proxied(s: &crate::conf::model::Settings) -> Self {
        TunnelTimeouts {
            upstream_read: s.proxy_read_timeout,
            upstream_send: s.proxy_send_timeout,
            client_send: s.send_timeout,
            client_read: None,
            reset_timedout: s.reset_timedout_connection,
        }
    }
}

/// Which timer ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// `proxy_read_timeout` without traffic.
    UpstreamRead,
    /// `proxy_send_timeout` while blocked writing to the upstream.
    UpstreamSend,
    /// `send_timeout` while blocked writing to the client.
    ClientSend,
    /// The optional client read timeout.
    ClientRead,
}

impl TimeoutKind {
    /// nginx's words for the error log ("... while proxying upgraded
    /// connection").
    pub fn nginx_message(self) -> &'static str {
        match self {
            TimeoutKind::UpstreamRead | TimeoutKind::UpstreamSend => "upstream timed out",
            TimeoutKind::ClientSend | TimeoutKind::ClientRead => "client timed out",
        }
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both directions saw EOF and were flushed; both sockets are closed.
    Closed,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the upstream failed.
    UpstreamError(io::Error),
    /// An idle timer fired.
    Timeout(TimeoutKind),
    /// The cancellation token fired; see [`TunnelStats::leftover`].
    Cancelled,
}

/// Either end of a tunnel: a TCP socket, a TLS stream, an HTTP/2 stream.
pub trait TunnelIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Closing the stream says all a shutdown would (a TCP socket's FIN), so
    /// a tunnel that ends now need not shut it down first. Not so for TLS
    /// (close_notify) or HTTP/2 (END_STREAM rather than a reset).
    fn close_is_shutdown(&self) -> bool {
        false
    }

    /// Makes the close that ends the tunnel a reset, where the stream has a
    /// socket of its own (`reset_timedout_connection`).
    fn reset_on_close(&self) {}
}

impl TunnelIo for TcpStream {
    fn close_is_shutdown(&self) -> bool {
        true
    }

    fn reset_on_close(&self) {
        crate::server::tls::reset_on_close(self);
    }
}

impl<T> TunnelIo for crate::server::tls::MaybeTls<T>
where
    T: crate::server::tls::OverTcp + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn close_is_shutdown(&self) -> bool {
        matches!(self, crate::server::tls::MaybeTls::Plain(_))
    }

    fn reset_on_close(&self) {
        crate::server::tls::MaybeTls::reset_on_close(self);
    }
}

impl TunnelIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

#[cfg(test)]
impl TunnelIo for tokio::io::DuplexStream {}

/// What a cancelled tunnel hands back: both streams, still open, and the bytes
/// read but not yet written each way (to be written first).
#[derive(Debug)]
pub struct Leftover<C = TcpStream, U = TcpStream> {
    pub client: C,
    pub upstream: U,
    pub to_client: Bytes,
    pub to_upstream: Bytes,
    /// Frame positions each way (WebSocket tunnels only), as of every byte
    /// read, `to_client` and `to_upstream` included.
    pub ws: Option<WsFrames>,
    /// The tunnel's timeouts, to run it on while it waits for its turn.
    pub timeouts: TunnelTimeouts,
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct TunnelStats<C = TcpStream, U = TcpStream> {
    /// Bytes written to the upstream (pre-read client bytes included).
    pub client_to_upstream: u64,
    /// Bytes written to the client (pre-read upstream bytes included).
    pub upstream_to_client: u64,
    pub end: TunnelEnd,
    /// `Some` only when `end` is [`TunnelEnd::Cancelled`]; otherwise both
    /// sockets have been closed (dropped) before `run` returns.
    pub leftover: Option<Leftover<C, U>>,
}

impl<C, U> TunnelStats<C, U> {
    /// The figures, closing whatever the tunnel still held.
    pub fn finished(self) -> TunnelStats {
        TunnelStats {
            client_to_upstream: self.client_to_upstream,
            upstream_to_client: self.upstream_to_client,
            end: self.end,
            leftover: None,
        }
    }
}

static BUFFERED: AtomicU64 = AtomicU64::new(0);

/// Bytes currently held in tunnels' pending buffers, process-wide (pre-read
/// bytes included until written). Zero when every tunnel is idle or
/// keeping up.
pub fn buffered_bytes() -> u64 {
    BUFFERED.load(Ordering::Relaxed)
}

thread_local! {
    // Zeroed lazily by the allocator; shared by every tunnel polled on this
    // thread, never held across an await.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// One direction of the tunnel.
#[derive(Default)]
struct Half {
    /// Bytes read but not yet written; empty (no allocation) while the
    /// destination keeps up.
    pending: Bytes,
    read_eof: bool,
    shut: bool,
    /// Written since the last flush: a TLS or HTTP/2 destination may hold it.
    unflushed: bool,
    written: u64,
}

impl Half {
    fn with_pending(pending: Bytes) -> Half {
        BUFFERED.fetch_add(pending.len() as u64, Ordering::Relaxed);
        Half {
            pending,
            ..Half::default()
        }
    }

    fn set_pending(&mut self, bytes: &[u8]) {
        BUFFERED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.pending = Bytes::copy_from_slice(bytes);
    }

    fn consume(&mut self, n: usize) {
        BUFFERED.fetch_sub(n as u64, Ordering::Relaxed);
        self.written += n as u64;
        if n >= self.pending.len() {
            // Advancing would keep the allocation alive; let it go.
            self.pending = Bytes::new();
        } else {
            self.pending.advance(n);
        }
    }

    fn take_pending(&mut self) -> Bytes {
        BUFFERED.fetch_sub(self.pending.len() as u64, Ordering::Relaxed);
        std::mem::take(&mut self.pending)
    }

    fn done(&self) -> bool {
        self.read_eof && self.shut && self.pending.is_empty()
    }
}

impl Drop for Half {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.pending.len() as u64, Ordering::Relaxed);
    }
}

/// A failure in one direction: on its source (read) or destination (write).
enum Fail {
    Read(io::Error),
    Write(io::Error),
}

/// Notes WebSocket frame boundaries in bytes read, when tracked.
fn track(frames: Option<&mut FrameTracker>, bytes: &[u8]) {
    if let Some(f) = frames {
        f.consume(bytes);
    }
}

/// Copies `src` to `dst` until either would block (`Pending`), the direction
/// is finished (`Ready(Ok)`), or it fails. Sets `active` when any byte or EOF
/// moved. The caller passes the EOF on ([`poll_pass_eof`]).
fn poll_half<R, W>(
    half: &mut Half,
    src: &mut R,
    dst: &mut W,
    cx: &mut Context<'_>,
    active: &mut bool,
    mut frames: Option<&mut FrameTracker>,
) -> Poll<Result<(), Fail>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        while !half.pending.is_empty() {
            match std::task::ready!(Pin::new(&mut *dst).poll_write(cx, &half.pending)) {
                Ok(0) => return Poll::Ready(Err(Fail::Write(io::ErrorKind::WriteZero.into()))),
                Ok(n) => {
                    half.consume(n);
                    half.unflushed = true;
                    *active = true;
                }
                Err(e) => return Poll::Ready(Err(Fail::Write(e))),
            }
        }
        if half.unflushed {
            // A no-op for TCP; pushes TLS records and HTTP/2 DATA out, so a
            // stream's buffer is never refilled before it drained.
            if let Err(e) = std::task::ready!(Pin::new(&mut *dst).poll_flush(cx)) {
                return Poll::Ready(Err(Fail::Write(e)));
            }
            half.unflushed = false;
        }
        if half.read_eof {
            return Poll::Ready(Ok(()));
        }
        // Ok(true): bytes moved or EOF; Ok(false): nothing to read, interest
        // registered. On a TCP socket a short read also ends its readiness
        // (tokio does so, as nginx's `ngx_unix_recv`): no EAGAIN read after
        // each message.
        let step = SCRATCH.with_borrow_mut(|buf| {
            let mut rb = ReadBuf::new(buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => Ok(false),
                Poll::Ready(Err(e)) => Err(Fail::Read(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    half.read_eof = true;
                    Ok(true)
                }
                Poll::Ready(Ok(())) => {
                    let data = rb.filled();
                    track(frames.as_deref_mut(), data);
                    match Pin::new(&mut *dst).poll_write(cx, data) {
                        Poll::Ready(Ok(0)) => Err(Fail::Write(io::ErrorKind::WriteZero.into())),
                        Poll::Ready(Ok(m)) => {
                            half.written += m as u64;
                            half.unflushed = true;
                            if m < data.len() {
                                half.set_pending(&data[m..]);
                            }
                            Ok(true)
                        }
                        Poll::Pending => {
                            half.set_pending(data);
                            Ok(true)
                        }
                        Poll::Ready(Err(e)) => Err(Fail::Write(e)),
                    }
                }
            }
        });
        match step {
            Ok(true) => *active = true,
            Ok(false) => return Poll::Pending,
            Err(fail) => return Poll::Ready(Err(fail)),
        }
    }
}

/// A direction that read EOF and wrote out what it read passes the EOF on:
/// `shutdown(SHUT_WR)` for TCP, close_notify for TLS, END_STREAM for HTTP/2,
/// unless the tunnel ends now (`ends`) and closing says the same.
fn poll_pass_eof<W: TunnelIo>(
    half: &mut Half,
    dst: &mut W,
    ends: bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if !half.read_eof || half.shut || !half.pending.is_empty() || half.unflushed {
        return Poll::Ready(());
    }
    if !(ends && dst.close_is_shutdown()) {
        // Fails only if the peer is already gone, which the other direction
        // will report.
        if let Err(e) = std::task::ready!(Pin::new(&mut *dst).poll_shutdown(cx)) {
            crate::error_log!(crate::conf::model::LogLevel::Debug, "tunnel shutdown: {e}");
        }
    }
    half.shut = true;
    Poll::Ready(())
}

/// [`TunnelTimeouts`] in milliseconds, saturating at 49 days (nginx's own
/// timers reach 24): 20 bytes instead of 64 in every open tunnel.
#[derive(Debug, Clone, Copy)]
struct Timers {
    upstream_read: u32,
    upstream_send: u32,
    client_send: u32,
    client_read: Option<u32>,
    reset_timedout: bool,
}

fn ms(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

impl From<TunnelTimeouts> for Timers {
    fn from(t: TunnelTimeouts) -> Timers {
        Timers {
            upstream_read: ms(t.upstream_read),
            upstream_send: ms(t.upstream_send),
            client_send: ms(t.client_send),
            client_read: t.client_read.map(ms),
            reset_timedout: t.reset_timedout,
        }
    }
}

impl From<Timers> for TunnelTimeouts {
    fn from(t: Timers) -> TunnelTimeouts {
        let d = |ms: u32| Duration::from_millis(ms.into());
        TunnelTimeouts {
            upstream_read: d(t.upstream_read),
            upstream_send: d(t.upstream_send),
            client_send: d(t.client_send),
            client_read: t.client_read.map(d),
            reset_timedout: t.reset_timedout,
        }
    }
}

struct State<C, U> {
    client: C,
    upstream: U,
    c2u: Half,
    u2c: Half,
    timeouts: Timers,
    last_activity: Instant,
    /// Frame boundaries, for WebSocket tunnels only.
    ws: Option<WsFrames>,
}

impl<C: TunnelIo, U: TunnelIo> State<C, U> {
    /// The earliest armed deadline and the timer it belongs to.
    fn next_deadline(&self) -> (Instant, TimeoutKind) {
        let t = &self.timeouts;
        let at = |ms: u32| self.last_activity + Duration::from_millis(ms.into());
        let mut next = (at(t.upstream_read), TimeoutKind::UpstreamRead);
        let mut consider = |armed: bool, d: u32, kind| {
            if armed && at(d) < next.0 {
                next = (at(d), kind);
            }
        };
        consider(
            !self.c2u.pending.is_empty(),
            t.upstream_send,
            TimeoutKind::UpstreamSend,
        );
        consider(
            !self.u2c.pending.is_empty(),
            t.client_send,
            TimeoutKind::ClientSend,
        );
        if let Some(d) = t.client_read {
            consider(!self.c2u.read_eof, d, TimeoutKind::ClientRead);
        }
        next
    }

    /// A WebSocket whose close frames have passed both ways is over (RFC
    /// 6455 section 7.1.1): the first EOF after them ends the tunnel, as
    /// nginx ends every tunnel, instead of a half-close and a wait for the
    /// other peer's EOF.
    fn ws_over(&self) -> bool {
        self.ws
            .as_ref()
            .is_some_and(|w| w.c2u.close_seen() && w.u2c.close_seen())
    }

    fn poll_copy(&mut self, cx: &mut Context<'_>) -> Poll<TunnelEnd> {
        let mut active = false;
        let (fc, fu) = match &mut self.ws {
            Some(w) => (Some(&mut w.c2u), Some(&mut w.u2c)),
            None => (None, None),
        };
        let c2u = poll_half(
            &mut self.c2u,
            &mut self.client,
            &mut self.upstream,
            cx,
            &mut active,
            fc,
        );
        let u2c = match c2u {
            Poll::Ready(Err(_)) => Poll::Pending,
            _ => poll_half(
                &mut self.u2c,
                &mut self.upstream,
                &mut self.client,
                cx,
                &mut active,
                fu,
            ),
        };
        if active {
            self.last_activity = Instant::now();
        }
        if !matches!(c2u, Poll::Ready(Err(_))) && !matches!(u2c, Poll::Ready(Err(_))) {
            let over = self.ws_over();
            let finished = |h: &Half| h.read_eof && h.pending.is_empty() && !h.unflushed;
            let (c_fin, u_fin) = (finished(&self.c2u), finished(&self.u2c));
            // Pending only while a TLS or HTTP/2 shutdown waits to be
            // written; its waker is registered.
            let _ = poll_pass_eof(&mut self.c2u, &mut self.upstream, over || u_fin, cx);
            let _ = poll_pass_eof(&mut self.u2c, &mut self.client, over || c_fin, cx);
        }
        match (c2u, u2c) {
            (Poll::Ready(Err(Fail::Read(e))), _) | (_, Poll::Ready(Err(Fail::Write(e)))) => {
                Poll::Ready(TunnelEnd::ClientError(e))
            }
            (Poll::Ready(Err(Fail::Write(e))), _) | (_, Poll::Ready(Err(Fail::Read(e)))) => {
                Poll::Ready(TunnelEnd::UpstreamError(e))
            }
            _ if self.c2u.done() && self.u2c.done() => Poll::Ready(TunnelEnd::Closed),
            _ if (self.c2u.done() || self.u2c.done()) && self.ws_over() => {
                Poll::Ready(TunnelEnd::Closed)
            }
            _ => Poll::Pending,
        }
    }
}

/// Runs the tunnel to its end. `client_pending` (bytes the client sent past
/// the upgrade request) is written to the upstream, and `upstream_pending`
/// (bytes the upstream sent past its 101 response) to the client, before
/// anything else each way.
///
/// The caller applies `tcp_nodelay` to both sockets first, as nginx does when
/// it switches to an upgraded connection.
///
/// A plain `fn` returning the future (rather than an `async fn`) so the
/// arguments are moved into the state once instead of being kept beside it:
/// the future stays small (see the `the_future_is_small` test).
pub fn run<C: TunnelIo, U: TunnelIo>(
    client: C,
    client_pending: Bytes,
    upstream: U,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
) -> impl Future<Output = TunnelStats<C, U>> + Send {
    run_ws(
        client,
        client_pending,
        upstream,
        upstream_pending,
        timeouts,
        cancel,
        None,
    )
}

/// [`run`], tracking WebSocket frame boundaries each way when `ws` is given
/// (its state must already account for the pending bytes; see
/// [`WsFrames::new`]), so that a cancelled tunnel can be closed cleanly.
pub fn run_ws<C: TunnelIo, U: TunnelIo>(
    client: C,
    client_pending: Bytes,
    upstream: U,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
    ws: Option<WsFrames>,
) -> impl Future<Output = TunnelStats<C, U>> + Send {
    let mut st = State {
        client,
        upstream,
        c2u: Half::with_pending(client_pending),
        u2c: Half::with_pending(upstream_pending),
        timeouts: timeouts.into(),
        last_activity: Instant::now(),
        ws,
    };
    // An async block, not an async fn: a fn's parameters would be stored
    // twice in the future.
    async move {
        let sleep = tokio::time::sleep_until(st.next_deadline().0);
        tokio::pin!(sleep);
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);

        let end = poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(TunnelEnd::Cancelled);
            }
            if let Poll::Ready(end) = st.poll_copy(cx) {
                return Poll::Ready(end);
            }
            loop {
                let (deadline, kind) = st.next_deadline();
                if deadline < sleep.deadline() {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer fired at its old deadline; activity since may have
                // pushed the real one later.
                if deadline <= Instant::now() {
                    return Poll::Ready(TunnelEnd::Timeout(kind));
                }
                sleep.as_mut().reset(deadline);
            }
        })
        .await;

        // As nginx's reset_timedout_connection: a client that stopped reading
        // loses the bytes it did not take at once, instead of holding them in
        // FIN_WAIT1.
        if st.timeouts.reset_timedout && matches!(end, TunnelEnd::Timeout(TimeoutKind::ClientSend))
        {
            st.client.reset_on_close();
        }
        let leftover = match end {
            TunnelEnd::Cancelled => Some(Leftover {
                to_client: st.u2c.take_pending(),
                to_upstream: st.c2u.take_pending(),
                client: st.client,
                upstream: st.upstream,
                ws: st.ws,
                timeouts: st.timeouts.into(),
            }),
            _ => None,
        };
        TunnelStats {
            client_to_upstream: st.c2u.written,
            upstream_to_client: st.u2c.written,
            end,
            leftover,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// (client peer, upstream peer, tunnel state with an old last activity)
    async fn state() -> (TcpStream, TcpStream, State<TcpStream, TcpStream>) {
        let (client, proxy_client) = pair().await;
        let (upstream, proxy_upstream) = pair().await;
        let st = State {
            client: proxy_client,
            upstream: proxy_upstream,
            c2u: Half::default(),
            u2c: Half::default(),
            timeouts: TunnelTimeouts {
                upstream_read: Duration::from_secs(60),
                upstream_send: Duration::from_secs(30),
                client_send: Duration::from_secs(20),
                client_read: None,
                reset_timedout: false,
            }
            .into(),
            last_activity: Instant::now() - Duration::from_secs(3600),
            ws: None,
        };
        (client, upstream, st)
    }

    /// Polls the copy loop until `dst` has received `n` bytes.
    async fn pump(st: &mut State<TcpStream, TcpStream>, dst: &mut TcpStream, n: usize) {
        let mut got = vec![0u8; n];
        let read = dst.read_exact(&mut got);
        tokio::pin!(read);
        poll_fn(|cx| {
            assert!(st.poll_copy(cx).is_pending());
            read.as_mut().poll(cx).map(|r| r.map(|_| ()))
        })
        .await
        .expect("read");
    }

    // nginx re-arms proxy_read_timeout whenever its upgraded handler runs,
    // i.e. for traffic either way (checked against nginx 1.22: a tunnel
    // with traffic in one direction only outlives proxy_read_timeout).
    #[tokio::test]
    async fn traffic_from_the_client_alone_resets_the_idle_timer() {
        let (mut client, mut upstream, mut st) = state().await;
        let before = st.last_activity;
        client.write_all(b"ping").await.expect("write");
        pump(&mut st, &mut upstream, 4).await;
        assert!(st.last_activity > before + Duration::from_secs(3000));
    }

    #[tokio::test]
    async fn traffic_from_the_upstream_alone_resets_the_idle_timer() {
        let (mut client, mut upstream, mut st) = state().await;
        let before = st.last_activity;
        upstream.write_all(b"tick").await.expect("write");
        pump(&mut st, &mut client, 4).await;
        assert!(st.last_activity > before + Duration::from_secs(3000));
    }

    #[tokio::test]
    async fn send_timers_are_armed_only_while_a_write_is_blocked() {
        let (_client, _upstream, mut st) = state().await;
        let t0 = st.last_activity;
        assert_eq!(
            st.next_deadline(),
            (t0 + Duration::from_secs(60), TimeoutKind::UpstreamRead)
        );
        st.c2u.pending = Bytes::from_static(b"x");
        assert_eq!(
            st.next_deadline(),
            (t0 + Duration::from_secs(30), TimeoutKind::UpstreamSend)
        );
        st.u2c.pending = Bytes::from_static(b"y");
        assert_eq!(
            st.next_deadline(),
            (t0 + Duration::from_secs(20), TimeoutKind::ClientSend)
        );
        st.timeouts.client_read = Some(5000);
        assert_eq!(
            st.next_deadline(),
            (t0 + Duration::from_secs(5), TimeoutKind::ClientRead)
        );
        // Not counted in the gauge: set directly above.
        st.c2u.pending = Bytes::new();
        st.u2c.pending = Bytes::new();
    }

    /// Polls the copy loop until it ends.
    async fn finish(st: &mut State<TcpStream, TcpStream>) -> TunnelEnd {
        poll_fn(|cx| st.poll_copy(cx)).await
    }

    #[tokio::test]
    async fn an_eof_becomes_a_half_close_and_the_other_way_keeps_flowing() {
        let (mut client, mut upstream, mut st) = state().await;
        upstream.shutdown().await.expect("shutdown");
        let mut buf = [0u8; 4];
        let eof = client.read(&mut buf);
        tokio::pin!(eof);
        let n = poll_fn(|cx| {
            assert!(st.poll_copy(cx).is_pending());
            eof.as_mut().poll(cx)
        })
        .await
        .expect("read");
        assert_eq!(n, 0, "the client sees the upstream's EOF");
        client.write_all(b"late").await.expect("write");
        pump(&mut st, &mut upstream, 4).await;
        client.shutdown().await.expect("shutdown");
        assert!(matches!(finish(&mut st).await, TunnelEnd::Closed));
    }

    #[tokio::test]
    async fn a_websocket_ends_at_the_first_eof_after_both_close_frames() {
        let (mut client, mut upstream, mut st) = state().await;
        st.ws = Some(WsFrames::new(&[], &[]));
        let masked = crate::proxy::wsframe::close_frame(1000, "", Some([1, 2, 3, 4]));
        client.write_all(&masked).await.expect("write");
        pump(&mut st, &mut upstream, masked.len()).await;
        let reply = crate::proxy::wsframe::close_frame(1000, "", None);
        upstream.write_all(&reply).await.expect("write");
        pump(&mut st, &mut client, reply.len()).await;
        // The upstream closes TCP first; the client never sends its EOF
        // (bounded: a half-closing tunnel would wait for it).
        drop(upstream);
        let end = tokio::time::timeout(Duration::from_secs(10), finish(&mut st)).await;
        assert!(matches!(end, Ok(TunnelEnd::Closed)));
    }

    fn timeouts(idle: Duration) -> TunnelTimeouts {
        TunnelTimeouts {
            upstream_read: idle,
            upstream_send: Duration::from_secs(30),
            client_send: Duration::from_secs(30),
            client_read: None,
            reset_timedout: false,
        }
    }

    // Streams that are not sockets (TLS, HTTP/2) go through the same loop:
    // in-memory pipes stand in for them here.
    #[tokio::test]
    async fn any_stream_copies_both_ways_with_pending_bytes_and_half_close() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(run(
            client,
            Bytes::from_static(b"early"),
            upstream,
            Bytes::from_static(b"hello"),
            timeouts(Duration::from_secs(30)),
            CancellationToken::new(),
        ));
        client_peer.write_all(b" client").await.expect("write");
        client_peer.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"early client");
        upstream_peer.write_all(b" upstream").await.expect("write");
        upstream_peer.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"hello upstream");
        let stats = task.await.expect("join");
        assert!(matches!(stats.end, TunnelEnd::Closed));
        assert_eq!(
            (stats.client_to_upstream, stats.upstream_to_client),
            (12, 14)
        );
    }

    // An upstream pipe of 64 bytes nobody reads: one poll of the copy loop
    // moves one scratch's worth at most and then waits (backpressure).
    #[tokio::test]
    async fn a_stalled_stream_is_backpressured_with_bounded_pending() {
        let (client, mut client_peer) = tokio::io::duplex(1 << 20);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let mut st = State {
            client,
            upstream,
            c2u: Half::default(),
            u2c: Half::default(),
            timeouts: timeouts(Duration::from_secs(30)).into(),
            last_activity: Instant::now(),
            ws: None,
        };
        let block: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        client_peer.write_all(&block).await.expect("write");
        poll_fn(|cx| {
            assert!(st.poll_copy(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(st.c2u.written, 64);
        assert_eq!(st.c2u.pending.len(), SCRATCH_SIZE - 64);
        let mut got = vec![0u8; block.len()];
        let read = upstream_peer.read_exact(&mut got);
        tokio::pin!(read);
        poll_fn(|cx| {
            assert!(st.poll_copy(cx).is_pending());
            assert!(st.c2u.pending.len() <= SCRATCH_SIZE);
            read.as_mut().poll(cx)
        })
        .await
        .expect("read");
        assert_eq!(got, block);
        assert!(st.c2u.pending.is_empty());
    }

    #[tokio::test]
    async fn an_idle_stream_tunnel_ends_after_proxy_read_timeout() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let stats = run(
            client,
            Bytes::new(),
            upstream,
            Bytes::new(),
            timeouts(Duration::from_millis(50)),
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(
            stats.end,
            TunnelEnd::Timeout(TimeoutKind::UpstreamRead)
        ));
    }
}
