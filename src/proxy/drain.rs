//! Graceful end of WebSocket tunnels on shutdown: when the tunnel's token is
//! cancelled, wait for the tunnel's turn in the drain window, let the frame in
//! flight each way finish, send both sides a close frame with status 1001
//! ("going away"), wait (bounded) for their close replies, then close.
//!
//! The close sent to the client is unmasked, as from a server; the one sent
//! to the upstream is masked, as RFC 6455 section 5.3 requires of a client.
//!
//! The same close ends the WebSocket tunnels of a location that a reload
//! removed, with `websocket_drain_on_reload on`: each tunnel's token is a
//! child of its location's scope ([`LocationScopes`]), itself a child of the
//! shutdown token. A location is known across reloads by its server's listen
//! addresses and names and its own modifier and pattern ([`location_key`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::conf::model::{
    HttpConf, ListenAddr, LocationConf, LocationMatch, ServerConf, ServerName,
};
use crate::server::Generation;

use super::tunnel::{self, Leftover, TunnelEnd, TunnelIo, TunnelStats, TunnelTimeouts};
use super::wsframe::{self, FrameTracker, WsFrames, GOING_AWAY};

/// How long the frame in flight may take to finish, each way.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peers' close replies.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a tunnel; if `websocket`, a cancelled tunnel is closed with close
/// frames after its turn in `window` (picked from `conn_id`, so closes are
/// spread evenly rather than all at once). Other tunnels end as
/// [`tunnel::run`] ends them. The streams may be TCP, TLS or HTTP/2: the
/// close frames go inside whatever carries the WebSocket.
///
/// A plain `fn` returning the future, which holds the one running tunnel
/// future inline and nothing else of size: an idle tunnel's task is sized by
/// it. What only a cancelled tunnel runs (its turn, the close frames) is in a
/// boxed future, allocated when the drain comes.
#[allow(clippy::too_many_arguments)]
pub fn run_tunnel<C: TunnelIo, U: TunnelIo>(
    client: C,
    client_pending: Bytes,
    upstream: U,
    upstream_pending: Bytes,
    timeouts: TunnelTimeouts,
    cancel: CancellationToken,
    websocket: bool,
    conn_id: u64,
    window: Duration,
) -> impl std::future::Future<Output = TunnelStats<C, U>> + Send {
    let gauge = websocket.then(crate::runtime::metrics::TunnelGauge::open);
    // Only this is kept beside the tunnel for the drain (not the window and
    // id it comes from, nor the timeouts, which the leftover carries).
    let offset = spread(conn_id, window);
    let ws = websocket.then(|| WsFrames::new(&client_pending, &upstream_pending));
    let tunnel = tunnel::run_ws(
        client,
        client_pending,
        upstream,
        upstream_pending,
        timeouts,
        cancel,
        ws,
    );
    // `then`, not an async block awaiting `tunnel`: an async block would
    // keep the captured future and the awaited one as two copies.
    futures_util::FutureExt::then(tunnel, move |stats| async move {
        let Some(gauge) = gauge else {
            return stats;
        };
        let stats = if stats.leftover.is_some() {
            Box::pin(drain_ws(stats, offset)).await
        } else {
            stats
        };
        gauge.bytes(stats.client_to_upstream, stats.upstream_to_client);
        stats
    })
}

/// A cancelled WebSocket tunnel (`stats.leftover` set): keeps it going for
/// `offset` (its turn in the drain window), then closes it with close frames.
async fn drain_ws<C: TunnelIo, U: TunnelIo>(
    mut stats: TunnelStats<C, U>,
    offset: Duration,
) -> TunnelStats<C, U> {
    if !offset.is_zero() {
        let Some(left) = stats.leftover.take() else {
            return stats;
        };
        // Keep the tunnel going until its turn.
        let turn = CancellationToken::new();
        let fut = tunnel::run_ws(
            left.client,
            left.to_upstream,
            left.upstream,
            left.to_client,
            left.timeouts,
            turn.clone(),
            left.ws,
        );
        tokio::pin!(fut);
        let more = tokio::select! {
            s = &mut fut => s,
            _ = tokio::time::sleep(offset) => {
                turn.cancel();
                fut.await
            }
        };
        stats.client_to_upstream += more.client_to_upstream;
        stats.upstream_to_client += more.upstream_to_client;
        stats.end = more.end;
        stats.leftover = more.leftover;
    }
    if let Some(left) = stats.leftover.take() {
        let (c2u, u2c) = close(left).await;
        stats.client_to_upstream += c2u;
        stats.upstream_to_client += u2c;
        stats.end = TunnelEnd::Cancelled;
    }
    stats
}

