//! The `prometheus_metrics` location, read with the prometheus_client Python
//! package's OpenMetrics parser (installed by tests/peers/install.sh), and the
//! `status_page` location.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::backend::Backend;
use common::{main_block, Sluice};
use futures_util::{SinkExt, StreamExt};
use sluice::tools::echo::{serve_with, EchoOptions};
use tokio_tungstenite::tungstenite::Message;

/// Parses OpenMetrics text with prometheus_client; one sample a line:
/// `name{k=v,...} value`, labels sorted.
const PARSER: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

/// The samples of one scrape, by `name{labels}`.
fn parse(text: &str) -> HashMap<String, f64> {
    // Debian's interpreter, which the python3-prometheus-client package serves.
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (tests/peers/install.sh installs its parser)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed parser");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "prometheus_client rejected the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let resp = common::raw_exchange(addr, req.as_bytes());
    let text = String::from_utf8_lossy(&resp).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (common::status_of(&resp), body)
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    parse(&body)
}

fn v(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

/// Scrapes until `cond` holds (bounded).
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    cond: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    for _ in 0..500 {
        let m = scrape(addr);
        if cond(&m) {
            return m;
        }
        std::thread::yield_now();
    }
    panic!("metrics never showed {what}");
}

fn conf(port: u16, backend: SocketAddr, echo: SocketAddr, extra: &str) -> String {
    format!(
        "{}http {{\n access_log logs/access.log;\n upstream api {{ server {backend}; server 127.0.0.1:9 backup; }}\n\
 server {{\n  listen 127.0.0.1:{port};\n  location = /metrics {{ prometheus_metrics; }}\n  location = /status {{ status_page; }}\n\
  location /api {{ proxy_pass http://api; }}\n  location /ws {{ proxy_pass http://{echo}; proxy_http_version 1.1;\n\
   proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"Upgrade\"; }}\n{extra} }}\n}}\n",
        main_block()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let backend = Backend::ok("hello");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = l.local_addr().expect("addr");
    tokio::spawn(serve_with(
        l,
        EchoOptions {
            log: false,
            name: None,
        },
    ));
    let port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Sluice::start("metrics", &conf(port, backend.addr, echo, ""));

    let m0 = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .expect("scrape");
    assert_eq!(v(&m0, "sluice_config_generation{}"), 1.0);
    let peer = backend.addr.to_string();
    assert_eq!(
        v(
            &m0,
            &format!("sluice_upstream_peer_state{{peer={peer},state=up,upstream=api}}")
        ),
        1.0
    );
    assert_eq!(
        v(
            &m0,
            "sluice_upstream_peer_state{peer=127.0.0.1:9,state=backup,upstream=api}"
        ),
        1.0
    );
    assert!(v(&m0, "sluice_connections_active{}") >= 1.0);

    // Traffic: five proxied requests, two 404s, one WebSocket exchange.
    tokio::task::spawn_blocking(move || {
        for _ in 0..5 {
            assert_eq!(get(addr, "/api/x").0, 200);
        }
        for _ in 0..2 {
            assert_eq!(get(addr, "/nowhere").0, 404);
        }
    })
    .await
    .expect("requests");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("handshake");
    let open = tokio::task::spawn_blocking(move || {
        scrape_until(addr, "an open tunnel", |m| {
            v(m, "sluice_websocket_tunnels_open{}") == 1.0
        })
    })
    .await
    .expect("scrape");
    assert!(
        v(&open, "sluice_connections_writing{}") >= 2.0,
        "tunnel + scrape"
    );
    ws.send(Message::text("ping")).await.expect("send");
    let _ = ws.next().await.expect("reply").expect("reply ok");
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);

    let m1 = tokio::task::spawn_blocking(move || {
        scrape_until(addr, "the tunnel's end", |m| {
            v(m, "sluice_websocket_tunnels_open{}") == 0.0
        })
    })
    .await
    .expect("scrape");
    let d = |k: &str| v(&m1, k) - v(&m0, k);
    assert!(d("sluice_http_responses_total{class=2xx}") >= 5.0);
    assert!(d("sluice_http_responses_total{class=4xx}") >= 2.0);
    assert!(d("sluice_http_responses_total{class=1xx}") >= 1.0);
    assert!(d("sluice_http_requests_total{}") >= 8.0);
    assert!(d("sluice_connections_accepted_total{}") >= 8.0);
    assert_eq!(d("sluice_websocket_tunnels_total{}"), 1.0);
    assert!(d("sluice_websocket_bytes_total{direction=client_to_upstream}") > 0.0);
    assert!(d("sluice_websocket_bytes_total{direction=upstream_to_client}") > 0.0);
    assert!(d("sluice_http_request_duration_seconds_count{}") >= 7.0);
    assert!(d("sluice_upstream_response_duration_seconds_count{}") >= 5.0);
    assert_eq!(
        v(&m1, "sluice_http_request_duration_seconds_bucket{le=+Inf}"),
        v(&m1, "sluice_http_request_duration_seconds_count{}")
    );

    // A good reload, then a broken one.
    std::fs::write(
        &s.conf,
        conf(
            port,
            backend.addr,
            echo,
            "  location /new { return 204; }\n",
        ),
    )
    .expect("write conf");
    s.signal(libc::SIGHUP);
    let m2 = tokio::task::spawn_blocking(move || {
        scrape_until(addr, "generation 2", |m| {
            v(m, "sluice_config_generation{}") == 2.0
        })
    })
    .await
    .expect("scrape");
    assert_eq!(v(&m2, "sluice_config_reloads_total{result=ok}"), 1.0);
    std::fs::write(&s.conf, "http { broken").expect("write conf");
    s.signal(libc::SIGHUP);
    let m3 = tokio::task::spawn_blocking(move || {
        scrape_until(addr, "a failed reload", |m| {
            v(m, "sluice_config_reloads_total{result=failed}") == 1.0
        })
    })
    .await
    .expect("scrape");
    assert_eq!(v(&m3, "sluice_config_generation{}"), 2.0);

    let (status, page) = tokio::task::spawn_blocking(move || get(addr, "/status"))
        .await
        .expect("page");
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("<h2>Connections</h2>") && page.contains(&peer));
    assert!(
        !page.contains("http://") && !page.contains("src="),
        "no external assets"
    );
}
