//! Sending the request to a peer and relaying the answer: connect with
//! `proxy_connect_timeout`, wait for the header with `proxy_read_timeout`,
//! move to the next peer per `proxy_next_upstream`, and turn a `101` into a
//! tunnel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{self, BodyError, Finished, Limited, ProxyBody, SentFlag, Timed};
use super::driven::{DrivenBody, Driver, UpstreamUpgrade};
use super::headers;
use super::pages;
use super::tunnel::{self, TunnelTimeouts};
use crate::conf::model::{next_upstream, HttpVersion, LocationMatch, LogLevel};
use crate::server::request::{
    add_server_header, BodyFraming, LogWhenDone, RequestState, Unanswered,
};
use crate::server::tls::UpstreamStream;
use crate::upstream::pool::PooledConn;
use crate::upstream::{PeerGuard, PickError, PickInput, Tried};
use crate::vars::eval::{millis, ResponseInfo, UpstreamInfo, UpstreamTry};

/// Why one attempt at a peer failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("connect() failed ({0}) while connecting to upstream")]
    Connect(String),
    #[error("upstream timed out (110: Connection timed out) while connecting to upstream")]
    ConnectTimeout,
    #[error("upstream timed out (110: Connection timed out) while reading response header from upstream")]
    HeaderTimeout,
    #[error("upstream prematurely closed connection while reading response header from upstream")]
    Closed,
    #[error("upstream sent invalid header while reading response header from upstream")]
    InvalidHeader,
    #[error("upstream sent too big header while reading response header from upstream")]
    TooBigHeader,
    #[error("client intended to send too large body")]
    BodyTooLarge,
    #[error("client prematurely closed connection")]
    ClientBody,
    #[error("client timed out (110: Connection timed out) while reading client request body")]
    ClientBodyTimeout,
    /// tls: a failed handshake with an https upstream.
    #[error("{0} while SSL handshaking to upstream")]
    Tls(String),
}

impl AttemptError {
    fn condition(&self) -> u16 {
        match self {
            AttemptError::Connect(_) | AttemptError::Closed | AttemptError::Tls(_) => {
                next_upstream::ERROR
            }
            AttemptError::ConnectTimeout | AttemptError::HeaderTimeout => next_upstream::TIMEOUT,
            AttemptError::InvalidHeader | AttemptError::TooBigHeader => {
                next_upstream::INVALID_HEADER
            }
            AttemptError::BodyTooLarge
            | AttemptError::ClientBody
            | AttemptError::ClientBodyTimeout => 0,
        }
    }

