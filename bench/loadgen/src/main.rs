//! sluice's benchmark load generator and backends (driven by `bench/run`).
//!
//! One single-threaded tokio runtime per process: the runner pins each process to a core, and one
//! thread per core avoids cross-thread wake-ups. Every load loop is bounded by a deadline.
//! Results are one JSON object per line on stdout.

mod backend;
mod tls;
mod wire;

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Load generator and backends for sluice's benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The backend: HTTP (100 B, or 1 MiB under /1m) and WebSocket echo on one port.
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// HTTP/1.1 keep-alive GETs, one outstanding request per connection.
    Http {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// WebSocket ping-pong: each connection sends a message and waits for its echo.
    WsEcho {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// WebSocket bulk: each connection streams binary messages with a window in flight.
    WsBulk {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long, default_value_t = 65536)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// WebSocket handshakes: connect, upgrade, one message and its echo, close.
    WsHandshake {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// Opens COUNT tunnels, one message each, reports, waits for a line on stdin, closes them.
    WsIdle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// wss:// (TLS 1.3 to the proxy).
        #[arg(long)]
        tls: bool,
    },
    /// TLS 1.3 handshakes: connect, handshake, one HTTP/1.1 GET with `Connection: close`, read to
    /// the end. Without --resume every handshake is full; with it the client keeps session
    /// tickets and counts how many handshakes resumed.
    TlsHandshake {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 8.0)]
        secs: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve { listen } => backend::serve(&listen).await.map(|_| Value::Null),
            Cmd::Http {
                addr,
                path,
                conns,
                secs,
                warmup,
            } => Ok(http(addr, path, conns, Window::new(warmup, secs)).await),
            Cmd::WsEcho {
                addr,
                conns,
                size,
                secs,
                warmup,
            } => Ok(ws_echo(addr, conns, size, Window::new(warmup, secs)).await),
            Cmd::WsBulk {
                addr,
                conns,
                size,
                window,
                secs,
                warmup,
            } => Ok(ws_bulk(addr, conns, size, window, Window::new(warmup, secs)).await),
            Cmd::WsHandshake {
                addr,
                conns,
                secs,
                warmup,
            } => Ok(ws_handshake(addr, conns, Window::new(warmup, secs)).await),
            Cmd::WsIdle {
                addr,
                count,
                size,
                concurrency,
                tls,
            } => ws_idle(addr, count, size, concurrency, tls).await,
            Cmd::TlsHandshake {
                addr,
                path,
                conns,
                resume,
                secs,
                warmup,
            } => tls_handshake(addr, path, conns, resume, Window::new(warmup, secs)).await,
        }
    });
    match result {
        Ok(Value::Null) => {}
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    warm_end: Instant,
    end: Instant,
    secs: f64,
}

impl Window {
    fn new(warmup: f64, secs: f64) -> Window {
        let now = Instant::now();
        let warm_end = now + Duration::from_secs_f64(warmup.max(0.0));
        Window {
            warm_end,
            end: warm_end + Duration::from_secs_f64(secs.max(0.01)),
            secs: secs.max(0.01),
        }
    }
    fn measured(&self, t: Instant) -> bool {
        t >= self.warm_end && t < self.end
    }
}

/// What one connection's task counted. `ops`/`bytes` are inside the measured window;
/// `*_all` include warm-up (the runner divides proxy CPU by those).
struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    bytes: u64,
    ops_all: u64,
    bytes_all: u64,
    errors: u64,
    first_error: Option<String>,
    /// Bulk only: bytes sent inside the measured window.
    up: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: new_hist(),
            ops: 0,
            bytes: 0,
            ops_all: 0,
            bytes_all: 0,
            errors: 0,
            first_error: None,
            up: 0,
        }
    }
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
    fn op(&mut self, w: &Window, t0: Instant, bytes: u64) {
        self.ops_all += 1;
        self.bytes_all += bytes;
        if w.measured(t0) {
            self.ops += 1;
            self.bytes += bytes;
            let us = t0.elapsed().as_micros().max(1) as u64;
            let _ = self.hist.record(us.min(HIST_MAX));
        }
    }
    fn merge(&mut self, o: Tally) {
        let _ = self.hist.add(&o.hist);
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.ops_all += o.ops_all;
        self.bytes_all += o.bytes_all;
        self.errors += o.errors;
        self.up += o.up;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
    fn json(&self, w: &Window, extra: Value) -> Value {
        let q = |p: f64| {
            if self.hist.is_empty() {
                0
            } else {
                self.hist.value_at_quantile(p)
            }
        };
        let mut v = json!({
            "ops": self.ops,
            "secs": w.secs,
            "rate": self.ops as f64 / w.secs,
            "bytes": self.bytes,
            "mib_s": self.bytes as f64 / w.secs / (1024.0 * 1024.0),
            "p50_us": q(0.5),
            "p99_us": q(0.99),
            "max_us": self.hist.max(),
            "ops_all": self.ops_all,
            "bytes_all": self.bytes_all,
            "errors": self.errors,
            "first_error": self.first_error,
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }
}

const HIST_MAX: u64 = 60_000_000;
/// Give up on a connection after this many errors, so a broken target cannot spin.
const MAX_ERRORS_PER_CONN: u64 = 200;

fn new_hist() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, HIST_MAX, 3).expect("valid histogram bounds")
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::new();
    for t in tasks {
        match t.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.error(format!("task: {e}")),
        }
    }
    total
}

