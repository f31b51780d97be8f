//! WebSocket acceptance checks with real third-party peers through the real
//! binary: the nginx guide's Node `server.js` and npm's `wscat`, a Node `ws`
//! client (text, binary, 16 MiB, close codes, ping, subprotocol,
//! permessage-deflate), headless Chromium loading the echo page through
//! sluice, and raw sockets for disconnects, the idle timeout and the access
//! log line. The peers are installed by tests/peers/install.sh.

mod common;
mod interop_common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{main_block, temp_dir, Sluice};
use interop_common::*;

/// The guide's `websocket-example.conf`, verbatim but for its addresses,
/// inside an `http` block; `extra_loc` goes into its `location /`.
fn guide_conf(port: u16, upstream: SocketAddr, extra_http: &str, extra_loc: &str) -> String {
    let original = common::seed("websocket-example.conf");
    let conf = original
        .replace("192.168.100.10:8010", &upstream.to_string())
        .replace("listen 8020;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "proxy_set_header Connection \"Upgrade\";",
            &format!("proxy_set_header Connection \"Upgrade\";\n{extra_loc}"),
        );
    assert_eq!(
        conf.matches(&*upstream.to_string()).count(),
        1,
        "websocket-example.conf changed"
    );
    format!(
        "{}http {{\naccess_log logs/access.log;\n{extra_http}\n{conf}\n}}\n",
        main_block()
    )
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// `wscat -c URL -x MSG -w 1` with its stdin kept open until it exits (at
/// stdin EOF wscat would quit before the reply arrives).
fn wscat_execute(url: &str, msg: &str) -> String {
    let dir = temp_dir("wscat");
    let mut child = Command::new(wscat())
        .args(["-c", url, "-x", msg, "-w", "1"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(dir.join("out")).expect("out"))
        .stderr(std::fs::File::create(dir.join("err")).expect("err"))
        .spawn()
        .expect("spawn wscat");
    let stdin = child.stdin.take();
    let status = wait_bounded(&mut child, PEER_WAIT);
    drop(stdin);
    let out = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("err")).unwrap_or_default();
    assert!(status.success(), "wscat failed ({status}): {out}{err}");
    out
}

#[test]
fn guide_server_js_with_wscat_through_the_guide_config() {
    let dir = temp_dir("guide-wscat");
    let (_node, node_port) = start_guide_server(&dir);
    let port = common::free_port();
    let _s = Sluice::start(
        "guide-wscat",
        &guide_conf(port, loopback(node_port), "", ""),
    );
    let out = wscat_execute(&format!("ws://127.0.0.1:{port}/"), "hello sluice");
    assert!(
        out.lines()
            .any(|l| l.trim_start_matches("< ") == "Server received from client: hello sluice"),
        "wscat saw: {out:?}"
    );
    // The guide's server logged the message it got through sluice.
    common::wait_until("server.js's log line", || {
        common::read_file(&dir.join("server.out")).contains("Received from client: hello sluice")
    });
}

/// Runs the Node `ws` client checks (tests/interop_common/ws_client.js)
/// against `url` in `mode`; asserts every named check passed.
fn node_client(url: &str, mode: &str, checks: &[&str]) {
    let dir = temp_dir("node-client");
    let script = dir.join("client.js");
    std::fs::write(&script, include_str!("interop_common/ws_client.js")).expect("write client");
    let (status, out, err) = run_bounded(
        node().arg(&script).arg(url).arg(mode),
        &dir,
        Duration::from_secs(90),
    );
    assert!(
        status.success(),
        "node client failed ({status}):\n{out}\n{err}"
    );
    for c in checks {
        assert!(
            out.lines().any(|l| l == format!("ok {c}")),
            "check {c} did not run:\n{out}"
        );
    }
}

#[test]
fn node_ws_client_against_sluice_echo() {
    let (_echo, echo) = start_echo();
    let port = common::free_port();
    let _s = Sluice::start("node-echo", &guide_conf(port, echo, "", ""));
    node_client(
        &format!("ws://127.0.0.1:{port}/chat"),
        "echo",
        &[
            "subprotocol",
            "no-deflate",
            "text",
            "binary",
            "ping",
            "big",
            "client-close",
            "server-close",
        ],
    );
}

#[test]
fn node_ws_client_against_the_guide_server_js() {
    let dir = temp_dir("node-guide");
    let (_node, node_port) = start_guide_server(&dir);
    let port = common::free_port();
    let _s = Sluice::start("node-guide", &guide_conf(port, loopback(node_port), "", ""));
    node_client(
        &format!("ws://127.0.0.1:{port}/"),
        "guide",
        &[
            "subprotocol",
            "no-deflate",
            "text",
            "binary",
            "ping",
            "big",
            "client-close",
        ],
    );
}

#[test]
fn permessage_deflate_is_negotiated_end_to_end() {
    let dir = temp_dir("node-deflate");
    let (_node, upstream) = start_deflate_server(&dir);
    let port = common::free_port();
    let _s = Sluice::start("node-deflate", &guide_conf(port, upstream, "", ""));
    node_client(
        &format!("ws://127.0.0.1:{port}/"),
        "deflate",
        &[
            "deflate-header",
            "deflate-negotiated",
            "deflate-roundtrip",
            "deflate-compressed",
        ],
    );
}

#[test]
fn headless_chromium_talks_to_echo_through_sluice() {
    let (_echo, echo) = start_echo();
    let port = common::free_port();
    let _s = Sluice::start("chromium", &guide_conf(port, echo, "", ""));
    let dir = temp_dir("chromium");
    let want = "<li class=\"received\">Server received from client: hello</li>";
    let dom = interop_common::chromium_dom(&dir, &format!("http://127.0.0.1:{port}/"), &[], want);
    assert!(dom.contains("<li class=\"sent\">hello</li>"), "{dom}");
}

/// A client that disappears without a close frame: the upstream socket is
/// closed (EOF) long before any idle timer could fire.
fn client_vanishes(reset: bool) {
    let up = RawUpstream::start();
    let port = common::free_port();
    let _s = Sluice::start(
        "vanish",
        &guide_conf(port, up.addr, "", "proxy_read_timeout 300s;"),
    );
    let (mut client, _) = raw_ws_client(port, "/");
    let mut upstream = up.next();
    // The tunnel is up: a byte each way.
    client.write_all(b"c").expect("client write");
    let mut b = [0u8; 1];
    upstream.read_exact(&mut b).expect("upstream read");
    upstream.write_all(b"u").expect("upstream write");
    client.read_exact(&mut b).expect("client read");
    if reset {
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
    }
    drop(client);
    let got = read_outcome(&mut upstream);
    assert!(
        is_closed(&got),
        "upstream read after the client left: {got:?}"
    );
}

#[test]
fn client_closing_without_close_frame_closes_the_upstream() {
    client_vanishes(false);
}

#[test]
fn client_reset_closes_the_upstream() {
    client_vanishes(true);
}

#[test]
fn idle_tunnel_times_out_but_one_way_traffic_keeps_it_open() {
    let up = RawUpstream::start();
    let port = common::free_port();
    let s = Sluice::start(
        "idle",
        &guide_conf(port, up.addr, "", "proxy_read_timeout 1s;"),
    );
    let (mut idle_c, _) = raw_ws_client(port, "/idle");
    let mut idle_u = up.next();
    let (mut up_c, _) = raw_ws_client(port, "/client-talks");
    let mut up_u = up.next();
    let (mut down_c, _) = raw_ws_client(port, "/upstream-talks");
    let mut down_u = up.next();

    // Traffic every 300 ms for 3 s: from the client on one tunnel, from the
    // upstream on the other. nginx keeps both open.
    let start = Instant::now();
    let mut b = [0u8; 1];
    for i in 0..10u8 {
        up_c.write_all(&[i]).expect("client keeps writing");
        up_u.read_exact(&mut b).expect("upstream keeps reading");
        assert_eq!(b[0], i);
        down_u.write_all(&[i]).expect("upstream keeps writing");
        down_c.read_exact(&mut b).expect("client keeps reading");
        assert_eq!(b[0], i);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Meanwhile the idle tunnel was closed on both sides.
    let c = read_outcome(&mut idle_c);
    let u = read_outcome(&mut idle_u);
    assert!(is_closed(&c) && is_closed(&u), "idle tunnel: {c:?} {u:?}");
    // And the busy ones still carry bytes the other way after 3 s.
    assert!(start.elapsed() >= Duration::from_secs(3));
    up_u.write_all(b"!").expect("upstream answers");
    up_c.read_exact(&mut b).expect("client still reads");
    down_c.write_all(b"!").expect("client answers");
    down_u.read_exact(&mut b).expect("upstream still reads");
    common::wait_until("the timeout in the error log", || {
        s.error_log().contains(
            "upstream timed out (110: Connection timed out) while proxying upgraded connection",
        )
    });
}

#[test]
fn access_log_line_is_written_when_the_tunnel_ends() {
    let up = RawUpstream::start();
    let port = common::free_port();
    let http = "log_format ws '$request_uri $status $body_bytes_sent $request_time $upstream_addr';\naccess_log logs/ws.log ws;\nserver { listen 127.0.0.1:PORT2; location / { return 200 marker; } }";
    let port2 = common::free_port();
    let s = Sluice::start(
        "wslog",
        &guide_conf(
            port,
            up.addr,
            &http.replace("PORT2", &port2.to_string()),
            "",
        ),
    );
    let log = s.path("logs/ws.log");
    let (mut client, _) = raw_ws_client(port, "/ws");
    let opened = Instant::now();
    let mut upstream = up.next();
    let down = b"twelve bytes";
    upstream.write_all(down).expect("upstream write");
    let mut got = [0u8; 12];
    client.read_exact(&mut got).expect("client read");
    client.write_all(b"up").expect("client write");
    let mut b = [0u8; 2];
    upstream.read_exact(&mut b).expect("upstream read");

    // A plain request's line shows the writer has caught up; the open
    // tunnel has no line yet.
    let resp = common::raw_exchange(
        loopback(port2),
        b"GET /marker HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::status_of(&resp), 200);
    common::wait_until("the marker line", || {
        common::read_file(&log).contains("/marker 200")
    });
    assert!(
        !common::read_file(&log).contains("/ws "),
        "logged too early"
    );

    let held = opened.elapsed();
    client.shutdown(Shutdown::Both).expect("client close");
    drop(client);
    assert!(is_closed(&read_outcome(&mut upstream)));
    drop(upstream);
    common::wait_until("the tunnel's line", || {
        common::read_file(&log).contains("/ws ")
    });
    let text = common::read_file(&log);
    let line = text.lines().find(|l| l.starts_with("/ws ")).expect("line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    assert_eq!(f[1], "101", "{line}");
    assert_eq!(f[2], down.len().to_string(), "{line}");
    let request_time: f64 = f[3].parse().expect("request_time");
    assert!(f[3].contains('.') && f[3].split('.').nth(1).map(str::len) == Some(3));
    // The tunnel was open at least as long as the client held it.
    assert!(
        request_time + 0.001 >= held.as_secs_f64(),
        "{line} but held {held:?}"
    );
    assert_eq!(f[4], up.addr.to_string(), "{line}");
}
