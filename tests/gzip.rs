//! The gzip filter through the real binary, with the seed config's gzip
//! settings: what is compressed, the headers that change, and the same
//! decisions as nginx for the same upstream answer.

mod common;

use common::nginx::{diff_conf, Nginx};
use std::io::Read;
use std::net::SocketAddr;

use common::backend::{Backend, Reply};
use common::{main_block, raw_exchange, Sluice};

const SEED_GZIP: &str = "gzip on; gzip_min_length 1k; gzip_buffers 4 16k; gzip_http_version 1.0; gzip_comp_level 2; gzip_types text/plain application/x-javascript text/css application/xml; gzip_vary on;";

/// A parsed response: status, headers in order, body with chunking removed.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn gunzip(&self) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(self.body.as_slice())
            .read_to_end(&mut out)
            .expect("a valid gzip body");
        out
    }

    /// The headers a gzip decision shows in.
    fn gzip_shape(&self) -> String {
        format!(
            "status={} content-encoding={:?} vary={:?} content-length={} chunked={}",
            self.status,
            self.header("content-encoding"),
            self.header("vary"),
            self.header("content-length").is_some(),
            self.header("transfer-encoding") == Some("chunked"),
        )
    }
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
                .expect("chunk size");
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    request_version(addr, method, path, "HTTP/1.1", extra)
}

