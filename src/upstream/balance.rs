//! nginx's balancers, ported from ngx_http_upstream_round_robin.c and the
//! least_conn, ip_hash, hash and random modules (1.11.5+ semantics: with
//! `max_conns`, no "reset all fails" when every peer failed).

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::{crc32, random_u32, Group, Millis, Peer, Tried, Weights};

impl Peer {
    fn conns(&self) -> u64 {
        u64::from(self.state.conns.load(Ordering::Relaxed))
    }

    /// `fails >= max_fails && now - checked <= fail_timeout`.
    fn failed(&self, now: Millis) -> bool {
        self.max_fails != 0
            && self.state.fails.load(Ordering::Relaxed) >= self.max_fails
            && now.saturating_sub(self.state.checked.load(Ordering::Relaxed)) <= self.fail_timeout
    }

    fn down_now(&self) -> bool {
        self.down || self.state.health() == super::Health::Down
    }

    fn full(&self) -> bool {
        self.max_conns != 0 && self.conns() >= u64::from(self.max_conns)
    }

    fn usable(&self, now: Millis) -> bool {
        !self.down_now() && !self.failed(now) && !self.full()
    }
}

impl Weights {
    /// `current_weight += effective_weight`, and let a penalised
    /// `effective_weight` recover by one; returns what was added to `total`.
    fn bump(&mut self, weight: u32) -> i64 {
        let e = self.effective;
        self.current += e;
        if e < i64::from(weight) {
            self.effective += 1;
        }
        e
    }
}

impl Group {
    fn set_range(&self, backup: bool) -> Range<usize> {
        if backup {
            self.n_primary..self.peers.len()
        } else {
            0..self.n_primary
        }
    }

    fn has_backup(&self) -> bool {
        self.peers.len() > self.n_primary
    }

    /// Take peer `idx` (relative index `rel` in the current set): count the
    /// connection, mark it tried and move its `checked` time as nginx does.
    fn take(&self, idx: usize, rel: usize, tried: &mut Tried, now: Millis) -> usize {
        let p = &self.peers[idx];
        p.state.conns.fetch_add(1, Ordering::Relaxed);
        if now.saturating_sub(p.state.checked.load(Ordering::Relaxed)) > p.fail_timeout {
            p.state.checked.store(now, Ordering::Relaxed);
        }
        tried.set(rel);
        idx
    }

    /// `ngx_http_upstream_get_round_robin_peer`.
    pub(super) fn rr(&self, w: &mut [Weights], tried: &mut Tried, now: Millis) -> Option<usize> {
        loop {
            let found = if !tried.in_backup && self.single {
                let p = &self.peers[0];
                // A single peer is used whatever its failures (nginx never
                // counts them for it); only `down` and `max_conns` stop it.
                if p.down_now() || p.full() {
                    None
                } else {
                    Some(self.take(0, 0, tried, now))
                }
            } else {
                self.get_peer(w, tried, now)
            };
            if found.is_some() || !self.switch_to_backup(tried) {
                return found;
            }
        }
    }

    /// The `failed:` label: move the request to the backup peers once.
    fn switch_to_backup(&self, tried: &mut Tried) -> bool {
        if tried.in_backup || !self.has_backup() {
            return false;
        }
        tried.in_backup = true;
        tried.clear();
        true
    }

    /// `ngx_http_upstream_get_peer`: smooth weighted round robin.
    fn get_peer(&self, w: &mut [Weights], tried: &mut Tried, now: Millis) -> Option<usize> {
        let range = self.set_range(tried.in_backup);
        let base = range.start;
        let mut best: Option<usize> = None;
        let mut total = 0i64;
        for i in range {
            let p = &self.peers[i];
            if tried.has(i - base) || !p.usable(now) {
                continue;
            }
            total += w[i].bump(p.weight);
            let cur = w[i].current;
            if best.is_none_or(|b| cur > w[b].current) {
                best = Some(i);
            }
        }
        let b = best?;
        w[b].current -= total;
        Some(self.take(b, b - base, tried, now))
    }

