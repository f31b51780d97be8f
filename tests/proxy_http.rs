//! The HTTP proxy through the real binary: what the upstream receives and
//! what the client gets, for nginx's rules.

mod common;

use std::net::SocketAddr;

use common::backend::{Backend, Reply};
use common::{main_block, raw_exchange, status_of, Sluice};

fn conf(port: u16, server_body: &str, http_extra: &str) -> String {
    format!(
        "{}http {{\n access_log logs/access.log;\n{http_extra}\n server {{\n  listen 127.0.0.1:{port};\n  server_name localhost;\n{server_body}\n }}\n}}\n",
        main_block()
    )
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    raw_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn body_of(resp: &[u8]) -> &[u8] {
    let i = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    &resp[i..]
}

#[test]
fn default_request_headers_are_nginx_s() {
    let b = Backend::ok("hello");
    let port = common::free_port();
    let s = Sluice::start(
        "defaults",
        &conf(
            port,
            &format!("location / {{ proxy_pass http://{}; }}", b.addr),
            "",
        ),
    );
    let resp = get(([127, 0, 0, 1], port).into(), "/a?x=1");
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(body_of(&resp), b"hello");
    let r = b.last();
    // proxy_http_version defaults to 1.0, Host is $proxy_host, Connection close.
    assert_eq!(r.request_line, "GET /a?x=1 HTTP/1.0");
    assert_eq!(r.header("host"), Some(b.addr.to_string().as_str()));
    assert_eq!(r.header("connection"), Some("close"));
    drop(s);
}

#[test]
fn proxy_set_header_templates_and_removal() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!(
        "location / {{\n proxy_pass http://{};\n proxy_http_version 1.1;\n proxy_set_header Host $host;\n proxy_set_header X-Real-IP $remote_addr;\n proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n proxy_set_header User-Agent \"\";\n}}",
        b.addr
    );
    let _s = Sluice::start("set-header", &conf(port, &loc, ""));
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t/1\r\nX-Forwarded-For: 10.0.0.1\r\nKeep-Alive: 5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200);
    let r = b.last();
    assert_eq!(r.request_line, "GET / HTTP/1.1");
    assert_eq!(r.header("host"), Some("localhost"));
    assert_eq!(r.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    // An empty value removes the header; hop-by-hop Keep-Alive never passes.
    assert_eq!(r.header("user-agent"), None);
    assert_eq!(r.header("keep-alive"), None);
}

#[test]
fn proxy_pass_with_uri_replaces_the_location_prefix() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!("location /app/ {{ proxy_pass http://{}/v2/; }}", b.addr);
    let _s = Sluice::start("uri-map", &conf(port, &loc, ""));
    let resp = get(([127, 0, 0, 1], port).into(), "/app/users?id=3");
    assert_eq!(status_of(&resp), 200);
    assert_eq!(b.last().request_line, "GET /v2/users?id=3 HTTP/1.0");
}

#[test]
fn request_body_reaches_the_upstream() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let _s = Sluice::start("body", &conf(port, &loc, ""));
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"POST /p HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(status_of(&resp), 200);
    let r = b.last();
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-length"), Some("5"));
}

#[test]
fn refused_upstream_is_502_and_logged() {
    let dead = common::free_port();
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://127.0.0.1:{dead}; }}");
    let s = Sluice::start("refused", &conf(port, &loc, ""));
    let resp = get(([127, 0, 0, 1], port).into(), "/");
    assert_eq!(status_of(&resp), 502);
    assert!(String::from_utf8_lossy(body_of(&resp)).contains("502 Bad Gateway"));
    drop(s);
}

#[test]
fn upstream_silent_past_read_timeout_is_504() {
    let b = Backend::start(Reply::Hang);
    let port = common::free_port();
    let loc = format!(
        "location / {{ proxy_pass http://{}; proxy_read_timeout 300ms; }}",
        b.addr
    );
    let _s = Sluice::start("read-timeout", &conf(port, &loc, ""));
    let resp = get(([127, 0, 0, 1], port).into(), "/");
    assert_eq!(status_of(&resp), 504);
}

