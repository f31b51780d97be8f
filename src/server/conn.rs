//! Accepting client connections and serving HTTP/1.x on them with hyper.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Generation;
use crate::vars::eval::ConnInfo;

/// Per-connection facts shared by its requests.
pub struct ConnState {
    pub info: ConnInfo,
    /// send_timeout and keepalive_timeout of the latest request's location.
    pub timers: Arc<super::guard::ConnTimers>,
    pub local: SocketAddr,
    /// Where `local` is among the generation's listen addresses
    /// (`VhostTable::addr_index`), found once at accept.
    pub addr: Option<usize>,
    /// TCP_NODELAY was set on the socket at accept (the server's
    /// `tcp_nodelay`), so a tunnel need not set it again.
    pub nodelay: bool,
    requests: AtomicU64,
    /// ops: this connection in stub_status's counters.
    pub gauge: Arc<crate::runtime::metrics::ConnGauge>,
    /// The connection's place under worker_connections. Requests (and the
    /// tunnel an upgrade becomes) hold the state, so an upgraded connection
    /// counts until its tunnel ends, as in nginx.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The I/O type hyper serves, which an upgrade hands back.
pub type ClientIo = TokioIo<crate::runtime::metrics::Tracked<super::guard::Guarded>>;

/// The stream of an upgraded client connection (plain or TLS), and bytes
/// read past the head.
pub fn upgraded_client(
    up: hyper::upgrade::Upgraded,
) -> Option<(super::tls::ClientStream, bytes::Bytes)> {
    let parts = up.downcast::<ClientIo>().ok()?;
    Some((
        parts.io.into_inner().into_inner().into_inner(),
        parts.read_buf,
    ))
}

impl ConnState {
    /// Counts a request; returns its number on this connection, from 1.
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts on `listener` until `stop` is cancelled. `permits` caps open
/// client connections: accept waits for a permit instead of spinning.
pub async fn accept_loop(
    listener: TcpListener,
    current: Arc<ArcSwap<Generation>>,
    permits: Arc<Semaphore>,
    stop: tokio_util::sync::CancellationToken,
) {
    // A listener bound to one address accepts only on it: no getsockname()
    // per connection then (nginx does the same), only for wildcards.
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: report and back off briefly rather than spin.
                    crate::error_log!(crate::conf::model::LogLevel::Error, "accept() failed ({e})");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let gen = current.load_full();
        let local = match fixed_local {
            Some(a) => a,
            None => stream.local_addr().unwrap_or(remote),
        };
        let addr = gen.vhosts.addr_index(local);
        let settings = gen.default_settings(addr);
        let limits = head_limits(&settings);
        let tls = gen.tls.acceptor(addr);
        let state = Arc::new(ConnState {
            timers: Arc::new(super::guard::ConnTimers::new(&limits)),
            info: ConnInfo {
                remote,
                local,
                id: CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
                scheme: if tls.is_some() { "https" } else { "http" },
                tls: None,
            },
            local,
            addr,
            nodelay: settings.tcp_nodelay,
            requests: AtomicU64::new(0),
            gauge: crate::runtime::metrics::ConnGauge::accepted(),
            _permit: permit,
        });
        let conn_stop = stop.clone();
        // Boxed: a connection's future holds hyper's dispatcher and a request's
        // future (several KiB), and a spawn moves it several times by value.
        tokio::spawn(crate::runtime::busy::active(Box::pin(serve(
            stream, gen, state, settings, limits, conn_stop, tls,
        ))));
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    gen: Arc<Generation>,
    state: Arc<ConnState>,
    settings: Arc<crate::conf::model::Settings>,
    limits: super::guard::HeadLimits,
    stop: tokio_util::sync::CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // A new socket has Nagle on: only `on` costs a setsockopt.
    if settings.tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    let mut state = state;
    // tls: the handshake runs in the connection's own task, bounded by
    // client_header_timeout, so it never holds up other connections. Its
    // future and HTTP/2's are boxed: every connection's task would pay for
    // their size otherwise, and tokio copies a task's future when spawning.
    let stream: super::tls::ClientStream = match tls {
        None => stream.into(),
        Some(acceptor) => {
            match Box::pin(super::tls::accept(
                acceptor,
                stream,
                &mut state,
                limits.header_timeout,
                limits.server_tokens,
            ))
            .await
            {
                Some(s) => s,
                None => return,
            }
        }
    };
    // h2: HTTP/2 by ALPN or prior knowledge; the head guard is HTTP/1's.
    match super::h2::detect(&gen, &stream, state.addr, limits.header_timeout).await {
        super::h2::Speak::Http2 => {
            return Box::pin(super::h2::serve(stream, gen, state, settings, stop)).await
        }
        super::h2::Speak::Close => return,
        super::h2::Speak::Http1 => {}
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream.tcp());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        // The guard times the wait for a head as nginx does.
        .header_read_timeout(None)
        .max_buf_size(limits.max_head() + (64 << 10))
        .title_case_headers(false);
    let svc_gen = gen.clone();
    let svc_state = state.clone();
    let keepalive_requests = settings.keepalive_requests;
    let svc = service_fn(move |req| {
        let gen = svc_gen.clone();
        let state = svc_state.clone();
        async move {
            let mut resp = super::request::handle(gen, state.clone(), req).await?;
            if state.requests.load(Ordering::Relaxed) >= keepalive_requests {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, super::request::Unanswered>(resp)
        }
    });
    let conn = builder
        .serve_connection(
            TokioIo::new(crate::runtime::metrics::Tracked::new(
                super::guard::Guarded::new(stream, limits, state.timers.clone()),
                state.gauge.clone(),
            )),
            svc,
        )
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log_conn_error(&e, state.info.id);
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    // A request that ended unanswered under reset_timedout_connection (its
    // client timed out sending the body): hyper closes the socket after the
    // service's error without any further call the guard would see, so the
    // reset is set here, while `conn` still owns the socket.
    if state.timers.reset_requested() {
        // SAFETY: `conn` owns the socket until this function returns, and a
        // connection ended by an unanswered request was not upgraded (the
        // error ends it before any upgrade), so `fd` is still its open socket.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        super::tls::reset_on_close(&fd);
    }
}

/// Client-side I/O failures nginx reports at `info`: timeouts while sending.
fn log_conn_error(e: &hyper::Error, id: u64) {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                crate::error_log!(crate::conf::model::LogLevel::Info, conn = id, "{io}");
            }
            return;
        }
        src = s.source();
    }
}

fn head_limits(s: &crate::conf::model::Settings) -> super::guard::HeadLimits {
    super::guard::HeadLimits {
        small_buffer: s.client_header_buffer_size as usize,
        large_count: s.large_client_header_buffers.count as usize,
        large_size: s.large_client_header_buffers.size as usize,
        header_timeout: s.client_header_timeout,
        keepalive_timeout: s.keepalive_timeout,
        send_timeout: s.send_timeout,
        server_tokens: s.server_tokens,
        reset_timedout: s.reset_timedout_connection,
    }
}
