//! The status content handlers: nginx's `stub_status`, and sluice's
//! `prometheus_metrics` (OpenMetrics text via prometheus-client) and
//! `status_page` (one self-contained HTML page). All read the counters of
//! `runtime::metrics` and the upstream peers' shared state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use http::{header, HeaderValue, Method, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::{self as m, Connections};
use crate::conf::model::Handler;
use crate::proxy::body::{full, ProxyBody};
use crate::proxy::pages;
use crate::server::Generation;
use crate::upstream::Health;

/// Answers a request to a status location.
pub fn respond(handler: &Handler, method: &Method, gen: &Generation) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        return pages::error(405, true, false);
    }
    let (body, ctype) = match handler {
        Handler::Prometheus => (
            prometheus_text(gen),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        Handler::StatusPage => (html_page(gen), "text/html; charset=utf-8"),
        _ => (m::stub_status_text(), "text/plain"),
    };
    let len = body.len();
    let body = if method == Method::HEAD {
        full(Vec::new())
    } else {
        full(body)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if !matches!(handler, Handler::StubStatus) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

/// One upstream peer as the status outputs show it.
#[derive(Debug)]
struct PeerFigures {
    upstream: String,
    peer: String,
    backup: bool,
    down: bool,
    fails: u32,
    conns: u32,
    health: Health,
}

/// Everything one scrape shows, read once.
#[derive(Debug)]
struct Figures {
    conns: Connections,
    responses: [u64; 5],
    peers: Vec<PeerFigures>,
}

fn figures(gen: &Generation) -> Figures {
    let mut peers = Vec::new();
    for g in gen.upstreams.groups() {
        for p in g.peers() {
            let st = p.state();
            peers.push(PeerFigures {
                upstream: g.name().to_string(),
                peer: p.addr().to_string(),
                backup: p.is_backup(),
                down: p.is_down(),
                fails: st.fails(),
                conns: st.conns(),
                health: st.health(),
            });
        }
    }
    Figures {
        conns: m::connections(),
        responses: std::array::from_fn(|i| m::RESPONSES[i].load(Relaxed)),
        peers,
    }
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Down => "down",
    }
}

/// The peer's state word: down (configured or checked), backup, or up.
fn state_word(p: &PeerFigures) -> &'static str {
    if p.down || p.health == Health::Down {
        "down"
    } else if p.backup {
        "backup"
    } else {
        "up"
    }
}

type Enc<'a> = DescriptorEncoder<'a>;
type Res = Result<(), std::fmt::Error>;