#[test]
fn upstream_closing_without_answer_is_502() {
    let b = Backend::start(Reply::Close);
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let _s = Sluice::start("closed", &conf(port, &loc, ""));
    let resp = get(([127, 0, 0, 1], port).into(), "/");
    assert_eq!(status_of(&resp), 502);
}

#[test]
fn a_retry_sends_the_same_head_as_the_first_try() {
    // The first peer reads the request and closes: the request moves to the
    // second, whose head sluice makes anew rather than keeping a copy.
    let first = Backend::start(Reply::Close);
    let second = Backend::ok("two");
    let port = common::free_port();
    let body = "location / { proxy_pass http://pair; proxy_http_version 1.1;\n\
         proxy_set_header X-Fixed \"one\"; proxy_set_header X-Uri \"$request_uri/$host\";\n\
         proxy_set_header Accept \"\"; }";
    let http = format!(
        " upstream pair {{ server {}; server {}; }}",
        first.addr, second.addr
    );
    let s = Sluice::start("retry-head", &conf(port, body, &http));
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET /r?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Client: c\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(body_of(&resp), b"two");
    assert_eq!((first.count(), second.count()), (1, 1));
    let (a, b) = (first.last(), second.last());
    assert_eq!(a.request_line, "GET /r?q=1 HTTP/1.1");
    assert_eq!(b.request_line, a.request_line);
    assert_eq!(b.headers, a.headers);
    assert_eq!(a.header("x-fixed"), Some("one"));
    assert_eq!(a.header("x-uri"), Some("/r?q=1/localhost"));
    assert_eq!(a.header("x-client"), Some("c"));
    assert_eq!(a.header("accept"), None);
    drop(s);
}

#[test]
fn return_text_and_redirect() {
    let port = common::free_port();
    let body = "location /t { return 200 \"hi $request_method\"; }\n location /r { return 301 http://example.com/x; }";
    let _s = Sluice::start("return", &conf(port, body, ""));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let resp = get(addr, "/t");
    assert_eq!(status_of(&resp), 200);
    let resp = get(addr, "/r");
    assert_eq!(status_of(&resp), 301);
    assert!(String::from_utf8_lossy(&resp)
        .to_ascii_lowercase()
        .contains("location: http://example.com/x"));
}

#[test]
fn declared_body_over_client_max_body_size_is_413() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!(
        "location / {{ proxy_pass http://{}; client_max_body_size 10; }}",
        b.addr
    );
    let _s = Sluice::start("413", &conf(port, &loc, ""));
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(status_of(&resp), 413);
    assert_eq!(b.count(), 0);
}

#[test]
fn response_hop_by_hop_and_hidden_headers_are_dropped() {
    let b = Backend::start(Reply::Fixed(
        200,
        vec![
            ("X-Accel-Redirect".into(), "/secret".into()),
            ("X-App".into(), "yes".into()),
            ("Keep-Alive".into(), "timeout=5".into()),
        ],
        b"ok".to_vec(),
    ));
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let _s = Sluice::start("resp-headers", &conf(port, &loc, ""));
    let resp =
        String::from_utf8_lossy(&get(([127, 0, 0, 1], port).into(), "/")).to_ascii_lowercase();
    assert!(resp.contains("x-app: yes"), "{resp}");
    assert!(!resp.contains("x-accel-redirect"), "{resp}");
    assert!(!resp.contains("keep-alive: timeout"), "{resp}");
}

#[test]
fn request_smuggling_shapes_are_400_before_the_upstream() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let _s = Sluice::start("smuggle", &conf(port, &loc, ""));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for req in [
        &b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1x\r\n\r\nhello",
    ] {
        let resp = raw_exchange(addr, req);
        assert_eq!(status_of(&resp), 400, "{}", String::from_utf8_lossy(req));
    }
    assert_eq!(b.count(), 0);
}

