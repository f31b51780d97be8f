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

/// A group of a backend that fails in `mode`, taken out after one failure
/// for `fail_timeout`, and one that answers.
fn one_failing(mode: Mode, fail_timeout: &str) -> (NamedBackend, NamedBackend, String, SocketAddr) {
    let (bad, good) = (NamedBackend::start("bad"), NamedBackend::start("good"));
    bad.set_mode(mode);
    let (text, addr) = conf(
        &format!(
            "  server {} max_fails=1 fail_timeout={fail_timeout};\n  server {};",
            bad.addr, good.addr
        ),
        "",
    );
    (bad, good, text, addr)
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
fn an_invalid_head_counts_against_max_fails() {
    // nginx: error, timeout and invalid_header always count as unsuccessful
    // attempts, even when proxy_next_upstream does not retry them.
    let (bad, _good, text, addr) = one_failing(Mode::BadHead, "60s");
    let s = Sluice::start("invalid-head-fails", &text);
    let statuses: Vec<u16> = (0..6).map(|_| get_once(addr, "/").0).collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 502).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(bad.hits(), 1);
    // The warning follows the error line through the same log writer.
    let warn = "upstream server temporarily disabled while reading response header from upstream";
    wait_until(warn, || s.error_log().contains(warn));
    assert!(s
        .error_log()
        .contains("upstream sent invalid header while reading response header from upstream"));
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

/// A loopback address nothing listens on (connections are refused).
fn refused_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn refusing_server_is_passed_over() {
    let a = NamedBackend::start("a");
    let dead = refused_addr();
    let (text, addr) = conf(&format!("  server {dead};\n  server {};", a.addr), "");
    let s = Sluice::start("fo-refused", &text);
    for _ in 0..6 {
        assert_eq!(get_once(addr, "/"), (200, "a".to_string()));
    }
    assert!(
        s.error_log().contains("connect() failed"),
        "{}",
        s.error_log()
    );
    drop(s);
}

#[test]
fn hanging_server_times_out_and_is_passed_over() {
    let a = NamedBackend::start("a");
    let h = NamedBackend::start("h");
    h.set_mode(Mode::Hang);
    let (text, addr) = conf(
        &format!("  server {};\n  server {};", h.addr, a.addr),
        "   proxy_read_timeout 300ms;\n   proxy_next_upstream error timeout;\n",
    );
    let s = Sluice::start("fo-hang", &text);
    for _ in 0..4 {
        assert_eq!(get_once(addr, "/"), (200, "a".to_string()));
    }
    assert!(h.hits() >= 1);
    assert!(
        s.error_log().contains("upstream timed out"),
        "{}",
        s.error_log()
    );
    drop(s);
}

#[test]
fn server_answering_502_is_passed_over() {
    let a = NamedBackend::start("a");
    let bad = NamedBackend::start("bad");
    bad.set_mode(Mode::Status502);
    let (text, addr) = conf(
        &format!("  server {};\n  server {};", bad.addr, a.addr),
        "   proxy_next_upstream error timeout http_502;\n",
    );
    let s = Sluice::start("fo-502", &text);
    for _ in 0..6 {
        assert_eq!(get_once(addr, "/"), (200, "a".to_string()));
    }
    assert!(bad.hits() >= 1);
    drop(s);
}

#[test]
fn failed_server_is_skipped_for_fail_timeout_then_retried() {
    let (bad, _good, text, addr) = one_failing(Mode::Close, "2s");
    let s = Sluice::start("fo-fail-timeout", &text);
    // Round robin reaches bad within two requests; it fails and good answers.
    for _ in 0..2 {
        assert_eq!(get_once(addr, "/"), (200, "good".to_string()));
    }
    let failed_at = std::time::Instant::now();
    let hits = bad.hits();
    assert_eq!(hits, 1);
    for _ in 0..6 {
        assert_eq!(get_once(addr, "/"), (200, "good".to_string()));
    }
    // Only meaningful if those requests ran inside fail_timeout.
    if failed_at.elapsed() < std::time::Duration::from_millis(1500) {
        assert_eq!(bad.hits(), hits, "bad was tried inside its fail_timeout");
    }
    bad.set_mode(Mode::Ok);
    wait_until("bad tried again after fail_timeout", || {
        get_once(addr, "/").1 == "bad"
    });
    drop(s);
}

#[test]
fn backup_takes_over_and_steps_back() {
    let p1 = NamedBackend::start("p1");
    let p2 = NamedBackend::start("p2");
    let bk = NamedBackend::start("bk");
    p1.set_mode(Mode::Close);
    p2.set_mode(Mode::Close);
    let (text, addr) = conf(
        &format!(
            "  server {} fail_timeout=1s;\n  server {} fail_timeout=1s;\n  server {} backup;",
            p1.addr, p2.addr, bk.addr
        ),
        "",
    );
    let s = Sluice::start("fo-backup", &text);
    for _ in 0..5 {
        assert_eq!(get_once(addr, "/"), (200, "bk".to_string()));
    }
    p1.set_mode(Mode::Ok);
    p2.set_mode(Mode::Ok);
    wait_until("primaries serve again", || get_once(addr, "/").1 != "bk");
    let bk_hits = bk.hits();
    for _ in 0..10 {
        let (code, body) = get_once(addr, "/");
        assert_eq!(code, 200);
        assert_ne!(body, "bk");
    }
    assert_eq!(bk.hits(), bk_hits);
    drop(s);
}

#[test]
fn all_down_is_502_with_no_live_upstreams() {
    let p1 = NamedBackend::start("p1");
    let p2 = NamedBackend::start("p2");
    p1.set_mode(Mode::Close);
    p2.set_mode(Mode::Close);
    let (text, addr) = conf(&format!("  server {};\n  server {};", p1.addr, p2.addr), "");
    let s = Sluice::start("fo-all-down", &text);
    assert_eq!(get_once(addr, "/").0, 502);
    assert_eq!(get_once(addr, "/").0, 502);
    let log = s.error_log();
    assert!(log.contains("no live upstreams"), "{log}");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_websocket_tunnels_evenly() {
    use sluice::tools::echo::{serve_with, EchoOptions};
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for name in ["e1", "e2", "e3"] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo");
        addrs.push(l.local_addr().expect("addr"));
        let opts = EchoOptions {
            log: false,
            name: Some(name.to_string()),
        };
        tasks.push(tokio::spawn(serve_with(l, opts)));
    }
    let port = free_port();
    let servers: String = addrs.iter().map(|a| format!("  server {a};\n")).collect();
    let text = format!(
        "{}http {{\n access_log off;\n upstream ws {{\n  least_conn;\n{servers} }}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://ws;\n   proxy_http_version 1.1;\n   proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"Upgrade\";\n  }}\n }}\n}}\n",
        main_block()
    );
    let s = Sluice::start("ws-least-conn", &text);
    let mut open = Vec::new();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for _ in 0..300 {
        let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
            .await
            .expect("handshake");
        let name = resp
            .headers()
            .get("x-echo-server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        *counts.entry(name).or_default() += 1;
        // Held open, so least_conn counts it.
        open.push(ws);
    }
    for name in ["e1", "e2", "e3"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!((99..=101).contains(&n), "{counts:?}");
    }
    drop(open);
    drop(s);
    for t in tasks {
        t.abort();
    }
}

#[test]
fn reload_keeps_check_verdicts_and_pooled_connections() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let port = free_port();
    let text = format!(
        "{}http {{\n access_log off;\n upstream app {{\n  server {};\n  server {};\n  keepalive 4;\n  check interval=50 rise=2 fall=2 timeout=1000 type=http;\n  check_http_send \"GET /health HTTP/1.0\\r\\n\\r\\n\";\n }}\n server {{\n  listen 127.0.0.1:{port};\n  location /status {{ check_status json; }}\n  location / {{\n   proxy_pass http://app;\n{KEEPALIVE}  }}\n }}\n}}\n",
        main_block(),
        a.addr,
        b.addr
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = Sluice::start("reload-state", &text);
    wait_until("a up", || is(addr, a.addr, "up"));
    b.set_healthy(false);
    wait_until("b down", || is(addr, b.addr, "down"));
    let mut c = Client::connect(addr);
    for _ in 0..10 {
        assert_eq!(c.get("/", "").expect("response").2, "a");
    }
    let conns = a.proxied_conns();
    s.signal(libc::SIGHUP);
    wait_until("the new generation", || {
        get_once(addr, "/status").1.contains("\"generation\": 2")
    });
    // The verdict carried over: b is still down, no request reaches it.
    assert!(is(addr, b.addr, "down"));
    let before = b.hits();
    let mut c = Client::connect(addr);
    for _ in 0..10 {
        assert_eq!(c.get("/", "").expect("response").2, "a");
    }
    assert_eq!(b.hits(), before);
    // The keepalive cache carried over too: no new upstream connection.
    assert_eq!(a.proxied_conns(), conns);
    drop(s);
}

#[test]
fn reused_connection_failing_before_the_response_is_retried_fresh() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    a.set_mode(Mode::DropSecond);
    b.set_mode(Mode::DropSecond);
    let (text, addr) = conf(
        &format!(
            "  server {} max_fails=1 fail_timeout=30s;\n  server {} max_fails=1 fail_timeout=30s;\n  keepalive 8;",
            a.addr, b.addr
        ),
        KEEPALIVE,
    );
    let s = Sluice::start("ka-retry-fresh", &text);
    let mut c = Client::connect(addr);
    for i in 0..20 {
        let (status, _, _) = c.get("/", "").expect("response");
        assert_eq!(status, 200, "request {i}");
    }
    // Every request after the first on each peer met a dropped reused
    // connection; none counted as a peer failure or reached the client.
    assert!(a.hits() + b.hits() > 20);
    assert!(a.proxied_conns() >= 5 && b.proxied_conns() >= 5);
    let log = s.error_log();
    assert!(
        !log.contains("[error]") && !log.contains("temporarily disabled"),
        "{log}"
    );
    drop(s);
}
