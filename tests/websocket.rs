//! WebSockets through the real binary, with tokio-tungstenite on the client
//! side and sluice's echo server (tokio-tungstenite too) behind it.

mod common;

use std::net::SocketAddr;

use common::backend::{Backend, Reply};
use common::{main_block, Sluice};
use futures_util::{SinkExt, StreamExt};
use sluice::tools::echo::{serve_with, EchoOptions, REPLY_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The second guide's configuration, pointed at `upstreams`.
fn guide_conf(port: u16, upstreams: &[SocketAddr], extra_loc: &str) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("  server {a};\n"))
        .collect();
    format!(
        "{}http {{\n access_log logs/access.log;\n map $http_upgrade $connection_upgrade {{\n  default upgrade;\n  '' close;\n }}\n upstream websocket {{\n{servers} }}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://websocket;\n   proxy_http_version 1.1;\n   proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"Upgrade\";\n{extra_loc}\n  }}\n }}\n}}\n",
        main_block()
    )
}

async fn echo_backend(name: Option<&str>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = l.local_addr().expect("addr");
    let opts = EchoOptions {
        log: false,
        name: name.map(str::to_string),
    };
    (addr, tokio::spawn(serve_with(l, opts)))
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/chat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_binary_and_ping_through_the_guide_config() {
    let (echo, _t) = echo_backend(None).await;
    let port = common::free_port();
    let s = Sluice::start("ws-basic", &guide_conf(port, &[echo], ""));
    let (mut ws, resp) = tokio_tungstenite::connect_async(url(port))
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("sec-websocket-accept"));
    ws.send(Message::text("hello")).await.expect("send");
    let reply = ws.next().await.expect("reply").expect("reply ok");
    assert_eq!(reply, Message::text(format!("{REPLY_PREFIX}hello")));
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send bin");
    let reply = ws.next().await.expect("reply").expect("ok");
    assert!(matches!(reply, Message::Binary(b) if b.ends_with(&[1, 2, 3])));
    ws.send(Message::Ping(b"p".to_vec())).await.expect("ping");
    let reply = ws.next().await.expect("pong").expect("ok");
    assert_eq!(reply, Message::Pong(b"p".to_vec()));
    ws.close(None).await.expect("close");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_message_is_byte_exact_and_ten_thousand_stay_in_order() {
    let (echo, _t) = echo_backend(None).await;
    let port = common::free_port();
    let _s = Sluice::start("ws-big", &guide_conf(port, &[echo], ""));
    let (mut ws, _) = tokio_tungstenite::connect_async(url(port))
        .await
        .expect("handshake");
    ws.send(Message::text(format!("/big {}", 16 << 20)))
        .await
        .expect("send");
    let reply = ws.next().await.expect("reply").expect("ok");
    let Message::Binary(data) = reply else {
        panic!("expected binary")
    };
    assert_eq!(data.len(), 16 << 20);
    assert_eq!(data.to_vec(), sluice::tools::echo::big_payload(16 << 20));

    let n = 10_000;
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            tx.send(Message::text(format!("m{i}"))).await.expect("send");
        }
        tx
    });
    for i in 0..n {
        let m = rx.next().await.expect("reply").expect("ok");
        assert_eq!(m, Message::text(format!("{REPLY_PREFIX}m{i}")));
    }
    let _ = sender.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_and_close_code_pass_both_ways() {
    let (echo, _t) = echo_backend(None).await;
    let port = common::free_port();
    let _s = Sluice::start("ws-proto", &guide_conf(port, &[echo], ""));
    let mut req = url(port).into_client_request().expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat.v2".parse().expect("value"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat.v2"[..])
    );
    ws.send(Message::text("/close 4001 bye"))
        .await
        .expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::from(4001));
                assert_eq!(&*f.reason, "bye");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusing_the_upgrade_reaches_the_client() {
    let b = Backend::start(Reply::Fixed(403, vec![], b"no".to_vec()));
    let port = common::free_port();
    let _s = Sluice::start("ws-403", &guide_conf(port, &[b.addr], ""));
    let err = tokio_tungstenite::connect_async(url(port))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected HTTP 403, got {other}"),
    }
    // The upgrade headers reached the upstream because the config sets them.
    let r = b.last();
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("Upgrade"));
    assert_eq!(r.request_line, "GET /chat HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_101_is_502() {
    let b = Backend::start(Reply::Fixed(
        101,
        vec![("Upgrade".into(), "websocket".into())],
        vec![],
    ));
    let port = common::free_port();
    let _s = Sluice::start("ws-101", &guide_conf(port, &[b.addr], ""));
    let resp = common::raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::status_of(&resp), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_behind_the_handshake_are_not_lost() {
    let (echo, _t) = echo_backend(None).await;
    let port = common::free_port();
    let _s = Sluice::start("ws-pipelined", &guide_conf(port, &[echo], ""));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // Handshake and a masked text frame "hi" in one write.
    let mut out = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&[0x81, 0x82]);
    out.extend_from_slice(&mask);
    out.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&out).await.expect("write");
    let expected = format!("{REPLY_PREFIX}hi");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(&expected) {
        let n = s.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before the echo: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
}