    /// What nginx says it was doing when the try failed.
    fn action(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) | AttemptError::ConnectTimeout => "connecting to upstream",
            AttemptError::Tls(_) => "SSL handshaking to upstream",
            _ => READING_HEADER,
        }
    }

    fn status(&self) -> u16 {
        match self {
            AttemptError::ConnectTimeout | AttemptError::HeaderTimeout => 504,
            AttemptError::BodyTooLarge => 413,
            AttemptError::ClientBody => 400,
            _ => 502,
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    format!("{}: {text}", e.raw_os_error().unwrap_or(0))
}

/// Upstream status codes that `proxy_next_upstream` may retry on.
fn status_condition(code: u16) -> u16 {
    match code {
        500 => next_upstream::HTTP_500,
        502 => next_upstream::HTTP_502,
        503 => next_upstream::HTTP_503,
        504 => next_upstream::HTTP_504,
        403 => next_upstream::HTTP_403,
        404 => next_upstream::HTTP_404,
        429 => next_upstream::HTTP_429,
        _ => 0,
    }
}

/// Forwards a routed request; always answers (errors become nginx's pages).
pub async fn forward(
    state: RequestState,
    framing: BodyFraming,
    matcher: &LocationMatch,
    client_body: Incoming,
    client_upgrade: Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, Unanswered> {
    let Some(pp) = state.proxy.clone() else {
        return Ok(crate::server::request::finish(
            state,
            pages::error(500, true, false),
        ));
    };
    let settings = state.settings.clone();
    let gen = state.gen.clone();
    let plan = gen.header_plan(&settings);
    let tokens = settings.server_tokens;

    // The upstream request head, built once and reused across tries.
    let target = super::uri::upstream_target(
        &pp,
        matcher,
        state.parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        &state.uri,
        state.parts.uri.query(),
    );
    let version = headers::upstream_version(settings.proxy_http_version);
    // The first try sends this head; a retry makes it anew (`remake_head`),
    // so that no request keeps a copy in case one comes.
    let mut head = upstream_head(&state, plan, &framing);
    // h2: an HTTP/2 WebSocket stream needs a location that proxies WebSockets.
    if super::h2ws::refused(&state, &head) {
        return Ok(super::h2ws::error(state, 501, None));
    }
    let method = match &settings.proxy_method {
        Some(m) => http::Method::from_bytes(m.as_bytes()).unwrap_or(state.parts.method.clone()),
        None => state.parts.method.clone(),
    };

    // The request body: streamed once, so only a request without one (or
    // whose body was not yet read) can move to another peer.
    let declared_len = framing.content_length;
    let has_body = settings.proxy_pass_request_body && framing.has_body();
    let too_large = Arc::new(AtomicBool::new(false));
    let mut body_slot: Option<ProxyBody> = if has_body {
        let limited = Limited::new(
            client_body,
            settings.client_max_body_size,
            too_large.clone(),
        );
        Some(
            Timed::new(limited, settings.client_body_timeout, || {
                BodyError::ClientReadTimeout
            })
            .boxed(),
        )
    } else {
        None
    };
    // The body's length for the upstream, once known.
    let mut length = None;
    if has_body && declared_len.is_none() && settings.proxy_http_version == HttpVersion::Http10 {
        // An HTTP/1.0 upstream needs a length: read the chunked body first.
        let Some(b) = body_slot.take() else {
            return Ok(crate::server::request::finish(
                state,
                pages::error(500, tokens, false),
            ));
        };
        match b.collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                length = Some(bytes.len() as u64);
                body_slot = Some(body::full(bytes));
            }
            Err(e) => {
                if matches!(e.downcast_ref(), Some(BodyError::ClientReadTimeout)) {
                    let ctx = log_ctx(&state, None);
                    return Err(body_timed_out(state, &e, &ctx));
                }
                let code = if too_large.load(Ordering::Relaxed) {
                    413
                } else {
                    400
                };
                return Ok(crate::server::request::finish(
                    state,
                    pages::error(code, tokens, true),
                ));
            }
        }
    } else if let Some(len) = declared_len.filter(|_| settings.proxy_pass_request_body) {
        // nginx passes `Content-Length: 0` on too.
        length = Some(len);
    }
    headers::set_length(&mut head, length);
    let mut head = Some(head);

    let Some(group) = gen.upstreams.get(&pp.upstream) else {
        return Ok(crate::server::request::finish(
            state,
            pages::error(500, tokens, false),
        ));
    };
    let client_ip = state.conn.info.remote.ip();
    let hash_key = match &group.conf().balance {
        crate::conf::model::Balance::Hash { key, .. } => {
            Some(key.render_to_vec(&state.vars(None, None)))
        }
        _ => None,
    };
    let mut tried = Tried::default();
    // nginx gives a request one try per peer, fewer if configured.
    let max_tries = match settings.proxy_next_upstream_tries {
        0 => group.tries(),
        n => (n as usize).min(group.tries()),
    };
    let deadline = (!settings.proxy_next_upstream_timeout.is_zero())
        .then(|| Instant::now() + settings.proxy_next_upstream_timeout);
    let mut up_info = UpstreamInfo::default();
    let mut attempts = 0usize;
    let mut last_status = 0u16;
    let idempotent = matches!(
        method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    ) || method == http::Method::PUT
        || method == http::Method::DELETE;

    loop {
        attempts += 1;
        let mut peer = match group.pick(
            &PickInput {
                client_ip,
                hash_key: hash_key.as_deref(),
            },
            &mut tried,
        ) {
            Ok(p) => p,
            // Every peer has had its try: nginx answers with the last failure.
            Err(PickError::NoLiveUpstreams) if last_status != 0 => {
                return Ok(finish_error(state, last_status, tokens, up_info));
            }
            Err(PickError::NoLiveUpstreams) => {
                let ctx = log_ctx(&state, Some(&pp.url));
                crate::error_log!(
                    LogLevel::Error,
                    conn = state.conn.info.id,
                    "no live upstreams while connecting to upstream{ctx}"
                );
                up_info.group = Some(pp.upstream.name.as_str().into());
                up_info.tries.push(UpstreamTry {
                    addr: None,
                    status: 502,
                    connect_ms: None,
                    header_ms: None,
                    response_ms: Some(0),
                });
                return Ok(finish_error(state, 502, tokens, up_info));
            }
        };
        let addr = peer.addr();
        let t0 = Instant::now();
        let req = Request::builder()
            .method(method.clone())
            .uri(target.as_str())
            .version(version)
            .body(body_slot.take().unwrap_or_else(body::empty))
            .unwrap_or_else(|_| Request::new(body::empty()));
        let remake = || remake_head(&state, plan, &framing, length);
        let first = head.take().unwrap_or_else(remake);
        let result = attempt(&peer, req, first, &remake, &settings, t0).await;
        let connect_time = result.as_ref().ok().map(|r| r.connect_time);
        match result {
            Ok(ok) => {
                let status = ok.response.status().as_u16();
                let cond = status_condition(status);
                let retry_status = cond != 0
                    && settings.proxy_next_upstream & cond != 0
                    && !has_body
                    && attempts < max_tries
                    && deadline.is_none_or(|d| Instant::now() < d)
                    && status != 101;
                if retry_status {
                    if cond != next_upstream::HTTP_403 && cond != next_upstream::HTTP_404 {
                        fail_peer(&mut peer, READING_HEADER);
                    }
                    up_info.tries.push(UpstreamTry {
                        addr: Some(addr),
                        status,
                        connect_ms: connect_time.map(millis),
                        header_ms: Some(millis(ok.header_time)),
                        response_ms: Some(millis(t0.elapsed())),
                    });
                    last_status = status;
                    continue;
                }
                peer.success();
                // Its response time is added when the body is done.
                up_info.tries.push(UpstreamTry {
                    addr: Some(addr),
                    status,
                    connect_ms: connect_time.map(millis),
                    header_ms: Some(millis(ok.header_time)),
                    response_ms: None,
                });
                let sent = Sent { t0, target };
                return Ok(relay(
                    state,
                    ok,
                    peer,
                    client_upgrade,
                    up_info,
                    sent,
                    matcher,
                ));
            }
            Err(e) => {
                let ctx = log_ctx(&state, Some(&upstream_url(&pp, addr, &target)));
                if let AttemptError::ClientBodyTimeout = e {
                    return Err(body_timed_out(state, &e, &ctx));
                }
                crate::error_log!(LogLevel::Error, conn = state.conn.info.id, "{e}{ctx}");
                if matches!(e, AttemptError::BodyTooLarge | AttemptError::ClientBody) {
                    let code = e.status();
                    return Ok(crate::server::request::finish(
                        state,
                        pages::error(code, tokens, true),
                    ));
                }
                let status = e.status();
                up_info.tries.push(UpstreamTry {
                    addr: Some(addr),
                    status,
                    connect_ms: None,
                    header_ms: None,
                    response_ms: Some(millis(t0.elapsed())),
                });
                let cond = e.condition();
                // nginx: error, timeout and invalid_header always count as
                // unsuccessful attempts (max_fails).
                let failed =
                    next_upstream::ERROR | next_upstream::TIMEOUT | next_upstream::INVALID_HEADER;
                if cond & failed != 0 {
                    fail_peer(&mut peer, e.action());
                }
                let may_retry = settings.proxy_next_upstream & cond != 0
                    && (!has_body)
                    && (idempotent
                        || settings.proxy_next_upstream & next_upstream::NON_IDEMPOTENT != 0
                        || matches!(e, AttemptError::Connect(_) | AttemptError::ConnectTimeout))
                    && attempts < max_tries
                    && deadline.is_none_or(|d| Instant::now() < d);
                if may_retry {
                    last_status = status;
                    continue;
                }
                return Ok(finish_error(state, status, tokens, up_info));
            }
        }
    }
}