#[test]
fn header_buffer_limits_give_414_and_400() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let http = "client_header_buffer_size 1k;\n large_client_header_buffers 2 2k;";
    let _s = Sluice::start("limits", &conf(port, &loc, http));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(3000)
    );
    let resp = raw_exchange(addr, long_uri.as_bytes());
    assert_eq!(status_of(&resp), 414);
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(3000)
    );
    let resp = raw_exchange(addr, long_header.as_bytes());
    assert_eq!(status_of(&resp), 400);
    assert!(String::from_utf8_lossy(&resp).contains("Request Header Or Cookie Too Large"));
    // Within the limits, keep-alive requests still pass the guard one after another.
    let two = "GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let resp = String::from_utf8_lossy(&raw_exchange(addr, two.as_bytes())).to_string();
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
    assert_eq!(b.count(), 2);
}

#[test]
fn a_silent_client_is_closed_without_an_answer() {
    let port = common::free_port();
    let http = "client_header_timeout 300ms;";
    let _s = Sluice::start(
        "header-timeout",
        &conf(port, "location / { return 200; }", http),
    );
    // A head that never completes: nginx closes the connection and answers nothing.
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET / HTTP/1.1\r\nHost: loc",
    );
    assert!(resp.is_empty(), "{}", String::from_utf8_lossy(&resp));
}

#[test]
fn an_idle_keep_alive_client_is_closed_after_keepalive_timeout() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    // In the second case the head timer, armed first, would fire before the
    // keep-alive deadline: it must be moved on, not obeyed.
    for (tag, http, keepalive) in [
        (
            "ka-short",
            "keepalive_timeout 300ms; client_header_timeout 60s;",
            300,
        ),
        (
            "ka-long",
            "keepalive_timeout 700ms; client_header_timeout 200ms;",
            700,
        ),
    ] {
        let port = common::free_port();
        let _s = Sluice::start(tag, &conf(port, "location / { return 200 ok; }", http));
        let start = Instant::now();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let two =
            "GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /2 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        c.write_all(two.as_bytes()).expect("write");
        let mut resp = Vec::new();
        // Ok only at the end of stream: the server closed the idle connection.
        c.read_to_end(&mut resp)
            .unwrap_or_else(|e| panic!("{tag}: not closed: {e}"));
        let resp = String::from_utf8_lossy(&resp);
        assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{tag}: {resp}");
        assert!(
            start.elapsed() >= Duration::from_millis(keepalive),
            "{tag}: closed after {:?}, before keepalive_timeout",
            start.elapsed()
        );
    }
}

#[test]
fn headers_with_underscores_are_ignored_unless_allowed() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{}; }}", b.addr);
    let _s = Sluice::start("underscores", &conf(port, &loc, ""));
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nX_Secret: 1\r\nX-Fine: 2\r\nConnection: close\r\n\r\n";
    assert_eq!(
        status_of(&raw_exchange(([127, 0, 0, 1], port).into(), req)),
        200
    );
    let r = b.last();
    assert_eq!(r.header("x_secret"), None);
    assert_eq!(r.header("x-fine"), Some("2"));

    let port2 = common::free_port();
    let _s2 = Sluice::start(
        "underscores-on",
        &conf(port2, &loc, "underscores_in_headers on;"),
    );
    assert_eq!(
        status_of(&raw_exchange(([127, 0, 0, 1], port2).into(), req)),
        200
    );
    assert_eq!(b.last().header("x_secret"), Some("1"));
}

#[test]
fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    use std::io::Write;
    let big = vec![b'z'; 64 << 20];
    let b = Backend::start(Reply::Fixed(200, vec![], big));
    // With reset_timedout_connection the unsent rest is dropped with a reset,
    // as in nginx; without it, what was queued arrives, then the end of stream.
    for reset in [false, true] {
        let port = common::free_port();
        let loc = format!(
            "location / {{ proxy_pass http://{}; send_timeout 300ms; proxy_buffering off; \
             reset_timedout_connection {}; }}",
            b.addr,
            if reset { "on" } else { "off" }
        );
        let s = Sluice::start("send-timeout", &conf(port, &loc, ""));
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("write");
        // The error log says when sluice gave up on the client (nginx logs it at info).
        common::wait_until("the send timeout in the error log", || {
            s.error_log().contains("client timed out")
        });
        let (got, end) = client_end(&mut c);
        assert!(
            got.len() < 64 << 20,
            "the whole body arrived: {}",
            got.len()
        );
        assert_eq!(is_reset(&end), reset, "{end:?}");
    }
}

