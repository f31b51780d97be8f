//! Named HTTP/1.1 backends for the balancing tests: keep-alive aware, they
//! answer with their name, count accepted connections and requests, and can
//! be switched at run time to fail in the ways `proxy_next_upstream` knows.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a backend does with a request (the health URL aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with its name as the body.
    Ok = 0,
    /// 502 with its name as the body.
    Status502 = 1,
    /// Reads the request and never answers.
    Hang = 2,
    /// Closes the connection right after reading the request.
    Close = 3,
    /// 200 with keep-alive headers, then closes the connection at once (an
    /// upstream with a tiny idle timeout).
    OkThenClose = 4,
    /// Answers the first request of a connection (keep-alive), then reads
    /// the next one and closes without answering: a reused connection that
    /// fails after the request was written.
    DropSecond = 5,
    /// Answers with a head that is not HTTP (nginx's invalid_header).
    BadHead = 6,
}

#[derive(Default)]
pub struct Stats {
    /// Connections accepted.
    pub conns: AtomicUsize,
    /// Requests other than health checks.
    pub hits: AtomicUsize,
    /// Connections whose first request was not a health check.
    pub proxied_conns: AtomicUsize,
    /// Health-check requests (to `/health`).
    pub checks: AtomicUsize,
    /// Non-health requests that arrived while `healthy` was false.
    pub hits_while_unhealthy: AtomicUsize,
}

pub struct NamedBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    mode: Arc<AtomicU8>,
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Request lines seen, in order (non-health).
    pub lines: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl NamedBackend {
    pub fn start(name: &str) -> NamedBackend {
        Self::start_on("127.0.0.1:0", name)
    }

    pub fn start_on(bind: &str, name: &str) -> NamedBackend {
        let listener = TcpListener::bind(bind).expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            name: name.to_string(),
            stats: stats.clone(),
            mode: mode.clone(),
            healthy: healthy.clone(),
            stop: stop.clone(),
            lines: lines.clone(),
        };
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                shared.stats.conns.fetch_add(1, Ordering::Relaxed);
                let s = shared.clone();
                std::thread::spawn(move || serve(conn, s));
            }
        });
        NamedBackend {
            name: name.to_string(),
            addr,
            stats,
            mode,
            healthy,
            stop,
            lines,
            thread: Some(thread),
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    pub fn set_healthy(&self, h: bool) {
        self.healthy.store(h, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.stats.hits.load(Ordering::SeqCst)
    }

    pub fn checks(&self) -> usize {
        self.stats.checks.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.stats.conns.load(Ordering::SeqCst)
    }

    /// Connections that carried proxied requests (health probes excluded).
    pub fn proxied_conns(&self) -> usize {
        self.stats.proxied_conns.load(Ordering::SeqCst)
    }
}

impl Drop for NamedBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Shared {
    name: String,
    stats: Arc<Stats>,
    mode: Arc<AtomicU8>,
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    lines: Arc<Mutex<Vec<String>>>,
}

fn serve(conn: TcpStream, s: Shared) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut conn = conn;
    // Bounded: one connection serves at most this many requests.
    for n in 0..100_000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_string();
        let mut close = line.ends_with("HTTP/1.0");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("");
        if path == "/health" {
            s.stats.checks.fetch_add(1, Ordering::SeqCst);
            let code = if s.healthy.load(Ordering::SeqCst) {
                200
            } else {
                500
            };
            let out =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = conn.write_all(out.as_bytes());
            return;
        }
        if n == 0 {
            s.stats.proxied_conns.fetch_add(1, Ordering::SeqCst);
        }
        s.stats.hits.fetch_add(1, Ordering::SeqCst);
        if !s.healthy.load(Ordering::SeqCst) {
            s.stats.hits_while_unhealthy.fetch_add(1, Ordering::SeqCst);
        }
        if let Ok(mut l) = s.lines.lock() {
            l.push(line.clone());
        }
        let mode = s.mode.load(Ordering::SeqCst);
        if mode == Mode::DropSecond as u8 && n > 0 {
            return;
        }
        let code = match mode {
            m if m == Mode::Status502 as u8 => 502,
            m if m == Mode::Hang as u8 => {
                let mut sink = [0u8; 1024];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            m if m == Mode::Close as u8 => return,
            m if m == Mode::BadHead as u8 => {
                let _ = conn.write_all(b"HTTP/1.1 2x0 Nope\r\n\r\n");
                return;
            }
            _ => 200,
        };
        let out = format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nX-Backend: {}\r\n{}\r\n{}",
            s.name.len(),
            s.name,
            if close { "Connection: close\r\n" } else { "" },
            s.name
        );
        if conn.write_all(out.as_bytes()).is_err() || close {
            return;
        }
        if mode == Mode::OkThenClose as u8 {
            return;
        }
    }
}

/// (status, headers with lowercased names, body).
pub type Reply = (u16, Vec<(String, String)>, String);

/// A small blocking HTTP/1.1 client on one keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    conn: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::connect_from(None, addr)
    }

    /// Connects from a given local address (e.g. 127.0.0.2:0) for ip_hash.
    pub fn connect_from(local: Option<&str>, addr: SocketAddr) -> Client {
        let conn = match local {
            None => TcpStream::connect(addr).expect("connect"),
            Some(l) => {
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .expect("socket");
                let la: SocketAddr = l.parse().expect("local addr");
                sock.bind(&la.into()).expect("bind client");
                sock.connect(&addr.into()).expect("connect");
                sock.into()
            }
        };
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .ok();
        Client {
            reader: BufReader::new(conn.try_clone().expect("clone")),
            conn,
        }
    }

    /// Sends a GET and returns (status, headers lowercased, body). Returns
    /// None when the server closed the connection.
    pub fn get(&mut self, path: &str, extra: &str) -> Option<Reply> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        self.conn.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h).ok()? == 0 {
                return None;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).ok()?;
        Some((status, headers, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One GET on a fresh connection: (status, body).
pub fn get_once(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = Client::connect(addr);
    match c.get(path, "Connection: close\r\n") {
        Some((s, _, b)) => (s, b),
        None => (0, String::new()),
    }
}