/// A client that timed out sending the body: nginx logs it at info and ends
/// the request without an answer, logging 408.
fn body_timed_out(state: RequestState, e: &dyn std::fmt::Display, ctx: &str) -> Unanswered {
    crate::error_log!(LogLevel::Info, conn = state.conn.info.id, "{e}{ctx}");
    crate::server::request::unanswered(state, 408)
}

fn finish_error(
    state: RequestState,
    code: u16,
    tokens: bool,
    up: UpstreamInfo,
) -> Response<ProxyBody> {
    let mut resp = pages::error(code, tokens, false);
    add_server_header(&mut resp, tokens);
    let info = ResponseInfo {
        status: code,
        headers: if state.logs_read_headers().0 {
            resp.headers().clone()
        } else {
            HeaderMap::new()
        },
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    let hook = Box::new(LogWhenDone {
        state,
        resp: info,
        upstream: Some(up),
    });
    resp.map(|b| Finished::new(b, hook).boxed())
}

/// The upstream request's header fields, before `Content-Length` is decided.
fn upstream_head(
    state: &RequestState,
    plan: &headers::HeaderPlan,
    framing: &BodyFraming,
) -> HeaderMap {
    plan.head(
        &state.vars(None, None),
        &state.parts.headers,
        framing,
        state.settings.proxy_pass_request_body,
        state.settings.proxy_pass_request_headers,
    )
}

/// The head again, for a retry, with the same length. Rendered anew: of the
/// variables, only the clock's (`$msec`, `$time_local`, ...) can read later
/// than in the first try's head.
fn remake_head(
    state: &RequestState,
    plan: &headers::HeaderPlan,
    framing: &BodyFraming,
    length: Option<u64>,
) -> HeaderMap {
    let mut head = upstream_head(state, plan, framing);
    headers::set_length(&mut head, length);
    head
}

struct Attempt {
    response: Response<Incoming>,
    connect_time: Duration,
    header_time: Duration,
    /// The connection, when it may go back to the keepalive cache once the
    /// response body is done.
    conn: Option<PooledConn>,
    /// The connection's driver, when no task of its own polls it.
    driver: Option<Box<Driver>>,
}

/// One try at one peer: take a cached connection or connect, send the head
/// and body, read the response head. A reused connection that fails before
/// any response byte (the upstream's idle close racing the request) is
/// replaced by a fresh one, as nginx does, without counting a peer failure.
///
/// `req` comes without its header fields: they are `head`, which goes into
/// the first request sent; a request sent again gets them from `remake`, so
/// that the common case copies no header map.
async fn attempt(
    peer: &PeerGuard,
    req: Request<ProxyBody>,
    head: HeaderMap,
    remake: &(dyn Fn() -> HeaderMap + Sync),
    settings: &crate::conf::model::Settings,
    t0: Instant,
) -> Result<Attempt, AttemptError> {
    // nginx caches only connections of HTTP/1.1 requests not sent with
    // `Connection: close` (proxy_http_version 1.1, proxy_set_header Connection "").
    let close = wants_close(&head);
    let mut head = Some(head);
    let cache = peer
        .group()
        .keepalive()
        .filter(|_| req.version() == http::Version::HTTP_11 && !close);
    let mut cached = cache.and_then(|(pool, limits)| pool.take(peer.addr(), limits));
    let sent = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let mut req = Some(Request::from_parts(
        parts,
        SentFlag::new(body, sent.clone()).boxed(),
    ));
    let mut driver = None;
    loop {
        let Some(mut r) = req.take() else {
            return Err(AttemptError::Closed);
        };
        let (mut conn, connect_time) = match cached.take() {
            Some(c) => (c, Duration::ZERO),
            None => {
                // A request without a body goes out in one write, so
                // Nagle never holds it back: like nginx, no setsockopt
                // then, unless the connection may be cached for others.
                let nodelay = cache.is_some() || !r.body().is_end_stream();
                let (c, d) = connect(peer, settings, nodelay, cache.is_some()).await?;
                driver = d;
                (c, t0.elapsed())
            }
        };
        // A body-less request can be sent again even after it was written.
        let resend = conn.reused && r.body().is_end_stream();
        // A request hyper handed back unsent keeps the fields it was given.
        if let Some(h) = head.take() {
            *r.headers_mut() = h;
        }
        let spare = resend.then(|| (r.method().clone(), r.uri().clone(), r.version()));
        let mut send = std::pin::pin!(conn.sender.try_send_request(r));
        // nginx starts proxy_read_timeout once the request is sent; a body still
        // streaming is guarded by its own timeouts.
        let result = loop {
            let wait = super::driven::with(&mut driver, send.as_mut());
            match tokio::time::timeout(settings.proxy_read_timeout, wait).await {
                Err(_) if sent.load(Ordering::Acquire) => return Err(AttemptError::HeaderTimeout),
                Err(_) => continue,
                Ok(r) => break r,
            }
        };
        match result {
            // nginx reads the head into one proxy_buffer_size buffer.
            Ok(response) if head_size(&response) > settings.proxy_buffer_size => {
                return Err(AttemptError::TooBigHeader);
            }
            Ok(response) => {
                return Ok(Attempt {
                    response,
                    connect_time,
                    header_time: t0.elapsed(),
                    conn: cache.is_some().then_some(conn),
                    driver,
                });
            }
            Err(mut e) => {
                let err = classify(e.error());
                if conn.reused && matches!(err, AttemptError::Closed) {
                    req = e.take_message().or_else(|| {
                        spare.map(|(method, uri, version)| {
                            let mut b = Request::new(body::empty());
                            *b.method_mut() = method;
                            *b.uri_mut() = uri;
                            *b.version_mut() = version;
                            *b.headers_mut() = remake();
                            b
                        })
                    });
                    if req.is_some() {
                        continue;
                    }
                }
                return Err(err);
            }
        }
    }
}

/// A fresh connection to the peer, with `proxy_connect_timeout`. One that
/// may be cached runs in a task of its own; otherwise its driver is returned,
/// for the request to poll (`proxy::driven`).
async fn connect(
    peer: &PeerGuard,
    settings: &crate::conf::model::Settings,
    nodelay: bool,
    own_task: bool,
) -> Result<(PooledConn, Option<Box<Driver>>), AttemptError> {
    let stream = match tokio::time::timeout(
        settings.proxy_connect_timeout,
        TcpStream::connect(peer.addr()),
    )
    .await
    {
        Err(_) => return Err(AttemptError::ConnectTimeout),
        Ok(Err(e)) => return Err(AttemptError::Connect(io_reason(&e))),
        Ok(Ok(s)) => s,
    };
    if nodelay {
        let _ = stream.set_nodelay(true);
    }
    if settings.proxy_socket_keepalive {
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    }
    let stream = match &settings.proxy_ssl {
        None => UpstreamStream::Plain(stream),
        Some(tls) => super::upstream_tls::handshake(stream, tls, settings.proxy_connect_timeout)
            .await
            .map_err(|e| match e {
                super::upstream_tls::HandshakeError::Timeout => AttemptError::ConnectTimeout,
                super::upstream_tls::HandshakeError::Failed(r) => AttemptError::Tls(r),
            })?,
    };
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(false)
        .handshake(TokioIo::new(UpstreamIo(stream)))
        .await
        .map_err(|_| AttemptError::Closed)?;
    if !own_task {
        return Ok((PooledConn::fresh(sender), Some(Box::new(Driver::new(conn)))));
    }
    tokio::spawn(crate::runtime::busy::active(async move {
        // The connection ends when its sender is dropped (not cached) or
        // the tunnel takes it over.
        let _ = conn.with_upgrades().await;
    }));
    Ok((PooledConn::fresh(sender), None))
}

/// An upstream connection as hyper's client drives it. hyper calls
/// `shutdown()` before it drops a connection it is done with (its last
/// exchange complete, or idle); a plain socket is instead set to close with
/// RST (`reset_on_close`), which spares both the FIN and the TIME_WAIT. A TLS
/// stream still sends its close_notify.
pub struct UpstreamIo(pub UpstreamStream);

impl tokio::io::AsyncRead for UpstreamIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &mut this.0 {
            UpstreamStream::Plain(_) => {
                // hyper shuts down only a connection it is done with.
                reset_on_close(this);
                std::task::Poll::Ready(Ok(()))
            }
            tls => std::pin::Pin::new(tls).poll_shutdown(cx),
        }
    }
}

