//! HTTP/2 from clients through the real binary, with real third-party
//! HTTP/2 peers: curl (`--http2` over TLS with ALPN, `--http2-prior-knowledge`
//! on a plain port), h2load and nghttp (many streams on one connection; the
//! SETTINGS sluice sends), and for WebSocket over HTTP/2 (RFC 8441) to
//! `sluice echo` two clients: Python's `h2` + `wsproto`, and Node's `http2`;
//! headless Chromium loading the echo page over `https://` and its `wss://`
//! WebSocket (RFC 8441 on h2, HTTP/1.1 Upgrade without); flow control with a
//! stalled peer on either side of a WebSocket stream (tests/peers/h2ws_flow.py;
//! sluice's RSS from /proc). Upstreams speak HTTP/1.x. The peers are installed by
//! tests/peers/install.sh; certificates are made by rcgen.

mod common;
mod interop_common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::backend::{Backend, Reply};
use common::{main_block, temp_dir, Sluice};
use interop_common::{repo_path, run_bounded, start_echo, PEER_WAIT};

/// A private CA and an ECDSA certificate for a.test and localhost.
fn make_certs(dir: &Path) -> common::certs::Certs {
    common::certs::make(dir, &["a.test", "localhost"])
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn curl(dir: &Path, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS"]).args(args).stdin(Stdio::null());
    let (status, out, err) = run_bounded(&mut cmd, dir, PEER_WAIT);
    assert!(status.success(), "curl {args:?}: {err}");
    (out, err)
}

/// A location proxying WebSockets the nginx way, and one that does not.
fn locations(upstream: SocketAddr) -> String {
    format!(
        "location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Proto $server_protocol;
            proxy_set_header X-Http-Host $http_host;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}"
    )
}

#[test]
fn curl_http2_over_tls_reaches_an_http1_upstream_with_host_from_authority() {
    let dir = temp_dir("h2-tls");
    let certs = make_certs(&dir);
    let backend = Backend::ok("through h2");
    let (port, port2) = (common::free_port(), common::free_port());
    let conf = format!(
        "{main}http {{
    access_log logs/access.log;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name a.test;
        ssl_certificate {c};
        ssl_certificate_key {k};
        {locs}
    }}
    server {{
        listen 127.0.0.1:{port2} ssl;
        http2 on;
        ssl_certificate {c};
        ssl_certificate_key {k};
        location / {{ return 200 \"$server_protocol\\n\"; }}
    }}
}}
",
        main = main_block(),
        c = p(&certs.cert),
        k = p(&certs.key),
        locs = locations(backend.addr),
    );
    let s = Sluice::start("h2-tls", &conf);
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}/x?y=1");
    let (out, _) = curl(
        &dir,
        &[
            "--http2",
            "--cacert",
            &p(&certs.ca),
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &url,
        ],
    );
    assert_eq!(out, "through h2\n2");
    let r = backend.last();
    assert_eq!(r.request_line, "GET /x?y=1 HTTP/1.1");
    assert_eq!(r.header("host"), Some("a.test"));
    assert_eq!(
        r.header("x-http-host"),
        Some(format!("a.test:{port}").as_str())
    );
    assert_eq!(r.header("x-proto"), Some("HTTP/2.0"));
    assert_eq!(r.header("x-scheme"), Some("https"));
    assert_eq!(r.header("upgrade"), None);

    // A body with a length, and one without (curl streams stdin over h2
    // without Content-Length): the upstream gets it chunked.
    curl(
        &dir,
        &[
            "--http2",
            "--cacert",
            &p(&certs.ca),
            "--resolve",
            &resolve,
            "-d",
            "a=1&b=2",
            &url,
        ],
    );
    let r = backend.last();
    assert_eq!(r.request_line, "POST /x?y=1 HTTP/1.1");
    assert_eq!(r.header("content-length"), Some("7"));
    assert_eq!(r.body, b"a=1&b=2");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2",
        "--cacert",
        &p(&certs.ca),
        "--resolve",
        &resolve,
        "-T",
        "-",
        &url,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&[b'z'; 100_000]).expect("write");
    }
    let out = child.wait_with_output().expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = backend.last();
    assert_eq!(r.request_line, "PUT /x?y=1 HTTP/1.1");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 100_000);

    // HTTP/1.1 still works on the same address.
    let (out, _) = curl(
        &dir,
        &[
            "--http1.1",
            "--cacert",
            &p(&certs.ca),
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &url,
        ],
    );
    assert_eq!(out, "through h2\n1.1");

    // `http2 on;` in the server, as nginx 1.25 spells it.
    let url2 = format!("https://localhost:{port2}/");
    let (out, _) = curl(
        &dir,
        &[
            "--http2",
            "--cacert",
            &p(&certs.ca),
            "-w",
            "%{http_version}",
            &url2,
        ],
    );
    assert_eq!(out, "HTTP/2.0\n2");

    let log = std::fs::read_to_string(s.path("logs/access.log")).unwrap_or_default();
    assert!(log.contains("\"GET /x?y=1 HTTP/2.0\" 200"), "{log}");
}

