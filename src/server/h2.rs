//! HTTP/2 from clients, with hyper's h2 server: chosen by ALPN `h2` on TLS
//! addresses, and by the prior-knowledge preface (h2c) on plain addresses
//! with `http2`, where HTTP/1.x keeps working beside it as in nginx.
//!
//! Each stream becomes an `http::Request` that goes through the same
//! `request::handle` as HTTP/1 (Host from `:authority`, same routing, header
//! and body rules); upstreams are spoken to in HTTP/1.x.
//!
//! On TLS the connection's settings (SETTINGS, timers) are those of the
//! server the client's SNI chose, as in nginx; else the address's default.
//!
//! Memory per connection is bounded by the flow-control windows: the
//! connection window (`http2_recv_buffer_size`) caps unread request body
//! data, and each stream's send buffer caps response data waiting for the
//! client's window. The head guard is HTTP/1's; here hyper's
//! `max_header_list_size` (from `large_client_header_buffers`) limits heads.
//!
//! A GOAWAY (hyper's graceful shutdown) ends the connection on shutdown, on
//! a reload (the generation is retired), after `keepalive_requests`
//! streams, and after `keepalive_timeout` without any traffic; streams in
//! flight finish first. A client that stops reading (a write blocked for
//! `send_timeout`) is cut off; the check runs when the idle timer fires.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Request};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::ConnState;
use super::tls::{ClientStream, MaybeTls};
use super::vhost::AddrConf;
use super::Generation;
use crate::conf::model::{ServerConf, Settings};

/// The client connection preface of HTTP/2 (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Initial stream window: nginx's `http2_body_preread_size` default.
const STREAM_WINDOW: u32 = 64 << 10;

/// Response data a stream may queue beyond the client's window.
const SEND_BUF: usize = 32 << 10;

/// Whether an address serves HTTP/2: its listen says `http2`, or one of its
/// servers says `http2 on`.
pub fn offered(a: &AddrConf, servers: &[ServerConf]) -> bool {
    a.http2
        || a.servers
            .iter()
            .any(|&i| servers.get(i).is_some_and(|s| s.settings.http2))
}

/// How a new connection is to be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Speak {
    Http1,
    Http2,
    /// Nothing came within the header timeout, or the client left: closed
    /// without an answer, as nginx does.
    Close,
}

/// Whether the connection speaks HTTP/2: ALPN `h2` on TLS; on a plain
/// HTTP/2 address, the prior-knowledge preface (peeked, not consumed).
pub async fn detect(
    gen: &Generation,
    stream: &ClientStream,
    addr: Option<usize>,
    timeout: Duration,
) -> Speak {
    match stream {
        MaybeTls::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => Speak::Http2,
        MaybeTls::Tls(_) => Speak::Http1,
        MaybeTls::Plain(s) => {
            let offered_here = addr
                .and_then(|i| gen.vhosts.addrs().get(i))
                .is_some_and(|a| offered(a, &gen.http().servers));
            match offered_here {
                true => sniff(s, Instant::now() + timeout).await,
                false => Speak::Http1,
            }
        }
    }
}

/// Peeks at the first bytes: the preface's start means HTTP/2. `PRI ` is
/// no HTTP/1 method a proxy serves, so four bytes decide; hyper checks the
/// rest of the preface.
async fn sniff(s: &TcpStream, deadline: Instant) -> Speak {
    let mut buf = [0u8; 4];
    let mut wait = Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, s.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Speak::Close,
        };
        if buf[..n] != PREFACE[..n] {
            return Speak::Http1;
        }
        if n == buf.len() {
            return Speak::Http2;
        }
        // A partial preface: peek returns at once while the bytes are
        // there, so wait a little (bounded by the header timeout) for more.
        if Instant::now() >= deadline {
            return Speak::Close;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// Serves HTTP/2 on `stream` until the client leaves or a GOAWAY ends it.
pub async fn serve(
    stream: ClientStream,
    gen: Arc<Generation>,
    state: Arc<ConnState>,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let settings = sni_settings(&gen, &stream, state.local).unwrap_or(settings);
    let builder = builder(&settings);
    let t0 = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let blocked_since = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(crate::runtime::metrics::Tracked::new(
        Activity {
            io: stream,
            t0,
            last: last.clone(),
            blocked_since: blocked_since.clone(),
        },
        state.gauge.clone(),
    ));
    let limit = Arc::new(tokio::sync::Notify::new());
    let count = Arc::new(AtomicU64::new(0));
    let (svc_gen, svc_state, svc_limit) = (gen.clone(), state.clone(), limit.clone());
    let keepalive_requests = settings.keepalive_requests;
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let gen = svc_gen.clone();
        let state = svc_state.clone();
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= keepalive_requests {
            svc_limit.notify_one();
        }
        let ok = prepare(&mut req);
        let bridge = req
            .extensions()
            .get::<crate::proxy::h2ws::Bridge>()
            .is_some();
        // Boxed: hyper moves each stream's future several times on its way
        // into a task (several KiB each time, callgrind: ~5k instructions
        // per request); a box moves as a pointer.
        Box::pin(async move {
            let tokens = || {
                gen.http()
                    .servers
                    .first()
                    .is_none_or(|s| s.settings.server_tokens)
            };
            if !ok {
                return Ok::<_, super::request::Unanswered>(crate::proxy::pages::error(
                    501,
                    tokens(),
                    false,
                ));
            }
            let resp = super::request::handle(gen.clone(), state, req).await?;
            // A 2xx answers an extended CONNECT with a tunnel: only the
            // bridge may give one (not `return 200`, say).
            if bridge && resp.status().is_success() && !crate::proxy::h2ws::bridged(&resp) {
                return Ok(crate::proxy::pages::error(501, tokens(), false));
            }
            Ok(resp)
        })
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = settings.keepalive_timeout;
    let send_timeout = settings.send_timeout;
    let mut closing = false;
    loop {
        let quiet = Duration::from_millis(last.load(Ordering::Relaxed));
        let idle_at = t0 + quiet + idle;
        let blocked = blocked_since.load(Ordering::Relaxed);
        let send_at = t0 + Duration::from_millis(blocked.saturating_sub(1)) + send_timeout;
        let was_closing = closing;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log_error(&e, state.info.id);
                }
                return;
            }
            _ = stop.cancelled(), if !closing => closing = true,
            _ = gen.retired.cancelled(), if !closing => closing = true,
            _ = limit.notified(), if !closing => closing = true,
            _ = tokio::time::sleep_until(idle_at), if !closing && !idle.is_zero() => {
                let quiet_now = Duration::from_millis(last.load(Ordering::Relaxed));
                if quiet_now == quiet && blocked_since.load(Ordering::Relaxed) == 0 {
                    closing = true;
                }
            }
            // send_timeout: a client that stopped reading is cut off, as
            // nginx does. The check is armed whenever the loop wakes (at
            // the latest when keepalive_timeout passes without traffic).
            _ = tokio::time::sleep_until(send_at), if blocked != 0 => {
                if blocked_since.load(Ordering::Relaxed) == blocked {
                    crate::error_log!(
                        crate::conf::model::LogLevel::Info,
                        conn = state.info.id,
                        "client timed out (110: Connection timed out) while sending to client"
                    );
                    return;
                }
            }
        }
        if closing && !was_closing {
            // GOAWAY; streams in flight finish first.
            conn.as_mut().graceful_shutdown();
        }
    }
}

