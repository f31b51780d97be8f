//! stub_status against nginx: the same steps on connections to both, then
//! the same page (nginx's format, byte for byte).

mod common;

use common::nginx::Nginx;
use common::Sluice;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

fn conf(port: u16, pid: &str) -> String {
    common::nginx::diff_conf(
        pid,
        &format!(
            " server {{\n  listen 127.0.0.1:{port};\n  location = /status {{ stub_status; }}\n  location /r {{ return 200 \"ok\\n\"; }}\n }}"
        ),
    )
}

/// nginx on the same configuration. It binds its listeners before it writes
/// the pid file, so no probe connection (which would count in the figures).
fn start_nginx(port: u16) -> Nginx {
    let mut n = Nginx::spawn(common::temp_dir("stub-nginx"), &conf(port, "nginx.pid"));
    n.ready("nginx.pid");
    n
}

fn status_body(addr: SocketAddr) -> String {
    let resp = common::raw_exchange(
        addr,
        b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&resp).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let head_end = text.find("\r\n\r\n").expect("head") + 4;
    text[head_end..].to_string()
}

/// The step's figures must agree. Gauges settle when each server notices
/// what the client did, so both are asked again (each once more, which keeps
/// their counters comparable) until they agree, a bounded number of times.
fn agree(step: &str, nginx: SocketAddr, sluice: SocketAddr) -> String {
    let mut last = (String::new(), String::new());
    for _ in 0..200 {
        let n = status_body(nginx);
        let s = status_body(sluice);
        if n == s {
            return n;
        }
        last = (n, s);
        std::thread::yield_now();
    }
    panic!("{step}: nginx\n{}\nsluice\n{}", last.0, last.1);
}

/// Sends one keep-alive request and reads its whole response.
fn request(c: &mut TcpStream, path: &str) {
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return;
            }
        }
    }
}

#[test]
fn stub_status_counts_as_nginx_does() {
    let np = common::free_port();
    let sp = common::free_port();
    let _nginx = start_nginx(np);
    let s = Sluice::start("stub-sluice", &conf(sp, "sluice.pid"));
    let n: SocketAddr = ([127, 0, 0, 1], np).into();
    let sl: SocketAddr = ([127, 0, 0, 1], sp).into();
    let both = [n, sl];

    let first = agree("fresh", n, sl);
    assert!(
        first.starts_with("Active connections: 1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n"),
        "{first}"
    );

    // Three requests on one keep-alive connection, left open (waiting).
    let mut keep: Vec<TcpStream> = both
        .iter()
        .map(|a| {
            let mut c = TcpStream::connect(a).expect("connect");
            for _ in 0..3 {
                request(&mut c, "/r");
            }
            c
        })
        .collect();
    agree("keep-alive", n, sl);

    // Two idle connections that send nothing.
    let idle: Vec<TcpStream> = both
        .iter()
        .flat_map(|a| [TcpStream::connect(a), TcpStream::connect(a)])
        .map(|c| c.expect("connect"))
        .collect();
    agree("idle", n, sl);

    // A request head that has begun but not ended: reading.
    let partial: Vec<TcpStream> = both
        .iter()
        .map(|a| {
            let mut c = TcpStream::connect(a).expect("connect");
            c.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            c
        })
        .collect();
    agree("partial head", n, sl);

    // A 404 and one more request on the kept connection.
    for a in both {
        let resp = common::raw_exchange(
            a,
            b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(common::status_of(&resp), 404);
    }
    for c in &mut keep {
        request(c, "/r");
    }
    agree("404", n, sl);

    drop(idle);
    drop(partial);
    drop(keep);
    let last = agree("closed", n, sl);
    assert!(last.starts_with("Active connections: 1 \n"), "{last}");
    drop(s);
}