fn plain_conf(port: u16, extra: &str, upstream: SocketAddr) -> String {
    format!(
        "{main}http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} http2;
        {extra}
        {locs}
        location /refused/ {{
            proxy_pass http://{upstream};
        }}
        location = /inline {{ return 200 \"$server_protocol\\n\"; }}
    }}
}}
",
        main = main_block(),
        locs = locations(upstream),
    )
}

#[test]
fn h2c_prior_knowledge_and_http1_share_a_plain_http2_port() {
    let dir = temp_dir("h2c");
    let backend = Backend::ok("h2c ok");
    let port = common::free_port();
    let _s = Sluice::start("h2c", &plain_conf(port, "", backend.addr));
    let url = format!("http://127.0.0.1:{port}/p");
    let (out, _) = curl(
        &dir,
        &["--http2-prior-knowledge", "-w", "\n%{http_version}", &url],
    );
    assert_eq!(out, "h2c ok\n2");
    let r = backend.last();
    assert_eq!(r.request_line, "GET /p HTTP/1.1");
    assert_eq!(r.header("host"), Some("127.0.0.1"));
    assert_eq!(
        r.header("x-http-host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(r.header("x-proto"), Some("HTTP/2.0"));
    assert_eq!(r.header("x-scheme"), Some("http"));

    let (out, _) = curl(&dir, &["--http1.1", "-w", "\n%{http_version}", &url]);
    assert_eq!(out, "h2c ok\n1.1");
    let inline = format!("http://127.0.0.1:{port}/inline");
    let (out, _) = curl(&dir, &["--http2-prior-knowledge", &inline]);
    assert_eq!(out, "HTTP/2.0\n");

    // Neither :authority nor Host: 400, as nginx answers HTTP/2 without a host.
    let script = format!(
        "import socket, h2.config, h2.connection, h2.events\n\
         s = socket.create_connection(('127.0.0.1', {port}), timeout=20)\n\
         c = h2.connection.H2Connection(h2.config.H2Configuration(validate_outbound_headers=False))\n\
         c.initiate_connection()\n\
         c.send_headers(1, [(':method', 'GET'), (':scheme', 'http'), (':path', '/inline')], end_stream=True)\n\
         s.sendall(c.data_to_send())\n\
         while True:\n\
         \x20   evs = c.receive_data(s.recv(65536))\n\
         \x20   s.sendall(c.data_to_send())\n\
         \x20   r = [e for e in evs if isinstance(e, h2.events.ResponseReceived)]\n\
         \x20   if r:\n\
         \x20       print(dict(r[0].headers)[b':status'].decode())\n\
         \x20       break\n"
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", &script]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "python: {err}");
    assert_eq!(out, "400\n");
}

#[test]
fn many_streams_on_one_connection_with_h2load_and_the_settings_sent() {
    let dir = temp_dir("h2load");
    let backend = Backend::ok("many");
    let port = common::free_port();
    let _s = Sluice::start(
        "h2load",
        &plain_conf(port, "http2_max_concurrent_streams 16;", backend.addr),
    );
    let url = format!("http://127.0.0.1:{port}/load");
    let mut cmd = Command::new("h2load");
    // At most as many streams at once as the server allows: streams opened
    // before its SETTINGS arrive beyond that would be refused.
    cmd.args(["-n", "200", "-c", "1", "-m", "16", &url]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "h2load: {out}\n{err}");
    assert!(
        out.contains("200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored"),
        "{out}"
    );
    assert!(out.contains("status codes: 200 2xx"), "{out}");
    assert_eq!(backend.count(), 200);

    // The SETTINGS frame: the stream limit and RFC 8441's connect protocol.
    let mut cmd = Command::new("nghttp");
    cmd.args(["-nv", &url]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "nghttp: {out}\n{err}");
    assert!(
        out.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):16"),
        "{out}"
    );
    assert!(out.contains("(0x08):1"), "{out}");
}

fn h2ws_client(dir: &Path, port: u16, tls: Option<&Path>, paths: &[&str]) -> String {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(repo_path("tests/peers/h2ws_client.py"))
        .args(["127.0.0.1", &port.to_string()]);
    if let Some(ca) = tls {
        cmd.args(["--tls", &p(ca)]);
    }
    cmd.args(paths);
    let (status, out, err) = run_bounded(&mut cmd, dir, PEER_WAIT);
    assert!(status.success(), "h2ws_client: {out}\n{err}");
    out
}

#[test]
fn websocket_over_http2_with_python_h2_to_sluice_echo() {
    let dir = temp_dir("h2ws");
    let certs = make_certs(&dir);
    let (_echo, echo) = start_echo();
    let refusing = Backend::start(Reply::Fixed(403, vec![], b"no".to_vec()));
    let plain = Backend::ok("not a websocket");
    let (port, tls_port) = (common::free_port(), common::free_port());
    let conf = format!(
        "{main}http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} http2;
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {c};
        ssl_certificate_key {k};
        {locs}
        location /deny {{
            proxy_pass http://{deny};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
        location /plain {{
            proxy_pass http://{plain};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
        location /nows {{
            proxy_pass http://{plain};
        }}
        location = /inline {{ return 200 \"inline\\n\"; }}
    }}
}}
",
        main = main_block(),
        c = p(&certs.cert),
        k = p(&certs.key),
        locs = locations(echo),
        deny = refusing.addr,
        plain = plain.addr,
    );
    let _s = Sluice::start("h2ws", &conf);
    let out = h2ws_client(
        &dir,
        port,
        None,
        &["/ws", "/deny", "/plain", "/nows", "/inline", "/ws"],
    );
    let lines: Vec<&str> = out.lines().collect();
    let expect_session = |at: usize| {
        assert!(
            lines[at].starts_with("/ws status=200 settings_connect=1"),
            "{out}"
        );
        assert_eq!(
            lines[at + 1],
            "text=Server received from client: hello over h2",
            "{out}"
        );
        assert_eq!(lines[at + 2], "binary=ok", "{out}");
        assert_eq!(lines[at + 3], "close=4001 bye", "{out}");
    };
    expect_session(0);
    // The upstream refused the upgrade: its status goes back as is.
    assert_eq!(lines[4], "/deny status=403 settings_connect=1", "{out}");
    // An upstream that answers 200 without switching: no tunnel.
    assert_eq!(lines[5], "/plain status=502 settings_connect=1", "{out}");
    // A location that does not proxy WebSockets.
    assert_eq!(lines[6], "/nows status=501 settings_connect=1", "{out}");
    // `return 200` is no tunnel either.
    assert_eq!(lines[7], "/inline status=501 settings_connect=1", "{out}");
    // The connection still serves a second WebSocket stream.
    expect_session(8);
    assert_eq!(lines[12], "done", "{out}");
    let r = refusing.last();
    assert_eq!(r.request_line, "GET /deny HTTP/1.1");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("upgrade"));
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(r.header("sec-websocket-protocol"), Some("chat, superchat"));
    assert_eq!(r.header("sec-websocket-key").map(str::len), Some(24));

    // Over TLS with ALPN h2.
    let out = h2ws_client(&dir, tls_port, Some(&certs.ca), &["/ws"]);
    let lines: Vec<&str> = out.lines().collect();
    expect_session_in(&lines, &out);

    // Node's own http2 client, a second implementation of the client side.
    let node = |path: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(repo_path("tests/peers/h2ws_node.js"))
            .args([&format!("http://127.0.0.1:{port}"), path]);
        let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
        assert!(status.success(), "node: {out}\n{err}");
        out
    };
    assert_eq!(
        node("/ws"),
        "status=200\ntext=Server received from client: hello from node\nclose=4002 node bye\n"
    );
    assert_eq!(node("/deny"), "status=403\n");
}

// Many WebSockets at once on one HTTP/2 connection (RFC 8441), to the
// guide's own server.js on Node's `ws` and to `sluice echo`: a message in
// flight on every stream before any reply is read, then a 16 MiB message
// checked byte for byte (SHA-256) while the others stay open. And the
// subprotocol and permessage-deflate a Node `ws` server agrees to reach the
// HTTP/2 client.
#[test]
fn many_websockets_multiplexed_on_one_http2_connection_to_node_ws_and_sluice_echo() {
    let dir = temp_dir("h2ws-multi");
    let (_node, node_port) = interop_common::start_guide_server(&dir);
    let (_echo, echo) = start_echo();
    let (_deflate, deflate) = interop_common::start_deflate_server(&dir);
    let port = common::free_port();
    let ws = |upstream: String| {
        format!(
            "proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;"
        )
    };
    let conf = format!(
        "{main}http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} http2;
        location /node {{ {node} }}
        location /echo {{ {echo} }}
        location /deflate {{ {deflate} }}
    }}
}}
",
        main = main_block(),
        node = ws(format!("127.0.0.1:{node_port}")),
        echo = ws(echo.to_string()),
        deflate = ws(deflate.to_string()),
    );
    let _s = Sluice::start("h2ws-multi", &conf);
    let out = h2ws_client(&dir, port, None, &["--offer", "/deflate"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("status=200 protocol=chat extensions=permessage-deflate"),
        "{out}"
    );
    assert_eq!(lines[1], "close=4001 bye", "{out}");
    for path in ["/node", "/echo"] {
        let out = h2ws_client(&dir, port, None, &["--multi", "16", path]);
        assert_eq!(out.trim(), "multi=16 echoes=ok big=ok closes=ok", "{path}");
    }
}

