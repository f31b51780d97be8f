//! Graceful shutdown (QUIT) with open WebSockets: close frames 1001 both
//! ways, no new connections, frames in flight completed, then exit.
//! tokio-tungstenite on both sides of the real binary, and npm's `ws` as a
//! client too. Reloads that remove a location (websocket_drain_on_reload).

mod common;
mod interop_common;

use std::net::SocketAddr;

use common::{main_block, Sluice};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const BIG: usize = 32 << 20;

fn conf(port: u16, upstream: SocketAddr, main_extra: &str) -> String {
    format!(
        "{}{main_extra}\nhttp {{\n access_log logs/access.log;\n server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://{upstream};\n   proxy_http_version 1.1;\n   proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"Upgrade\";\n  }}\n }}\n}}\n",
        main_block()
    )
}

fn big_config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: None,
        max_frame_size: None,
        ..Default::default()
    }
}

fn big_payload() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// A tokio-tungstenite server: echoes text, answers "big" with "start" and
/// a [`BIG`]-byte binary message, and reports each close code it receives.
async fn upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Option<u16>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(s, Some(big_config())).await
                else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    match m {
                        Message::Text(t) if t.as_str() == "big" => {
                            let _ = ws.send(Message::text("start")).await;
                            let _ = ws.send(Message::binary(big_payload())).await;
                        }
                        Message::Text(t) => {
                            let _ = ws.send(Message::text(t)).await;
                        }
                        Message::Close(f) => {
                            let _ = tx.send(f.map(|f| u16::from(f.code)));
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(port: u16) -> Client {
    connect_to(port, "/ws").await
}

async fn connect_to(port: u16, path: &str) -> Client {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async_with_config(
        format!("ws://127.0.0.1:{port}{path}"),
        tcp,
        Some(big_config()),
    )
    .await
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

async fn echo(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let m = ws.next().await.expect("reply").expect("reply ok");
    assert_eq!(m, Message::text(text));
}

/// The next message must be a close frame with status 1001.
async fn expect_going_away(ws: &mut Client) {
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next()).await;
    match next.expect("no close frame within 30 s") {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // The close handshake completes and the connection ends.
    while let Some(Ok(_)) = ws.next().await {}
}

fn wait_exit(s: &mut Sluice) -> std::process::ExitStatus {
    s.child.take().expect("child").wait().expect("wait sluice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_sends_going_away_both_ways_and_exits() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    let mut s = Sluice::start(
        "drain-close",
        &conf(
            port,
            up,
            "websocket_drain_delay 0;\nwebsocket_drain_window 300ms;",
        ),
    );
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut ws = connect(port).await;
        echo(&mut ws, &format!("hello {i}")).await;
        clients.push(ws);
    }
    // npm's ws client too, with its own close handling.
    let script = s.path("drain_client.js");
    std::fs::write(&script, include_str!("interop_common/drain_client.js")).expect("script");
    let mut node = interop_common::node()
        .arg(&script)
        .arg(format!("ws://127.0.0.1:{port}/ws"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn node");
    let lines = interop_common::Lines::new(node.stdout.take().expect("node stdout"));
    let mut node = interop_common::Proc(Some(node));
    tokio::task::block_in_place(|| lines.wait_for("open"));
    s.signal(libc::SIGQUIT);
    for ws in &mut clients {
        expect_going_away(ws).await;
    }
    let closed = tokio::task::block_in_place(|| lines.wait_for("close "));
    assert!(closed.starts_with("close 1001 "), "node ws got {closed:?}");
    let node_exit = tokio::task::block_in_place(|| {
        interop_common::wait_bounded(node.0.as_mut().expect("node"), interop_common::PEER_WAIT)
    });
    assert!(node_exit.success(), "{node_exit}");
    for _ in 0..6 {
        assert_eq!(closes.recv().await.expect("close at upstream"), Some(1001));
    }
    assert!(wait_exit(&mut s).success());
    assert!(!s.path("logs/sluice.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_refuses_new_connections_and_exits_after_the_last_tunnel() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    // The drain would start only after a minute: the tunnel must end by itself.
    let mut s = Sluice::start("drain-wait", &conf(port, up, "websocket_drain_delay 60s;"));
    let mut ws = connect(port).await;
    echo(&mut ws, "before").await;
    s.signal(libc::SIGQUIT);
    common::wait_until("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    // The open tunnel still carries traffic.
    echo(&mut ws, "after quit").await;
    assert!(s
        .child
        .as_mut()
        .expect("child")
        .try_wait()
        .expect("try_wait")
        .is_none());
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    assert_eq!(closes.recv().await.expect("close at upstream"), None);
    assert!(wait_exit(&mut s).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_flight_completes_before_the_close_frame() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    let mut s = Sluice::start("drain-big", &conf(port, up, "websocket_drain_delay 0;"));
    let mut ws = connect(port).await;
    ws.send(Message::text("big")).await.expect("send");
    let m = ws.next().await.expect("start").expect("start ok");
    assert_eq!(m, Message::text("start"));
    // Bytes of the big message have reached this socket: the frame is in
    // flight (far larger than every socket buffer on the way), and this
    // client reads no more until sluice has been told to quit.
    let mut one = [0u8; 1];
    ws.get_ref().peek(&mut one).await.expect("peek");
    s.signal(libc::SIGQUIT);
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => {
            assert_eq!(b.len(), BIG);
            assert!(b == big_payload(), "payload corrupted");
        }
        other => panic!("expected the big message, got {other:?}"),
    }
    expect_going_away(&mut ws).await;
    assert_eq!(closes.recv().await.expect("close at upstream"), Some(1001));
    assert!(wait_exit(&mut s).success());
}

/// An HTTP upstream that holds its answer to the first request until told.
async fn held_backend() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = got_tx.send(());
        let _ = go_rx.await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlater")
            .await;
    });
    (addr, got_rx, go_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_lets_an_http_request_in_flight_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, got, go) = held_backend().await;
    let port = common::free_port();
    let mut s = Sluice::start("drain-http", &conf(port, up, ""));
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    got.await.expect("request reached the upstream");
    s.signal(libc::SIGQUIT);
    common::wait_until("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    let _ = go.send(());
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("later"), "{text}");
    assert!(wait_exit(&mut s).success());
}

/// Two WebSocket locations, `/gone` (unless `with_gone` is false) and `/stays`.
fn two_locations(port: u16, upstream: SocketAddr, main_extra: &str, with_gone: bool) -> String {
    let loc = |path: &str| {
        format!(
            "  location {path} {{\n   proxy_pass http://{upstream};\n   proxy_http_version 1.1;\n   proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"Upgrade\";\n  }}\n"
        )
    };
    format!(
        "{}{main_extra}\nhttp {{\n access_log logs/access.log;\n server {{\n  listen 127.0.0.1:{port};\n  server_name ws.example;\n{}{} }}\n}}\n",
        main_block(),
        if with_gone { loc("/gone") } else { String::new() },
        loc("/stays"),
    )
}

/// Rewrites the configuration and reloads; returns once generation `gen`
/// serves (the error log says so).
fn reload(s: &Sluice, conf: &str, gen: u64) {
    std::fs::write(&s.conf, conf).expect("write conf");
    s.signal(libc::SIGHUP);
    let line = format!("reconfiguring: generation {gen}");
    common::wait_until(&line, || s.error_log().contains(&line));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_location_closes_its_tunnels_when_configured() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    let main_extra = "websocket_drain_on_reload on;\nwebsocket_drain_window 200ms;";
    let mut s = Sluice::start(
        "drain-reload-on",
        &two_locations(port, up, main_extra, true),
    );
    let mut gone = Vec::new();
    for i in 0..3 {
        let mut ws = connect_to(port, "/gone").await;
        echo(&mut ws, &format!("gone {i}")).await;
        gone.push(ws);
    }
    let mut stays = connect_to(port, "/stays").await;
    echo(&mut stays, "stays").await;

    reload(&s, &two_locations(port, up, main_extra, false), 2);
    for ws in &mut gone {
        expect_going_away(ws).await;
    }
    for _ in 0..3 {
        assert_eq!(closes.recv().await.expect("close at upstream"), Some(1001));
    }
    // The tunnel whose location stays is untouched: its next message is
    // the echo, not a close, and the upstream saw no other close.
    echo(&mut stays, "still here").await;
    assert!(closes.try_recv().is_err());
    assert!(s
        .error_log()
        .contains("closing the WebSocket tunnels of 1 location(s)"));
    stays.close(None).await.expect("close");
    while let Some(Ok(_)) = stays.next().await {}
    drop(stays);
    drop(gone);
    assert!(s.quit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_reload_leaves_the_tunnels_of_a_removed_location_open() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    let mut s = Sluice::start(
        "drain-reload-off",
        &two_locations(port, up, "websocket_drain_window 0;", true),
    );
    let mut ws = connect_to(port, "/gone").await;
    echo(&mut ws, "before").await;
    reload(&s, &two_locations(port, up, "", false), 2);
    // Twice more, so the tunnel also outlives a second reload.
    echo(&mut ws, "after the reload").await;
    reload(&s, &two_locations(port, up, "", false), 3);
    echo(&mut ws, "after another").await;
    // New requests to the removed location no longer reach a tunnel.
    let resp = common::raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET /gone HTTP/1.1\r\nHost: ws.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::status_of(&resp), 404);
    assert!(closes.try_recv().is_err());
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    assert!(s.quit().success());
}

/// A Node process printing lines, started with the test CA trusted.
fn node_peer(
    args: &[String],
    ca: &std::path::Path,
) -> (interop_common::Proc, interop_common::Lines) {
    let mut child = interop_common::node()
        .args(args)
        .env("NODE_EXTRA_CA_CERTS", ca)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let lines = interop_common::Lines::new(child.stdout.take().expect("node stdout"));
    (interop_common::Proc(Some(child)), lines)
}

// WebSockets that travel inside TLS (wss://) or inside an HTTP/2 stream
// (RFC 8441) get the same close frames as plain ones: inside the TLS
// session, and as DATA on the client's stream before it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_sends_going_away_over_wss_and_over_http2_streams() {
    let (up, mut closes) = upstream().await;
    let port = common::free_port();
    let dir = common::temp_dir("drain-tls");
    let certs = common::certs::make(&dir, &["127.0.0.1", "localhost"]);
    let conf = format!(
        "{}websocket_drain_delay 0;\nwebsocket_drain_window 300ms;\nhttp {{\n access_log logs/access.log;\n server {{\n  listen 127.0.0.1:{port} ssl http2;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  location / {{\n   proxy_pass http://{up};\n   proxy_http_version 1.1;\n   proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"Upgrade\";\n  }}\n }}\n}}\n",
        main_block(),
        certs.cert.display(),
        certs.key.display(),
    );
    let mut s = Sluice::start("drain-tls", &conf);
    // npm's ws over wss:// (HTTP/1.1 inside TLS).
    let script = s.path("drain_client.js");
    std::fs::write(&script, include_str!("interop_common/drain_client.js")).expect("script");
    let (mut wss, wss_lines) = node_peer(
        &[
            script.display().to_string(),
            format!("wss://127.0.0.1:{port}/ws"),
        ],
        &certs.ca,
    );
    // Node's http2 client with an extended CONNECT stream.
    let (mut h2, h2_lines) = node_peer(
        &[
            interop_common::repo_path("tests/peers/h2ws_node.js")
                .display()
                .to_string(),
            format!("https://127.0.0.1:{port}"),
            "/ws".into(),
            "--drain".into(),
        ],
        &certs.ca,
    );
    tokio::task::block_in_place(|| {
        wss_lines.wait_for("open");
        assert_eq!(h2_lines.wait_for("status="), "status=200");
        assert_eq!(h2_lines.wait_for("text="), "text=hello from node");
        h2_lines.wait_for("open");
    });
    s.signal(libc::SIGQUIT);
    tokio::task::block_in_place(|| {
        let closed = wss_lines.wait_for("close ");
        assert!(
            closed.starts_with("close 1001 "),
            "wss client got {closed:?}"
        );
        assert_eq!(h2_lines.wait_for("close="), "close=1001 going away");
        h2_lines.wait_for("ended");
        for p in [&mut wss, &mut h2] {
            let exit = interop_common::wait_bounded(
                p.0.as_mut().expect("node"),
                interop_common::PEER_WAIT,
            );
            assert!(exit.success(), "{exit}");
        }
    });
    for _ in 0..2 {
        assert_eq!(closes.recv().await.expect("close at upstream"), Some(1001));
    }
    assert!(wait_exit(&mut s).success());
}
