//! nginx's request-head rules, enforced on the client's bytes before hyper
//! parses them: the buffer limits (`client_header_buffer_size`,
//! `large_client_header_buffers`: 414 for a long request line, 400 "Request
//! Header Or Cookie Too Large" for long headers), request-smuggling shapes
//! (Content-Length with Transfer-Encoding, repeated or invalid
//! Content-Length: 400), and the timeouts while waiting for a head
//! (`client_header_timeout` once a head has started or on a new connection,
//! `keepalive_timeout` between requests; nginx closes without an answer).
//!
//! The guard follows message framing (Content-Length, chunked) so that it
//! inspects each head of a keep-alive connection. After a head asking for an
//! upgrade or CONNECT it steps aside: what follows may be a tunnel.
//!
//! It also applies `send_timeout` to writes, as nginx does: a write that
//! cannot progress for that long fails the connection.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::tls::ClientStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proxy::pages;

/// The limits a guard applies, from the default server's settings.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub small_buffer: usize,
    pub large_count: usize,
    pub large_size: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
    pub server_tokens: bool,
    /// `reset_timedout_connection`: a client that times out in the middle of
    /// a head is closed with RST.
    pub reset_timedout: bool,
}

impl HeadLimits {
    /// The most bytes a head can have under these limits.
    pub fn max_head(&self) -> usize {
        self.small_buffer
            .max(self.large_count.saturating_mul(self.large_size))
            .saturating_add(self.small_buffer)
    }
}

enum State {
    /// Collecting a head; `started` once its first byte arrived.
    Head {
        buf: Vec<u8>,
        started: bool,
    },
    /// Skipping a body of known length.
    Body(u64),
    /// Skipping a chunked body.
    Chunked(Chunk),
    /// After an upgrade or CONNECT request, or a framing the guard cannot follow.
    Passthrough,
    /// Writing a rejection, then end of stream.
    Rejecting {
        out: Vec<u8>,
        pos: usize,
    },
    Closed,
}

enum Chunk {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd(u8),
    /// Trailer lines until an empty one.
    Trailer(Vec<u8>),
}

/// A client connection with nginx's head rules in front of hyper.
pub struct Guarded {
    inner: ClientStream,
    limits: HeadLimits,
    state: State,
    /// The wait for the current head: client_header_timeout or keepalive_timeout.
    head_timer: HeadTimer,
    /// True until the first request head completed: its wait is timed by
    /// client_header_timeout, later ones by keepalive_timeout.
    first: bool,
    /// Armed while a write is blocked; allocated only once a write blocks.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_blocked: bool,
    /// The location of the current request decides send_timeout and
    /// keepalive_timeout, as in nginx.
    timers: Arc<ConnTimers>,
}

/// Timeouts that follow the location of the connection's latest request.
#[derive(Debug)]
pub struct ConnTimers {
    send_timeout_ms: AtomicU64,
    keepalive_timeout_ms: AtomicU64,
    /// `reset_timedout_connection`: a client that times out on send_timeout
    /// is closed with RST.
    reset_timedout: AtomicBool,
    /// Set when a request ended unanswered under reset_timedout_connection:
    /// the connection's task resets the socket when hyper is done with it.
    reset_requested: AtomicBool,
}

impl ConnTimers {
    pub fn new(limits: &HeadLimits) -> Self {
        ConnTimers {
            send_timeout_ms: AtomicU64::new(limits.send_timeout.as_millis() as u64),
            keepalive_timeout_ms: AtomicU64::new(limits.keepalive_timeout.as_millis() as u64),
            reset_timedout: AtomicBool::new(limits.reset_timedout),
            reset_requested: AtomicBool::new(false),
        }
    }

    /// The timeouts of the location a request was matched to.
    pub fn set(&self, s: &crate::conf::model::Settings) {
        self.send_timeout_ms
            .store(s.send_timeout.as_millis() as u64, Ordering::Relaxed);
        self.keepalive_timeout_ms
            .store(s.keepalive_timeout.as_millis() as u64, Ordering::Relaxed);
        self.reset_timedout
            .store(s.reset_timedout_connection, Ordering::Relaxed);
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.load(Ordering::Relaxed))
    }

    fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.load(Ordering::Relaxed))
    }

    fn reset_timedout(&self) -> bool {
        self.reset_timedout.load(Ordering::Relaxed)
    }

    /// Asks for the connection to be closed with RST.
    pub fn request_reset(&self) {
        self.reset_requested.store(true, Ordering::Relaxed);
    }

    pub fn reset_requested(&self) -> bool {
        self.reset_requested.load(Ordering::Relaxed)
    }
}