/// `sluice echo` as a child process, so that killing it closes its sockets.
fn echo_process() -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::bin())
        .args(["echo", "--listen", "127.0.0.1:0", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice echo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("echo exited").expect("read line");
        if let Some(a) = line.strip_prefix("Listening on ") {
            break a.trim().parse().expect("address");
        }
    };
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_stream_closes_the_client_promptly() {
    let (mut echo, addr) = echo_process();
    let port = common::free_port();
    let _s = Sluice::start("ws-die", &guide_conf(port, &[addr], ""));
    let (mut ws, _) = tokio_tungstenite::connect_async(url(port))
        .await
        .expect("handshake");
    ws.send(Message::text("a")).await.expect("send");
    let _ = ws.next().await;
    echo.kill().expect("kill echo");
    echo.wait().expect("wait echo");
    loop {
        match ws.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_across_three_servers() {
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for name in ["a", "b", "c"] {
        let (a, t) = echo_backend(Some(name)).await;
        addrs.push(a);
        tasks.push(t);
    }
    let port = common::free_port();
    let _s = Sluice::start("ws-1000", &guide_conf(port, &addrs, ""));
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let (ws, resp) = tokio_tungstenite::connect_async(url(port))
            .await
            .expect("handshake");
        let name = resp
            .headers()
            .get("x-echo-server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        conns.push((ws, name));
    }
    let mut per_server = std::collections::HashMap::new();
    for (i, (ws, name)) in conns.iter_mut().enumerate() {
        ws.send(Message::text(format!("n{i}"))).await.expect("send");
        *per_server.entry(name.clone()).or_insert(0) += 1;
    }
    for (i, (ws, name)) in conns.iter_mut().enumerate() {
        let m = ws.next().await.expect("reply").expect("ok");
        // Each connection stays on the server it was given.
        assert_eq!(m, Message::text(format!("[{name}] {REPLY_PREFIX}n{i}")));
    }
    assert_eq!(per_server.len(), 3, "{per_server:?}");
    assert!(per_server.values().all(|&n| n >= 300), "{per_server:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_upgrade_protocols_become_tunnels_too() {
    // A raw upstream that switches to a made-up protocol and then echoes bytes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: fancy/1\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .expect("write");
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.expect("echo");
        }
    });
    let port = common::free_port();
    let _s = Sluice::start("upgrade-other", &guide_conf(port, &[addr], ""));
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: fancy/1\r\nConnection: Upgrade\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).await.expect("read");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: fancy/1"), "{head}");
    c.write_all(b"ping-bytes").await.expect("write");
    let mut echoed = vec![0u8; 10];
    c.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping-bytes");
}
