//! End-to-end tests of the demo peers: `sluice echo` and `sluice wscat` run as
//! the real binary, talking over loopback on ephemeral ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Guard against a hung peer; not used to order events.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `sluice echo`, killed and reaped on drop.
struct Echo {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Echo {
    fn start(extra: &[&str]) -> Echo {
        let mut child = Command::new(BIN)
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sluice echo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Drain stdout for the whole run so the server never blocks on logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut echo = Echo {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
        };
        assert_eq!(echo.next_line(), "Server started");
        let listening = echo.next_line();
        echo.addr = listening
            .strip_prefix("Listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected second line {listening:?}"));
        echo
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("a line from sluice echo")
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection; returns the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("set timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    resp
}

fn wscat(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("wscat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice wscat");
    let mut pipe = child.stdin.take().expect("piped stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    // Closing stdin is the end of input for interactive mode.
    drop(pipe);
    child.wait_with_output().expect("wait for sluice wscat")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn text_echo_and_log() {
    let echo = Echo::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(echo.url("/"))
        .await
        .expect("connect");
    ws.send(Message::text("hello")).await.expect("send");
    let reply = ws.next().await.expect("a reply").expect("no error");
    assert_eq!(reply, Message::text("Server received from client: hello"));
    assert_eq!(echo.next_line(), "Received from client: hello");
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn binary_ping_and_big() {
    let echo = Echo::start(&["--quiet"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(echo.url("/any/path"))
        .await
        .expect("connect");

    ws.send(Message::Binary(vec![0, 1, 255]))
        .await
        .expect("send");
    let mut want = b"Server received from client: ".to_vec();
    want.extend_from_slice(&[0, 1, 255]);
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::Binary(want)
    );

    ws.send(Message::Ping(b"p1".to_vec())).await.expect("ping");
    assert_eq!(
        ws.next().await.expect("pong").expect("ok"),
        Message::Pong(b"p1".to_vec())
    );

    ws.send(Message::text("/big 70000")).await.expect("send");
    let Message::Binary(big) = ws.next().await.expect("reply").expect("ok") else {
        panic!("expected a binary reply");
    };
    assert_eq!(big.len(), 70000);
    assert!(big.iter().enumerate().all(|(i, b)| *b == i as u8));

    ws.send(Message::text("/big lots")).await.expect("send");
    let Message::Text(err) = ws.next().await.expect("reply").expect("ok") else {
        panic!("expected a text reply");
    };
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test]
async fn server_close_code_passes_through() {
    let echo = Echo::start(&["--quiet"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(echo.url("/"))
        .await
        .expect("connect");
    ws.send(Message::text("/close 4001 bye"))
        .await
        .expect("send");
    let msg = ws.next().await.expect("close").expect("ok");
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}");
    };
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason, "bye");
    // Our reply goes out on the next poll; then the server hangs up.
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn client_close_is_echoed() {
    let echo = Echo::start(&["--quiet"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(echo.url("/"))
        .await
        .expect("connect");
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4002),
        reason: "done".into(),
    }))
    .await
    .expect("close");
    let msg = ws.next().await.expect("close reply").expect("ok");
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}");
    };
    assert_eq!(u16::from(frame.code), 4002);
    assert_eq!(frame.reason, "done");
}

#[tokio::test]
async fn subprotocol_and_name() {
    let echo = Echo::start(&["--quiet", "--name", "b1"]);
    let mut req = echo.url("/").into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("chat,superchat"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(resp.headers()["x-echo-server"], "b1");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("[b1] Server received from client: hi")
    );

    // Without an offer the server must not pick a protocol.
    let (_ws, resp) = tokio_tungstenite::connect_async(echo.url("/"))
        .await
        .expect("connect");
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
}

#[test]
fn plain_http() {
    let echo = Echo::start(&["--quiet", "--name", "b2"]);
    let page = http_get(echo.addr, "/?path=/ws");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{page}");
    assert!(lower.contains("x-echo-server: b2"), "{page}");
    assert!(page.contains(r#"<ul id="log">"#));
    assert!(page.contains(r#"ws.send("hello")"#));
    // Self-contained: no external scripts or styles.
    assert!(!page.contains("src=") && !page.contains("href="));

    let name = http_get(echo.addr, "/name");
    assert!(name.starts_with("HTTP/1.1 200"), "{name}");
    assert!(name.ends_with("\r\n\r\nb2"), "{name}");

    let missing = http_get(echo.addr, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn unnamed_server_answers_echo_for_its_name() {
    let echo = Echo::start(&["--quiet"]);
    let name = http_get(echo.addr, "/name");
    assert!(name.ends_with("\r\n\r\necho"), "{name}");
    assert!(!name.to_ascii_lowercase().contains("x-echo-server"));
}

#[test]
fn wscat_execute() {
    let echo = Echo::start(&["--quiet"]);
    let out = wscat(&["-c", &echo.url("/"), "-x", "hello"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout_lines(&out),
        [
            "Connected (press CTRL+C to quit)",
            "> hello",
            "< Server received from client: hello",
            "Disconnected (code: 1000, reason: \"\")",
        ]
    );
}

#[test]
fn wscat_execute_several_waits_for_every_reply() {
    let echo = Echo::start(&["--quiet"]);
    let out = wscat(
        &[
            "-c",
            &echo.url("/"),
            "-x",
            "one",
            "-x",
            "/big 5",
            "-x",
            "two",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    let received: Vec<_> = lines.iter().filter(|l| l.starts_with("< ")).collect();
    assert_eq!(
        received,
        [
            "< Server received from client: one",
            "< <Binary 5 bytes>",
            "< Server received from client: two",
        ]
    );
}

#[test]
fn wscat_wait_still_prints_replies_before_the_close() {
    let echo = Echo::start(&["--quiet"]);
    // Replies sent before the server sees our close are read before its answer.
    let out = wscat(&["-c", &echo.url("/"), "-x", "hello", "-w", "0"], None);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout_lines(&out).contains(&"< Server received from client: hello".to_owned()));
}

#[test]
fn wscat_interactive() {
    let echo = Echo::start(&["--quiet"]);
    let out = wscat(&["-c", &echo.url("/")], Some("a\nb\n"));
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    // Sends and replies may interleave; each kind keeps its own order.
    let with =
        |p: &str| -> Vec<String> { lines.iter().filter(|l| l.starts_with(p)).cloned().collect() };
    assert_eq!(with("> "), ["> a", "> b"]);
    assert_eq!(
        with("< "),
        [
            "< Server received from client: a",
            "< Server received from client: b"
        ]
    );
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(lines[0], "Connected (press CTRL+C to quit)");
    assert_eq!(lines[5], "Disconnected (code: 1000, reason: \"\")");
}

#[test]
fn wscat_reports_server_close_code() {
    let echo = Echo::start(&["--quiet"]);
    let out = wscat(&["-c", &echo.url("/")], Some("/close 4001 bye\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some("Disconnected (code: 4001, reason: \"bye\")")
    );
}

#[test]
fn wscat_slash_ping_shows_pong() {
    let echo = Echo::start(&["--quiet"]);
    let out = wscat(
        &["-c", &echo.url("/"), "--slash", "-P"],
        Some("/ping hi\n/close 4000 enough\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    assert!(
        lines.contains(&"< Received pong (data: \"hi\")".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Disconnected (code: 4000, reason: \"enough\")")
    );
}

#[test]
fn wscat_sends_headers_and_reports_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A server that refuses the upgrade and hands back the request head.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(PATIENCE)).expect("set timeout");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("respond");
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    });
    let out = wscat(
        &[
            "-c",
            &format!("ws://{addr}/chat"),
            "-H",
            "X-Test: 1",
            "-o",
            "http://example.test",
            "-s",
            "chat",
            "-s",
            "v2",
            "-x",
            "never sent",
        ],
        None,
    );
    let head = server.join().expect("server thread");
    assert!(head.starts_with("get /chat http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-test: 1\r\n"), "{head}");
    assert!(
        head.contains("\r\norigin: http://example.test\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nsec-websocket-protocol: chat,v2\r\n"),
        "{head}"
    );

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: Unexpected server response: 403"
    );
}

#[test]
fn wscat_refuses_wss() {
    let out = wscat(&["-c", "wss://127.0.0.1:1/"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not yet supported"));
}

#[test]
fn usage_errors_exit_2() {
    let out = wscat(&[], None);
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["echo", "--bogus"])
        .output()
        .expect("run sluice echo");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn embedded_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(sluice::tools::echo::serve(listener, false));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    ws.send(Message::text("x")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("Server received from client: x")
    );
    server.abort();
}