/// True when a `101` response switched to WebSocket (`Upgrade: websocket`).
pub fn is_websocket(h: &http::HeaderMap) -> bool {
    h.get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// This tunnel's delay within the drain window: a fixed fraction of it
/// derived from the connection id (Fibonacci hashing spreads consecutive ids).
pub fn spread(conn_id: u64, window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    let frac = (conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(frac)
}

/// Closes a cancelled WebSocket tunnel; returns the bytes written to the
/// upstream and to the client.
pub async fn close<C: TunnelIo, U: TunnelIo>(left: Leftover<C, U>) -> (u64, u64) {
    let Leftover {
        client,
        upstream,
        to_client,
        to_upstream,
        ws,
        ..
    } = left;
    let WsFrames {
        c2u: mut fc,
        u2c: mut fu,
    } = ws.unwrap_or_default();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mask = wsframe::mask_key();
    let (c2u, u2c) = tokio::join!(
        tokio::time::timeout(
            FINISH_TIMEOUT,
            finish_and_close(&mut cr, &mut uw, &to_upstream, &mut fc, Some(mask))
        ),
        tokio::time::timeout(
            FINISH_TIMEOUT,
            finish_and_close(&mut ur, &mut cw, &to_client, &mut fu, None)
        ),
    );
    let c2u = c2u.unwrap_or(Err(0));
    let u2c = u2c.unwrap_or(Err(0));
    // A side we could not send a close to is not waited for.
    let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
        tokio::join!(
            async {
                if u2c.is_ok() {
                    await_close(&mut cr, &mut fc).await;
                }
            },
            async {
                if c2u.is_ok() {
                    await_close(&mut ur, &mut fu).await;
                }
            },
        )
    })
    .await;
    let _ = cw.shutdown().await;
    let _ = uw.shutdown().await;
    let n = |r: Result<u64, u64>| match r {
        Ok(n) | Err(n) => n,
    };
    (n(c2u), n(u2c))
}

/// One direction: writes the pending bytes, forwards the rest of the frame in
/// flight, then a close frame unless one already passed this way. `Ok(bytes)` once a close frame has
/// gone (or had gone) to `dst`.
async fn finish_and_close<R, W>(
    src: &mut R,
    dst: &mut W,
    pending: &[u8],
    frames: &mut FrameTracker,
    mask: Option<[u8; 4]>,
) -> Result<u64, u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut written = 0u64;
    if dst.write_all(pending).await.is_err() {
        return Err(written);
    }
    written += pending.len() as u64;
    let mut buf = Vec::new();
    while !frames.at_boundary() {
        let want = frames.at_least_left().min(tunnel::SCRATCH_SIZE as u64) as usize;
        buf.resize(want, 0);
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => return Err(written),
            Ok(n) => n,
        };
        frames.consume(&buf[..n]);
        if dst.write_all(&buf[..n]).await.is_err() {
            return Err(written);
        }
        written += n as u64;
    }
    if frames.close_seen() {
        return Ok(written);
    }
    let frame = wsframe::close_frame(GOING_AWAY, "going away", mask);
    if dst.write_all(&frame).await.is_err() || dst.flush().await.is_err() {
        return Err(written);
    }
    Ok(written + frame.len() as u64)
}

/// Reads and drops frames until a close frame has come, or EOF.
async fn await_close<R: tokio::io::AsyncRead + Unpin>(src: &mut R, frames: &mut FrameTracker) {
    // On the heap: this future is boxed anyway, and 4 KiB arrays inflate it.
    let mut buf = vec![0u8; 4096];
    while !frames.close_seen() {
        match src.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => frames.consume(&buf[..n]),
        }
    }
}

