//! The same upstream blocks through nginx and sluice: the peers each
//! balancer picks must be the same, request for request (round robin with
//! weights, backup and down) and key for key (ip_hash, hash, hash consistent).

mod balance_common;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use balance_common::{Client, NamedBackend};
use common::nginx::Nginx;
use common::{free_port, temp_dir, Sluice};

/// nginx with the same http block, every path it writes under a temp prefix.
fn start_nginx(http: &str) -> Nginx {
    let prefix = temp_dir("nginx-balance");
    let conf = common::nginx::diff_conf("nginx.pid", &format!("access_log off;\n{http}"));
    let mut n = Nginx::spawn(prefix, &conf);
    n.ready("nginx.pid");
    n
}

/// The http{} body shared by both proxies, listening on `port`.
fn http_body(port: u16, b: &[NamedBackend]) -> String {
    let a = |i: usize| b[i].addr;
    format!(
        " upstream rr {{\n  server {} weight=5;\n  server {};\n  server {};\n  server {} backup;\n  server {} down;\n }}\n\
         upstream iph {{\n  ip_hash;\n  server {};\n  server {};\n  server {};\n  server {} down;\n }}\n\
         upstream h {{\n  hash $request_uri;\n  server {} weight=5;\n  server {};\n  server {};\n }}\n\
         upstream ch {{\n  hash $request_uri consistent;\n  server {} weight=5;\n  server {};\n  server {};\n  server {};\n }}\n\
         server {{\n  listen 127.0.0.1:{port};\n\
         location /rr {{ proxy_pass http://rr; }}\n\
         location /iph {{ proxy_pass http://iph; }}\n\
         location /h/ {{ proxy_pass http://h; }}\n\
         location /ch/ {{ proxy_pass http://ch; }}\n }}\n",
        a(0),
        a(1),
        a(2),
        a(3),
        a(4),
        a(0),
        a(1),
        a(2),
        a(3),
        a(0),
        a(1),
        a(2),
        a(0),
        a(1),
        a(2),
        a(3),
    )
}

/// What one proxy's balancers chose.
#[derive(Debug, PartialEq, Eq)]
struct Choices {
    rr: Vec<String>,
    iph: BTreeMap<String, String>,
    hash: BTreeMap<String, String>,
    chash: BTreeMap<String, String>,
}

fn body(c: &mut Client, path: &str) -> String {
    let (status, _, body) = c.get(path, "").expect("response");
    assert_eq!(status, 200, "{path}");
    body
}

fn run(addr: SocketAddr) -> Choices {
    let mut c = Client::connect(addr);
    let rr = (0..1000).map(|_| body(&mut c, "/rr")).collect();
    let mut iph = BTreeMap::new();
    // ip_hash uses the first three octets: vary those across loopback.
    for i in 1..=8u8 {
        for j in 0..4u8 {
            let local = format!("127.{i}.{j}.1:0");
            let mut c = Client::connect_from(Some(&local), addr);
            iph.insert(local, body(&mut c, "/iph"));
        }
    }
    // nginx closes a client connection after keepalive_requests (1000).
    let mut c = Client::connect(addr);
    let mut hash = BTreeMap::new();
    let mut chash = BTreeMap::new();
    for k in 0..200 {
        hash.insert(k.to_string(), body(&mut c, &format!("/h/{k}")));
        chash.insert(k.to_string(), body(&mut c, &format!("/ch/key-{k}")));
    }
    Choices {
        rr,
        iph,
        hash,
        chash,
    }
}

#[test]
fn balancers_pick_what_nginx_picks() {
    let backends: Vec<NamedBackend> = ["b1", "b2", "b3", "b4", "b5"]
        .iter()
        .map(|n| NamedBackend::start(n))
        .collect();

    let nginx_port = free_port();
    let nginx = start_nginx(&http_body(nginx_port, &backends));
    let from_nginx = run(SocketAddr::from(([127, 0, 0, 1], nginx_port)));
    drop(nginx);

    let port = free_port();
    let text = format!(
        "{}http {{\n access_log off;\n{}}}\n",
        common::main_block(),
        http_body(port, &backends)
    );
    let s = Sluice::start("balance-diff", &text);
    let from_sluice = run(SocketAddr::from(([127, 0, 0, 1], port)));
    drop(s);

    // Sanity: the setups spread requests at all.
    let distinct =
        |v: &mut dyn Iterator<Item = &String>| v.collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(distinct(&mut from_nginx.rr.iter()), 3);
    assert!(distinct(&mut from_nginx.iph.values()) > 1);
    assert!(distinct(&mut from_nginx.hash.values()) > 1);
    assert!(distinct(&mut from_nginx.chash.values()) > 1);

    assert_eq!(from_sluice.rr, from_nginx.rr, "round robin sequence");
    assert_eq!(from_sluice.iph, from_nginx.iph, "ip_hash choices");
    assert_eq!(from_sluice.hash, from_nginx.hash, "hash choices");
    assert_eq!(
        from_sluice.chash, from_nginx.chash,
        "hash consistent choices"
    );
}