impl Guarded {
    pub fn new(
        inner: impl Into<ClientStream>,
        limits: HeadLimits,
        timers: Arc<ConnTimers>,
    ) -> Self {
        let deadline = Instant::now() + limits.header_timeout;
        Guarded {
            inner: inner.into(),
            limits,
            state: State::Head {
                buf: Vec::new(),
                started: false,
            },
            head_timer: HeadTimer {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                deadline,
            },
            first: true,
            write_timer: None,
            write_blocked: false,
            timers,
        }
    }

    /// The socket, for a tunnel after the upgrade.
    pub fn into_inner(self) -> ClientStream {
        self.inner
    }

    pub fn get_ref(&self) -> &ClientStream {
        &self.inner
    }

    fn reject(&mut self, code: u16) {
        let body = pages::error_body(code, self.limits.server_tokens).unwrap_or_default();
        let status = pages::wire_status(code);
        let head = format!(
            "HTTP/1.1 {} {}\r\nServer: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            status.as_u16(),
            pages::status_reason(status.as_u16())
                .and_then(|r| std::str::from_utf8(r).ok())
                .or(status.canonical_reason())
                .unwrap_or(""),
            pages::server_token(self.limits.server_tokens),
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        self.state = State::Rejecting { out, pos: 0 };
    }

    /// Feeds newly read bytes through the state machine. Returns how many of
    /// them hyper may see; the rest (a rejected head) are withheld.
    fn inspect(&mut self, mut data: &[u8]) -> usize {
        let total = data.len();
        while !data.is_empty() {
            match &mut self.state {
                State::Head { buf, started } => {
                    if !*started {
                        // Empty lines before a request line are allowed.
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            break;
                        }
                        *started = true;
                        self.head_timer
                            .arm(Instant::now() + self.limits.header_timeout);
                    }
                    if buf.is_empty() {
                        // The usual case, a whole head in one read: look at it
                        // where it is instead of copying it first.
                        if let Some(end) = find_head_end(data, 0) {
                            if check_sizes(&data[..end], true, &self.limits).is_none() {
                                match framing(&data[..end]) {
                                    Err(code) => {
                                        let passed = total - data.len();
                                        self.reject(code);
                                        return passed;
                                    }
                                    Ok(next) => {
                                        self.first = false;
                                        self.state = next;
                                        self.after_message();
                                    }
                                }
                                data = &data[end..];
                                continue;
                            }
                        }
                    }
                    let before = buf.len();
                    buf.extend_from_slice(data);
                    let end = find_head_end(buf, before.saturating_sub(3));
                    let head_len = end.unwrap_or(buf.len());
                    if let Some(code) = check_sizes(&buf[..head_len], end.is_some(), &self.limits) {
                        let passed = total - data.len();
                        self.reject(code);
                        return passed;
                    }
                    let Some(end) = end else {
                        return total;
                    };
                    let consumed_here = end - before;
                    let head = std::mem::take(buf);
                    match framing(&head[..end]) {
                        Err(code) => {
                            let passed = total - data.len();
                            self.reject(code);
                            return passed;
                        }
                        Ok(next) => {
                            self.first = false;
                            self.state = next;
                            self.after_message();
                        }
                    }
                    data = &data[consumed_here..];
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::Head {
                            buf: Vec::new(),
                            started: false,
                        };
                        self.after_message();
                    }
                }
                State::Chunked(chunk) => {
                    let (used, done, bad) = step_chunked(chunk, data);
                    data = &data[used..];
                    if bad {
                        // hyper rejects the body itself; the guard stops following.
                        self.state = State::Passthrough;
                    } else if done {
                        self.state = State::Head {
                            buf: Vec::new(),
                            started: false,
                        };
                        self.after_message();
                    }
                }
                State::Passthrough | State::Rejecting { .. } | State::Closed => break,
            }
        }
        total
    }

    /// Between messages the wait for the next head is keepalive_timeout.
    fn after_message(&mut self) {
        if let State::Head { started: false, .. } = self.state {
            let t = if self.first {
                self.limits.header_timeout
            } else {
                self.timers.keepalive_timeout()
            };
            self.head_timer.arm(Instant::now() + t);
        }
    }
}