/// Makes the `close()` of a plain upstream socket send RST instead of FIN
/// (`SO_LINGER` with a zero timeout), for a connection with no exchange in
/// flight: nothing unread or unsent is left that the reset could lose, and
/// the proxy, which closes first, keeps no TIME_WAIT (a minute's worth of
/// them, one per request without upstream keepalive, slows every
/// `connect()`'s search for an ephemeral port). HAProxy closes server
/// connections the same way. A TLS stream is left to close as before.
pub fn reset_on_close(io: &UpstreamIo) {
    if let UpstreamStream::Plain(s) = &io.0 {
        crate::server::tls::reset_on_close(s);
    }
}

/// The size of a response head as the upstream sent it, near enough (the
/// canonical spacing): status line, header lines and the empty line.
fn head_size(r: &Response<Incoming>) -> u64 {
    let reason = match r.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(p) => p.as_bytes().len(),
        None => r.status().canonical_reason().map_or(0, str::len),
    };
    let lines: usize = r
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + ": \r\n".len())
        .sum();
    ("HTTP/1.1 200 ".len() + reason + "\r\n".len() + lines + "\r\n".len()) as u64
}

/// `Connection: close` among the header's tokens.
fn wants_close(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

fn classify(e: &hyper::Error) -> AttemptError {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge => AttemptError::BodyTooLarge,
                BodyError::ClientReadTimeout => AttemptError::ClientBodyTimeout,
                BodyError::UpstreamReadTimeout => AttemptError::ClientBody,
            };
        }
        src = s.source();
    }
    if e.is_parse() || e.is_parse_status() {
        AttemptError::InvalidHeader
    } else {
        AttemptError::Closed
    }
}

