//! Upstream groups, their peers' runtime state and nginx's balancers.
//!
//! The configuration (`conf::model::UpstreamConf`) is immutable and replaced
//! on reload; the state nginx keeps per peer (failure count, checked/accessed
//! times, open connections, the active health-check verdict) lives here in
//! `PeerState` and is carried into the next generation for peers with the same
//! (upstream name, address). As in nginx each resolved address of a `server`
//! line is its own peer with that line's parameters.

mod balance;
pub mod check;
pub mod crc32;
pub mod pool;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::conf::model::{Balance, UpstreamConf};

/// Milliseconds on a monotonic clock private to this module (see [`now_ms`]).
pub type Millis = u64;

/// The current time for peer bookkeeping. nginx uses whole seconds
/// (`ngx_time()`); milliseconds keep the same comparisons a little finer.
pub fn now_ms() -> Millis {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Why no peer could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// Every peer (primary and backup) is down, failed, full or already
    /// tried; nginx answers 502 and logs "no live upstreams while connecting
    /// to upstream".
    #[error("no live upstreams")]
    NoLiveUpstreams,
}

/// What a balancer may need from the request.
#[derive(Debug, Clone, Copy)]
pub struct PickInput<'a> {
    /// For `ip_hash` (IPv4: first three octets, IPv6: all sixteen bytes).
    pub client_ip: IpAddr,
    /// The evaluated `hash` key; `None` or empty falls back to round robin.
    pub hash_key: Option<&'a [u8]>,
}

/// Active health-check verdict stored in a peer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check has run (or no check is configured): the peer is usable.
    Unknown,
    Up,
    /// The checker marked the peer down: balancers skip it like `down`.
    Down,
}

/// A peer's mutable state, shared across configuration generations.
#[derive(Debug, Default)]
pub struct PeerState {
    fails: AtomicU32,
    accessed: AtomicU64,
    checked: AtomicU64,
    conns: AtomicU32,
    health: AtomicU8,
    /// Consecutive passed / failed active checks (Tengine's rise and fall
    /// counts), kept across reloads with the rest of the state.
    rise_count: AtomicU32,
    fall_count: AtomicU32,
}

impl PeerState {
    /// Failures counted since the peer was last seen working.
    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Connections currently held through a [`PeerGuard`].
    pub fn conns(&self) -> u32 {
        self.conns.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// Consecutive passed active checks.
    pub fn rise_count(&self) -> u32 {
        self.rise_count.load(Ordering::Relaxed)
    }

    /// Consecutive failed active checks.
    pub fn fall_count(&self) -> u32 {
        self.fall_count.load(Ordering::Relaxed)
    }

    /// Records one active check and applies Tengine's rule: `rise`
    /// consecutive passes mark a down peer up, `fall` consecutive failures
    /// mark an up peer down. Returns the new verdict when it changed.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        let down = self.health() == Health::Down;
        if passed {
            self.fall_count.store(0, Ordering::Relaxed);
            let n = self
                .rise_count
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if down && n >= rise {
                self.set_health(Health::Up);
                return Some(Health::Up);
            }
            if self.health() == Health::Unknown {
                self.set_health(Health::Up);
            }
        } else {
            self.rise_count.store(0, Ordering::Relaxed);
            let n = self
                .fall_count
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if !down && n >= fall {
                self.set_health(Health::Down);
                return Some(Health::Down);
            }
        }
        None
    }

    /// Set by the active health checker.
    pub fn set_health(&self, h: Health) {
        let v = match h {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        };
        self.health.store(v, Ordering::Relaxed);
    }
}

/// One peer: one resolved address of one `server` line.
#[derive(Debug)]
pub struct Peer {
    addr: SocketAddr,
    /// The `server` line as written (`backend1:8080`), shared by its addresses.
    server: Arc<str>,
    /// Equal for peers whose server strings are equal (consistent hash
    /// compares server strings).
    server_id: u32,
    weight: u32,
    max_fails: u32,
    fail_timeout: Millis,
    down: bool,
    backup: bool,
    max_conns: u32,
    state: Arc<PeerState>,
}

impl Peer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn server_name(&self) -> &str {
        &self.server
    }
    pub fn is_backup(&self) -> bool {
        self.backup
    }
    pub fn is_down(&self) -> bool {
        self.down
    }
    pub fn weight(&self) -> u32 {
        self.weight
    }
    pub fn state(&self) -> &Arc<PeerState> {
        &self.state
    }
}