fn expect_session_in(lines: &[&str], out: &str) {
    assert!(
        lines[0].starts_with("/ws status=200 settings_connect=1"),
        "{out}"
    );
    assert_eq!(
        lines[1], "text=Server received from client: hello over h2",
        "{out}"
    );
    assert_eq!(lines[2], "binary=ok", "{out}");
    assert_eq!(lines[3], "close=4001 bye", "{out}");
    assert_eq!(lines[4], "done", "{out}");
}

#[test]
fn http2_extended_connect_off_advertises_no_connect_protocol() {
    let dir = temp_dir("h2ws-off");
    let backend = Backend::ok("x");
    let port = common::free_port();
    let _s = Sluice::start(
        "h2ws-off",
        &plain_conf(port, "http2_extended_connect off;", backend.addr),
    );
    let mut cmd = Command::new("nghttp");
    cmd.args(["-nv", &format!("http://127.0.0.1:{port}/inline")]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "nghttp: {out}\n{err}");
    assert!(!out.contains("(0x08):1"), "{out}");
}

/// A Python h2 client that made one request and waits for a GOAWAY.
fn goaway_watcher(port: u16) -> (interop_common::Proc, interop_common::Lines) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo_path("tests/peers/h2ws_client.py"))
        .args(["127.0.0.1", &port.to_string(), "--goaway", "/inline"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let lines = interop_common::Lines::new(child.stdout.take().expect("stdout"));
    lines.wait_for("ready");
    (interop_common::Proc(Some(child)), lines)
}

#[test]
fn goaway_on_reload_and_on_shutdown() {
    let dir = temp_dir("h2-goaway");
    let backend = Backend::ok("x");
    let port = common::free_port();
    let mut s = Sluice::start("h2-goaway", &plain_conf(port, "", backend.addr));

    // A reload retires the connection's configuration: GOAWAY, no error.
    let (mut proc, lines) = goaway_watcher(port);
    s.signal(libc::SIGHUP);
    let line = lines.wait_for("goaway");
    assert!(line.starts_with("goaway error=0 last_stream="), "{line}");
    interop_common::wait_bounded(proc.0.as_mut().expect("child"), PEER_WAIT);
    // New connections are served by the new configuration.
    let url = format!("http://127.0.0.1:{port}/inline");
    let (out, _) = curl(&dir, &["--http2-prior-knowledge", &url]);
    assert_eq!(out, "HTTP/2.0\n");

    // Shutdown (QUIT): GOAWAY, then sluice exits.
    let (mut proc, lines) = goaway_watcher(port);
    let status = s.quit();
    let line = lines.wait_for("goaway");
    assert!(line.starts_with("goaway error=0"), "{line}");
    interop_common::wait_bounded(proc.0.as_mut().expect("child"), PEER_WAIT);
    assert!(status.success());
}

#[test]
fn goaway_after_keepalive_requests_and_keepalive_timeout() {
    let backend = Backend::ok("x");
    let port = common::free_port();
    let _s = Sluice::start(
        "h2-kareq",
        &plain_conf(port, "keepalive_requests 1;", backend.addr),
    );
    let (mut proc, lines) = goaway_watcher(port);
    let line = lines.wait_for("goaway");
    assert!(line.starts_with("goaway error=0"), "{line}");
    interop_common::wait_bounded(proc.0.as_mut().expect("child"), PEER_WAIT);

    let port = common::free_port();
    let _s = Sluice::start(
        "h2-katime",
        &plain_conf(port, "keepalive_timeout 1s;", backend.addr),
    );
    let (mut proc, lines) = goaway_watcher(port);
    let line = lines.wait_for("goaway");
    assert!(line.starts_with("goaway error=0"), "{line}");
    interop_common::wait_bounded(proc.0.as_mut().expect("child"), PEER_WAIT);
}

#[test]
fn large_bodies_both_ways_through_the_flow_control_windows() {
    let dir = temp_dir("h2-big");
    let body: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    let backend = Backend::start(Reply::Fixed(200, vec![], body.clone()));
    let port = common::free_port();
    let _s = Sluice::start(
        "h2-big",
        &plain_conf(port, "client_max_body_size 16m;", backend.addr),
    );
    let up = dir.join("up.bin");
    std::fs::write(&up, &body).unwrap();
    let down = dir.join("down.bin");
    let url = format!("http://127.0.0.1:{port}/big");
    let data = format!("@{}", p(&up));
    curl(
        &dir,
        &[
            "--http2-prior-knowledge",
            "--data-binary",
            &data,
            "-o",
            &p(&down),
            &url,
        ],
    );
    let r = backend.last();
    assert_eq!(r.header("content-length"), Some("6291456"));
    assert!(r.body == body, "upload differs");
    assert!(std::fs::read(&down).unwrap() == body, "download differs");
}

#[test]
fn send_timeout_cuts_off_a_client_that_stops_reading() {
    use std::io::Write;
    let body = vec![b'b'; 16 << 20];
    let backend = Backend::start(Reply::Fixed(200, vec![], body));
    let port = common::free_port();
    let s = Sluice::start(
        "h2-stall",
        &plain_conf(port, "keepalive_timeout 1s; send_timeout 1s;", backend.addr),
    );
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo_path("tests/peers/h2_stall.py"))
        .args(["127.0.0.1", &port.to_string(), "/big"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let lines = interop_common::Lines::new(child.stdout.take().expect("stdout"));
    lines.wait_for("sent");
    common::wait_until("the send_timeout line", || {
        s.error_log()
            .contains("client timed out (110: Connection timed out) while sending to client")
    });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    let line = lines.wait_for("closed after ");
    let got: usize = line["closed after ".len()..]
        .trim_end_matches(" bytes")
        .parse()
        .expect("count");
    assert!(got < 16 << 20, "{line}");
    interop_common::wait_bounded(&mut child, PEER_WAIT);
}

/// Frames of the flow-control tests: 1024 binary WebSocket frames of 64 KiB
/// (64 MiB of payload), frame k's byte j being (k + j) % 251; client frames
/// are masked with the zero key (tests/peers/h2ws_flow.py makes the same).
const FLOW_FRAMES: usize = 1024;

fn flow_stream(masked: bool) -> Vec<u8> {
    const PAYLOAD: usize = 65536;
    let base: Vec<u8> = (0..PAYLOAD + 251).map(|j| (j % 251) as u8).collect();
    let mut out = Vec::with_capacity(FLOW_FRAMES * (PAYLOAD + 14));
    for k in 0..FLOW_FRAMES {
        out.extend_from_slice(&[0x82, if masked { 0xff } else { 0x7f }]);
        out.extend_from_slice(&(PAYLOAD as u64).to_be_bytes());
        if masked {
            out.extend_from_slice(&[0; 4]);
        }
        out.extend_from_slice(&base[k % 251..k % 251 + PAYLOAD]);
    }
    out
}

/// Bound on the growth of sluice's RSS while a stream is stalled: the
/// windows and buffers configured (256 KiB connection window, 64 KiB stream
/// window, 32 KiB send buffer, 2 x 8 KiB tunnel buffers) with ample room
/// for the allocator, and an eighth of what the upstream or client has to send.
const FLOW_RSS_BOUND_KIB: u64 = 8 << 10;

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .expect("sluice's VmRSS")
}

/// Bound on moving the 64 MiB through a debug build and Python's h2.
const FLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(240);

fn flow_client(port: u16, mode: &str) -> (interop_common::Proc, interop_common::Lines) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(repo_path("tests/peers/h2ws_flow.py"))
        .args(["127.0.0.1", &port.to_string(), "/ws", mode])
        .arg(FLOW_FRAMES.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let lines = interop_common::Lines::new(child.stdout.take().expect("stdout"));
    (interop_common::Proc(Some(child)), lines)
}

fn flow_conf(port: u16, upstream: SocketAddr) -> String {
    plain_conf(
        port,
        "proxy_read_timeout 300s; proxy_send_timeout 300s; send_timeout 300s;",
        upstream,
    )
    .replace(
        "access_log off;",
        "access_log off;\n    http2_recv_buffer_size 256k;",
    )
}

/// One flow test's start: sluice in front of a raw upstream, the Python
/// client in `mode` with its WebSocket open, the upstream's end of the
/// tunnel, and sluice's RSS at that point.
struct Flow {
    sluice: Sluice,
    client: interop_common::Proc,
    lines: interop_common::Lines,
    upstream: std::net::TcpStream,
    rss_before: u64,
}

fn flow_start(tag: &str, mode: &str) -> Flow {
    let up = interop_common::RawUpstream::start();
    let port = common::free_port();
    let sluice = Sluice::start(tag, &flow_conf(port, up.addr));
    let (client, lines) = flow_client(port, mode);
    lines.wait_for("open");
    let upstream = up.next();
    let rss_before = rss_kib(sluice.pid());
    Flow {
        sluice,
        client,
        lines,
        upstream,
        rss_before,
    }
}

#[test]
fn websocket_over_http2_client_giving_no_window_back_holds_the_upstream() {
    use std::io::{ErrorKind, Write};
    let Flow {
        sluice: s,
        client: mut proc,
        lines,
        mut upstream,
        rss_before: before,
    } = flow_start("h2ws-flow-down", "down");

    // The upstream pushes 64 MiB; a write that cannot progress for a second
    // (SO_SNDTIMEO) reports how far it got, once.
    let data = flow_stream(false);
    let total = data.len();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        upstream
            .set_write_timeout(Some(std::time::Duration::from_secs(1)))
            .expect("timeout");
        let deadline = std::time::Instant::now() + FLOW_WAIT;
        let (mut sent, mut reported) = (0, false);
        while sent < data.len() {
            match upstream.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !reported {
                        reported = true;
                        let _ = tx.send(sent);
                    }
                    assert!(std::time::Instant::now() < deadline, "upstream stuck");
                }
                Err(e) => panic!("upstream write: {e}"),
            }
        }
        let _ = tx.send(sent);
        upstream
    });
    let line = lines.wait_for("window-full ");
    let stalled_at = rx
        .recv_timeout(FLOW_WAIT)
        .expect("the upstream never blocked");
    let grown = rss_kib(s.pid()).saturating_sub(before);
    eprintln!("stalled: upstream wrote {stalled_at} bytes, sluice grew {grown} KiB ({line})");
    assert!(
        stalled_at < total / 4,
        "the upstream wrote {stalled_at} of {total} bytes to a stalled stream ({line})"
    );
    assert!(
        grown < FLOW_RSS_BOUND_KIB,
        "sluice grew by {grown} KiB holding a stalled stream (upstream wrote {stalled_at})"
    );

    // The client gives its window back: every byte arrives, in order.
    let child = proc.0.as_mut().expect("child");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    let line = lines.wait_for_within("got ", FLOW_WAIT);
    assert_eq!(line, format!("got {total} ok"));
    assert_eq!(rx.recv_timeout(FLOW_WAIT).expect("writer done"), total);
    drop(writer.join().expect("writer"));
    interop_common::wait_bounded(child, PEER_WAIT);
}

