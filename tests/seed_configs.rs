//! The guides' own configurations serve traffic: the Tengine guide's full
//! nginx.conf with its test.com WebSocket route, and the second guide's
//! websocket-example.conf, each with only the machine-specific parts
//! substituted (addresses, ports, paths).

mod common;

use common::{seed, Sluice};
use futures_util::{SinkExt, StreamExt};
use sluice::tools::echo::{serve_with, EchoOptions, REPLY_PREFIX};
use tokio_tungstenite::tungstenite::Message;

async fn echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve_with(l, EchoOptions::default()));
    addr
}

fn user_line() -> String {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .arg(flag)
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    format!("user {} {};", id("-un"), id("-gn"))
}

async fn echo_round_trip(url: &str) {
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.expect("send");
    let reply = ws.next().await.expect("reply").expect("ok");
    assert_eq!(reply, Message::text(format!("{REPLY_PREFIX}hello")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tengine_guide_config_proxies_its_websocket_route() {
    let backend = echo().await;
    let port = common::free_port();
    let prefix = common::temp_dir("seed-tengine");
    let shm = prefix.join("shm");
    std::fs::create_dir_all(&shm).expect("shm");
    let main = seed("nginx.conf")
        .replace("/home/apps/tengine/conf/test.com", "test.com")
        .replace("user apps apps;", &user_line())
        .replace("/dev/shm", &shm.display().to_string());
    let vhost = seed("test.com")
        .replace("192.168.1.5:9000", &backend.to_string())
        .replace(
            "listen       80;",
            &format!("listen       127.0.0.1:{port};"),
        );
    std::fs::write(prefix.join("conf/test.com"), vhost).expect("write");
    std::fs::copy(
        common::repo_file("conf/mime.types"),
        prefix.join("conf/mime.types"),
    )
    .expect("mime.types");
    // The guide's pid path is logs/nginx.pid; the harness waits for logs/sluice.pid.
    let main = main.replace("pid        logs/nginx.pid;", "pid        logs/sluice.pid;");
    let s = Sluice::start_in(prefix, &main);
    echo_round_trip(&format!("ws://127.0.0.1:{port}/websocket")).await;
    // Outside the WebSocket location, test.com has no content: nginx's 404.
    let resp = common::raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET /other HTTP/1.1\r\nHost: test.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::status_of(&resp), 404);
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_guide_snippet_proxies_to_its_upstream() {
    let backend = echo().await;
    let port = common::free_port();
    let snippet = seed("websocket-example.conf")
        .replace("192.168.100.10:8010", &backend.to_string())
        .replace("listen 8020;", &format!("listen 127.0.0.1:{port};"));
    let prefix = common::temp_dir("seed-ws");
    std::fs::write(prefix.join("conf/websocket-example.conf"), snippet).expect("write");
    let main = format!(
        "{}http {{\n include websocket-example.conf;\n}}\n",
        common::main_block()
    );
    let _s = Sluice::start_in(prefix, &main);
    echo_round_trip(&format!("ws://127.0.0.1:{port}/")).await;
}