/// Smooth weighted round robin bookkeeping (`current_weight`,
/// `effective_weight`); reset on reload as in nginx.
#[derive(Debug, Clone, Copy)]
struct Weights {
    current: i64,
    effective: i64,
}

#[derive(Debug)]
enum Kind {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash,
    /// Sorted ketama points: (hash, server_id).
    Chash(Vec<(u32, u32)>),
    /// Prefix sums of primary weights (`ranges[i].range`).
    Random {
        two: bool,
        ranges: Vec<u32>,
    },
}

/// A runtime upstream group.
#[derive(Debug)]
pub struct Group {
    conf: Arc<UpstreamConf>,
    /// Primary peers first, then backup peers.
    peers: Vec<Peer>,
    n_primary: usize,
    primary_weight: u32,
    /// nginx's `peers->single`: one primary peer and no backup.
    single: bool,
    tries: usize,
    kind: Kind,
    /// One lock per group, held only for the loop over the peers of one pick
    /// (no I/O, no allocation): smooth weighted round robin must add to every
    /// eligible peer's `current_weight` and subtract the total from the
    /// winner as one step, and `max_conns` needs the check and the increment
    /// of `conns` to be one step. nginx holds its peers write lock for the
    /// same span when the group lives in a shared zone.
    weights: Mutex<Vec<Weights>>,
    /// The keepalive cache, carried over reloads with the group's name.
    pool: Arc<pool::Pool>,
    keepalive: Option<pool::Limits>,
}

/// Per-request balancer state: nginx's `tried` bitmap, whether the request
/// moved on to the backup peers, and the hash balancers' running values.
/// Create one per request (client request, not per upstream attempt) and pass
/// it to every [`Group::pick`] of that request. Does not allocate for groups
/// of up to 64 primary and 64 backup peers.
#[derive(Debug, Default)]
pub struct Tried {
    bits: u64,
    more: Vec<u64>,
    in_backup: bool,
    started: bool,
    /// `hp->tries` / `iphp->tries` / `rp->tries`.
    tries: u32,
    /// ip_hash running hash; hash: running sum; consistent: point index.
    hash: u32,
    rehash: u32,
}

impl Tried {
    pub fn new() -> Self {
        Self::default()
    }

    fn has(&self, i: usize) -> bool {
        if i < 64 {
            self.bits & (1 << i) != 0
        } else {
            let (w, b) = ((i - 64) / 64, (i - 64) % 64);
            self.more.get(w).is_some_and(|x| x & (1 << b) != 0)
        }
    }

    fn set(&mut self, i: usize) {
        if i < 64 {
            self.bits |= 1 << i;
        } else {
            let (w, b) = ((i - 64) / 64, (i - 64) % 64);
            if self.more.len() <= w {
                self.more.resize(w + 1, 0);
            }
            self.more[w] |= 1 << b;
        }
    }

    fn clear(&mut self) {
        self.bits = 0;
        self.more.iter_mut().for_each(|x| *x = 0);
    }
}

impl Group {
    fn new(
        conf: Arc<UpstreamConf>,
        carried: &mut HashMap<SocketAddr, Arc<PeerState>>,
        pool: Option<Arc<pool::Pool>>,
    ) -> Self {
        let mut peers = Vec::new();
        let mut names: HashMap<&str, u32> = HashMap::new();
        let default_down = conf.check.as_ref().is_some_and(|c| c.default_down);
        for backup in [false, true] {
            for s in conf.servers.iter().filter(|s| s.backup == backup) {
                let next_id = names.len() as u32;
                let server_id = *names.entry(s.name.as_str()).or_insert(next_id);
                let server: Arc<str> = Arc::from(s.name.as_str());
                for &addr in &s.addrs {
                    let state = carried.remove(&addr).unwrap_or_else(|| {
                        let st = PeerState::default();
                        if default_down {
                            st.set_health(Health::Down);
                        }
                        Arc::new(st)
                    });
                    peers.push(Peer {
                        addr,
                        server: server.clone(),
                        server_id,
                        weight: s.weight.max(1),
                        max_fails: s.max_fails,
                        fail_timeout: u64::try_from(s.fail_timeout.as_millis()).unwrap_or(u64::MAX),
                        down: s.down,
                        backup: s.backup,
                        max_conns: s.max_conns,
                        state,
                    });
                }
            }
        }
        let n_primary = peers.iter().filter(|p| !p.backup).count();
        let n_backup = peers.len() - n_primary;
        let primary_weight: u32 = peers[..n_primary].iter().map(|p| p.weight).sum();
        // nginx's ngx_http_upstream_tries(): peers not marked down.
        let tries = peers.iter().filter(|p| !p.down).count();
        let kind = match &conf.balance {
            Balance::RoundRobin => Kind::RoundRobin,
            Balance::LeastConn => Kind::LeastConn,
            Balance::IpHash => Kind::IpHash,
            Balance::Hash {
                consistent: false, ..
            } => Kind::Hash,
            Balance::Hash {
                consistent: true, ..
            } => Kind::Chash(balance::chash_points(&peers[..n_primary])),
            Balance::Random { two, .. } => {
                let mut acc = 0;
                let ranges = peers[..n_primary]
                    .iter()
                    .map(|p| {
                        let r = acc;
                        acc += p.weight;
                        r
                    })
                    .collect();
                Kind::Random { two: *two, ranges }
            }
        };
        let weights = peers
            .iter()
            .map(|p| Weights {
                current: 0,
                effective: i64::from(p.weight),
            })
            .collect();
        let keepalive = pool::Limits::of(&conf);
        let pool = pool.unwrap_or_default();
        let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
        pool.retain(&addrs, keepalive.as_ref());
        Group {
            pool,
            keepalive,
            single: n_primary == 1 && n_backup == 0,
            conf,
            peers,
            n_primary,
            primary_weight,
            tries,
            kind,
            weights: Mutex::new(weights),
        }
    }

