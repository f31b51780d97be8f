//! Failover, keepalive, health checks and least_conn tunnels, through the
//! real binary with real sockets.

mod balance_common;
mod common;

use balance_common::{get_once, Client, Mode, NamedBackend};
use common::{free_port, main_block, wait_until, Sluice};
use std::net::SocketAddr;

fn conf(upstream: &str, location_extra: &str) -> (String, SocketAddr) {
    let port = free_port();
    let text = format!(
        "{}http {{\n access_log off;\n upstream app {{\n{upstream}\n }}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://app;\n{location_extra}\n  }}\n }}\n}}\n",
        main_block()
    );
    (text, SocketAddr::from(([127, 0, 0, 1], port)))
}

const KEEPALIVE: &str = "   proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n";

#[test]
fn keepalive_reuses_few_connections() {
    let b = NamedBackend::start("a");
    let (text, addr) = conf(&format!("  server {};\n  keepalive 8;", b.addr), KEEPALIVE);
    let s = Sluice::start("ka-reuse", &text);
    let mut c = Client::connect(addr);
    for _ in 0..100 {
        let (status, _, body) = c.get("/", "").expect("response");
        assert_eq!((status, body.as_str()), (200, "a"));
    }
    assert_eq!(b.hits(), 100);
    assert!(
        b.conns() <= 2,
        "{} upstream connections for 100 requests",
        b.conns()
    );
    drop(s);
}

#[test]
fn without_keepalive_conditions_every_request_connects() {
    let b = NamedBackend::start("a");
    // keepalive set, but nginx's default `Connection: close` is sent.
    let (text, addr) = conf(&format!("  server {};\n  keepalive 8;", b.addr), "");
    let s = Sluice::start("ka-close", &text);
    let mut c = Client::connect(addr);
    for _ in 0..10 {
        let (status, _, _) = c.get("/", "").expect("response");
        assert_eq!(status, 200);
    }
    assert_eq!(b.conns(), 10);
    drop(s);
}

#[test]
fn upstream_closing_idle_connections_never_fails_a_client() {
    let b = NamedBackend::start("a");
    b.set_mode(Mode::OkThenClose);
    let (text, addr) = conf(&format!("  server {};\n  keepalive 8;", b.addr), KEEPALIVE);
    let s = Sluice::start("ka-idle-close", &text);
    let mut c = Client::connect(addr);
    for i in 0..200 {
        let (status, _, body) = c.get("/", "").expect("response");
        assert_eq!((status, body.as_str()), (200, "a"), "request {i}");
    }
    assert!(!s.error_log().contains("[error]"), "{}", s.error_log());
    drop(s);
}

/// The check_status CSV line of `addr`, e.g. "1,app,127.0.0.1:80,up,3,0,http,0".
fn status_line(addr: SocketAddr, peer: SocketAddr) -> Option<String> {
    let (code, body) = get_once(addr, "/status?format=csv");
    assert_eq!(code, 200);
    body.lines()
        .find(|l| l.split(',').nth(2) == Some(peer.to_string().as_str()))
        .map(str::to_string)
}

fn is(addr: SocketAddr, peer: SocketAddr, state: &str) -> bool {
    status_line(addr, peer).is_some_and(|l| l.split(',').nth(3) == Some(state))
}

#[test]
fn active_checks_take_a_failing_peer_out_and_back() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let port = free_port();
    let text = format!(
        "{}http {{\n access_log off;\n upstream app {{\n  server {};\n  server {};\n  check interval=50 rise=2 fall=2 timeout=1000 type=http;\n  check_http_send \"GET /health HTTP/1.0\\r\\n\\r\\n\";\n  check_http_expect_alive http_2xx http_3xx;\n }}\n server {{\n  listen 127.0.0.1:{port};\n  location /status {{ check_status csv; }}\n  location / {{ proxy_pass http://app; }}\n }}\n}}\n",
        main_block(),
        a.addr,
        b.addr
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = Sluice::start("checks", &text);
    // default_down: both start down and come up after `rise` passes.
    wait_until("both peers up", || {
        is(addr, a.addr, "up") && is(addr, b.addr, "up")
    });
    let mut seen_b = false;
    for _ in 0..10 {
        let (code, body) = get_once(addr, "/");
        assert_eq!(code, 200);
        seen_b |= body == "b";
    }
    assert!(seen_b);

    b.set_healthy(false);
    wait_until("b marked down", || is(addr, b.addr, "down"));
    let before = b.hits();
    for _ in 0..20 {
        assert_eq!(get_once(addr, "/"), (200, "a".to_string()));
    }
    assert_eq!(b.hits(), before, "a request reached a peer marked down");

    b.set_healthy(true);
    wait_until("b back up", || is(addr, b.addr, "up"));
    let mut back = false;
    for _ in 0..10 {
        back |= get_once(addr, "/").1 == "b";
    }
    assert!(back, "b never got traffic after it recovered");
    assert!(s.error_log().contains("disable check peer"));
    assert!(b.checks() > 0 && a.checks() > 0);
    drop(s);
}
