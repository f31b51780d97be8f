//! Active health checks, as Tengine's `ngx_http_upstream_check_module`:
//! `check interval= rise= fall= timeout= type=tcp|http [default_down=] [port=]`,
//! `check_http_send`, `check_http_expect_alive`, and the `check_status` page.
//!
//! One background task per checked group probes every peer each `interval`,
//! never on the request path; verdicts go into the peers' shared state
//! (`PeerState::record_check`), which balancers read. The runtime keeps one
//! [`Checks`] for the current generation and replaces it on reload, which
//! stops the old tasks: the state they wrote carries over, so a reload
//! neither double-probes nor forgets the rise and fall counts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Group, Health, Upstreams};
use crate::conf::model::{CheckType, HealthCheck, LogLevel, StatusFormat};

/// Probes in flight at once across all groups: a large upstream must not
/// open thousands of sockets in one burst.
const MAX_CONCURRENT_PROBES: usize = 64;

/// The running checkers of one generation; dropping it stops them.
#[derive(Debug, Default)]
pub struct Checks {
    stop: CancellationToken,
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts one checker task per group that has `check`. Must run inside a
/// tokio runtime.
pub fn start(upstreams: &Upstreams) -> Checks {
    let checks = Checks::default();
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    // Idle keepalive connections are swept by the same background work,
    // stopped with it when the generation is replaced.
    for g in upstreams.groups() {
        if let Some((pool, limits)) = g.keepalive() {
            tokio::spawn(super::pool::sweep_forever(
                pool.clone(),
                *limits,
                checks.stop.clone(),
            ));
        }
    }
    for g in upstreams.groups() {
        if g.conf().check.is_none() || g.peers().is_empty() {
            continue;
        }
        let (g, stop, limit) = (g.clone(), checks.stop.clone(), limit.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = run_group(g, limit) => {}
            }
        });
    }
    checks
}

