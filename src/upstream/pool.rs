//! The upstream keepalive cache (`keepalive N` in an `upstream` block).
//!
//! nginx keeps, per worker and per upstream group, at most N idle
//! connections to any of the group's peers, most recently used first; a
//! connection put back into a full cache evicts the least recently used one.
//! sluice keeps one per group and worker thread, as nginx does per worker
//! process: a connection's task runs on the worker that opened it, and a
//! request on another worker would cross threads twice per exchange to use
//! it. Idle connections are
//! hyper http1 senders whose connection task runs on its own; a connection the
//! upstream closed while idle shows as closed (hyper reads while idle) and is
//! never handed out. The cache lives outside the configuration and is carried
//! over a reload for the same upstream name (see `Upstreams::new`).
//!
//! One difference: a connection is not evicted to make room while it has
//! been idle for less than [`GRACE`]. Responses and requests complete in
//! bunches, one per turn of the event loop, and under a load whose
//! concurrency is near N the returns of one bunch overflow a cache that the
//! requests of the next would empty: nginx closes the overflow and opens as
//! many connections again a moment later (17 % of requests opened one in
//! the benchmark's keep-alive scenario, 64 clients and `keepalive 32`;
//! sluice, evicting at once, 2.5-3 %; with the grace, 0.4 %). The cache may
//! so hold more than N for as long as the load keeps every connection busy
//! within the grace; what is left over is closed by the next put or sweep
//! after it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::conf::model::UpstreamConf;
use crate::proxy::body::ProxyBody;

/// The request side of one upstream HTTP/1 connection.
pub type Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// A connection taken from the cache or freshly made, with what
/// `keepalive_requests` and `keepalive_time` need to know about it.
pub struct PooledConn {
    pub sender: Sender,
    /// When the connection was established.
    pub created: Instant,
    /// Requests sent on it so far, the current one included.
    pub requests: u64,
    /// True when it came from the cache (a failure before the response may
    /// be the upstream's idle close racing the request: retry fresh).
    pub reused: bool,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("requests", &self.requests)
            .field("reused", &self.reused)
            .finish()
    }
}

impl PooledConn {
    pub fn fresh(sender: Sender) -> Self {
        PooledConn {
            sender,
            created: Instant::now(),
            requests: 1,
            reused: false,
        }
    }
}

/// The `keepalive*` settings of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `keepalive N`: idle connections kept.
    pub max_idle: usize,
    /// `keepalive_requests`: requests per connection.
    pub requests: u64,
    /// `keepalive_timeout`: how long a connection may stay idle.
    pub timeout: Duration,
    /// `keepalive_time`: how long a connection may be used at all.
    pub time: Duration,
}

impl Limits {
    /// `None` when the group has no `keepalive`.
    pub fn of(conf: &UpstreamConf) -> Option<Limits> {
        let n = conf.keepalive.filter(|n| *n > 0)?;
        Some(Limits {
            max_idle: n as usize,
            requests: conf.keepalive_requests,
            timeout: conf.keepalive_timeout,
            time: conf.keepalive_time,
        })
    }
}

/// How long a connection that went idle is spared from eviction.
pub const GRACE: Duration = Duration::from_millis(10);

struct Idle {
    addr: SocketAddr,
    conn: PooledConn,
    since: Instant,
}