#[test]
fn websocket_over_http2_upstream_not_reading_holds_the_client() {
    use std::io::Read;
    let Flow {
        sluice: s,
        client: mut proc,
        lines,
        mut upstream,
        rss_before: before,
    } = flow_start("h2ws-flow-up", "up");
    let want = flow_stream(true);

    // The upstream reads nothing until the client saw no window for a second.
    let line = lines.wait_for_within("blocked ", FLOW_WAIT);
    let sent: usize = line["blocked ".len()..].parse().expect("count");
    let grown = rss_kib(s.pid()).saturating_sub(before);
    eprintln!("stalled: client sent {sent} bytes, sluice grew {grown} KiB");
    assert!(
        sent < want.len() / 4,
        "the client sent {sent} of {} bytes to an upstream not reading",
        want.len()
    );
    assert!(
        grown < FLOW_RSS_BOUND_KIB,
        "sluice grew by {grown} KiB holding a stalled stream (client sent {sent})"
    );

    // The upstream reads: every byte arrives, in order.
    upstream.set_read_timeout(Some(FLOW_WAIT)).expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < want.len() {
        let n = upstream.read(&mut buf).expect("upstream read");
        assert!(n > 0, "upstream saw EOF after {at} bytes");
        assert!(
            buf[..n] == want[at..at + n],
            "bytes differ in {at}..{}",
            at + n
        );
        at += n;
    }
    let line = lines.wait_for_within("sent ", FLOW_WAIT);
    assert_eq!(line, format!("sent {}", want.len()));
    // The upstream closes: the stream ends.
    drop(upstream);
    lines.wait_for("ended");
    interop_common::wait_bounded(proc.0.as_mut().expect("child"), PEER_WAIT);
}

