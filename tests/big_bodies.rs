//! A 1 GiB upload and a 1 GiB download through the real binary, generated on
//! the fly and checked byte for byte against the regenerated stream (nothing
//! is stored), while the proxy's resident memory stays flat.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{main_block, Sluice};

const LEN: u64 = 1 << 30;
/// sluice's resident set must stay under this during a transfer.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// A prime, so block edges never line up with read sizes.
const PERIOD: usize = 65_521;

/// The byte stream: a pseudo-random block of `PERIOD` bytes, repeated; the
/// block is kept twice so any window of up to `PERIOD` bytes is one slice.
fn pattern() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let block: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    [block.as_slice(), block.as_slice()].concat()
}

/// Writes `len` bytes of the pattern.
fn send_pattern(w: &mut impl Write, pat: &[u8], len: u64) -> std::io::Result<()> {
    let mut off = 0u64;
    while off < len {
        let start = (off % PERIOD as u64) as usize;
        let n = ((len - off) as usize).min(PERIOD);
        w.write_all(&pat[start..start + n])?;
        off += n as u64;
    }
    Ok(())
}

/// Reads exactly `len` bytes (after `already`), checking each against the
/// pattern; returns how many matched before the first difference or the end.
fn check_pattern(r: &mut impl Read, already: &[u8], len: u64, pat: &[u8]) -> u64 {
    let mut off = 0u64;
    let check = |data: &[u8], off: &mut u64| -> bool {
        let mut d = data;
        while !d.is_empty() {
            let start = (*off % PERIOD as u64) as usize;
            let n = d.len().min(PERIOD);
            if d[..n] != pat[start..start + n] {
                return false;
            }
            *off += n as u64;
            d = &d[n..];
        }
        true
    };
    if !check(already, &mut off) {
        return off;
    }
    let mut buf = vec![0u8; 256 * 1024];
    while off < len {
        let want = buf.len().min((len - off) as usize);
        let n = match r.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !check(&buf[..n], &mut off) {
            break;
        }
    }
    off
}

/// Reads a message head; returns it and any body bytes read past it.
fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = s.read(&mut tmp).expect("read head");
        assert!(n > 0, "closed before the head ended");
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn content_length(head: &str) -> Option<u64> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Samples sluice's VmRSS until stopped; the peak in KiB.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: i32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while !s.load(Ordering::Relaxed) {
                let kib = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                p.fetch_max(kib, Ordering::Relaxed);
                // A sampling period, not synchronisation.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak_kib(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn start_sluice(tag: &str, upstream: SocketAddr) -> (Sluice, SocketAddr) {
    start_sluice_with(tag, upstream, "")
}

fn start_sluice_with(tag: &str, upstream: SocketAddr, extra: &str) -> (Sluice, SocketAddr) {
    let port = common::free_port();
    let conf = format!(
        "{}http {{\n access_log logs/access.log;\n client_max_body_size 0;\n {extra}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://{upstream}; }}\n }}\n}}\n",
        main_block()
    );
    (Sluice::start(tag, &conf), ([127, 0, 0, 1], port).into())
}

#[test]
fn one_gib_upload_with_flat_memory() {
    let pat = Arc::new(pattern());
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up = l.local_addr().expect("addr");
    let up_pat = pat.clone();
    let upstream = std::thread::spawn(move || -> u64 {
        let (mut s, _) = l.accept().expect("accept");
        let (head, rest) = read_head(&mut s);
        let len = content_length(&head).expect("sluice passes Content-Length on");
        assert_eq!(len, LEN);
        let got = check_pattern(&mut s, &rest, len, &up_pat);
        let body = got.to_string();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        got
    });
    let (sluice, addr) = start_sluice("big-upload", up);
    let watch = RssWatch::start(sluice.pid());
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    write!(
        c,
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    send_pattern(&mut c, &pat, LEN).expect("upload");
    let (head, mut body) = read_head(&mut c);
    let _ = c.read_to_end(&mut body);
    let peak = watch.peak_kib();
    drop(c);
    let matched = upstream.join().expect("upstream thread");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(matched, LEN, "the upstream got a different body");
    assert_eq!(String::from_utf8_lossy(&body), LEN.to_string());
    eprintln!("1 GiB upload: sluice's peak RSS {peak} KiB");
    assert!(peak > 0, "no RSS sample");
    assert!(
        peak < RSS_LIMIT_KIB,
        "sluice's RSS reached {peak} KiB during a 1 GiB upload"
    );
}

#[test]
fn one_gib_download_with_flat_memory() {
    let pat = Arc::new(pattern());
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up = l.local_addr().expect("addr");
    let up_pat = pat.clone();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = read_head(&mut s);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"
        );
        let _ = send_pattern(&mut s, &up_pat, LEN);
    });
    let (sluice, addr) = start_sluice("big-download", up);
    let watch = RssWatch::start(sluice.pid());
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    c.write_all(b"GET /download HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("request");
    let (head, rest) = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(content_length(&head), Some(LEN));
    let matched = check_pattern(&mut c, &rest, LEN, &pat);
    let peak = watch.peak_kib();
    // Closing first lets a failed check end the upstream's writes too.
    drop(c);
    upstream.join().expect("upstream thread");
    assert_eq!(matched, LEN, "the client got a different body");
    eprintln!("1 GiB download: sluice's peak RSS {peak} KiB");
    assert!(peak > 0, "no RSS sample");
    assert!(
        peak < RSS_LIMIT_KIB,
        "sluice's RSS reached {peak} KiB during a 1 GiB download"
    );
}

/// Reads the data of a chunked body.
struct Dechunk<R> {
    inner: std::io::BufReader<R>,
    left: usize,
    done: bool,
}

impl<R: Read> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk's data.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            self.left = usize::from_str_radix(line.trim(), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

/// gzip on the way out keeps memory flat too: the compressor holds its
/// window, never the body. 64 MiB, as compressing in a debug build is slow.
#[test]
fn gzip_download_with_flat_memory() {
    const GZ_LEN: u64 = 64 << 20;
    let pat = Arc::new(pattern());
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let up = l.local_addr().expect("addr");
    let up_pat = pat.clone();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let _ = read_head(&mut s);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {GZ_LEN}\r\nConnection: close\r\n\r\n"
        );
        let _ = send_pattern(&mut s, &up_pat, GZ_LEN);
    });
    let (sluice, addr) = start_sluice_with(
        "big-gzip",
        up,
        "gzip on; gzip_comp_level 1; gzip_types text/plain;",
    );
    let watch = RssWatch::start(sluice.pid());
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    c.write_all(
        b"GET /download HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .expect("request");
    let (head, rest) = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let body = Dechunk {
        inner: std::io::BufReader::new(rest.as_slice().chain(c.try_clone().expect("clone"))),
        left: 0,
        done: false,
    };
    let mut gz = flate2::read::GzDecoder::new(body);
    let matched = check_pattern(&mut gz, &[], GZ_LEN, &pat);
    let peak = watch.peak_kib();
    eprintln!("64 MiB gzip download: sluice's peak RSS {peak} KiB");
    drop(gz);
    drop(c);
    upstream.join().expect("upstream thread");
    assert_eq!(matched, GZ_LEN, "the client got a different body");
    assert!(peak > 0, "no RSS sample");
    assert!(
        peak < RSS_LIMIT_KIB,
        "sluice's RSS reached {peak} KiB during a gzip download"
    );
}