    /// `ngx_http_upstream_get_least_conn_peer`.
    pub(super) fn least_conn(
        &self,
        w: &mut [Weights],
        tried: &mut Tried,
        now: Millis,
    ) -> Option<usize> {
        if !tried.in_backup && self.single {
            return self.rr(w, tried, now);
        }
        loop {
            let range = self.set_range(tried.in_backup);
            let base = range.start;
            let mut best: Option<usize> = None;
            let mut many = false;
            for i in range.clone() {
                let p = &self.peers[i];
                if tried.has(i - base) || !p.usable(now) {
                    continue;
                }
                match best {
                    None => best = Some(i),
                    Some(b) => {
                        let bp = &self.peers[b];
                        let (l, r) = (
                            p.conns() * u64::from(bp.weight),
                            bp.conns() * u64::from(p.weight),
                        );
                        if l < r {
                            best = Some(i);
                            many = false;
                        } else if l == r {
                            many = true;
                        }
                    }
                }
            }
            let Some(mut b) = best else {
                if self.switch_to_backup(tried) {
                    continue;
                }
                return None;
            };
            let mut total = 0i64;
            if many {
                // Ties: smooth weighted round robin among the tied peers,
                // starting from the first of them.
                let first = b;
                for i in first..range.end {
                    let p = &self.peers[i];
                    if tried.has(i - base) || !p.usable(now) {
                        continue;
                    }
                    let bp = &self.peers[b];
                    if p.conns() * u64::from(bp.weight) != bp.conns() * u64::from(p.weight) {
                        continue;
                    }
                    total += w[i].bump(p.weight);
                    if w[i].current > w[b].current {
                        b = i;
                    }
                }
            }
            w[b].current -= total;
            return Some(self.take(b, b - base, tried, now));
        }
    }

    /// `ngx_http_upstream_get_ip_hash_peer`.
    pub(super) fn ip_hash(
        &self,
        w: &mut [Weights],
        ip: IpAddr,
        tried: &mut Tried,
        now: Millis,
    ) -> Option<usize> {
        if tried.in_backup || tried.tries > 20 || self.n_primary < 2 {
            return self.rr(w, tried, now);
        }
        if !tried.started {
            tried.started = true;
            tried.hash = 89;
        }
        // nginx hashes the first three octets of IPv4, all of IPv6.
        let mut buf = [0u8; 16];
        let len = match ip {
            IpAddr::V4(a) => {
                buf[..3].copy_from_slice(&a.octets()[..3]);
                3
            }
            IpAddr::V6(a) => {
                buf = a.octets();
                16
            }
        };
        let bytes = &buf[..len];
        let mut hash = tried.hash;
        let p = loop {
            for &b in bytes {
                hash = (hash * 113 + u32::from(b)) % 6271;
            }
            let p = self.walk(hash % self.primary_weight);
            if !tried.has(p) && self.peers[p].usable(now) {
                break p;
            }
            tried.tries += 1;
            if tried.tries > 20 {
                return self.rr(w, tried, now);
            }
        };
        tried.hash = hash;
        Some(self.take(p, p, tried, now))
    }

    /// The weighted walk shared by ip_hash and hash: the primary peer whose
    /// weight interval holds `w`.
    fn walk(&self, mut w: u32) -> usize {
        let mut p = 0;
        while p + 1 < self.n_primary && w >= self.peers[p].weight {
            w -= self.peers[p].weight;
            p += 1;
        }
        p
    }

    /// `ngx_http_upstream_get_hash_peer`.
    pub(super) fn hash(
        &self,
        w: &mut [Weights],
        key: &[u8],
        tried: &mut Tried,
        now: Millis,
    ) -> Option<usize> {
        if tried.in_backup || tried.tries > 20 || self.n_primary < 2 || key.is_empty() {
            return self.rr(w, tried, now);
        }
        let p = loop {
            // Cache::Memcached compatible:
            // ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH.
            let mut crc = crc32::INIT;
            if tried.rehash > 0 {
                let mut buf = [0u8; 10];
                crc = crc32::update(crc, decimal(tried.rehash, &mut buf));
            }
            crc = crc32::finish(crc32::update(crc, key));
            tried.hash = tried.hash.wrapping_add((crc >> 16) & 0x7fff);
            tried.rehash += 1;
            let p = self.walk(tried.hash % self.primary_weight);
            if !tried.has(p) && self.peers[p].usable(now) {
                break p;
            }
            tried.tries += 1;
            if tried.tries > 20 {
                return self.rr(w, tried, now);
            }
        };
        Some(self.take(p, p, tried, now))
    }

