//! Helpers for the interop tests: third-party peers (Node `ws`, `wscat`,
//! Chromium, the nginx guide's `server.js`) run as child processes, and raw
//! TCP WebSocket peers that only do the handshake.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Bound on every wait for a peer in these tests.
pub const PEER_WAIT: Duration = Duration::from_secs(30);

/// A child process, killed and waited for on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a child's stdout, read by a thread so waits can be bounded.
pub struct Lines(Receiver<String>);

impl Lines {
    pub fn new(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The first line starting with `prefix`, or a panic after [`PEER_WAIT`].
    pub fn wait_for(&self, prefix: &str) -> String {
        self.wait_for_within(prefix, PEER_WAIT)
    }

    /// The first line starting with `prefix`, or a panic after `limit`.
    pub fn wait_for_within(&self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?} ({e})"),
            }
        }
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// tests/peers/node_modules, installed by tests/peers/install.sh.
pub fn node_modules() -> PathBuf {
    let p = repo_path("tests/peers/node_modules");
    assert!(
        p.join("ws").is_dir() && p.join(".bin/wscat").exists(),
        "npm peers missing: run tests/peers/install.sh"
    );
    p
}

pub fn wscat() -> PathBuf {
    node_modules().join(".bin/wscat")
}

pub fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(p.exists(), "chromium missing: run tests/peers/install.sh");
    p
}

/// `node` with `NODE_PATH` pointing at the pinned npm peers.
pub fn node() -> Command {
    let mut c = Command::new("node");
    c.env("NODE_PATH", node_modules());
    c
}

/// Runs `cmd` to completion with stdout and stderr captured into files in
/// `dir`; kills it after `limit`. Returns (status, stdout, stderr).
pub fn run_bounded(cmd: &mut Command, dir: &Path, limit: Duration) -> (ExitStatus, String, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_p, err_p) = (
        dir.join(format!("run{n}.out")),
        dir.join(format!("run{n}.err")),
    );
    let mut child = cmd
        .stdout(std::fs::File::create(&out_p).expect("stdout file"))
        .stderr(std::fs::File::create(&err_p).expect("stderr file"))
        .spawn()
        .expect("spawn peer");
    let status = wait_bounded(&mut child, limit);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out_p), read(&err_p))
}

/// Waits for `child`, killing it (and panicking) after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait peer") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peer did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `sluice echo` on an ephemeral port; its `Listening on ADDR` line is the
/// readiness signal.
pub fn start_echo() -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["echo", "--listen", "127.0.0.1:0", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice echo");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let line = lines.wait_for("Listening on ");
    let addr = line["Listening on ".len()..]
        .trim()
        .parse()
        .expect("echo address");
    (Proc(Some(child)), addr)
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + PEER_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nginx guide's `server.js`, verbatim but for its port, run by node.
/// Its stdout goes to `dir/server.out`.
pub fn start_guide_server(dir: &Path) -> (Proc, u16) {
    let src = std::fs::read_to_string(repo_path("tests/fixtures/seed/server.js"))
        .expect("tests/fixtures/seed/server.js");
    assert!(src.contains("port: 8010"), "server.js changed: {src}");
    // The port is taken free then released: a clash is possible but rare.
    let port = free_port();
    let script = dir.join("server.js");
    std::fs::write(&script, src.replace("port: 8010", &format!("port: {port}")))
        .expect("write server.js");
    let child = node()
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("server.out")).expect("server.out"))
        .stderr(std::fs::File::create(dir.join("server.err")).expect("server.err"))
        .spawn()
        .expect("spawn node server.js");
    let mut p = Proc(Some(child));
    // server.js prints "Server started" before it listens: poll the port,
    // and say why if node gave up first.
    let deadline = Instant::now() + PEER_WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = p.0.as_mut().and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "server.js is not listening on {port} ({exited:?}): {}",
            std::fs::read_to_string(dir.join("server.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (p, port)
}

/// A Node `ws` echo server with permessage-deflate switched on (the `ws`
/// server's default is off); it prints its port once listening.
pub fn start_deflate_server(dir: &Path) -> (Proc, SocketAddr) {
    let script = dir.join("deflate-server.js");
    std::fs::write(&script, DEFLATE_SERVER).expect("write deflate server");
    let mut child = node()
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node deflate server");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let line = lines.wait_for("Listening on ");
    let addr = line["Listening on ".len()..]
        .trim()
        .parse()
        .expect("deflate server address");
    (Proc(Some(child)), addr)
}

const DEFLATE_SERVER: &str = r#"
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: { threshold: 0 } }, () => {
  console.log('Listening on 127.0.0.1:' + wss.address().port);
});
wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
"#;

pub fn free_port() -> u16 {
    crate::common::free_port()
}

/// Reads an HTTP head (up to the blank line) byte by byte, so nothing after
/// it is consumed.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A raw upstream that answers every WebSocket handshake with a 101 and
/// hands the socket to the test.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub accepted: Receiver<TcpStream>,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let head = read_head(&mut s);
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if s.write_all(resp.as_bytes()).is_err() || tx.send(s).is_err() {
                    break;
                }
            }
        });
        RawUpstream { addr, accepted: rx }
    }

    /// The next upgraded upstream socket.
    pub fn next(&self) -> TcpStream {
        let s = self
            .accepted
            .recv_timeout(PEER_WAIT)
            .expect("the upstream got no handshake");
        s.set_read_timeout(Some(PEER_WAIT)).ok();
        s
    }
}

/// A raw client handshake through `port`; returns the upgraded socket and
/// the response head.
pub fn raw_ws_client(port: u16, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PEER_WAIT)).ok();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send handshake");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "no 101: {head:?}");
    (s, head)
}

/// What a blocking read sees next: `Ok(n)` bytes (0 = EOF) or an error kind.
pub fn read_outcome(s: &mut TcpStream) -> Result<usize, std::io::ErrorKind> {
    let mut buf = [0u8; 256];
    s.read(&mut buf).map_err(|e| e.kind())
}

/// Whether a read outcome means the peer closed (EOF or reset).
pub fn is_closed(r: &Result<usize, std::io::ErrorKind>) -> bool {
    matches!(
        r,
        Ok(0) | Err(std::io::ErrorKind::ConnectionReset) | Err(std::io::ErrorKind::BrokenPipe)
    )
}

/// Headless Chromium loads `url` (with `extra` flags) until the DOM, once
/// the page's script has run, shows `want`; returns that DOM.
pub fn chromium_dom(dir: &Path, url: &str, extra: &[String], want: &str) -> String {
    let mut last = String::new();
    // The virtual time budget lets the page's script run before the dump;
    // a few bounded retries absorb a slow start on a loaded machine.
    for attempt in 0..3 {
        let profile = dir.join(format!("profile{attempt}"));
        let (status, dom, err) = run_bounded(
            Command::new(chromium())
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=5000",
                    "--dump-dom",
                ])
                .args(extra)
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(url)
                .stdin(Stdio::null()),
            dir,
            Duration::from_secs(60),
        );
        if dom.contains(want) {
            return dom;
        }
        last = format!("{status}\n{dom}\n{err}");
    }
    panic!("Chromium's DOM never showed {want:?}:\n{last}");
}