#[test]
fn keepalive_requests_closes_after_the_last_allowed_request() {
    let port = common::free_port();
    let body = "keepalive_requests 2;\n location / { return 200 ok; }";
    let _s = Sluice::start("ka-requests", &conf(port, body, ""));
    // Three pipelined requests: the second answer says close, the third gets none.
    let three = "GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /2 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /3 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let resp = String::from_utf8_lossy(&raw_exchange(
        ([127, 0, 0, 1], port).into(),
        three.as_bytes(),
    ))
    .to_ascii_lowercase();
    assert_eq!(resp.matches("http/1.1 200").count(), 2, "{resp}");
    assert!(resp.contains("connection: close"), "{resp}");
}

#[test]
fn chunked_body_over_client_max_body_size_is_refused_while_streaming() {
    let b = Backend::ok("x");
    let port = common::free_port();
    let loc = format!(
        "location / {{ proxy_pass http://{}; proxy_http_version 1.1; client_max_body_size 10; }}",
        b.addr
    );
    let _s = Sluice::start("413-chunked", &conf(port, &loc, ""));
    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
    );
    // The body is counted while it streams; the upstream never gets all of it.
    assert!(b
        .requests
        .lock()
        .expect("lock")
        .iter()
        .all(|r| r.body.len() <= 10));
    let status = status_of(&resp);
    assert!(
        status == 413 || status == 0,
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

#[test]
fn worker_connections_caps_open_client_connections() {
    use std::io::{Read, Write};
    let port = common::free_port();
    let text = format!(
        "worker_processes 1;\nerror_log logs/error.log info;\npid logs/sluice.pid;\nevents {{ worker_connections 2; }}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; location / {{ return 200 ok; }} }} }}\n"
    );
    let _s = Sluice::start("worker-connections", &text);
    let idle1 = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let idle2 = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Both idle connections must be accepted before the third arrives.
    for c in [&idle1, &idle2] {
        let mut c = c.try_clone().expect("clone");
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 512];
        assert!(c.read(&mut buf).expect("read") > 0);
    }
    let mut third = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    // At the cap, accept waits: the third connection is not served while
    // both others stay open...
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    assert!(
        third.read(&mut buf).is_err(),
        "served above worker_connections"
    );
    // ...and is served once one of them closes.
    drop(idle1);
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = third.read_to_end(&mut got);
    assert_eq!(status_of(&got), 200);
}

#[test]
fn idle_upstream_keepalive_connections_close_after_keepalive_timeout() {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let mut w = s;
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect("write");
        // Wait for sluice to close the idle pooled connection.
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        let _ = tx.send(());
    });
    let port = common::free_port();
    let http =
        format!("upstream pooled {{ server {addr}; keepalive 4; keepalive_timeout 200ms; }}");
    let loc = "location / { proxy_pass http://pooled; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
    let _s = Sluice::start("pool-sweep", &conf(port, loc, &http));
    assert_eq!(status_of(&get(([127, 0, 0, 1], port).into(), "/")), 200);
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the idle upstream connection was never closed");
}

/// How an upstream connection ended, seen from the backend after it answered.
#[derive(Debug, PartialEq)]
enum UpstreamEnd {
    Fin,
    Reset,
}

/// A backend that answers each connection's request with `reply` and then
/// reads on, reporting how sluice ended the connection.
fn backend_reporting_ends(
    reply: &'static [u8],
) -> (SocketAddr, std::sync::mpsc::Receiver<UpstreamEnd>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut w = s;
                w.write_all(reply).expect("write");
                let mut rest = Vec::new();
                let end = match r.read_to_end(&mut rest) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => UpstreamEnd::Reset,
                    _ => UpstreamEnd::Fin,
                };
                let _ = tx.send(end);
            });
        }
    });
    (addr, rx)
}