fn gauge(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Res {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Res {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn histogram(e: &mut Enc<'_>, name: &str, help: &str, h: &m::Histogram) -> Res {
    let (sum, count, buckets) = h.snapshot();
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> Res {
        let c = &self.conns;
        gauge(
            &mut e,
            "sluice_connections_active",
            "Open client connections.",
            c.active,
        )?;
        gauge(
            &mut e,
            "sluice_connections_reading",
            "Client connections reading a request head.",
            c.reading,
        )?;
        gauge(
            &mut e,
            "sluice_connections_writing",
            "Client connections processing a request (open tunnels included).",
            c.writing,
        )?;
        gauge(
            &mut e,
            "sluice_connections_waiting",
            "Idle keep-alive client connections.",
            c.waiting,
        )?;
        counter(
            &mut e,
            "sluice_connections_accepted",
            "Client connections accepted.",
            c.accepted,
        )?;
        counter(
            &mut e,
            "sluice_connections_handled",
            "Client connections handled.",
            c.handled,
        )?;
        counter(
            &mut e,
            "sluice_http_requests",
            "Client requests.",
            c.requests,
        )?;
        {
            let mut enc = e.encode_descriptor(
                "sluice_http_responses",
                "Responses by status class.",
                None,
                MetricType::Counter,
            )?;
            for (i, n) in self.responses.iter().enumerate() {
                let class = format!("{}xx", i + 1);
                enc.encode_family(&[("class", class)])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        gauge(
            &mut e,
            "sluice_websocket_tunnels_open",
            "Open WebSocket tunnels.",
            m::TUNNELS_OPEN.load(Relaxed),
        )?;
        counter(
            &mut e,
            "sluice_websocket_tunnels",
            "WebSocket tunnels opened.",
            m::TUNNELS.load(Relaxed),
        )?;
        {
            let mut enc = e.encode_descriptor(
                "sluice_websocket_bytes",
                "Bytes carried by ended WebSocket tunnels, by direction.",
                None,
                MetricType::Counter,
            )?;
            for (dir, v) in [
                ("client_to_upstream", &m::TUNNEL_BYTES_TO_UPSTREAM),
                ("upstream_to_client", &m::TUNNEL_BYTES_TO_CLIENT),
            ] {
                enc.encode_family(&[("direction", dir)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v.load(Relaxed), None)?;
            }
        }
        let peer_series = |e: &mut Enc<'_>,
                           name: &str,
                           help: &str,
                           f: &dyn Fn(&PeerFigures) -> u64|
         -> Res {
            let mut enc = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &self.peers {
                enc.encode_family(&[("upstream", p.upstream.as_str()), ("peer", p.peer.as_str())])?
                    .encode_gauge(&f(p))?;
            }
            Ok(())
        };
        {
            let mut enc = e.encode_descriptor(
                "sluice_upstream_peer_state",
                "Upstream peer state: 1 for the state the peer is in (up, down or backup).",
                None,
                MetricType::Gauge,
            )?;
            for p in &self.peers {
                let now = state_word(p);
                for s in ["up", "down", "backup"] {
                    enc.encode_family(&[
                        ("upstream", p.upstream.as_str()),
                        ("peer", p.peer.as_str()),
                        ("state", s),
                    ])?
                    .encode_gauge(&u64::from(s == now))?;
                }
            }
        }
        peer_series(
            &mut e,
            "sluice_upstream_peer_fails",
            "Failures counted against the peer (max_fails).",
            &|p| u64::from(p.fails),
        )?;
        peer_series(
            &mut e,
            "sluice_upstream_peer_connections",
            "Open connections to the peer.",
            &|p| u64::from(p.conns),
        )?;
        {
            let mut enc = e.encode_descriptor(
                "sluice_upstream_peer_health",
                "Active health check result: 1 for the peer's health (unknown, up, down).",
                None,
                MetricType::Gauge,
            )?;
            for p in &self.peers {
                let now = health_word(p.health);
                for s in ["unknown", "up", "down"] {
                    enc.encode_family(&[
                        ("upstream", p.upstream.as_str()),
                        ("peer", p.peer.as_str()),
                        ("health", s),
                    ])?
                    .encode_gauge(&u64::from(s == now))?;
                }
            }
        }
        histogram(
            &mut e,
            "sluice_http_request_duration_seconds",
            "Request time ($request_time), tunnels excluded.",
            &m::REQUEST_TIME,
        )?;
        histogram(
            &mut e,
            "sluice_upstream_response_duration_seconds",
            "Upstream response time ($upstream_response_time, all attempts).",
            &m::UPSTREAM_TIME,
        )?;
        {
            let mut enc = e.encode_descriptor(
                "sluice_config_reloads",
                "Configuration reloads by result.",
                None,
                MetricType::Counter,
            )?;
            for (r, v) in [("ok", &m::RELOADS_OK), ("failed", &m::RELOADS_FAILED)] {
                enc.encode_family(&[("result", r)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v.load(Relaxed), None)?;
            }
        }
        gauge(
            &mut e,
            "sluice_config_generation",
            "The configuration generation in force (1 at start, one more per reload).",
            m::GENERATION.load(Relaxed),
        )
    }
}

/// The metrics in OpenMetrics text.
pub fn prometheus_text(gen: &Generation) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(figures(gen)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small self-contained HTML page with the same figures.
pub fn html_page(gen: &Generation) -> String {
    let f = figures(gen);
    let c = &f.conns;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sluice status</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}th{{background:#eee}}\
td:first-child,th:first-child{{text-align:left}}.down{{color:#b00}}.up{{color:#070}}</style></head><body>\n\
<h1>sluice status</h1>\n<p>Configuration generation {}; reloads: {} ok, {} failed.</p>\n",
        m::GENERATION.load(Relaxed),
        m::RELOADS_OK.load(Relaxed),
        m::RELOADS_FAILED.load(Relaxed)
    );
    let _ = write!(
        o,
        "<h2>Connections</h2>\n<table><tr><th>active</th><th>reading</th><th>writing</th><th>waiting</th><th>accepted</th><th>handled</th><th>requests</th></tr>\n\
<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\n",
        c.active, c.reading, c.writing, c.waiting, c.accepted, c.handled, c.requests
    );
    o.push_str("<h2>Responses</h2>\n<table><tr><th>1xx</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th></tr>\n<tr>");
    for n in f.responses {
        let _ = write!(o, "<td>{n}</td>");
    }
    o.push_str("</tr></table>\n");
    let _ = write!(
        o,
        "<h2>WebSocket tunnels</h2>\n<table><tr><th>open</th><th>total</th><th>bytes client&rarr;upstream</th><th>bytes upstream&rarr;client</th></tr>\n\
<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\n",
        m::TUNNELS_OPEN.load(Relaxed),
        m::TUNNELS.load(Relaxed),
        m::TUNNEL_BYTES_TO_UPSTREAM.load(Relaxed),
        m::TUNNEL_BYTES_TO_CLIENT.load(Relaxed)
    );
    o.push_str("<h2>Upstreams</h2>\n<table><tr><th>upstream</th><th>peer</th><th>state</th><th>health</th><th>fails</th><th>connections</th></tr>\n");
    for p in &f.peers {
        let st = state_word(p);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"{st}\">{st}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.upstream),
            esc(&p.peer),
            health_word(p.health),
            p.fails,
            p.conns
        );
    }
    o.push_str("</table>\n<h2>Response times</h2>\n<table><tr><th></th><th>count</th><th>mean (s)</th></tr>\n");
    for (name, h) in [
        ("request", &m::REQUEST_TIME),
        ("upstream", &m::UPSTREAM_TIME),
    ] {
        let (sum, count, _) = h.snapshot();
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        let _ = writeln!(
            o,
            "<tr><td>{name}</td><td>{count}</td><td>{mean:.3}</td></tr>"
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
}