async fn http(addr: SocketAddr, path: String, conns: usize, w: Window) -> Value {
    let req = Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes());
    let tasks = (0..conns)
        .map(|_| {
            let req = req.clone();
            tokio::spawn(async move {
                let mut t = Tally::new();
                let mut conn: Option<TcpStream> = None;
                let mut inbuf = Vec::with_capacity(64 * 1024);
                while Instant::now() < w.end && t.errors < MAX_ERRORS_PER_CONN {
                    let s = match conn.take() {
                        Some(s) => s,
                        None => match connect(addr).await {
                            Ok(s) => {
                                inbuf.clear();
                                s
                            }
                            Err(e) => {
                                t.error(format!("connect: {e}"));
                                continue;
                            }
                        },
                    };
                    let t0 = Instant::now();
                    let r = async {
                        wire::write_all(&s, &req).await?;
                        wire::read_response(&s, &mut inbuf).await
                    }
                    .await;
                    match r {
                        Ok((200, body, close)) => {
                            t.op(&w, t0, body);
                            if !close {
                                conn = Some(s);
                            }
                        }
                        Ok((status, _, _)) => t.error(format!("status {status}")),
                        Err(e) => t.error(format!("exchange: {e}")),
                    }
                }
                t
            })
        })
        .collect();
    join_all(tasks)
        .await
        .json(&w, json!({"conns": conns, "path": path}))
}

/// A client WebSocket on a plain socket (or, for wss://, a TLS stream): masked frames out,
/// frames in.
struct Ws<S = TcpStream> {
    s: S,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    seed: u32,
}

impl Ws {
    async fn open(addr: SocketAddr, seed: u32) -> io::Result<Ws> {
        Ws::upgrade(connect(addr).await?, addr, seed).await
    }
}

impl Ws<tls::Tls> {
    async fn open_tls(
        c: &tokio_rustls::TlsConnector,
        addr: SocketAddr,
        seed: u32,
    ) -> io::Result<Ws<tls::Tls>> {
        Ws::upgrade(tls::connect(c, addr).await?, addr, seed).await
    }
}

impl<S: wire::Source + wire::Sink> Ws<S> {
    async fn upgrade(mut s: S, addr: SocketAddr, seed: u32) -> io::Result<Ws<S>> {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.put(head.as_bytes()).await?;
        let mut inbuf = Vec::new();
        let (status, _, _) = wire::read_response(&mut s, &mut inbuf).await?;
        if status != 101 {
            return Err(io::Error::other(format!("upgrade answered {status}")));
        }
        Ok(Ws {
            s,
            inbuf,
            out: Vec::new(),
            seed: seed | 1,
        })
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        let mask = next_mask(&mut self.seed);
        wire::encode_frame(&mut self.out, true, opcode, payload, Some(mask));
        self.s.put(&self.out).await
    }

    async fn recv(&mut self) -> io::Result<(u8, usize)> {
        recv_frame(&mut self.s, &mut self.inbuf).await
    }

    /// Drops the buffers so that an idle client holds only its socket.
    fn shed(&mut self) {
        self.inbuf = Vec::new();
        self.out = Vec::new();
    }