/// A deadline whose timer is re-armed lazily: it fires no later than the
/// deadline, and is moved only when it would fire too late or has fired
/// early, so that a keep-alive request (a head deadline, then a keep-alive
/// one) does not move it twice in tokio's timer wheel.
struct HeadTimer {
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl HeadTimer {
    fn arm(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Whether the deadline has passed; registers the waker otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if std::future::Future::poll(self.sleep.as_mut(), cx).is_pending() {
                return false;
            }
            // It fired at an earlier deadline than the current one.
            if self.deadline <= Instant::now() {
                return true;
            }
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
        .or_else(|| {
            // Bare LF line ends, which nginx also accepts.
            buf[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| from + i + 2)
        })
}

/// nginx's buffer rules: the head fits the small buffer, or its lines pack
/// into at most `large_count` buffers of `large_size`, no line split, the
/// request line in one of them.
fn check_sizes(head: &[u8], complete: bool, l: &HeadLimits) -> Option<u16> {
    if head.len() <= l.small_buffer {
        return None;
    }
    let mut used_large = 0usize;
    let mut room = l.small_buffer;
    let mut in_small = true;
    let mut first = true;
    let mut rest = head;
    while !rest.is_empty() {
        let (line, partial) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..=i], false),
            None => (rest, true),
        };
        rest = &rest[line.len()..];
        let too_long_code = if first { 414 } else { 494 };
        if line.len() > l.large_size {
            return Some(too_long_code);
        }
        if line.len() > room || (partial && !complete && in_small && line.len() >= room) {
            used_large += 1;
            if used_large > l.large_count {
                return Some(too_long_code);
            }
            in_small = false;
            room = l.large_size;
        }
        room = room.saturating_sub(line.len());
        first = false;
    }
    None
}

/// How the body of a complete head is framed, or the status nginx rejects it with.
fn framing(head: &[u8]) -> Result<State, u16> {
    // Uninitialised: httparse writes the ones it fills, and 128 empty
    // headers (4 KiB) would be written on every request otherwise.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(State::Passthrough),
        Err(_) => return Err(malformed_status(head)),
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| 400u16)?.trim();
            if content_length.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(400);
            }
            content_length = Some(v.parse().map_err(|_| 400u16)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te && content_length.is_some() {
        return Err(400);
    }
    if te && !chunked {
        // nginx 1.22: "client sent unknown Transfer-Encoding" is 501.
        return Err(501);
    }
    if upgrade || req.method == Some("CONNECT") {
        return Ok(State::Passthrough);
    }
    Ok(match (chunked, content_length) {
        (true, _) => State::Chunked(Chunk::Size(Vec::new())),
        (false, Some(n)) if n > 0 => State::Body(n),
        _ => State::Head {
            buf: Vec::new(),
            started: false,
        },
    })
}

/// nginx answers a request line naming HTTP/2 or later with 505, any other
/// malformed head with 400.
fn malformed_status(head: &[u8]) -> u16 {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let version = line.trim_end().rsplit(' ').next().unwrap_or("");
    match version
        .strip_prefix("HTTP/")
        .and_then(|v| v.split('.').next())
    {
        Some(major) if major.parse::<u32>().is_ok_and(|m| m >= 2) => 505,
        _ => 400,
    }
}