/// Relays the upstream's answer to the client; a `101` becomes a tunnel.
/// Not async: it only starts what runs on (the tunnel's task, the body), so
/// the request's future does not carry its locals.
fn relay(
    state: RequestState,
    ok: Attempt,
    mut peer: PeerGuard,
    client_upgrade: Option<OnUpgrade>,
    mut up_info: UpstreamInfo,
    Sent { t0, target }: Sent,
    matcher: &LocationMatch,
) -> Response<ProxyBody> {
    // h2: WebSocket over HTTP/2 answers the stream itself (proxy::h2ws).
    if super::h2ws::takes(&state, ok.response.status()) {
        let answer = super::driven::Answer {
            response: ok.response,
            driver: ok.driver,
        };
        return super::h2ws::relay(state, answer, peer, client_upgrade, up_info, t0, matcher);
    }
    let settings = state.settings.clone();
    let tokens = settings.server_tokens;
    let mut response = ok.response;
    let status = response.status();
    // Copies of the heads are kept only for access logs that read them.
    let (log_resp_headers, log_up_headers) = state.logs_read_headers();
    if log_up_headers {
        up_info.headers = Some(response.headers().clone());
    }
    let keep = ok.conn.filter(|_| {
        status != StatusCode::SWITCHING_PROTOCOLS
            && response.version() == http::Version::HTTP_11
            && !wants_close(response.headers())
    });

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_up) = client_upgrade else {
            let ctx = log_ctx(&state, None);
            crate::error_log!(LogLevel::Error, conn = state.conn.info.id, "upstream sent \"101 Switching Protocols\" to a request without Upgrade while reading response header from upstream{ctx}");
            fail_peer(&mut peer, READING_HEADER);
            return finish_error(state, 502, tokens, up_info);
        };
        let upstream_up = UpstreamUpgrade::of(ok.driver, &mut response);
        let (mut parts, _) = response.into_parts();
        headers::filter_response(&mut parts.headers, &settings, true);
        // nginx never relays the upstream's Connection on a 101: its header
        // filter writes its own `Connection: upgrade`.
        parts.headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        let mut resp = Response::from_parts(parts, body::empty());
        add_server_header(&mut resp, tokens);
        // ops: WebSocket tunnels are closed with close frames on drain, and
        // on a reload that removed their location (websocket_drain_on_reload).
        let websocket = super::drain::is_websocket(resp.headers());
        let spec = super::upgraded::TunnelSpec {
            timeouts: TunnelTimeouts::proxied(&settings),
            cancel: super::drain::tunnel_token(&state.gen, state.server_idx, matcher, websocket),
            websocket,
            drain_window: state.gen.config.main.websocket_drain_window,
        };
        let tracker = state.gen.tunnels.clone();
        // The tunnel may live for days: keep no view into hyper's buffers.
        let mut state = state;
        let needs = state.header_needs();
        state.compact(&needs);
        let log = Box::new(TunnelDone::new(
            state,
            needs.response.keep(resp.headers()),
            &up_info,
            up_info.headers.as_ref().map(|h| needs.upstream.keep(h)),
            peer,
            t0,
        ));
        tracker.spawn(crate::runtime::busy::active(super::upgraded::tunnel_task(
            client_up,
            upstream_up,
            spec,
            log,
        )));
        return resp;
    }

    let (mut parts, incoming) = response.into_parts();
    let buffering = super::buffer::buffering(&settings, &parts.headers);
    headers::filter_response(&mut parts.headers, &settings, false);
    super::redirect::rewrite(&mut parts.headers, &state, matcher);
    let incoming = DrivenBody::new(incoming, ok.driver);
    let mut body = Timed::new(incoming, settings.proxy_read_timeout, || {
        BodyError::UpstreamReadTimeout
    })
    .boxed();
    if buffering {
        body = super::buffer::read_ahead(body, super::buffer::budget(&settings));
    }
    let mut resp = Response::from_parts(parts, body);
    add_server_header(&mut resp, tokens);
    let resp = super::gzip::apply(&settings, &state.parts, resp, !buffering);
    let info = ResponseInfo {
        status: status.as_u16(),
        headers: if log_resp_headers {
            resp.headers().clone()
        } else {
            HeaderMap::new()
        },
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    let hook = Box::new(ResponseDone {
        log: LogWhenDone {
            state,
            resp: info,
            upstream: Some(up_info),
        },
        t0,
        keep,
        target,
        _peer: peer,
    });
    resp.map(|b| Finished::new(b, hook).boxed())
}