#[test]
fn a_finished_upstream_connection_is_reset_so_sluice_keeps_no_time_wait() {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let (addr, ends) = backend_reporting_ends(REPLY);
    let port = common::free_port();
    let http =
        format!("upstream pooled {{ server {addr}; keepalive 4; keepalive_timeout 200ms; }}");
    // nginx's defaults (HTTP/1.0, `Connection: close`), the WebSocket recipe
    // (HTTP/1.1, `Connection: upgrade`, which does not close), and a cached
    // connection closed when it has been idle too long.
    let locs = format!(
        "location /default {{ proxy_pass http://{addr}; }}\n \
         location /recipe {{ proxy_pass http://{addr}; proxy_http_version 1.1; \
         proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; }}\n \
         location /pooled {{ proxy_pass http://pooled; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }}"
    );
    let _s = Sluice::start("upstream-reset", &conf(port, &locs, &http));
    for path in ["/default", "/recipe", "/pooled"] {
        let resp = get(([127, 0, 0, 1], port).into(), path);
        assert_eq!(status_of(&resp), 200, "{path}");
        assert_eq!(body_of(&resp), b"hello", "{path}");
        let end = ends
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the upstream connection was never closed");
        assert_eq!(end, UpstreamEnd::Reset, "{path}");
    }
}

#[test]
fn an_upstream_head_larger_than_proxy_buffer_size_is_a_502() {
    // nginx reads the response head into one proxy_buffer_size buffer (4k
    // by default here) and answers 502 when it does not fit.
    let reply = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(5000)
    );
    let (addr, _ends) = backend_reporting_ends(Box::leak(reply.into_bytes().into_boxed_slice()));
    let port = common::free_port();
    let locs = format!(
        "location /default {{ proxy_pass http://{addr}; }}\n \
         location /bigger {{ proxy_pass http://{addr}; proxy_buffer_size 8k; }}"
    );
    let s = Sluice::start("too-big-header", &conf(port, &locs, ""));
    let resp = get(([127, 0, 0, 1], port).into(), "/default");
    assert_eq!(status_of(&resp), 502);
    let line = "upstream sent too big header while reading response header from upstream";
    common::wait_until(line, || s.error_log().contains(line));
    let resp = get(([127, 0, 0, 1], port).into(), "/bigger");
    assert_eq!(status_of(&resp), 200);
    assert_eq!(body_of(&resp), b"ok");
}

#[test]
fn an_upstream_body_that_fails_is_logged_as_nginx_logs_it() {
    use std::io::{BufRead, BufReader, Write};
    // A backend that answers and closes: a body shorter than its length,
    // or chunks that are not chunks.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let (mut first, mut line) = (String::new(), String::new());
            let _ = r.read_line(&mut first);
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let reply: &[u8] = if first.contains("/chunked") {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"
            };
            let _ = s.write_all(reply);
        }
    });
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{addr}; }}");
    let s = Sluice::start("body-fails", &conf(port, &loc, ""));
    for (path, cut, what) in [
        (
            "/short",
            &b"ok"[..],
            "upstream prematurely closed connection while reading upstream",
        ),
        (
            "/chunked",
            &b"2\r\nok\r\n"[..],
            "upstream sent invalid chunked response while reading upstream",
        ),
    ] {
        // The client gets the head and what came of the body, then the
        // close, as from nginx: 2 of 10 bytes, or one chunk and no last one.
        let resp = get(([127, 0, 0, 1], port).into(), path);
        assert_eq!(status_of(&resp), 200, "{path}");
        assert_eq!(body_of(&resp), cut, "{path}");
        let want = format!(
            "{what}, client: 127.0.0.1, server: localhost, request: \"GET {path} HTTP/1.1\", upstream: \"http://{addr}{path}\""
        );
        common::wait_until(&want, || s.error_log().contains(&want));
        let log = s.error_log();
        let line = log.lines().find(|l| l.contains(&want));
        assert!(line.is_some_and(|l| l.contains(" [error] ")), "{log}");
    }
}