async fn run_group(g: Arc<Group>, limit: Arc<Semaphore>) {
    let Some(check) = g.conf().check.clone() else {
        return;
    };
    let check = Arc::new(check);
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut probes = tokio::task::JoinSet::new();
        for i in 0..g.peers().len() {
            let (g, check, limit) = (g.clone(), check.clone(), limit.clone());
            probes.spawn(async move {
                let Ok(_permit) = limit.acquire().await else {
                    return;
                };
                let peer = &g.peers()[i];
                let addr = match check.port {
                    Some(p) if p != 0 => SocketAddr::new(peer.addr().ip(), p),
                    _ => peer.addr(),
                };
                let passed = matches!(
                    tokio::time::timeout(check.timeout, probe(addr, &check)).await,
                    Ok(true)
                );
                match peer.state().record_check(passed, check.rise, check.fall) {
                    Some(Health::Down) => crate::error_log!(
                        LogLevel::Error,
                        "disable check peer: {} (upstream \"{}\")",
                        peer.addr(),
                        g.name()
                    ),
                    Some(Health::Up) => crate::error_log!(
                        LogLevel::Error,
                        "enable check peer: {} (upstream \"{}\")",
                        peer.addr(),
                        g.name()
                    ),
                    _ => {}
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

/// One probe: a TCP connect, or for `type=http` the `check_http_send`
/// request and a status line whose class `check_http_expect_alive` accepts.
async fn probe(addr: SocketAddr, check: &HealthCheck) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    match check.kind {
        CheckType::Tcp => true,
        CheckType::Http => {
            if s.write_all(check.http_send.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            let mut n = 0;
            // The status line's code is within the first 12 bytes.
            while n < 12 {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            status_passes(&buf[..n], check.expect_alive)
        }
    }
}

/// `HTTP/1.x NNN` with the class bit of NNN set in `expect` (bit 0 = 1xx).
fn status_passes(head: &[u8], expect: u8) -> bool {
    if head.len() < 12 || !head.starts_with(b"HTTP/") {
        return false;
    }
    let Some(sp) = head.iter().position(|&b| b == b' ') else {
        return false;
    };
    let code = &head[sp + 1..];
    if code.len() < 3 || !code[..3].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let class = code[0] - b'0';
    (1..=5).contains(&class) && expect & (1 << (class - 1)) != 0
}

/// Query arguments Tengine's status page accepts: `format=` and `status=up|down`.
fn query_arg<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `check_status` page: (content type, body), in Tengine's formats.
/// Peers are numbered across all checked groups in configuration order.
pub fn status_page(
    upstreams: &Upstreams,
    generation: u64,
    default: StatusFormat,
    query: Option<&str>,
) -> (&'static str, String) {
    let format = match query_arg(query, "format") {
        Some("html") => StatusFormat::Html,
        Some("csv") => StatusFormat::Csv,
        Some("json") => StatusFormat::Json,
        _ => default,
    };
    let only = match query_arg(query, "status") {
        Some("up") => Some(false),
        Some("down") => Some(true),
        _ => None,
    };
    struct Row<'a> {
        index: usize,
        upstream: &'a str,
        name: String,
        down: bool,
        rise: u32,
        fall: u32,
        kind: &'static str,
        port: u16,
    }
    let mut rows = Vec::new();
    let mut index = 0;
    for g in upstreams.groups() {
        let Some(c) = &g.conf().check else { continue };
        for p in g.peers() {
            let st = p.state();
            let down = st.health() == Health::Down;
            if only.is_none_or(|d| d == down) {
                rows.push(Row {
                    index,
                    upstream: g.name(),
                    name: p.addr().to_string(),
                    down,
                    rise: st.rise_count(),
                    fall: st.fall_count(),
                    kind: match c.kind {
                        CheckType::Tcp => "tcp",
                        CheckType::Http => "http",
                    },
                    port: c.port.unwrap_or(0),
                });
            }
            index += 1;
        }
    }
    let up_down = |d: bool| if d { "down" } else { "up" };
    let mut out = String::new();
    match format {
        StatusFormat::Html => {
            let _ = write!(
                out,
                "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\n\
                 \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\n\
                 <html xmlns=\"http://www.w3.org/1999/xhtml\">\n<head>\n  \
                 <title>Nginx http upstream check status</title>\n</head>\n<body>\n\
                 <h1>Nginx http upstream check status</h1>\n\
                 <h2>Check upstream server number: {}, generation: {generation}</h2>\n\
                 <table style=\"background-color:white\" cellspacing=\"0\"        \
                 cellpadding=\"3\" border=\"1\">\n  <tr bgcolor=\"#C0C0C0\">\n    \
                 <th>Index</th>\n    <th>Upstream</th>\n    <th>Name</th>\n    \
                 <th>Status</th>\n    <th>Rise counts</th>\n    <th>Fall counts</th>\n    \
                 <th>Check type</th>\n    <th>Check port</th>\n  </tr>\n",
                rows.len()
            );
            for r in &rows {
                let _ = write!(
                    out,
                    "  <tr{}>\n    <td>{}</td>\n    <td>{}</td>\n    <td>{}</td>\n    \
                     <td>{}</td>\n    <td>{}</td>\n    <td>{}</td>\n    <td>{}</td>\n    \
                     <td>{}</td>\n  </tr>\n",
                    if r.down { " bgcolor=\"#FF0000\"" } else { "" },
                    r.index,
                    html_escape(r.upstream),
                    r.name,
                    up_down(r.down),
                    r.rise,
                    r.fall,
                    r.kind,
                    r.port
                );
            }
            out.push_str("</table>\n</body>\n</html>\n");
            ("text/html", out)
        }
        StatusFormat::Csv => {
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    r.index,
                    r.upstream,
                    r.name,
                    up_down(r.down),
                    r.rise,
                    r.fall,
                    r.kind,
                    r.port
                );
            }
            ("text/plain", out)
        }
        StatusFormat::Json => {
            let _ = write!(
                out,
                "{{\"servers\": {{\n  \"total\": {},\n  \"generation\": {generation},\n  \"server\": [\n",
                rows.len()
            );
            for (i, r) in rows.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "    {{\"index\": {}, \"upstream\": \"{}\", \"name\": \"{}\", \"status\": \"{}\", \"rise\": {}, \"fall\": {}, \"type\": \"{}\", \"port\": {}}}{}",
                    r.index,
                    json_escape(r.upstream),
                    r.name,
                    up_down(r.down),
                    r.rise,
                    r.fall,
                    r.kind,
                    r.port,
                    if i + 1 == rows.len() { "" } else { "," }
                );
            }
            out.push_str("  ]\n}}\n");
            ("application/json", out)
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Lets a test wait for a verdict without sleeping blindly.
#[cfg(test)]
async fn wait_for(st: &super::PeerState, want: Health) {
    for _ in 0..2000 {
        if st.health() == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("peer never became {want:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::UpstreamConf;
    use std::path::Path;

    fn upstreams(block: &str) -> Upstreams {
        let text = format!("events {{}} http {{ upstream u {{ {block} }} }}");
        let conf = crate::conf::load_str(&text, "t.conf", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}"));
        let ups: Vec<Arc<UpstreamConf>> = conf.http.expect("http").upstreams;
        Upstreams::new(&ups, None)
    }

    #[test]
    fn status_line_classes() {
        assert!(status_passes(b"HTTP/1.1 200 OK\r\n", 2 | 4));
        assert!(status_passes(b"HTTP/1.0 302 Found", 2 | 4));
        assert!(!status_passes(b"HTTP/1.1 500 Oops\r\n", 2 | 4));
        assert!(status_passes(b"HTTP/1.1 500 Oops\r\n", 16));
        assert!(!status_passes(b"HTTP/1.1 2", 2));
        assert!(!status_passes(b"SSH-2.0-OpenSSH_9.0\r\n", 2));
    }

    #[test]
    fn rise_and_fall() {
        let st = super::super::PeerState::default();
        st.set_health(Health::Down);
        assert_eq!(st.record_check(true, 2, 3), None);
        assert_eq!(st.record_check(true, 2, 3), Some(Health::Up));
        assert_eq!(st.record_check(false, 2, 3), None);
        assert_eq!(st.record_check(true, 2, 3), None);
        assert_eq!(st.record_check(false, 2, 3), None);
        assert_eq!(st.record_check(false, 2, 3), None);
        assert_eq!(st.record_check(false, 2, 3), Some(Health::Down));
        assert_eq!((st.rise_count(), st.fall_count()), (0, 3));
    }

    #[test]
    fn default_down_and_status_formats() {
        let u = upstreams(
            "server 127.0.0.1:1; server 127.0.0.1:2; check interval=1000 type=http port=8080;",
        );
        let g = &u.groups()[0];
        assert_eq!(g.peers()[0].state().health(), Health::Down);
        g.peers()[1].state().set_health(Health::Up);
        let (ct, csv) = status_page(&u, 3, StatusFormat::Csv, None);
        assert_eq!(ct, "text/plain");
        assert_eq!(
            csv,
            "0,u,127.0.0.1:1,down,0,0,http,8080\n1,u,127.0.0.1:2,up,0,0,http,8080\n"
        );
        let (_, json) = status_page(&u, 3, StatusFormat::Html, Some("format=json&status=up"));
        assert!(json.starts_with("{\"servers\": {\n  \"total\": 1,\n  \"generation\": 3,"));
        assert!(json.contains("{\"index\": 1, \"upstream\": \"u\", \"name\": \"127.0.0.1:2\", \"status\": \"up\", \"rise\": 0, \"fall\": 0, \"type\": \"http\", \"port\": 8080}\n"));
        let (ct, html) = status_page(&u, 3, StatusFormat::Html, None);
        assert_eq!(ct, "text/html");
        assert!(html.contains("<h2>Check upstream server number: 2, generation: 3</h2>"));
        assert!(html.contains("  <tr bgcolor=\"#FF0000\">\n    <td>0</td>"));
    }

    #[tokio::test]
    async fn tcp_checks_follow_the_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let u = upstreams(&format!(
            "server {addr}; server 127.0.0.1:9; check interval=20 rise=2 fall=2 timeout=500 type=tcp;"
        ));
        let checks = start(&u);
        let accept = tokio::spawn(async move {
            // Accept (and drop) probe connections while the listener lives.
            for _ in 0..10_000 {
                if l.accept().await.is_err() {
                    break;
                }
            }
        });
        let g = &u.groups()[0];
        wait_for(g.peers()[0].state(), Health::Up).await;
        accept.abort();
        let _ = accept.await;
        wait_for(g.peers()[0].state(), Health::Down).await;
        assert_eq!(g.peers()[1].state().health(), Health::Down);
        drop(checks);
    }
}