/// When the request went out and what it asked the upstream for.
struct Sent {
    t0: Instant,
    target: String,
}

/// Keeps the peer counted as busy until the response body is done.
struct ResponseDone {
    log: LogWhenDone,
    t0: Instant,
    keep: Option<PooledConn>,
    /// The upstream request's target, for an error line about the body.
    target: String,
    _peer: PeerGuard,
}

impl super::body::OnDone for ResponseDone {
    fn done(self: Box<Self>, body_bytes: u64, complete: bool) {
        if let (true, Some(conn)) = (complete, self.keep) {
            crate::upstream::pool::release(&self._peer, conn);
        }
        let mut log = self.log;
        if let Some(up) = log.upstream.as_mut() {
            up.set_last_response(self.t0.elapsed());
        }
        log.log(body_bytes);
    }

    /// nginx logs an upstream body that fails at `error`.
    fn failed(&self, e: &(dyn std::error::Error + 'static)) {
        let state = &self.log.state;
        let url = state
            .proxy
            .as_ref()
            .map(|pp| upstream_url(pp, self._peer.addr(), &self.target));
        let ctx = log_ctx(state, url.as_deref());
        let what = body_failure(e);
        crate::error_log!(LogLevel::Error, conn = state.conn.info.id, "{what}{ctx}");
    }
}

/// nginx's words for a response body that failed on its way from the
/// upstream.
fn body_failure(e: &(dyn std::error::Error + 'static)) -> String {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return b.to_string();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof => CLOSED_EARLY.into(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    "upstream sent invalid chunked response while reading upstream".into()
                }
                _ => format!("recv() failed ({}) while reading upstream", io_reason(io)),
            };
        }
        src = s.source();
    }
    CLOSED_EARLY.into()
}