/// The cancellation scopes of WebSocket tunnels by [`location_key`], shared
/// by every generation so a reload can end the tunnels of a removed location.
#[derive(Debug, Default)]
pub struct LocationScopes {
    scopes: Mutex<Scopes>,
}

#[derive(Debug, Default)]
struct Scopes {
    by_key: HashMap<String, CancellationToken>,
    /// The scope of a location by generation and the matcher's address in
    /// that generation's configuration, so that a tunnel does not build its
    /// location's key (a dozen allocations) each time; the matcher is kept
    /// to check the address still means the same location. Cleared whenever
    /// `by_key` loses entries, so it never hands out a forgotten scope.
    memo: fnv::FnvHashMap<(u64, usize, usize), (LocationMatch, CancellationToken)>,
}

impl Scopes {
    /// The token of location `key`'s tunnels (made a child of `shutdown`
    /// on first use). A tunnel only waits on it, so tunnels share it rather
    /// than each registering a child token of its own.
    fn scope(&mut self, key: String, shutdown: &CancellationToken) -> CancellationToken {
        self.by_key
            .entry(key)
            .or_insert_with(|| shutdown.child_token())
            .clone()
    }
}

impl LocationScopes {
    /// The token for a new tunnel in location `key`, cancelled by `shutdown`
    /// and by a reload that drains the location.
    pub fn token(&self, key: String, shutdown: &CancellationToken) -> CancellationToken {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        scopes.scope(key, shutdown)
    }

    /// [`token`](Self::token) for the location `matcher` of server
    /// `server_idx` in generation `gen`; its key is built only the first time.
    fn token_for(
        &self,
        gen: u64,
        server: &ServerConf,
        server_idx: usize,
        matcher: &LocationMatch,
        shutdown: &CancellationToken,
    ) -> CancellationToken {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let id = (gen, server_idx, matcher as *const LocationMatch as usize);
        if let Some((m, scope)) = scopes.memo.get(&id) {
            if m == matcher {
                return scope.clone();
            }
        }
        let scope = scopes.scope(location_key(server, matcher), shutdown);
        scopes.memo.insert(id, (matcher.clone(), scope.clone()));
        scope
    }

    /// After a reload to the locations `keep`: forgets every other scope,
    /// cancelling it when `drain` (else its tunnels run on until they end or
    /// the process shuts down). Returns how many scopes were cancelled.
    pub fn retain(&self, keep: &HashSet<String>, drain: bool) -> usize {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let mut cancelled = 0;
        scopes.memo.clear();
        scopes.by_key.retain(|key, token| {
            let stays = keep.contains(key);
            if !stays && drain && !token.is_cancelled() {
                token.cancel();
                cancelled += 1;
            }
            stays
        });
        cancelled
    }
}

/// The cancellation token of a new tunnel: per location for WebSocket, the
/// shutdown token's child for other upgraded protocols.
pub fn tunnel_token(
    gen: &Generation,
    server_idx: usize,
    matcher: &LocationMatch,
    websocket: bool,
) -> CancellationToken {
    match gen.http().servers.get(server_idx) {
        Some(server) if websocket => {
            gen.tunnel_scopes
                .token_for(gen.id, server, server_idx, matcher, &gen.shutdown)
        }
        _ => gen.shutdown.clone(),
    }
}