    /// Close handshake, then wait for the server to close TCP.
    async fn close(mut self) -> io::Result<()> {
        self.send(wire::OP_CLOSE, &1000u16.to_be_bytes()).await?;
        // Bounded: a close frame or EOF ends it; the caller adds a timeout.
        loop {
            match self.recv().await {
                Ok((wire::OP_CLOSE, _)) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.inbuf.clear();
        loop {
            match self.s.fill(&mut self.inbuf).await {
                Ok(0) => return Ok(()),
                Ok(_) => self.inbuf.clear(),
                // A TLS peer may close without close_notify after the close frame.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn next_mask(seed: &mut u32) -> [u8; 4] {
    // xorshift32: masks need only vary, not be secret, for a benchmark.
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    x.to_ne_bytes()
}

/// Reads one whole frame; returns its opcode and payload length (the payload is dropped).
async fn recv_frame<S: wire::Source>(mut s: S, inbuf: &mut Vec<u8>) -> io::Result<(u8, usize)> {
    loop {
        if let Some(h) = wire::parse_head(inbuf)? {
            let total = h.head_len + h.len;
            if inbuf.len() >= total {
                inbuf.drain(..total);
                return Ok((h.opcode, h.len));
            }
        }
        if s.fill(inbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn ws_echo(addr: SocketAddr, conns: usize, size: usize, w: Window) -> Value {
    let payload = Arc::new(vec![b'x'; size]);
    let tasks = (0..conns)
        .map(|i| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut t = Tally::new();
                let mut ws: Option<Ws> = None;
                while Instant::now() < w.end && t.errors < MAX_ERRORS_PER_CONN {
                    let mut c = match ws.take() {
                        Some(c) => c,
                        None => match Ws::open(addr, i as u32 + 1).await {
                            Ok(c) => c,
                            Err(e) => {
                                t.error(format!("open: {e}"));
                                continue;
                            }
                        },
                    };
                    let t0 = Instant::now();
                    let r = async {
                        c.send(wire::OP_BINARY, &payload).await?;
                        c.recv().await
                    }
                    .await;
                    match r {
                        Ok((wire::OP_BINARY, n)) if n == payload.len() => {
                            t.op(&w, t0, (2 * n) as u64);
                            ws = Some(c);
                        }
                        Ok((op, n)) => t.error(format!("echo: opcode {op}, {n} bytes")),
                        Err(e) => t.error(format!("echo: {e}")),
                    }
                }
                if let Some(c) = ws {
                    let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
                }
                t
            })
        })
        .collect();
    join_all(tasks)
        .await
        .json(&w, json!({"conns": conns, "size": size}))
}

async fn ws_handshake(addr: SocketAddr, conns: usize, w: Window) -> Value {
    let tasks = (0..conns)
        .map(|i| {
            tokio::spawn(async move {
                let mut t = Tally::new();
                while Instant::now() < w.end && t.errors < MAX_ERRORS_PER_CONN {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(10), async {
                        let mut c = Ws::open(addr, i as u32 + 1).await?;
                        c.send(wire::OP_TEXT, b"hello").await?;
                        let (op, n) = c.recv().await?;
                        if op != wire::OP_TEXT || n != 5 {
                            return Err(io::Error::other(format!("echo: opcode {op}, {n} bytes")));
                        }
                        c.close().await
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => t.op(&w, t0, 0),
                        Ok(Err(e)) => t.error(e),
                        Err(_) => t.error("handshake cycle timed out"),
                    }
                }
                t
            })
        })
        .collect();
    join_all(tasks).await.json(&w, json!({"conns": conns}))
}

/// Differently masked copies of the bulk message that each connection sends in turn.
const BULK_KEYS: usize = 16;

async fn ws_bulk(addr: SocketAddr, conns: usize, size: usize, window: usize, w: Window) -> Value {
    let payload = Arc::new(vec![b'b'; size]);
    let tasks = (0..conns)
        .map(|i| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut t = Tally::new();
                let c = match Ws::open(addr, i as u32 + 1).await {
                    Ok(c) => c,
                    Err(e) => {
                        t.error(format!("open: {e}"));
                        return t;
                    }
                };
                let s = Arc::new(c.s);
                let credit = Arc::new(Semaphore::new(window.max(1)));
                let up = Arc::new(AtomicU64::new(0));
                let up_all = Arc::new(AtomicU64::new(0));
                let writer = {
                    let (s, credit, up, up_all) =
                        (s.clone(), credit.clone(), up.clone(), up_all.clone());
                    let mut seed = c.seed;
                    // Frames masked once, sent in turn: each message still has its own key
                    // among its neighbours, and the generator copies and masks nothing per message.
                    let frames: Vec<Vec<u8>> = (0..BULK_KEYS)
                        .map(|_| {
                            let mut f = Vec::with_capacity(size + 16);
                            let mask = Some(next_mask(&mut seed));
                            wire::encode_frame(&mut f, true, wire::OP_BINARY, &payload, mask);
                            f
                        })
                        .collect();
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        for frame in frames.iter().cycle() {
                            if Instant::now() >= w.end {
                                break;
                            }
                            match credit.acquire().await {
                                Ok(p) => p.forget(),
                                Err(_) => break,
                            }
                            let t0 = Instant::now();
                            wire::write_all(&s, frame).await?;
                            up_all.fetch_add(size as u64, Ordering::Relaxed);
                            if w.measured(t0) {
                                up.fetch_add(size as u64, Ordering::Relaxed);
                            }
                        }
                        // The pong comes back after every echo: the reader's end marker.
                        out.clear();
                        wire::encode_frame(
                            &mut out,
                            true,
                            wire::OP_PING,
                            b"end",
                            Some(next_mask(&mut seed)),
                        );
                        wire::write_all(&s, &out).await
                    })
                };
                // Echoes are counted from their heads; their payloads are discarded unread.
                let mut counter = wire::FrameCounter::default();
                let mut frames: Vec<(u8, usize)> = Vec::with_capacity(16);
                let hard_end = tokio::time::Instant::from_std(w.end + Duration::from_secs(10));
                let mut read = counter.feed(&c.inbuf, |op, n| frames.push((op, n)));
                'read: loop {
                    if let Err(e) = read {
                        t.error(format!("bulk read: {e}"));
                        break;
                    }
                    for (op, n) in frames.drain(..) {
                        match op {
                            wire::OP_PONG => break 'read,
                            wire::OP_BINARY => {
                                credit.add_permits(1);
                                let now = Instant::now();
                                t.bytes_all += n as u64;
                                if w.measured(now) {
                                    t.bytes += n as u64;
                                    t.ops += 1;
                                }
                            }
                            op => {
                                t.error(format!("bulk: opcode {op}"));
                                break 'read;
                            }
                        }
                    }
                    let next = wire::count_frames(&s, &mut counter, |op, n| frames.push((op, n)));
                    read = match tokio::time::timeout_at(hard_end, next).await {
                        Ok(Ok(0)) => Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(r) => r.map(drop),
                        Err(_) => {
                            t.error("bulk: echoes did not come back within 10 s");
                            break;
                        }
                    };
                }
                credit.close();
                match writer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => t.error(format!("bulk write: {e}")),
                    Err(e) => t.error(format!("writer task: {e}")),
                }
                // bytes_all counts both directions, as the proxy relays both.
                let up_all = up_all.load(Ordering::Relaxed);
                t.bytes_all += up_all;
                t.up = up.load(Ordering::Relaxed);
                if let Ok(s) = Arc::try_unwrap(s) {
                    // Nothing follows the pong until the close handshake.
                    let c = Ws {
                        s,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        seed: 1,
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
                }
                t
            })
        })
        .collect();
    let total = join_all(tasks).await;
    let mib = 1024.0 * 1024.0;
    let up = total.up as f64;
    json!({
        "conns": conns,
        "size": size,
        "secs": w.secs,
        "mib_s_up": up / w.secs / mib,
        "mib_s_down": total.bytes as f64 / w.secs / mib,
        "messages_down": total.ops,
        "bytes_all": total.bytes_all,
        "errors": total.errors,
        "first_error": total.first_error,
    })
}