    /// `ngx_http_upstream_get_chash_peer`.
    pub(super) fn chash(
        &self,
        w: &mut [Weights],
        points: &[(u32, u32)],
        key: &[u8],
        tried: &mut Tried,
        now: Millis,
    ) -> Option<usize> {
        if tried.in_backup
            || tried.tries > 20
            || self.n_primary < 2
            || key.is_empty()
            || points.is_empty()
        {
            return self.rr(w, tried, now);
        }
        if !tried.started {
            // ngx_http_upstream_init_chash_peer
            tried.started = true;
            tried.hash = find_point(points, crc32::crc32(key)) as u32;
        }
        loop {
            let server = points[tried.hash as usize % points.len()].1;
            let mut best: Option<usize> = None;
            let mut total = 0i64;
            for i in 0..self.n_primary {
                let p = &self.peers[i];
                if tried.has(i) || !p.usable(now) || p.server_id != server {
                    continue;
                }
                total += w[i].bump(p.weight);
                let cur = w[i].current;
                if best.is_none_or(|b| cur > w[b].current) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                w[b].current -= total;
                return Some(self.take(b, b, tried, now));
            }
            tried.hash = tried.hash.wrapping_add(1);
            tried.tries += 1;
            if tried.tries > 20 {
                return self.rr(w, tried, now);
            }
        }
    }

    /// `ngx_http_upstream_get_random_peer` / `ngx_http_upstream_get_random2_peer`.
    pub(super) fn random(
        &self,
        w: &mut [Weights],
        two: bool,
        ranges: &[u32],
        tried: &mut Tried,
        now: Millis,
    ) -> Option<usize> {
        if tried.in_backup || tried.tries > 20 || self.n_primary < 2 {
            return self.rr(w, tried, now);
        }
        let mut prev: Option<usize> = None;
        let p = loop {
            let i = peek_random(ranges, self.primary_weight);
            let p = &self.peers[i];
            if prev != Some(i) && !tried.has(i) && p.usable(now) {
                if !two {
                    break i;
                }
                match prev {
                    None => prev = Some(i),
                    Some(q) => {
                        let qp = &self.peers[q];
                        if p.conns() * u64::from(qp.weight) > qp.conns() * u64::from(p.weight) {
                            break q;
                        }
                        break i;
                    }
                }
            }
            tried.tries += 1;
            if tried.tries > 20 {
                return self.rr(w, tried, now);
            }
        };
        Some(self.take(p, p, tried, now))
    }
}

/// `ngx_http_upstream_peek_random_peer`.
fn peek_random(ranges: &[u32], total: u32) -> usize {
    let x = random_u32() % total;
    let (mut i, mut j) = (0, ranges.len());
    while j - i > 1 {
        let k = (i + j) / 2;
        if x < ranges[k] {
            j = k;
        } else {
            i = k;
        }
    }
    i
}

/// `ngx_http_upstream_find_chash_point`: the first point >= hash (may be
/// `points.len()`, which wraps to 0 by the caller's modulo).
fn find_point(points: &[(u32, u32)], hash: u32) -> usize {
    points.partition_point(|&(h, _)| h < hash)
}

/// `%ui` into a stack buffer.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `ngx_http_upstream_init_chash`: ketama points compatible with
/// Cache::Memcached::Fast, `crc32(HOST \0 PORT PREV_HASH)`, `weight * 160`
/// points per peer, sorted, duplicates dropped.
pub(super) fn chash_points(peers: &[Peer]) -> Vec<(u32, u32)> {
    let total: usize = peers.iter().map(|p| p.weight as usize * 160).sum();
    let mut points = Vec::with_capacity(total);
    for p in peers {
        let (host, port) = split_server(p.server.as_bytes());
        let mut base = crc32::update(crc32::INIT, host);
        base = crc32::update(base, b"\0");
        base = crc32::update(base, port);
        let mut prev = 0u32;
        for _ in 0..p.weight as usize * 160 {
            let hash = crc32::finish(crc32::update(base, &prev.to_le_bytes()));
            points.push((hash, p.server_id));
            prev = hash;
        }
    }
    // nginx uses qsort (not stable); equal hashes of different servers are
    // crc32 collisions, rare enough that the order among them is moot.
    points.sort_by_key(|&(h, _)| h);
    points.dedup_by_key(|&mut (h, _)| h);
    points
}

/// Split a server string into host and port as nginx's init_chash does:
/// `unix:` paths have no port; otherwise trailing digits after the last `:`.
pub(super) fn split_server(s: &[u8]) -> (&[u8], &[u8]) {
    if s.len() >= 5 && s[..5].eq_ignore_ascii_case(b"unix:") {
        return (&s[5..], b"");
    }
    for j in 0..s.len() {
        let c = s[s.len() - j - 1];
        if c == b':' {
            return (&s[..s.len() - j - 1], &s[s.len() - j..]);
        }
        if !c.is_ascii_digit() {
            break;
        }
    }
    (s, b"")
}