/// base64(sha256(SubjectPublicKeyInfo)) of a certificate, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it (openssl computes it).
fn spki_hash(dir: &Path, cert: &Path) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        p(cert)
    ));
    let (status, out, err) = run_bounded(&mut cmd, dir, PEER_WAIT);
    assert!(status.success() && !out.trim().is_empty(), "openssl: {err}");
    out.trim().to_string()
}

#[test]
fn headless_chromium_over_https_and_wss_to_echo_through_sluice() {
    let dir = temp_dir("h2-chromium");
    let certs = make_certs(&dir);
    let spki = spki_hash(&dir, &certs.cert);
    let (_echo, echo) = start_echo();
    let (h2_port, h1_port) = (common::free_port(), common::free_port());
    let conf = format!(
        "{main}http {{
    log_format proto '$server_port $request $status $server_protocol $http_upgrade';
    access_log logs/access.log proto;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    ssl_certificate {c};
    ssl_certificate_key {k};
    server {{
        listen 127.0.0.1:{h2_port} ssl;
        http2 on;
        {locs}
    }}
    server {{
        listen 127.0.0.1:{h1_port} ssl;
        {locs}
    }}
}}
",
        main = main_block(),
        c = p(&certs.cert),
        k = p(&certs.key),
        locs = locations(echo),
    );
    let s = Sluice::start("h2-chromium", &conf);
    let want = "<li class=\"received\">Server received from client: hello</li>";
    for port in [h2_port, h1_port] {
        let dom = interop_common::chromium_dom(
            &dir,
            &format!("https://localhost:{port}/"),
            &[format!("--ignore-certificate-errors-spki-list={spki}")],
            want,
        );
        assert!(dom.contains("<li class=\"sent\">hello</li>"), "{dom}");
    }
    // The access log tells how Chromium spoke. With `http2 on` it loads
    // the page over h2 (ALPN) and opens the WebSocket on that connection
    // with an extended CONNECT (RFC 8441), answered 200; without, HTTP/1.1
    // and the 101 of an Upgrade.
    let lines = [
        format!("{h2_port} GET / HTTP/2.0 200 HTTP/2.0 -"),
        format!("{h2_port} GET / HTTP/2.0 200 HTTP/2.0 websocket"),
        format!("{h1_port} GET / HTTP/1.1 200 HTTP/1.1 -"),
        format!("{h1_port} GET / HTTP/1.1 101 HTTP/1.1 websocket"),
    ];
    common::wait_until("the page and WebSocket lines", || {
        let log = common::read_file(&s.path("logs/access.log"));
        lines.iter().all(|want| log.lines().any(|l| l == want))
    });
    let log = common::read_file(&s.path("logs/access.log"));
    assert!(
        !log.contains(&format!("{h2_port} GET / HTTP/1.1")),
        "Chromium fell back to HTTP/1.1 on the h2 server:\n{log}"
    );
}