/// One idle tunnel of `ws_idle`: ws:// or wss://.
enum Idle {
    Plain(Ws),
    // Boxed: a TLS session is large, a plain tunnel should not pay for it.
    Tls(Box<Ws<tls::Tls>>),
}

impl Idle {
    async fn close(self) -> io::Result<()> {
        match self {
            Idle::Plain(c) => c.close().await,
            Idle::Tls(c) => c.close().await,
        }
    }
}

/// Sends one message, waits for its echo, then drops the client's buffers.
async fn idle_one<S: wire::Source + wire::Sink>(mut c: Ws<S>, payload: &[u8]) -> io::Result<Ws<S>> {
    c.send(wire::OP_BINARY, payload).await?;
    match c.recv().await? {
        (wire::OP_BINARY, n) if n == payload.len() => {}
        (op, n) => return Err(io::Error::other(format!("echo: opcode {op}, {n} bytes"))),
    }
    c.shed();
    Ok(c)
}

async fn ws_idle(
    addr: SocketAddr,
    count: usize,
    size: usize,
    concurrency: usize,
    use_tls: bool,
) -> io::Result<Value> {
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let payload = Arc::new(vec![b'i'; size]);
    let connector = if use_tls {
        Some(tls::connector(false, &[b"http/1.1"])?)
    } else {
        None
    };
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (gate, payload, connector) = (gate.clone(), payload.clone(), connector.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.map_err(io::Error::other)?;
                tokio::time::timeout(Duration::from_secs(10), async {
                    let seed = i as u32 + 1;
                    match &connector {
                        None => Ok::<_, io::Error>(Idle::Plain(
                            idle_one(Ws::open(addr, seed).await?, &payload).await?,
                        )),
                        Some(c) => Ok(Idle::Tls(Box::new(
                            idle_one(Ws::open_tls(c, addr, seed).await?, &payload).await?,
                        ))),
                    }
                })
                .await
                .map_err(|_| io::Error::other("open timed out"))?
            })
        })
        .collect();
    let mut open = Vec::with_capacity(count);
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => open.push(c),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let opened = json!({
        "opened": open.len(),
        "errors": errors,
        "first_error": first_error,
        "open_secs": t0.elapsed().as_secs_f64(),
    });
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{opened}")?;
        out.flush()?;
    }
    // The runner measures the proxy now, then sends a line (or closes stdin).
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    let t1 = Instant::now();
    let n = open.len();
    let gate = Arc::new(Semaphore::new(256));
    let closers: Vec<_> = open
        .into_iter()
        .map(|c| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.map_err(io::Error::other)?;
                tokio::time::timeout(Duration::from_secs(10), c.close())
                    .await
                    .map_err(|_| io::Error::other("close timed out"))?
            })
        })
        .collect();
    let mut close_errors = 0u64;
    for c in closers {
        if !matches!(c.await, Ok(Ok(()))) {
            close_errors += 1;
        }
    }
    Ok(json!({
        "closed": n,
        "close_errors": close_errors,
        "close_secs": t1.elapsed().as_secs_f64(),
    }))
}