/// The settings of the server a TLS client named by SNI, as nginx's
/// servername callback switches the connection's configuration before the
/// HTTP/2 preface: its SETTINGS and connection timers follow that server.
/// `None` without SNI (the address's default server applies).
fn sni_settings(
    gen: &Generation,
    stream: &ClientStream,
    local: std::net::SocketAddr,
) -> Option<Arc<Settings>> {
    let MaybeTls::Tls(t) = stream else {
        return None;
    };
    let name = super::vhost::normalize_host(t.get_ref().1.server_name()?).ok()?;
    let (idx, _) = gen.vhosts.select(local, Some(&name))?;
    Some(gen.http().servers.get(idx)?.settings.clone())
}

fn builder(settings: &Settings) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let streams = settings.http2_max_concurrent_streams.min(u32::MAX as u64) as u32;
    let conn_window = settings.http2_recv_buffer_size.clamp(65_535, (1 << 31) - 1) as u32;
    let head = (settings.large_client_header_buffers.count
        * settings.large_client_header_buffers.size)
        .clamp(4096, u32::MAX as u64) as u32;
    b.timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(conn_window)
        .adaptive_window(false)
        .max_frame_size(16_384)
        .max_send_buf_size(SEND_BUF)
        .max_header_list_size(head);
    // RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL, for WebSocket streams.
    if settings.http2_extended_connect {
        b.enable_connect_protocol();
    }
    b
}

/// Readies a stream's request for the HTTP/1 request path: Host from
/// `:authority` when the client sent none. An extended
/// CONNECT for WebSocket becomes the Upgrade request it stands for
/// (`proxy::h2ws`); a body without a length is framed as chunked, as a
/// streamed HTTP/1.1 body would be. `false`: a `:protocol` sluice cannot
/// bridge.
fn prepare(req: &mut Request<Incoming>) -> bool {
    // nginx turns :authority into a Host header: `$http_host` and
    // `proxy_set_header Host $http_host` see it.
    if !req.headers().contains_key(header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    if req.method() == http::Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some()
    {
        return crate::proxy::h2ws::translate(req);
    }
    if !req.body().is_end_stream() && !req.headers().contains_key(header::CONTENT_LENGTH) {
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    true
}

/// Client-side failures worth a line: nginx logs them at `info`.
fn log_error(e: &hyper::Error, id: u64) {
    if e.is_timeout() {
        crate::error_log!(
            crate::conf::model::LogLevel::Info,
            conn = id,
            "client timed out (110: Connection timed out) in http2 connection"
        );
    }
}

/// Records when the connection last moved bytes (for the idle timeout)
/// and since when a write has been blocked (for send_timeout).
struct Activity {
    io: ClientStream,
    t0: Instant,
    last: Arc<AtomicU64>,
    /// Milliseconds since `t0` plus one when a write started waiting; 0
    /// while writes go through.
    blocked_since: Arc<AtomicU64>,
}

impl Activity {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis().min(u64::MAX as u128 - 1) as u64
    }

    fn touch(&self) {
        self.last.store(self.ms(), Ordering::Relaxed);
    }

    fn wrote<T>(&self, r: &Poll<T>) {
        match r {
            Poll::Ready(_) => {
                self.touch();
                self.blocked_since.store(0, Ordering::Relaxed);
            }
            Poll::Pending => {
                if self.blocked_since.load(Ordering::Relaxed) == 0 {
                    self.blocked_since.store(self.ms() + 1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if r.is_ready() {
            me.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        if r.is_pending() {
            me.wrote(&r);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_told_from_http1() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, h2) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], Speak::Http2),
            (b"GET / HTTP/1.1\r\n\r\n", Speak::Http1),
            (b"POST / HTTP/1.1\r\n\r\n", Speak::Http1),
            (b"PROPFIND / HTTP/1.1\r\n\r\n", Speak::Http1),
            (b"", Speak::Close),
        ] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            c.write_all(sent).await.unwrap();
            if sent.is_empty() {
                c.shutdown().await.unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(sniff(&s, deadline).await, h2, "{sent:?}");
        }
    }
}