/// Who a location is across reloads: its server's listen addresses and
/// names (as sets) and its own modifier and pattern. A nested location is
/// known by its own matcher only.
pub fn location_key(server: &ServerConf, matcher: &LocationMatch) -> String {
    let mut listens: Vec<String> = server
        .listens
        .iter()
        .map(|l| match &l.addr {
            ListenAddr::AnyV4(port) => format!("*:{port}"),
            ListenAddr::Addr(a) => a.to_string(),
            ListenAddr::Unix(p) => format!("unix:{}", p.display()),
        })
        .collect();
    listens.sort();
    listens.dedup();
    let mut names: Vec<String> = server
        .names
        .iter()
        .map(|n| match n {
            ServerName::Exact(s) => s.clone(),
            ServerName::WildStart { suffix, also_bare } => {
                format!("{}{suffix}", if *also_bare { "" } else { "*" })
            }
            ServerName::WildEnd(prefix) => format!("{prefix}*"),
            ServerName::Regex(r) => format!("~{}", r.as_str()),
        })
        .collect();
    names.sort();
    names.dedup();
    let matcher = match matcher {
        LocationMatch::Exact(p) => format!("= {p}"),
        LocationMatch::Prefix(p) => p.clone(),
        LocationMatch::PrefixNoRegex(p) => format!("^~ {p}"),
        LocationMatch::Regex { pattern, caseless } => {
            format!("{} {pattern}", if *caseless { "~*" } else { "~" })
        }
        LocationMatch::Named(n) => format!("@{n}"),
    };
    format!("{} {} {matcher}", listens.join(","), names.join(","))
}

/// The keys of every location of `http`, nested ones included.
pub fn location_keys(http: &HttpConf) -> HashSet<String> {
    fn walk(server: &ServerConf, locs: &[LocationConf], out: &mut HashSet<String>) {
        for l in locs {
            out.insert(location_key(server, &l.matcher));
            walk(server, &l.children, out);
        }
    }
    let mut out = HashSet::new();
    for s in &http.servers {
        walk(s, &s.locations, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_within_the_window_and_varies() {
        let w = Duration::from_secs(10);
        let d: Vec<_> = (1..50).map(|id| spread(id, w)).collect();
        assert!(d.iter().all(|x| *x < w));
        assert!(d.iter().any(|x| *x < w / 4) && d.iter().any(|x| *x > w * 3 / 4));
        assert_eq!(spread(7, Duration::ZERO), Duration::ZERO);
    }

    fn keys(text: &str) -> HashSet<String> {
        let conf = crate::conf::load_str(
            &format!("events {{}}\nhttp {{\n{text}\n}}\n"),
            "test.conf",
            std::path::Path::new("/tmp"),
        )
        .expect("config");
        location_keys(conf.http.as_ref().expect("http"))
    }

    #[test]
    fn a_location_is_its_servers_listens_and_names_and_its_matcher() {
        let a = keys("server { listen 127.0.0.1:81; listen 82; server_name b.example *.a.example; location /ws { location ~* ^/ws/x { } } location = /x { } }");
        let reordered = keys("server { server_name *.a.example b.example; listen 82; listen 127.0.0.1:81; location = /x { } location /ws { location ~* ^/ws/x { } } }");
        assert_eq!(a, reordered);
        assert_eq!(a.len(), 3);
        assert!(
            a.contains("*:82,127.0.0.1:81 *.a.example,b.example /ws"),
            "{a:?}"
        );
        assert!(
            a.contains("*:82,127.0.0.1:81 *.a.example,b.example ~* ^/ws/x"),
            "{a:?}"
        );
        let other_name = keys("server { listen 127.0.0.1:81; listen 82; server_name c.example *.a.example; location /ws { } }");
        assert!(a.is_disjoint(&other_name));
        let other_modifier = keys("server { listen 127.0.0.1:81; listen 82; server_name b.example *.a.example; location ^~ /ws { } }");
        assert!(a.is_disjoint(&other_modifier));
    }

    #[test]
    fn retain_cancels_only_removed_scopes_and_only_when_draining() {
        let shutdown = CancellationToken::new();
        let scopes = LocationScopes::default();
        let stays = scopes.token("a".into(), &shutdown);
        let goes = scopes.token("b".into(), &shutdown);
        let kept_off = scopes.token("c".into(), &shutdown);
        let keep: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        // Without draining, a removed scope is forgotten, not cancelled.
        assert_eq!(scopes.retain(&keep, false), 0);
        assert!(!kept_off.is_cancelled());
        let keep: HashSet<String> = ["a".to_string()].into();
        assert_eq!(scopes.retain(&keep, true), 1);
        assert!(goes.is_cancelled());
        assert!(!stays.is_cancelled());
        // Shutdown still reaches every tunnel, forgotten scopes included.
        shutdown.cancel();
        assert!(stays.is_cancelled() && kept_off.is_cancelled());
    }
}
