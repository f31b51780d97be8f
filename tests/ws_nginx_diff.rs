//! The same WebSocket cases through Debian's nginx and through sluice, with
//! the same configuration (the guide's `websocket-example.conf`): the
//! handshake response headers, a refused upgrade, an unrequested `101`, and
//! close frames both ways must come out the same.

mod common;
mod interop_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::backend::{Backend, Reply};
use common::nginx::Nginx;
use common::{temp_dir, wait_until, Sluice};
use interop_common::*;

/// The guide's config with its addresses substituted, plus the temp paths
/// nginx needs under its prefix (sluice accepts and ignores them).
fn conf(pid: &str, port: u16, upstream: SocketAddr) -> String {
    conf_with(pid, port, upstream, "access_log logs/access.log;")
}

fn conf_with(pid: &str, port: u16, upstream: SocketAddr, log: &str) -> String {
    let guide = common::seed("websocket-example.conf")
        .replace("192.168.100.10:8010", &upstream.to_string())
        .replace("listen 8020;", &format!("listen 127.0.0.1:{port};"));
    format!(
        "worker_processes 1;\nerror_log logs/error.log info;\npid logs/{pid};\nevents {{ worker_connections 1024; }}\nhttp {{\n{log}\nclient_body_temp_path tmp/body;\nproxy_temp_path tmp/proxy;\nfastcgi_temp_path tmp/fastcgi;\nuwsgi_temp_path tmp/uwsgi;\nscgi_temp_path tmp/scgi;\n{guide}\n}}\n"
    )
}

/// Debian's nginx on the guide's config; `log` is its access log line.
/// Its prefix (`n.path(..)`) holds the access log.
fn start_nginx(port: u16, upstream: SocketAddr, log: &str) -> Nginx {
    let prefix = temp_dir("nginx");
    let mut n = Nginx::spawn(prefix, &conf_with("nginx.pid", port, upstream, log));
    n.ready("nginx.pid");
    n
}

/// nginx and sluice, each on its own port, in front of `upstream`.
struct Pair {
    nginx_port: u16,
    sluice_port: u16,
    _nginx: Nginx,
    sluice: Sluice,
}

fn pair(upstream: SocketAddr) -> Pair {
    let nginx_port = common::free_port();
    let sluice_port = common::free_port();
    let nginx = start_nginx(nginx_port, upstream, "access_log logs/access.log;");
    let sluice = Sluice::start("ws-diff", &conf("sluice.pid", sluice_port, upstream));
    Pair {
        nginx_port,
        sluice_port,
        _nginx: nginx,
        sluice,
    }
}

/// Sends `req` and reads the response head; the socket is returned for
/// what follows.
fn exchange(port: u16, req: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(PEER_WAIT)).ok();
    s.write_all(req.as_bytes()).expect("send");
    let head = read_head(&mut s);
    (s, head)
}

fn handshake(port: u16) -> String {
    handshake_with(port, "")
}

fn handshake_with(port: u16, extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat.v2, chat.v1\r\n{extra}\r\n"
    )
}

/// Status line and headers, lower-cased names, sorted, without the ones
/// each server makes up (Date, Server).
fn normalise(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status = lines.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(n, _)| n != "date" && n != "server")
        .collect();
    headers.sort();
    (status, headers)
}

fn same_handshake(upstream: SocketAddr) -> (String, Vec<(String, String)>) {
    same_handshake_with(upstream, "")
}

fn same_handshake_with(upstream: SocketAddr, extra: &str) -> (String, Vec<(String, String)>) {
    let p = pair(upstream);
    let (_a, from_nginx) = exchange(p.nginx_port, &handshake_with(p.nginx_port, extra));
    let (_b, from_sluice) = exchange(p.sluice_port, &handshake_with(p.sluice_port, extra));
    let (n, s) = (normalise(&from_nginx), normalise(&from_sluice));
    assert_eq!(n, s, "nginx:\n{from_nginx}\nsluice:\n{from_sluice}");
    assert!(n.0.starts_with("HTTP/1.1 101"), "{from_nginx}");
    n
}