#[test]
fn an_upstream_connection_cut_mid_response_is_closed_with_fin() {
    // The response promises more than it sends: hyper has not seen the
    // exchange to its end when the client's connection goes, so the upstream
    // connection ends with an ordinary close.
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial";
    let (addr, ends) = backend_reporting_ends(REPLY);
    let port = common::free_port();
    let loc = format!("location / {{ proxy_pass http://{addr}; proxy_buffering off; }}");
    let _s = Sluice::start("upstream-fin", &conf(port, &loc, ""));
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut head = [0u8; 12];
        c.read_exact(&mut head).expect("the response head");
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    let end = ends
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the upstream connection was never closed");
    assert_eq!(end, UpstreamEnd::Fin);
}

/// How a connection sluice closed ended, for the client reading all it can.
fn client_end(c: &mut std::net::TcpStream) -> (Vec<u8>, std::io::Result<usize>) {
    use std::io::Read;
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok();
    let mut got = Vec::new();
    let end = c.read_to_end(&mut got);
    (got, end)
}

fn is_reset(end: &std::io::Result<usize>) -> bool {
    matches!(end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn reset_timedout_connection_resets_a_client_that_timed_out_in_a_head() {
    use std::io::Write;
    let port = common::free_port();
    let http =
        "client_header_timeout 300ms; keepalive_timeout 300ms; reset_timedout_connection on;";
    let _s = Sluice::start(
        "reset-head",
        &conf(port, "location / { return 200 ok; }", http),
    );
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // In the middle of a head: reset.
    let mut c = connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: loc").expect("write");
    let (got, end) = client_end(&mut c);
    assert!(got.is_empty() && is_reset(&end), "{got:?} {end:?}");
    // As in nginx, a connection that never sent a byte, and a keep-alive
    // connection idle between requests, are closed normally.
    let mut c = connect();
    let (got, end) = client_end(&mut c);
    assert!(got.is_empty() && matches!(end, Ok(0)), "{got:?} {end:?}");
    let mut c = connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let (got, end) = client_end(&mut c);
    assert_eq!(status_of(&got), 200);
    assert!(end.is_ok(), "{end:?}");
}

#[test]
fn a_client_that_stalls_mid_body_gets_no_answer_and_a_408_line() {
    use std::io::Write;
    let b = Backend::start(Reply::Hang);
    // As nginx: the connection closes without an answer, with a reset under
    // reset_timedout_connection.
    for reset in [false, true] {
        let port = common::free_port();
        // Streamed to an HTTP/1.1 upstream, and read whole first for HTTP/1.0.
        let locs = format!(
            "client_body_timeout 300ms; reset_timedout_connection {1};\n \
             location /stream {{ proxy_pass http://{0}; proxy_http_version 1.1; }}\n \
             location /whole {{ proxy_pass http://{0}; }}",
            b.addr,
            if reset { "on" } else { "off" }
        );
        let s = Sluice::start("body-timeout", &conf(port, &locs, ""));
        for (path, head, part) in [
            ("/stream", "Content-Length: 100", "0123456789"),
            ("/whole", "Transfer-Encoding: chunked", "5\r\nhello\r\n"),
        ] {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            write!(
                c,
                "POST {path} HTTP/1.1\r\nHost: localhost\r\n{head}\r\n\r\n{part}"
            )
            .expect("write");
            let (got, end) = client_end(&mut c);
            assert!(
                got.is_empty() && is_reset(&end) == reset && (reset || matches!(end, Ok(0))),
                "{path} (reset {reset}): {:?} {end:?}",
                String::from_utf8_lossy(&got)
            );
        }
        common::wait_until("two access log lines", || {
            common::read_file(&s.path("logs/access.log"))
                .lines()
                .count()
                == 2
        });
        let log = common::read_file(&s.path("logs/access.log"));
        for (line, path) in log.lines().zip(["/stream", "/whole"]) {
            assert!(
                line.contains(&format!("\"POST {path} HTTP/1.1\" 408 0 ")),
                "{line}"
            );
        }
        assert!(
            s.error_log().contains(
                "client timed out (110: Connection timed out) while reading client request body"
            ),
            "{}",
            s.error_log()
        );
    }
}