/// The SETTINGS_MAX_CONCURRENT_STREAMS a TLS connection with SNI `name`
/// (none: no SNI) gets, read with Python's h2.
fn max_streams_by_sni(dir: &Path, port: u16, ca: &Path, name: Option<&str>) -> String {
    let script = format!(
        "import socket, ssl, h2.config, h2.connection, h2.events, h2.settings\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         ctx.check_hostname = False\n\
         ctx.set_alpn_protocols(['h2'])\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=20), server_hostname={name})\n\
         assert s.selected_alpn_protocol() == 'h2'\n\
         c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))\n\
         c.initiate_connection()\n\
         s.sendall(c.data_to_send())\n\
         while True:\n\
         \x20   data = s.recv(65536)\n\
         \x20   assert data, 'closed'\n\
         \x20   evs = [e for e in c.receive_data(data) if isinstance(e, h2.events.RemoteSettingsChanged)]\n\
         \x20   if evs:\n\
         \x20       v = evs[0].changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)\n\
         \x20       print(v.new_value if v else 'none')\n\
         \x20       break\n",
        ca = p(ca),
        name = name.map_or("None".to_string(), |n| format!("{n:?}")),
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", &script]);
    let (status, out, err) = run_bounded(&mut cmd, dir, PEER_WAIT);
    assert!(status.success(), "python: {err}");
    out.trim().to_string()
}

/// As nginx takes a TLS connection's HTTP/2 settings from the server its
/// SNI chose (the SSL servername callback switches the connection's
/// configuration before ALPN and the h2 preface), so does sluice.
#[test]
fn http2_settings_come_from_the_server_sni_chose() {
    let dir = temp_dir("h2-sni");
    let certs = make_certs(&dir);
    let port = common::free_port();
    let conf = format!(
        "{main}http {{
    access_log off;
    ssl_certificate {c};
    ssl_certificate_key {k};
    server {{
        listen 127.0.0.1:{port} ssl default_server;
        http2 on;
        server_name a.test;
        http2_max_concurrent_streams 16;
        location / {{ return 200 a; }}
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        http2 on;
        server_name b.test;
        http2_max_concurrent_streams 7;
        location / {{ return 200 b; }}
    }}
}}
",
        main = main_block(),
        c = p(&certs.cert),
        k = p(&certs.key),
    );
    let _s = Sluice::start("h2-sni", &conf);
    let got = |name| max_streams_by_sni(&dir, port, &certs.ca, name);
    assert_eq!(got(Some("b.test")), "7");
    assert_eq!(got(Some("B.TEST")), "7");
    assert_eq!(got(Some("a.test")), "16");
    // An unknown name and no SNI at all: the default server's.
    assert_eq!(got(Some("c.test")), "16");
    assert_eq!(got(None), "16");
}