    pub fn name(&self) -> &str {
        &self.conf.name
    }

    pub fn conf(&self) -> &Arc<UpstreamConf> {
        &self.conf
    }

    /// All peers, primary first then backup (for health checks and status).
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The keepalive cache and its limits, when the group has `keepalive`.
    pub fn keepalive(&self) -> Option<(&Arc<pool::Pool>, &pool::Limits)> {
        self.keepalive.as_ref().map(|l| (&self.pool, l))
    }

    /// nginx's initial `u->peer.tries`: the number of peers not marked
    /// `down`, primary and backup together (`proxy_next_upstream_tries` caps it).
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// Pick a peer for one attempt of a request.
    pub fn pick(
        self: &Arc<Self>,
        input: &PickInput<'_>,
        tried: &mut Tried,
    ) -> Result<PeerGuard, PickError> {
        self.pick_at(input, tried, now_ms())
    }

    /// [`Group::pick`] with an explicit clock, for tests and callers that
    /// already read the time.
    pub fn pick_at(
        self: &Arc<Self>,
        input: &PickInput<'_>,
        tried: &mut Tried,
        now: Millis,
    ) -> Result<PeerGuard, PickError> {
        let mut w = self.lock();
        let idx = match &self.kind {
            Kind::RoundRobin => self.rr(&mut w, tried, now),
            Kind::LeastConn => self.least_conn(&mut w, tried, now),
            Kind::IpHash => self.ip_hash(&mut w, input.client_ip, tried, now),
            Kind::Hash => self.hash(&mut w, input.hash_key.unwrap_or_default(), tried, now),
            Kind::Chash(points) => self.chash(
                &mut w,
                points,
                input.hash_key.unwrap_or_default(),
                tried,
                now,
            ),
            Kind::Random { two, ranges } => self.random(&mut w, *two, ranges, tried, now),
        };
        drop(w);
        match idx {
            Some(idx) => Ok(PeerGuard {
                group: self.clone(),
                idx,
                reported: false,
            }),
            None => Err(PickError::NoLiveUpstreams),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Weights>> {
        // A panic while holding the lock cannot leave the weights invalid
        // (they are plain integers), so a poisoned lock is still usable.
        self.weights.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A picked peer. Counts as one open connection of the peer until dropped,
/// so `least_conn` sees long-lived tunnels for their whole life.
#[derive(Debug)]
pub struct PeerGuard {
    group: Arc<Group>,
    idx: usize,
    reported: bool,
}

impl PeerGuard {
    fn peer(&self) -> &Peer {
        &self.group.peers[self.idx]
    }

    pub fn addr(&self) -> SocketAddr {
        self.peer().addr
    }

    /// The `server` line as written.
    pub fn server_name(&self) -> &str {
        &self.peer().server
    }

    pub fn is_backup(&self) -> bool {
        self.peer().backup
    }

    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    pub fn state(&self) -> &Arc<PeerState> {
        &self.peer().state
    }

    /// Report a failed attempt (`NGX_PEER_FAILED`). Returns true when this
    /// failure reached `max_fails`, where nginx warns "upstream server
    /// temporarily disabled". Only the first report of a guard counts.
    pub fn fail(&mut self) -> bool {
        self.fail_at(now_ms())
    }

    /// Report a working attempt: clears the failure count when the peer was
    /// let through after its `fail_timeout` (nginx's "mark peer live if
    /// check passed").
    pub fn success(&mut self) {
        self.success_at(now_ms())
    }

    pub fn fail_at(&mut self, now: Millis) -> bool {
        if std::mem::replace(&mut self.reported, true) {
            return false;
        }
        let g = &self.group;
        // nginx's free_round_robin_peer returns early for a single peer;
        // implicit upstreams (proxy_pass host:port) never mark it failed.
        if g.single || g.conf.implicit {
            return false;
        }
        let p = &g.peers[self.idx];
        let mut w = g.lock();
        let fails = p.state.fails.fetch_add(1, Ordering::Relaxed) + 1;
        p.state.accessed.store(now, Ordering::Relaxed);
        p.state.checked.store(now, Ordering::Relaxed);
        if p.max_fails == 0 {
            return false;
        }
        let e = &mut w[self.idx].effective;
        *e = (*e - i64::from(p.weight / p.max_fails)).max(0);
        fails >= p.max_fails
    }

    pub fn success_at(&mut self, _now: Millis) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let g = &self.group;
        if g.single {
            return;
        }
        let st = &g.peers[self.idx].state;
        if st.accessed.load(Ordering::Relaxed) < st.checked.load(Ordering::Relaxed) {
            st.fails.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        self.peer().state.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All runtime groups of one configuration generation.
#[derive(Debug, Default)]
pub struct Upstreams {
    groups: Vec<Arc<Group>>,
    /// Looked up per request, by the configuration's address: not SipHash.
    by_ptr: fnv::FnvHashMap<usize, usize>,
    by_name: HashMap<String, usize>,
}

impl Upstreams {
    /// Build the groups of `confs`, carrying peer state over from `prev`
    /// for peers with the same (upstream name, address).
    pub fn new(confs: &[Arc<UpstreamConf>], prev: Option<&Upstreams>) -> Self {
        let mut old: HashMap<(&str, bool), HashMap<SocketAddr, Arc<PeerState>>> = HashMap::new();
        let mut pools: HashMap<(&str, bool), Arc<pool::Pool>> = HashMap::new();
        if let Some(prev) = prev {
            for g in &prev.groups {
                pools
                    .entry((g.conf.name.as_str(), g.conf.implicit))
                    .or_insert_with(|| g.pool.clone());
                let m = old
                    .entry((g.conf.name.as_str(), g.conf.implicit))
                    .or_default();
                for p in &g.peers {
                    m.entry(p.addr).or_insert_with(|| p.state.clone());
                }
            }
        }
        let mut u = Upstreams::default();
        for conf in confs {
            let mut carried = old
                .remove(&(conf.name.as_str(), conf.implicit))
                .unwrap_or_default();
            let pool = pools.remove(&(conf.name.as_str(), conf.implicit));
            let g = Arc::new(Group::new(conf.clone(), &mut carried, pool));
            let i = u.groups.len();
            u.by_ptr.insert(Arc::as_ptr(conf) as usize, i);
            // The compiler lists explicit upstreams before implicit ones, so
            // the first of a name is the explicit one.
            u.by_name.entry(conf.name.clone()).or_insert(i);
            u.groups.push(g);
        }
        u
    }

    /// The group built from this very configuration object (the
    /// `Arc<UpstreamConf>` a `proxy_pass` holds). No allocation.
    pub fn get(&self, conf: &Arc<UpstreamConf>) -> Option<&Arc<Group>> {
        self.by_ptr
            .get(&(Arc::as_ptr(conf) as usize))
            .map(|&i| &self.groups[i])
    }

    /// The group by name (explicit `upstream` blocks win over implicit ones).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Group>> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    /// The position of a group in [`Upstreams::groups`].
    pub fn index_of(&self, conf: &Arc<UpstreamConf>) -> Option<usize> {
        self.by_ptr.get(&(Arc::as_ptr(conf) as usize)).copied()
    }

    pub fn groups(&self) -> &[Arc<Group>] {
        &self.groups
    }
}

/// A small per-thread PRNG for `random` (xorshift64*), seeded from the
/// standard library's per-process random keys.
fn random_u32() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = RandomState::new().build_hasher();
            h.write_u64(0x9E37_79B9_7F4A_7C15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    })
}

#[cfg(test)]
mod tests;