/// Advances through chunked framing; returns (bytes used, body done, malformed).
fn step_chunked(chunk: &mut Chunk, data: &[u8]) -> (usize, bool, bool) {
    let mut used = 0;
    while used < data.len() {
        match chunk {
            Chunk::Size(line) => {
                let b = data[used];
                used += 1;
                if b != b'\n' {
                    if line.len() > 4096 {
                        return (used, false, true);
                    }
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(line);
                let size_part = text.split(';').next().unwrap_or("").trim();
                let Ok(size) = u64::from_str_radix(size_part, 16) else {
                    return (used, false, true);
                };
                *chunk = if size == 0 {
                    Chunk::Trailer(Vec::new())
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                let n = (*left).min((data.len() - used) as u64) as usize;
                *left -= n as u64;
                used += n;
                if *left == 0 {
                    *chunk = Chunk::DataEnd(0);
                }
            }
            Chunk::DataEnd(seen) => {
                let b = data[used];
                used += 1;
                if b == b'\n' {
                    *chunk = Chunk::Size(Vec::new());
                } else {
                    *seen += 1;
                    if *seen > 1 {
                        return (used, false, true);
                    }
                }
            }
            Chunk::Trailer(line) => {
                let b = data[used];
                used += 1;
                if b == b'\n' {
                    let empty = line.iter().all(|c| *c == b'\r');
                    line.clear();
                    if empty {
                        return (used, true, false);
                    }
                } else if line.len() < 8192 {
                    line.push(b);
                } else {
                    return (used, false, true);
                }
            }
        }
    }
    (used, false, false)
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Closed => return Poll::Ready(Ok(())),
                State::Rejecting { out, pos } => {
                    while *pos < out.len() {
                        match Pin::new(&mut this.inner).poll_write(cx, &out[*pos..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                            Poll::Ready(Ok(n)) => *pos += n,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    this.state = State::Closed;
                    // End of stream: hyper closes the connection without answering.
                    return Poll::Ready(Ok(()));
                }
                // nginx closes a connection that timed out waiting for a head,
                // with RST under reset_timedout_connection once the head has
                // started (an idle keep-alive connection closes normally).
                State::Head { started, .. } if this.head_timer.expired(cx) => {
                    if *started && this.limits.reset_timedout {
                        this.inner.reset_on_close();
                    }
                    this.state = State::Closed;
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let new_len = buf.filled().len();
                    if new_len == before || matches!(this.state, State::Passthrough) {
                        return Poll::Ready(Ok(()));
                    }
                    // Inspected in place: the guard and the read buffer are apart.
                    let pass = this.inspect(&buf.filled()[before..new_len]);
                    if pass < new_len - before {
                        buf.set_filled(before + pass);
                        if pass == 0 {
                            // Nothing for hyper: go write the rejection.
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                other => return other,
            }
        }
    }
}

impl Guarded {
    /// nginx's send_timeout: the time a write may stay blocked.
    fn write_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.write_blocked = false;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let deadline = Instant::now() + self.timers.send_timeout();
                let timer = self
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !self.write_blocked {
                    self.write_blocked = true;
                    timer.as_mut().reset(deadline);
                }
                if std::future::Future::poll(timer.as_mut(), cx).is_ready() {
                    if self.timers.reset_timedout() {
                        // reset_timedout_connection: the unsent response is
                        // dropped at once instead of lingering in FIN_WAIT1.
                        self.inner.reset_on_close();
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timed out (110: Connection timed out) while sending response to client",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_progress(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            small_buffer: 1024,
            large_count: 4,
            large_size: 8192,
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            server_tokens: true,
            reset_timedout: false,
        }
    }

    #[test]
    fn sizes_follow_nginx_buffers() {
        let l = limits();
        let line = |n: usize| format!("GET /{} HTTP/1.1\r\n", "a".repeat(n));
        assert_eq!(check_sizes(line(100).as_bytes(), false, &l), None);
        assert_eq!(check_sizes(line(9000).as_bytes(), false, &l), Some(414));
        let mut head = line(10);
        head.push_str(&format!("X: {}\r\n", "b".repeat(9000)));
        assert_eq!(check_sizes(head.as_bytes(), false, &l), Some(494));
        let mut head = line(10);
        for _ in 0..5 {
            head.push_str(&format!("X: {}\r\n", "b".repeat(7000)));
        }
        assert_eq!(check_sizes(head.as_bytes(), false, &l), Some(494));
        let mut head = line(10);
        for _ in 0..4 {
            head.push_str(&format!("X: {}\r\n", "b".repeat(7000)));
        }
        assert_eq!(check_sizes(head.as_bytes(), false, &l), None);
    }

    #[test]
    fn smuggling_shapes_are_400() {
        let f = |h: &str| framing(h.as_bytes()).err();
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(501)
        );
        assert_eq!(f("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), None);
        assert_eq!(f("GET / HTTP/2.0\r\n\r\n"), Some(505));
        assert_eq!(f("GET /\x01 HTTP/1.1\r\n\r\n"), Some(400));
    }

    #[test]
    fn chunked_framing_is_followed() {
        let mut c = Chunk::Size(Vec::new());
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET";
        let (used, done, bad) = step_chunked(&mut c, body);
        assert!(done && !bad);
        assert_eq!(&body[used..], b"GET");
        let mut c = Chunk::Size(Vec::new());
        let (_, done, bad) = step_chunked(&mut c, b"zz\r\n");
        assert!(bad && !done);
    }
}