async fn tls_handshake(
    addr: SocketAddr,
    path: String,
    conns: usize,
    resume: bool,
    w: Window,
) -> io::Result<Value> {
    // One client (and session cache) per connection: each resumes its own previous session, as a
    // returning client would; a shared cache would also cap the tickets at rustls' 8 per server,
    // fewer than the connections starting at once.
    let connectors = (0..conns)
        .map(|_| tls::connector(resume, &[b"http/1.1"]))
        .collect::<io::Result<Vec<_>>>()?;
    let req = Arc::new(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            tls::NAME
        )
        .into_bytes(),
    );
    // Handshakes counted over the whole run (warm-up included), as the proxy CPU is.
    let resumed = Arc::new(AtomicU64::new(0));
    let tasks = connectors
        .into_iter()
        .map(|connector| {
            let (req, resumed) = (req.clone(), resumed.clone());
            tokio::spawn(async move {
                let mut t = Tally::new();
                let mut inbuf = Vec::with_capacity(16 * 1024);
                while Instant::now() < w.end && t.errors < MAX_ERRORS_PER_CONN {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(10), async {
                        let mut s = tls::connect(&connector, addr).await?;
                        let was_resumed = tls::resumed(&s);
                        wire::Sink::put(&mut s, &req).await?;
                        inbuf.clear();
                        let (status, body, _) = wire::read_response(&mut s, &mut inbuf).await?;
                        if status != 200 {
                            return Err(io::Error::other(format!("status {status}")));
                        }
                        // Connection: close: the server closes; read to its end.
                        loop {
                            inbuf.clear();
                            match wire::Source::fill(&mut s, &mut inbuf).await {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                                Err(e) => return Err(e),
                            }
                        }
                        Ok((was_resumed, body))
                    })
                    .await;
                    match r {
                        Ok(Ok((was_resumed, body))) => {
                            t.op(&w, t0, body);
                            if was_resumed {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Err(e)) => t.error(e),
                        Err(_) => t.error("handshake cycle timed out"),
                    }
                }
                t
            })
        })
        .collect();
    let total = join_all(tasks).await;
    let resumed = resumed.load(Ordering::Relaxed);
    let fraction = if total.ops_all > 0 {
        resumed as f64 / total.ops_all as f64
    } else {
        0.0
    };
    Ok(total.json(
        &w,
        json!({"conns": conns, "path": path, "resume": resume, "resumed_all": resumed,
               "resumed_fraction": fraction}),
    ))
}