#[test]
fn handshake_response_headers_match_nginx_with_sluice_echo() {
    let (_echo, echo) = start_echo();
    let (_, headers) = same_handshake(echo);
    assert!(headers.contains(&("sec-websocket-protocol".into(), "chat.v2".into())));
}

#[test]
fn handshake_response_headers_match_nginx_with_the_guide_server_js() {
    let dir = temp_dir("diff-guide");
    let (_node, port) = start_guide_server(&dir);
    let (_, headers) = same_handshake(([127, 0, 0, 1], port).into());
    assert!(headers.contains(&(
        "sec-websocket-accept".into(),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
    )));
}

#[test]
fn handshake_response_headers_match_nginx_with_permessage_deflate() {
    let dir = temp_dir("diff-deflate");
    let (_node, upstream) = start_deflate_server(&dir);
    let (_, headers) = same_handshake_with(
        upstream,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "sec-websocket-extensions" && v.starts_with("permessage-deflate")),
        "{headers:?}"
    );
}

/// The whole response to `req`, read until the proxy closes or the body
/// announced by Content-Length is in.
fn whole_response(port: u16, req: &str) -> (String, Vec<u8>) {
    let (mut s, head) = exchange(port, req);
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (head, body)
}

#[test]
fn refused_upgrade_is_relayed_like_nginx() {
    let b = Backend::start(Reply::Fixed(
        403,
        vec![("X-Reason".into(), "not you".into())],
        b"forbidden".to_vec(),
    ));
    let p = pair(b.addr);
    let (nh, nb) = whole_response(p.nginx_port, &handshake(p.nginx_port));
    let (sh, sb) = whole_response(p.sluice_port, &handshake(p.sluice_port));
    let (n, s) = (normalise(&nh), normalise(&sh));
    // nginx spells out HTTP/1.1's default `Connection: keep-alive`, hyper
    // leaves it implied; both keep the connection (checked below).
    let mut n_headers = n.1.clone();
    n_headers.retain(|(k, v)| !(k == "connection" && v == "keep-alive"));
    assert_eq!(
        (&n.0, &n_headers),
        (&s.0, &s.1),
        "nginx:\n{nh}\nsluice:\n{sh}"
    );
    assert_eq!(nb, sb);
    assert!(nh.starts_with("HTTP/1.1 403"), "{nh}");
    assert_eq!(sb, b"forbidden");
    for port in [p.nginx_port, p.sluice_port] {
        assert_eq!(keeps_alive_after_refusal(port), "HTTP/1.1 403 Status");
    }
}

/// After a refused upgrade the client connection stays usable: a second
/// request on it gets its own answer. Returns that answer's status line.
fn keeps_alive_after_refusal(port: u16) -> String {
    let req = handshake(port);
    let (mut s, head) = exchange(port, &req);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut body = [0u8; 9];
    s.read_exact(&mut body).expect("body");
    s.write_all(req.as_bytes()).expect("second request");
    let again = read_head(&mut s);
    again.lines().next().unwrap_or_default().to_string()
}

/// nginx 1.22 relays an upstream's `101` to a client that did not ask for
/// an upgrade (it only tunnels when the client sent `Upgrade`); sluice
/// answers 502 instead, as documented in docs/compat.md. This pins both
/// outcomes so a change on either side is noticed.
#[test]
fn unrequested_101_nginx_relays_it_sluice_answers_502() {
    let b = Backend::start(Reply::Fixed(
        101,
        vec![("Upgrade".into(), "websocket".into())],
        vec![],
    ));
    let p = pair(b.addr);
    let req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let from_nginx = common::raw_exchange(([127, 0, 0, 1], p.nginx_port).into(), req.as_bytes());
    let from_sluice = common::raw_exchange(([127, 0, 0, 1], p.sluice_port).into(), req.as_bytes());
    assert_eq!(
        common::status_of(&from_nginx),
        101,
        "{}",
        String::from_utf8_lossy(&from_nginx)
    );
    assert_eq!(
        common::status_of(&from_sluice),
        502,
        "{}",
        String::from_utf8_lossy(&from_sluice)
    );
    wait_until("sluice's error log line", || {
        p.sluice
            .error_log()
            .contains("upstream sent \"101 Switching Protocols\" to a request without Upgrade")
    });
}