/// One group's idle connections, a cache per worker, each most recently
/// used at the front.
pub struct Pool {
    idle: Vec<Mutex<VecDeque<Idle>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::with_workers(crate::runtime::workers::count())
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_workers(n: usize) -> Self {
        Pool {
            idle: (0..n.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// The calling worker's cache.
    fn own_cache(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        let i = crate::runtime::workers::index().min(self.idle.len() - 1);
        lock(&self.idle[i])
    }

    /// Idle connections held (all peers, all workers).
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|c| lock(c).len()).sum()
    }

    /// The most recently used idle connection to `addr` that is still open,
    /// ready and within its limits. Stale ones met on the way are closed.
    pub fn take(&self, addr: SocketAddr, limits: &Limits) -> Option<PooledConn> {
        let now = Instant::now();
        let mut idle = self.own_cache();
        let mut dropped = Vec::new();
        let mut found = None;
        let mut i = 0;
        while i < idle.len() {
            let e = &mut idle[i];
            if expired(e, limits, now) || e.conn.sender.is_closed() {
                if let Some(e) = idle.remove(i) {
                    dropped.push(e);
                }
                continue;
            }
            if e.addr == addr {
                if let Some(mut e) = idle.remove(i) {
                    // hyper reads an idle connection, so an upstream close is
                    // seen as an error here once its task has run.
                    if matches!(e.conn.sender.ready().now_or_never(), Some(Ok(()))) {
                        e.conn.requests += 1;
                        e.conn.reused = true;
                        found = Some(e.conn);
                        break;
                    }
                    dropped.push(e);
                }
                continue;
            }
            i += 1;
        }
        drop(idle);
        // Closing happens outside the lock (dropping a sender ends its connection).
        drop(dropped);
        found
    }

    /// Puts a connection whose exchange ended cleanly back, unless it has
    /// used up `keepalive_requests` or `keepalive_time`. Evicts the least
    /// recently used connections past N that have been idle for [`GRACE`].
    pub fn put(&self, addr: SocketAddr, conn: PooledConn, limits: &Limits) {
        self.put_at(addr, conn, limits, Instant::now());
    }

    fn put_at(&self, addr: SocketAddr, conn: PooledConn, limits: &Limits, now: Instant) {
        if conn.requests >= limits.requests
            || now.duration_since(conn.created) >= limits.time
            || conn.sender.is_closed()
        {
            return;
        }
        let mut idle = self.own_cache();
        idle.push_front(Idle {
            addr,
            conn,
            since: now,
        });
        let evicted = evict(&mut idle, limits, now);
        drop(idle);
        drop(evicted);
    }

    /// Closes idle connections past keepalive_timeout or keepalive_time, as
    /// nginx's timers do, so an idle pool does not hold sockets forever, and
    /// those past N whose grace is over.
    pub fn sweep(&self, limits: &Limits) {
        self.sweep_at(limits, Instant::now());
    }

    fn sweep_at(&self, limits: &Limits, now: Instant) {
        for cache in &self.idle {
            sweep(cache, limits, now);
        }
    }

    /// Keeps only connections to `addrs` (after a reload changed the group)
    /// and closes everything when the group has no `keepalive` any more.
    pub fn retain(&self, addrs: &[SocketAddr], limits: Option<&Limits>) {
        for cache in &self.idle {
            retain(cache, addrs, limits);
        }
    }
}

fn lock(cache: &Mutex<VecDeque<Idle>>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
    // Only plain moves happen under the lock; a poisoned one is intact.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes from the back (least recently used first) what is past N and out
/// of its grace, and what has expired.
fn evict(idle: &mut VecDeque<Idle>, limits: &Limits, now: Instant) -> Vec<Idle> {
    let mut evicted = Vec::new();
    while let Some(e) = idle.back() {
        let over = idle.len() > limits.max_idle && now.duration_since(e.since) >= GRACE;
        if !over && !expired(e, limits, now) {
            break;
        }
        evicted.extend(idle.pop_back());
    }
    evicted
}

fn sweep(cache: &Mutex<VecDeque<Idle>>, limits: &Limits, now: Instant) {
    let mut idle = lock(cache);
    let mut expired_conns = Vec::new();
    let mut i = 0;
    while i < idle.len() {
        if expired(&idle[i], limits, now) {
            if let Some(e) = idle.remove(i) {
                expired_conns.push(e);
            }
        } else {
            i += 1;
        }
    }
    let over = evict(&mut idle, limits, now);
    drop(idle);
    drop(expired_conns);
    drop(over);
}

fn retain(cache: &Mutex<VecDeque<Idle>>, addrs: &[SocketAddr], limits: Option<&Limits>) {
    let mut idle = lock(cache);
    let removed: Vec<Idle> = match limits {
        None => idle.drain(..).collect(),
        Some(l) => {
            let mut keep = VecDeque::new();
            let mut removed = Vec::new();
            for e in idle.drain(..) {
                if addrs.contains(&e.addr) && keep.len() < l.max_idle {
                    keep.push_back(e);
                } else {
                    removed.push(e);
                }
            }
            *idle = keep;
            removed
        }
    };
    drop(idle);
    drop(removed);
}

/// Returns the connection of a finished exchange to its group's cache. hyper
/// marks a connection ready for the next request only after its task has
/// seen the end of the response, which may not have happened yet: then a
/// small task waits for it (at most `keepalive_timeout`).
pub fn release(peer: &super::PeerGuard, mut conn: PooledConn) {
    let Some((pool, limits)) = peer.group().keepalive() else {
        return;
    };
    let addr = peer.addr();
    match conn.sender.ready().now_or_never() {
        Some(Ok(())) => pool.put(addr, conn, limits),
        Some(Err(_)) => {}
        None => {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let (pool, limits) = (pool.clone(), *limits);
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(limits.timeout, conn.sender.ready()).await
                {
                    pool.put(addr, conn, &limits);
                }
            });
        }
    }
}

fn expired(e: &Idle, limits: &Limits, now: Instant) -> bool {
    now.duration_since(e.since) >= limits.timeout
        || now.duration_since(e.conn.created) >= limits.time
}

