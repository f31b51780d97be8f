//! proxy_buffering through the real binary: with it off every upstream chunk
//! reaches the client at once (gzip included); with it on a response that fits
//! proxy_buffer_size + proxy_buffers is read whole from the upstream while the
//! client is not reading.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{main_block, Sluice};

/// An upstream that serves one connection with `script` after reading the
/// request head.
fn scripted(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        script(s);
    });
    (addr, t)
}

fn conf(port: u16, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "{}http {{\n access_log logs/access.log;\n {extra}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://{upstream}; }}\n }}\n}}\n",
        main_block()
    )
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads from `s` until `pred` holds for what was read so far.
fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, mut pred: impl FnMut(&[u8]) -> bool) {
    let mut tmp = [0u8; 16 * 1024];
    while !pred(buf) {
        let n = s.read(&mut tmp).expect("read from sluice");
        assert!(
            n > 0,
            "sluice closed early: {}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The upstream sends a first chunk, then waits for the test's go before the
/// rest: the first chunk must reach the client while the upstream still holds
/// the response open.
fn first_chunk_arrives_before_the_upstream_finishes(extra: &str, gzip: bool) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (up, t) = scripted(move |mut s| {
        let mut out =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        out.extend(chunk(b"first part of the answer;"));
        s.write_all(&out).expect("write first");
        let _ = go_rx.recv();
        let mut out = chunk(b" the rest");
        out.extend_from_slice(b"0\r\n\r\n");
        let _ = s.write_all(&out);
    });
    let port = common::free_port();
    let _s = Sluice::start("buffering", &conf(port, up, extra));
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let ae = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    c.write_all(format!("GET / HTTP/1.1\r\nHost: a\r\n{ae}Connection: close\r\n\r\n").as_bytes())
        .expect("send");
    let mut buf = Vec::new();
    if gzip {
        // The head, then a chunk whose gzip data decodes to the first part.
        read_until(&mut c, &mut buf, |b| {
            let Some(h) = find(b, b"\r\n\r\n") else {
                return false;
            };
            let mut body = &b[h + 4..];
            let mut data = Vec::new();
            while let Some(nl) = find(body, b"\r\n") {
                let Ok(n) = usize::from_str_radix(&String::from_utf8_lossy(&body[..nl]), 16) else {
                    return false;
                };
                if body.len() < nl + 2 + n {
                    break;
                }
                data.extend_from_slice(&body[nl + 2..nl + 2 + n]);
                body = &body[(nl + 4 + n).min(body.len())..];
            }
            let mut d = flate2::write::GzDecoder::new(Vec::new());
            let _ = d.write_all(&data);
            let _ = d.flush();
            d.get_ref().as_slice() == b"first part of the answer;"
        });
        assert!(
            find(&buf, b"Content-Encoding: gzip").is_some()
                || find(&buf, b"content-encoding: gzip").is_some()
        );
    } else {
        read_until(&mut c, &mut buf, |b| {
            find(b, b"first part of the answer;").is_some()
        });
        assert!(find(&buf, b" the rest").is_none());
    }
    go_tx.send(()).expect("go");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    buf.extend_from_slice(&rest);
    t.join().expect("upstream thread");
    if !gzip {
        assert!(find(&buf, b" the rest").is_some());
    }
}

#[test]
fn buffering_off_passes_each_chunk_on() {
    first_chunk_arrives_before_the_upstream_finishes("proxy_buffering off;", false);
}

#[test]
fn buffering_on_does_not_hold_a_stalled_stream() {
    first_chunk_arrives_before_the_upstream_finishes("", false);
}

#[test]
fn gzip_with_buffering_off_flushes_each_chunk() {
    first_chunk_arrives_before_the_upstream_finishes(
        "proxy_buffering off; gzip on; gzip_types text/plain;",
        true,
    );
}

#[test]
fn gzip_with_buffering_on_flushes_a_stalled_stream() {
    first_chunk_arrives_before_the_upstream_finishes("gzip on; gzip_types text/plain;", true);
}

#[test]
fn x_accel_buffering_no_turns_buffering_off_per_response() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (up, t) = scripted(move |mut s| {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        out.extend(chunk(b"early"));
        s.write_all(&out).expect("write");
        let _ = go_rx.recv();
        let _ = s.write_all(b"0\r\n\r\n");
    });
    let port = common::free_port();
    let _s = Sluice::start("accel", &conf(port, up, ""));
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut buf = Vec::new();
    read_until(&mut c, &mut buf, |b| find(b, b"early").is_some());
    // nginx does not pass X-Accel-Buffering on to the client.
    assert!(find(&buf.to_ascii_lowercase(), b"x-accel-buffering").is_none());
    go_tx.send(()).expect("go");
    let _ = c.read_to_end(&mut buf);
    t.join().expect("upstream thread");
}

/// With `proxy_buffers 64 1m`, a 40 MiB answer is read whole from the
/// upstream while the client reads nothing: more than the kernel buffers of
/// both hops could absorb (the client's receive buffer and the upstream's send
/// buffer are kept small), so only the read-ahead lets the upstream finish.
#[test]
fn buffering_on_releases_the_upstream_before_a_slow_client_reads() {
    const LEN: usize = 40 << 20;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (up, t) = scripted(move |mut s| {
        let _ = socket2::SockRef::from(&s).set_send_buffer_size(16 * 1024);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {LEN}\r\n\r\n");
        s.write_all(head.as_bytes()).expect("head");
        let block = vec![b'z'; 64 * 1024];
        for _ in 0..LEN / block.len() {
            s.write_all(&block).expect("body");
        }
        let _ = done_tx.send(());
    });
    let port = common::free_port();
    let _s = Sluice::start(
        "slow-client",
        &conf(port, up, "proxy_buffer_size 64k; proxy_buffers 64 1m;"),
    );
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(16 * 1024).expect("rcvbuf");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    sock.connect(&addr.into()).expect("connect");
    let mut c: TcpStream = sock.into();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("send");
    // The upstream finishes writing although the client has read nothing.
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the upstream could not finish: sluice did not read ahead");
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    loop {
        let n = c.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            // Still in the head: split it off once complete.
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = find(&head, b"\r\n\r\n") {
                got += head.len() - (i + 4);
                head.truncate(i + 4);
            }
        } else {
            got += n;
        }
    }
    t.join().expect("upstream thread");
    assert_eq!(got, LEN);
}