const CLOSED_EARLY: &str = "upstream prematurely closed connection while reading upstream";

/// The upstream as nginx's error lines name it: scheme, peer, target.
fn upstream_url(
    pp: &crate::conf::model::ProxyPass,
    addr: std::net::SocketAddr,
    target: &str,
) -> String {
    let scheme = match pp.scheme {
        crate::conf::model::Scheme::Https => "https",
        crate::conf::model::Scheme::Http => "http",
    };
    format!("{scheme}://{addr}{target}")
}

/// Reports a failed try; nginx warns when it takes the server out, naming
/// what it was doing (`action`).
fn fail_peer(peer: &mut PeerGuard, action: &str) {
    if peer.fail() {
        crate::error_log!(
            LogLevel::Warn,
            "upstream server temporarily disabled while {action}, upstream: \"{}\"",
            peer.addr()
        );
    }
}

/// nginx's words for the phase after the request was sent.
const READING_HEADER: &str = "reading response header from upstream";

/// nginx's `, client: ..., server: ..., request: "...", upstream: "...", host: "..."`.
fn log_ctx(state: &RequestState, upstream: Option<&str>) -> String {
    crate::log::error::request_context(&state.vars(None, None), upstream)
}

/// What a tunnel's access log line needs, kept until the tunnel ends, in
/// little room (it is paid per open tunnel): most logs read no header of the
/// 101 nor of the upstream's answer, and the tries are kept in a boxed slice.
struct TunnelDone {
    state: RequestState,
    /// The headers of the 101 the logs read, if any.
    sent: Option<Box<HeaderMap>>,
    /// The headers of the upstream's 101 the logs read, if any.
    upstream_headers: Option<Box<HeaderMap>>,
    /// The tries, for the `$upstream_*` variables; the last one's response
    /// time is the tunnel's end.
    tries: Box<[UpstreamTry]>,
    /// Keeps the peer counted as busy while the tunnel lasts.
    peer: PeerGuard,
    t0: Instant,
}