/// A masked client frame (zero mask key) with a short payload.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// The next server frame as raw bytes (short frames only).
fn server_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    assert!(
        h[1] & 0x80 == 0 && (h[1] & 0x7f) < 126,
        "unexpected frame {h:?}"
    );
    let mut f = h.to_vec();
    let mut payload = vec![0u8; (h[1] & 0x7f) as usize];
    s.read_exact(&mut payload).expect("frame payload");
    f.extend_from_slice(&payload);
    f
}

/// Close frames seen by a raw client: one the server starts (`/close`),
/// one the client starts and the server echoes.
fn close_frames(port: u16) -> (Vec<u8>, Vec<u8>) {
    let (mut a, head) = exchange(port, &handshake(port));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    a.write_all(&client_frame(1, b"/close 4001 server says bye"))
        .expect("send command");
    let server_started = server_frame(&mut a);
    let (mut b, _) = exchange(port, &handshake(port));
    let mut payload = 4002u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"client says bye");
    b.write_all(&client_frame(8, &payload)).expect("send close");
    let echoed = server_frame(&mut b);
    (server_started, echoed)
}

#[test]
fn close_codes_pass_through_like_nginx() {
    let (_echo, echo) = start_echo();
    let p = pair(echo);
    let from_nginx = close_frames(p.nginx_port);
    let from_sluice = close_frames(p.sluice_port);
    assert_eq!(from_nginx, from_sluice);
    // FIN + close, 2 code bytes (4001) + 15 reason bytes, unmasked.
    let mut want = vec![0x88, 17, 0x0f, 0xa1];
    want.extend_from_slice(b"server says bye");
    assert_eq!(from_sluice.0, want);
    assert_eq!(&from_sluice.1[2..4], &4002u16.to_be_bytes());
}

/// The access log line of a tunnel, through nginx and through sluice with
/// the same log_format: written once the tunnel ends, with status 101, the
/// bytes relayed to the client as `$body_bytes_sent`, and the same
/// `$request_length` and upstream.
#[test]
fn tunnel_access_log_line_matches_nginx() {
    let up = RawUpstream::start();
    let log = "log_format ws '$status $body_bytes_sent $request_length $upstream_addr $request_time';\naccess_log logs/ws.log ws;";
    let (nginx_port, sluice_port) = (common::free_port(), common::free_port());
    let nginx = start_nginx(nginx_port, up.addr, log);
    let sluice = Sluice::start(
        "ws-diff-log",
        &conf_with("sluice.pid", sluice_port, up.addr, log),
    );
    let mut lines = Vec::new();
    for (port, path) in [
        (nginx_port, nginx.path("logs/ws.log")),
        (sluice_port, sluice.path("logs/ws.log")),
    ] {
        let (mut client, _) = raw_ws_client(port, "/chat");
        let mut upstream = up.next();
        upstream.write_all(b"twelve bytes").expect("upstream write");
        let mut got = [0u8; 12];
        client.read_exact(&mut got).expect("client read");
        client.write_all(b"up").expect("client write");
        let mut b = [0u8; 2];
        upstream.read_exact(&mut b).expect("upstream read");
        drop(client);
        assert!(is_closed(&read_outcome(&mut upstream)));
        drop(upstream);
        wait_until("the tunnel's log line", || {
            common::read_file(&path).lines().count() == 1
        });
        let line = common::read_file(&path);
        let (fixed, time) = line.trim().rsplit_once(' ').expect("fields");
        assert!(time.parse::<f64>().is_ok(), "{line}");
        lines.push(fixed.to_string());
    }
    assert_eq!(lines[0], lines[1], "nginx vs sluice");
    assert!(lines[1].starts_with("101 12 "), "{}", lines[1]);
}