/// Sweeps a group's idle connections until `stop`; the period is a fraction
/// of keepalive_timeout, so a connection closes at most ~1/4 late, and at
/// most a second, so what is past N closes soon after a load ends.
pub async fn sweep_forever(
    pool: std::sync::Arc<Pool>,
    limits: Limits,
    stop: tokio_util::sync::CancellationToken,
) {
    let period = (limits.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => pool.sweep(&limits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn limits(n: usize) -> Limits {
        Limits {
            max_idle: n,
            requests: 100,
            timeout: Duration::from_secs(60),
            time: Duration::from_secs(3600),
        }
    }

    /// A sender connected to a listener whose accepted side is returned too.
    async fn connect(l: &TcpListener) -> (PooledConn, TcpStream) {
        let (c, s, _) = connect_watched(l).await;
        (c, s)
    }

    /// Also returns a receiver that completes when hyper's connection task ends.
    async fn connect_watched(
        l: &TcpListener,
    ) -> (PooledConn, TcpStream, tokio::sync::oneshot::Receiver<()>) {
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(c.expect("c")))
            .await
            .expect("handshake");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = tx.send(());
        });
        let mut c = PooledConn::fresh(sender);
        c.sender.ready().await.expect("ready");
        (c, s.expect("accept").0, rx)
    }

    #[tokio::test]
    async fn lru_eviction_and_per_addr_take() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a: SocketAddr = "127.0.0.1:1".parse().expect("a");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("b");
        let pool = Pool::new();
        let lim = limits(2);
        let (c1, _s1) = connect(&l).await;
        let (c2, _s2) = connect(&l).await;
        let (c3, _s3) = connect(&l).await;
        let t0 = Instant::now();
        pool.put_at(a, c1, &lim, t0);
        pool.put_at(b, c2, &lim, t0 + GRACE);
        pool.put_at(b, c3, &lim, t0 + GRACE * 2);
        // c1 (least recently used) was evicted.
        assert_eq!(pool.idle_count(), 2);
        assert!(pool.take(a, &lim).is_none());
        let got = pool.take(b, &lim).expect("b");
        assert!(got.reused);
        assert_eq!(got.requests, 2);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn no_eviction_within_the_grace() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a: SocketAddr = "127.0.0.1:1".parse().expect("a");
        let pool = Pool::new();
        let lim = limits(1);
        let (c1, _s1) = connect(&l).await;
        let (mut c2, _s2) = connect(&l).await;
        c2.requests = 5;
        let t0 = Instant::now();
        pool.put_at(a, c1, &lim, t0);
        pool.put_at(a, c2, &lim, t0 + GRACE / 2);
        assert_eq!(pool.idle_count(), 2, "both within the grace");
        // The sweep closes the one past N whose grace is over.
        pool.sweep_at(&lim, t0 + GRACE);
        assert_eq!(pool.idle_count(), 1);
        pool.sweep_at(&lim, t0 + GRACE * 3);
        assert_eq!(pool.idle_count(), 1, "N are kept");
        let got = pool.take(a, &lim).expect("the later one");
        assert_eq!(got.requests, 6);
    }

    #[tokio::test]
    async fn each_worker_has_a_cache_of_its_own() {
        use crate::runtime::workers::become_worker;
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a: SocketAddr = "127.0.0.1:1".parse().expect("a");
        let pool = Pool::with_workers(2);
        let lim = limits(1);
        let (c0, _s0) = connect(&l).await;
        let (c1, _s1) = connect(&l).await;
        pool.put(a, c0, &lim);
        become_worker(1);
        assert!(pool.take(a, &lim).is_none(), "worker 0's connection");
        // Worker 1's put does not evict worker 0's connection (one each).
        pool.put(a, c1, &lim);
        assert_eq!(pool.idle_count(), 2);
        become_worker(0);
        assert!(pool.take(a, &lim).is_some());
        assert!(pool.take(a, &lim).is_none(), "worker 1's connection");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn closed_by_upstream_is_not_handed_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a: SocketAddr = "127.0.0.1:1".parse().expect("a");
        let pool = Pool::new();
        let lim = limits(4);
        let (c1, s1, ended) = connect_watched(&l).await;
        pool.put(a, c1, &lim);
        drop(s1);
        // Wait until hyper's connection task has seen the close.
        let _ = ended.await;
        assert!(pool.take(a, &lim).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn request_limit_and_retain() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a: SocketAddr = "127.0.0.1:1".parse().expect("a");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("b");
        let pool = Pool::new();
        let mut lim = limits(4);
        lim.requests = 2;
        let (mut c1, _s1) = connect(&l).await;
        c1.requests = 2;
        pool.put(a, c1, &lim);
        assert_eq!(pool.idle_count(), 0, "keepalive_requests reached");
        let (c2, _s2) = connect(&l).await;
        let (c3, mut s3) = connect(&l).await;
        pool.put(a, c2, &lim);
        pool.put(b, c3, &lim);
        pool.retain(&[a], Some(&lim));
        assert_eq!(pool.idle_count(), 1);
        // The connection to b was closed by the retain.
        let mut buf = [0u8; 1];
        assert_eq!(s3.read(&mut buf).await.expect("read"), 0);
        pool.retain(&[a], None);
        assert_eq!(pool.idle_count(), 0);
        let _ = s3.shutdown().await;
    }
}