impl TunnelDone {
    fn new(
        state: RequestState,
        sent: HeaderMap,
        up: &UpstreamInfo,
        upstream_headers: Option<HeaderMap>,
        peer: PeerGuard,
        t0: Instant,
    ) -> TunnelDone {
        let boxed = |h: HeaderMap| (!h.is_empty()).then(|| Box::new(h));
        TunnelDone {
            state,
            sent: boxed(sent),
            upstream_headers: upstream_headers.and_then(boxed),
            tries: up.tries.as_slice().into(),
            peer,
            t0,
        }
    }

    /// The response and upstream facts as the variables read them.
    fn infos(&self) -> (ResponseInfo, UpstreamInfo) {
        let mut up = UpstreamInfo {
            tries: self.tries.to_vec(),
            group: None,
            headers: Some(
                self.upstream_headers
                    .as_deref()
                    .cloned()
                    .unwrap_or_default(),
            ),
            bytes_received: 0,
            bytes_sent: 0,
        };
        up.set_last_response(self.t0.elapsed());
        let resp = ResponseInfo {
            status: 101,
            headers: self.sent.as_deref().cloned().unwrap_or_default(),
            body_bytes_sent: 0,
            bytes_sent: 0,
        };
        (resp, up)
    }
}

impl super::upgraded::TunnelLog for TunnelDone {
    fn nodelay(&self) -> bool {
        self.state.settings.tcp_nodelay
    }
    fn client_nodelay_set(&self) -> bool {
        self.state.conn.nodelay
    }

    fn conn_id(&self) -> u64 {
        self.state.conn.info.id
    }

    fn ended(self: Box<Self>, stats: Option<&tunnel::TunnelStats>) {
        let (mut info, mut up_info) = self.infos();
        let TunnelDone { state, peer, .. } = *self;
        if let Some(tunnel::TunnelEnd::Timeout(kind)) = stats.map(|s| &s.end) {
            // nginx logs tunnel timeouts at info, as here.
            let ctx = log_ctx(&state, None);
            crate::error_log!(
                LogLevel::Info,
                conn = state.conn.info.id,
                "{} (110: Connection timed out) while proxying upgraded connection{ctx}",
                kind.nginx_message()
            );
        }
        drop(peer);
        if let Some(stats) = stats {
            up_info.bytes_received = stats.upstream_to_client;
            up_info.bytes_sent = stats.client_to_upstream;
            info.body_bytes_sent = stats.upstream_to_client;
            info.bytes_sent = stats.upstream_to_client;
        }
        state.log(&info, Some(&up_info));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_as_nginx_prints_them() {
        assert_eq!(millis(Duration::from_micros(1_000_499)), 1000);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_micros(59_999_600)), 60_000);
    }

    /// A tunnel's log state is one box per open tunnel for as long as it
    /// lasts: past 512 bytes it takes jemalloc's 640-byte size class, about
    /// 0.13 KiB more per idle tunnel (496 bytes when this test was written).
    #[test]
    fn a_tunnel_s_log_fits_in_512_bytes() {
        let size = std::mem::size_of::<TunnelDone>();
        assert!(size <= 512, "TunnelDone is {size} bytes");
    }
}