fn request_version(
    addr: SocketAddr,
    method: &str,
    path: &str,
    version: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut req = format!("{method} {path} {version}\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    parse(&raw_exchange(addr, req.as_bytes()))
}

const GZ: (&str, &str) = ("Accept-Encoding", "gzip, deflate");

fn big_text() -> Vec<u8> {
    (0..4000)
        .map(|i| format!("line {i} of a compressible text body\n"))
        .collect::<String>()
        .into_bytes()
}

/// The upstreams every test proxies to, one per kind of answer.
struct Upstreams {
    big: Backend,
    small: Backend,
    json: Backend,
    encoded: Backend,
    error: Backend,
    etag: Backend,
}

impl Upstreams {
    fn start() -> Upstreams {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let text = h(&[("Content-Type", "text/plain; charset=utf-8")]);
        Upstreams {
            big: Backend::start(Reply::Fixed(200, text.clone(), big_text())),
            small: Backend::start(Reply::Fixed(200, text.clone(), b"tiny".to_vec())),
            json: Backend::start(Reply::Fixed(
                200,
                h(&[("Content-Type", "application/json")]),
                big_text(),
            )),
            encoded: Backend::start(Reply::Fixed(
                200,
                h(&[("Content-Type", "text/plain"), ("Content-Encoding", "br")]),
                big_text(),
            )),
            error: Backend::start(Reply::Fixed(500, text, big_text())),
            etag: Backend::start(Reply::Fixed(
                200,
                h(&[
                    ("Content-Type", "text/css"),
                    ("ETag", "\"v1\""),
                    ("Accept-Ranges", "bytes"),
                ]),
                big_text(),
            )),
        }
    }

    fn locations(&self) -> String {
        format!(
            "location /big {{ proxy_pass http://{}; }}\n\
             location /small {{ proxy_pass http://{}; }}\n\
             location /json {{ proxy_pass http://{}; }}\n\
             location /encoded {{ proxy_pass http://{}; }}\n\
             location /error {{ proxy_pass http://{}; }}\n\
             location /etag {{ proxy_pass http://{}; }}\n\
             location /any {{ gzip_proxied any; proxy_pass http://{}; }}\n\
             location /nogzip {{ gzip off; proxy_pass http://{}; }}\n\
             location /ret {{ default_type text/plain; return 200 \"{}\"; }}\n",
            self.big.addr,
            self.small.addr,
            self.json.addr,
            self.encoded.addr,
            self.error.addr,
            self.etag.addr,
            self.big.addr,
            self.big.addr,
            "x".repeat(2000),
        )
    }
}

fn sluice_conf(port: u16, ups: &Upstreams) -> String {
    format!(
        "{}http {{\n access_log logs/access.log;\n {SEED_GZIP}\n gzip_disable \"Legacy/\\d\";\n server {{\n  listen 127.0.0.1:{port};\n  server_name localhost;\n{}\n }}\n}}\n",
        main_block(),
        ups.locations()
    )
}

fn start() -> (Upstreams, Sluice, SocketAddr) {
    let ups = Upstreams::start();
    let port = common::free_port();
    let s = Sluice::start("gzip", &sluice_conf(port, &ups));
    (ups, s, ([127, 0, 0, 1], port).into())
}

#[test]
fn eligible_response_is_compressed_and_decompresses_to_the_original() {
    let (_ups, _s, addr) = start();
    let r = request(addr, "GET", "/big", &[GZ]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(
        r.body.len() < big_text().len() / 4,
        "{} bytes",
        r.body.len()
    );
    assert_eq!(r.gunzip(), big_text());
}

#[test]
fn small_bodies_wrong_types_and_encoded_bodies_pass_untouched() {
    let (_ups, _s, addr) = start();
    for path in ["/small", "/json", "/encoded", "/error", "/nogzip"] {
        let r = request(addr, "GET", path, &[GZ]);
        assert_ne!(
            r.header("content-encoding"),
            Some("gzip"),
            "{path}: {}",
            r.gzip_shape()
        );
        assert!(r.header("content-length").is_some(), "{path}");
        // Only candidates (by status, type, length) get Vary.
        assert_eq!(r.header("vary"), None, "{path}");
    }
    let r = request(addr, "GET", "/small", &[GZ]);
    assert_eq!(r.body, b"tiny");
    let r = request(addr, "GET", "/encoded", &[GZ]);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.body, big_text());
}

#[test]
fn clients_that_do_not_ask_get_vary_only() {
    let (_ups, _s, addr) = start();
    for extra in [
        vec![],
        vec![("Accept-Encoding", "gzip;q=0, deflate")],
        vec![("Accept-Encoding", "x-gzip")],
        vec![GZ, ("User-Agent", "Legacy/5.0")],
    ] {
        let r = request(addr, "GET", "/big", &extra);
        assert_eq!(r.header("content-encoding"), None, "{extra:?}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{extra:?}");
        assert_eq!(
            r.header("content-length"),
            Some(big_text().len().to_string().as_str())
        );
        assert_eq!(r.body, big_text());
    }
}

#[test]
fn via_needs_gzip_proxied() {
    let (_ups, _s, addr) = start();
    let via = ("Via", "1.1 cache.example");
    let r = request(addr, "GET", "/big", &[GZ, via]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = request(addr, "GET", "/any", &[GZ, via]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.gunzip(), big_text());
}

#[test]
fn head_gets_the_compressed_head_and_no_body() {
    let (_ups, _s, addr) = start();
    let r = request(addr, "HEAD", "/big", &[GZ]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.body.is_empty());
}

#[test]
fn etag_turns_weak_and_ranges_go() {
    let (_ups, _s, addr) = start();
    let r = request(addr, "GET", "/etag", &[GZ]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    assert_eq!(r.header("accept-ranges"), None);
    let r = request(addr, "GET", "/etag", &[]);
    assert_eq!(r.header("etag"), Some("\"v1\""));
}

#[test]
fn return_text_is_compressed_like_nginx() {
    let (_ups, _s, addr) = start();
    let r = request(addr, "GET", "/ret", &[GZ]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.gunzip(), "x".repeat(2000).as_bytes());
    // HTTP/1.0 clients are served by gzip_http_version 1.0: no chunking, close.
    let r = request_version(addr, "GET", "/big", "HTTP/1.0", &[GZ]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.gunzip(), big_text());
}

/// nginx on the same upstreams, with the seed's gzip lines.
fn start_nginx(port: u16, ups: &Upstreams) -> Nginx {
    let http = format!(
        "{SEED_GZIP}\n gzip_disable \"Legacy/\\d\";\n server {{\n  listen 127.0.0.1:{port};\n  server_name localhost;\n{}\n }}",
        ups.locations()
    );
    let mut n = Nginx::spawn(
        common::temp_dir("gzip-nginx"),
        &diff_conf("nginx.pid", &http),
    );
    n.ready("nginx.pid");
    n
}

/// Method, path, extra request headers.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

#[test]
fn same_decisions_as_nginx() {
    let (ups, _s, ours) = start();
    let nport = common::free_port();
    let _n = start_nginx(nport, &ups);
    let theirs: SocketAddr = ([127, 0, 0, 1], nport).into();
    let cases: &[Case] = &[
        ("GET", "/big", &[GZ]),
        ("GET", "/big", &[]),
        ("GET", "/big", &[("Accept-Encoding", "gzip;q=0")]),
        ("GET", "/big", &[GZ, ("Via", "1.1 x")]),
        ("GET", "/big", &[GZ, ("User-Agent", "Legacy/4")]),
        ("HEAD", "/big", &[GZ]),
        ("GET", "/small", &[GZ]),
        ("GET", "/json", &[GZ]),
        ("GET", "/encoded", &[GZ]),
        ("GET", "/error", &[GZ]),
        ("GET", "/etag", &[GZ]),
        ("GET", "/any", &[GZ, ("Via", "1.1 x")]),
        ("GET", "/ret", &[GZ]),
    ];
    for (method, path, extra) in cases {
        let a = request(ours, method, path, extra);
        let b = request(theirs, method, path, extra);
        assert_eq!(
            a.gzip_shape(),
            b.gzip_shape(),
            "{method} {path} {extra:?}: sluice vs nginx"
        );
        assert_eq!(a.header("etag"), b.header("etag"), "{method} {path}");
        if a.header("content-encoding") == Some("gzip") && *method == "GET" {
            assert_eq!(a.gunzip(), b.gunzip(), "{path}");
        }
    }
}
