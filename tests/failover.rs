//! Failover, keepalive, health checks and least_conn tunnels, through the
//! real binary with real sockets.

mod balance_common;
mod common;

use balance_common::{Client, Mode, NamedBackend};
use common::{free_port, main_block, Sluice};
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
