//! Balancer tests. Expected sequences are derived by hand from nginx's
//! algorithms; ip_hash / hash / consistent-hash expectations were observed
//! from nginx 1.22.1 itself (three `return 200 N` servers on
//! 127.0.0.1:18081..18083 behind `upstream` blocks, client address set with
//! realip's X-Real-IP) and agree with an independent Python model of the
//! formulas (zlib.crc32).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::conf::error::SrcLoc;
use crate::conf::model::{Balance, UpstreamConf, UpstreamServer};

fn srv(name: &str, weight: u32) -> UpstreamServer {
    let addr: SocketAddr = name
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([10, 0, 0, 1], 80)));
    UpstreamServer {
        name: name.to_string(),
        addrs: vec![addr],
        weight,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
        down: false,
        max_conns: 0,
    }
}

fn conf(name: &str, balance: Balance, servers: Vec<UpstreamServer>) -> Arc<UpstreamConf> {
    Arc::new(UpstreamConf {
        name: name.to_string(),
        servers,
        balance,
        keepalive: None,
        keepalive_requests: 1000,
        keepalive_timeout: Duration::from_secs(60),
        keepalive_time: Duration::from_secs(3600),
        check: None,
        implicit: false,
        loc: SrcLoc {
            file: Arc::new(PathBuf::from("test.conf")),
            line: 1,
        },
    })
}

fn group(balance: Balance, servers: Vec<UpstreamServer>) -> Arc<Group> {
    let u = Upstreams::new(&[conf("b", balance, servers)], None);
    u.groups()[0].clone()
}

/// Servers 127.0.0.1:18081.. with the given weights.
fn ports(weights: &[u32]) -> Vec<UpstreamServer> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| srv(&format!("127.0.0.1:{}", 18081 + i), w))
        .collect()
}

const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn input(key: Option<&[u8]>) -> PickInput<'_> {
    PickInput {
        client_ip: V4,
        hash_key: key,
    }
}

const T0: Millis = 1_000_000;

/// Index of the picked peer's port (18081 -> 0).
fn ix(g: &PeerGuard) -> usize {
    usize::from(g.addr().port() - 18081)
}

/// One pick per fresh request, guard dropped at once; letters a, b, c...
fn seq(g: &Arc<Group>, n: usize) -> String {
    (0..n)
        .map(|_| {
            let p = g
                .pick_at(&input(None), &mut Tried::new(), T0)
                .expect("peer");
            (b'a' + ix(&p) as u8) as char
        })
        .collect()
}

// ---- round robin ----

#[test]
fn rr_sequences_match_nginx() {
    // Smooth weighted round robin by hand: each pick adds the weights to the
    // current weights, takes the largest (first on ties), subtracts the total.
    assert_eq!(
        seq(&group(Balance::RoundRobin, ports(&[5, 1, 1])), 14),
        "aabacaaaabacaa"
    );
    assert_eq!(
        seq(&group(Balance::RoundRobin, ports(&[1, 1, 1])), 6),
        "abcabc"
    );
    assert_eq!(
        seq(&group(Balance::RoundRobin, ports(&[2, 1])), 6),
        "abaaba"
    );
    assert_eq!(
        seq(&group(Balance::RoundRobin, ports(&[3, 2, 1])), 12),
        "abacbaabacba"
    );
    assert_eq!(
        seq(&group(Balance::RoundRobin, ports(&[1, 2, 4])), 7),
        "cbcacbc"
    );
}

#[test]
fn rr_skips_down_and_health_down() {
    let mut s = ports(&[1, 1, 1]);
    s[1].down = true;
    let g = group(Balance::RoundRobin, s);
    assert_eq!(seq(&g, 4), "acac");
    g.peers()[2].state().set_health(Health::Down);
    assert_eq!(seq(&g, 2), "aa");
    g.peers()[2].state().set_health(Health::Up);
    assert!(seq(&g, 2).contains('c'));
}

#[test]
fn rr_max_conns() {
    let mut s = ports(&[1, 1]);
    s[0].max_conns = 1;
    let g = group(Balance::RoundRobin, s);
    let held = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&held), 0);
    assert_eq!(g.peers()[0].state().conns(), 1);
    assert_eq!(seq(&g, 3), "bbb");
    drop(held);
    assert_eq!(g.peers()[0].state().conns(), 0);
    assert!(seq(&g, 2).contains('a'));
}

#[test]
fn rr_tried_never_repeats_within_a_request() {
    let g = group(Balance::RoundRobin, ports(&[5, 1, 1]));
    let mut t = Tried::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut p = g.pick_at(&input(None), &mut t, T0).unwrap();
        seen.push(ix(&p));
        p.fail_at(T0);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    assert_eq!(
        g.pick_at(&input(None), &mut t, T0).unwrap_err(),
        PickError::NoLiveUpstreams
    );
}

#[test]
fn rr_max_fails_and_fail_timeout() {
    let mut s = ports(&[1, 1]);
    s[0].max_fails = 2;
    let g = group(Balance::RoundRobin, s);
    // Two failures of a (each in its own request) disable it.
    let mut p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&p), 0);
    assert!(!p.fail_at(T0));
    drop(p);
    let p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&p), 1);
    drop(p);
    let mut p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&p), 0);
    assert!(p.fail_at(T0), "second failure reaches max_fails");
    drop(p);
    assert_eq!(g.peers()[0].state().fails(), 2);
    // Within fail_timeout (10 s, inclusive) only b is used.
    for t in [T0, T0 + 5_000, T0 + 10_000] {
        for _ in 0..3 {
            let p = g.pick_at(&input(None), &mut Tried::new(), t).unwrap();
            assert_eq!(ix(&p), 1);
        }
    }
    // After it, a gets one trial request; picking it moves `checked`, so it
    // is out again until that request reports.
    let t1 = T0 + 10_001;
    let mut trial = None;
    for _ in 0..2 {
        let p = g.pick_at(&input(None), &mut Tried::new(), t1).unwrap();
        if ix(&p) == 0 {
            trial = Some(p);
        }
    }
    let mut trial = trial.expect("a is tried again after fail_timeout");
    for _ in 0..3 {
        assert_eq!(
            ix(&g.pick_at(&input(None), &mut Tried::new(), t1).unwrap()),
            1
        );
    }
    // Success on the trial marks it live again.
    trial.success_at(t1);
    drop(trial);
    assert_eq!(g.peers()[0].state().fails(), 0);
    assert!(seq(&g, 2).contains('a'));
}

#[test]
fn rr_all_failed_is_no_live_upstreams_and_keeps_fails() {
    let g = group(Balance::RoundRobin, ports(&[1, 1]));
    for _ in 0..2 {
        g.pick_at(&input(None), &mut Tried::new(), T0)
            .unwrap()
            .fail_at(T0);
    }
    assert_eq!(
        g.pick_at(&input(None), &mut Tried::new(), T0).unwrap_err(),
        PickError::NoLiveUpstreams
    );
    // Modern nginx no longer resets the counters when all peers failed.
    assert_eq!(g.peers()[0].state().fails(), 1);
    assert!(g
        .pick_at(&input(None), &mut Tried::new(), T0 + 10_001)
        .is_ok());
}

#[test]
fn rr_backup_only_when_primaries_unavailable() {
    let mut s = ports(&[1, 1, 1, 1]);
    s[2].backup = true;
    s[3].backup = true;
    let g = group(Balance::RoundRobin, s);
    assert_eq!(g.tries(), 4);
    assert_eq!(seq(&g, 6), "ababab");
    // One request: both primaries fail, then the backups are tried in turn.
    let mut t = Tried::new();
    let mut order = Vec::new();
    loop {
        match g.pick_at(&input(None), &mut t, T0) {
            Ok(mut p) => {
                order.push(ix(&p));
                assert_eq!(p.is_backup(), ix(&p) >= 2);
                p.fail_at(T0);
            }
            Err(e) => {
                assert_eq!(e, PickError::NoLiveUpstreams);
                break;
            }
        }
    }
    assert_eq!(order, [0, 1, 2, 3]);
    // Primaries down for everyone: new requests go straight to backups
    // (which failed too, so nothing is left within fail_timeout).
    assert!(g.pick_at(&input(None), &mut Tried::new(), T0).is_err());
    let p = g
        .pick_at(&input(None), &mut Tried::new(), T0 + 10_001)
        .unwrap();
    assert!(
        !p.is_backup(),
        "primaries come back first after fail_timeout"
    );
}

#[test]
fn rr_primary_down_uses_backup() {
    let mut s = ports(&[1, 1]);
    s[0].down = true;
    s[1].backup = true;
    let g = group(Balance::RoundRobin, s);
    assert_eq!(seq(&g, 3), "bbb");
    assert_eq!(g.tries(), 1);
}

#[test]
fn single_peer_is_never_marked_failed() {
    let g = group(Balance::RoundRobin, ports(&[1]));
    for _ in 0..5 {
        let mut p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
        assert!(!p.fail_at(T0));
    }
    assert_eq!(g.peers()[0].state().fails(), 0);
    // Within one request the single peer is offered again (nginx leaves the
    // retry decision to the tries counter).
    let mut t = Tried::new();
    assert!(g.pick_at(&input(None), &mut t, T0).is_ok());
    assert!(g.pick_at(&input(None), &mut t, T0).is_ok());
    let mut s = ports(&[1]);
    s[0].down = true;
    let g = group(Balance::RoundRobin, s);
    assert!(g.pick_at(&input(None), &mut Tried::new(), T0).is_err());
}

#[test]
fn implicit_upstream_never_marks_failed() {
    let mut s = srv("localhost:8080", 1);
    s.addrs = vec![
        "127.0.0.1:8080".parse().unwrap(),
        "[::1]:8080".parse().unwrap(),
    ];
    s.max_fails = 0;
    let mut c = conf("localhost:8080", Balance::RoundRobin, vec![s]);
    Arc::get_mut(&mut c).unwrap().implicit = true;
    let u = Upstreams::new(&[c.clone()], None);
    let g = u.get(&c).unwrap();
    assert_eq!(g.peers().len(), 2);
    for _ in 0..4 {
        let mut p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
        assert_eq!(p.server_name(), "localhost:8080");
        assert!(!p.fail_at(T0));
    }
    assert!(g.peers().iter().all(|p| p.state().fails() == 0));
}

#[test]
fn each_address_is_a_peer_with_the_line_parameters() {
    let mut s = srv("backend:80", 3);
    s.addrs = vec![
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    ];
    let g = group(Balance::RoundRobin, vec![s, srv("10.0.0.3:80", 1)]);
    assert_eq!(g.peers().len(), 3);
    assert_eq!(g.peers()[1].weight(), 3);
    assert_eq!(g.peers()[1].server_name(), "backend:80");
    let mut n = [0; 3];
    for _ in 0..7 {
        let p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
        let i = g.peers().iter().position(|q| q.addr() == p.addr()).unwrap();
        n[i] += 1;
    }
    assert_eq!(n, [3, 3, 1]);
}

// ---- reloads and lookup ----

#[test]
fn state_survives_reload_for_same_name_and_address() {
    let a = conf("b", Balance::RoundRobin, ports(&[1, 1]));
    let other = conf("other", Balance::RoundRobin, ports(&[1]));
    let u1 = Upstreams::new(&[a.clone(), other.clone()], None);
    let g1 = u1.get(&a).unwrap().clone();
    let mut p = g1.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    p.fail_at(T0);
    let tunnel = g1.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&tunnel), 1);

    // New configuration objects: same group name, one address kept, one new.
    let mut s = ports(&[1, 1]);
    s[0] = srv("127.0.0.1:18082", 1);
    s[1] = srv("127.0.0.1:18090", 1);
    let a2 = conf("b", Balance::LeastConn, s);
    let u2 = Upstreams::new(&[a2.clone(), other], Some(&u1));
    let g2 = u2.by_name("b").unwrap();
    assert!(Arc::ptr_eq(g2, u2.get(&a2).unwrap()));
    assert!(
        u2.get(&a).is_none(),
        "old config object is not this generation's"
    );
    assert_eq!(g2.peers()[0].state().conns(), 1, "open tunnel counted");
    assert!(Arc::ptr_eq(g2.peers()[0].state(), tunnel.state()));
    assert_eq!(g2.peers()[1].state().conns(), 0);
    drop(tunnel);
    assert_eq!(g2.peers()[0].state().conns(), 0);
    drop(p);
    // 18081 failed in u1 but is not in u2; a group that adds it back later
    // starts fresh.
    let a3 = conf("b", Balance::RoundRobin, ports(&[1, 1]));
    let u3 = Upstreams::new(&[a3], Some(&u2));
    assert_eq!(u3.groups()[0].peers()[0].state().fails(), 0);
    assert_eq!(u1.index_of(&a), Some(0));
}

// ---- least_conn ----

#[test]
fn least_conn_spreads_held_guards_evenly() {
    let g = group(Balance::LeastConn, ports(&[1, 1, 1]));
    let held: Vec<_> = (0..300)
        .map(|_| g.pick_at(&input(None), &mut Tried::new(), T0).unwrap())
        .collect();
    let mut n = [0; 3];
    for p in &held {
        n[ix(p)] += 1;
    }
    assert_eq!(n, [100, 100, 100]);
    assert!(g.peers().iter().all(|p| p.state().conns() == 100));
    drop(held);
    assert!(g.peers().iter().all(|p| p.state().conns() == 0));
}

#[test]
fn least_conn_is_weighted() {
    // conns/weight is compared: weights 2,1 hold 200 and 100 of 300.
    let g = group(Balance::LeastConn, ports(&[2, 1]));
    let held: Vec<_> = (0..300)
        .map(|_| g.pick_at(&input(None), &mut Tried::new(), T0).unwrap())
        .collect();
    let a = held.iter().filter(|p| ix(p) == 0).count();
    assert_eq!(a, 200);
}

#[test]
fn least_conn_ties_follow_round_robin() {
    // With every guard dropped at once all peers tie, and nginx falls back
    // to smooth weighted round robin among them.
    assert_eq!(
        seq(&group(Balance::LeastConn, ports(&[5, 1, 1])), 7),
        "aabacaa"
    );
    assert_eq!(
        seq(&group(Balance::LeastConn, ports(&[1, 1, 1])), 6),
        "abcabc"
    );
}

#[test]
fn least_conn_picks_the_least_loaded() {
    let g = group(Balance::LeastConn, ports(&[1, 1, 1]));
    let a = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    let b = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!((ix(&a), ix(&b)), (0, 1));
    drop(a);
    // a and c tie at 0: round robin among them.
    let p = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&p), 2);
    let p2 = g.pick_at(&input(None), &mut Tried::new(), T0).unwrap();
    assert_eq!(ix(&p2), 0);
}

#[test]
fn least_conn_backup_and_tried() {
    let mut s = ports(&[1, 1, 1]);
    s[2].backup = true;
    let g = group(Balance::LeastConn, s);
    let mut t = Tried::new();
    let a = g.pick_at(&input(None), &mut t, T0).unwrap();
    let b = g.pick_at(&input(None), &mut t, T0).unwrap();
    let c = g.pick_at(&input(None), &mut t, T0).unwrap();
    assert_eq!((ix(&a), ix(&b), ix(&c)), (0, 1, 2));
    assert!(g.pick_at(&input(None), &mut t, T0).is_err());
}

// ---- ip_hash ----

fn ip_pick(g: &Arc<Group>, ip: &str) -> usize {
    let inp = PickInput {
        client_ip: ip.parse().unwrap(),
        hash_key: None,
    };
    ix(&g.pick_at(&inp, &mut Tried::new(), T0).unwrap())
}

const IPS: [&str; 9] = [
    "192.168.1.10",
    "192.168.1.200",
    "10.0.0.1",
    "172.16.5.4",
    "8.8.8.8",
    "203.0.113.77",
    "2001:db8::1",
    "::1",
    "fe80::1234:5678",
];

#[test]
fn ip_hash_matches_nginx() {
    // Observed from nginx 1.22.1; by the formula, e.g. 192.168.1.10:
    // 89 -> (89*113+192)%6271 = 3978 -> (3978*113+168)%6271 = 4441
    // -> (4441*113+1)%6271 = 154; 154 % 3 = 1.
    let g = group(Balance::IpHash, ports(&[1, 1, 1]));
    let got: Vec<usize> = IPS.iter().map(|ip| ip_pick(&g, ip)).collect();
    assert_eq!(got, [1, 1, 0, 1, 2, 0, 2, 2, 0]);
    let g = group(Balance::IpHash, ports(&[3, 1, 2]));
    let got: Vec<usize> = IPS.iter().map(|ip| ip_pick(&g, ip)).collect();
    assert_eq!(got, [2, 2, 1, 2, 2, 0, 0, 2, 1]);
    // Same /24, same peer.
    let g = group(Balance::IpHash, ports(&[1, 1, 1]));
    assert_eq!(ip_pick(&g, "192.168.1.10"), ip_pick(&g, "192.168.1.99"));
}

#[test]
fn ip_hash_rehashes_past_unusable_peers() {
    let mut s = ports(&[1, 1, 1]);
    s[1].down = true;
    let g = group(Balance::IpHash, s);
    // 192.168.1.10 maps to peer 1 (down); the hash continues:
    // (154*113+192)%6271 = 5322 -> ... until a usable peer comes up.
    let p = ip_pick(&g, "192.168.1.10");
    assert_ne!(p, 1);
    assert_eq!(p, ip_pick(&g, "192.168.1.10"), "stable");
    // Within one request, retries never repeat a peer.
    let g = group(Balance::IpHash, ports(&[1, 1, 1]));
    let inp = PickInput {
        client_ip: "192.168.1.10".parse().unwrap(),
        hash_key: None,
    };
    let mut t = Tried::new();
    let mut seen: Vec<usize> = (0..3)
        .map(|_| ix(&g.pick_at(&inp, &mut t, T0).unwrap()))
        .collect();
    assert_eq!(seen[0], 1);
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    assert!(g.pick_at(&inp, &mut t, T0).is_err());
}

// ---- hash ----

fn key_pick(g: &Arc<Group>, key: &str) -> usize {
    ix(&g
        .pick_at(&input(Some(key.as_bytes())), &mut Tried::new(), T0)
        .unwrap())
}

// nginx saw `?k=hello%20world`; $arg_k is not decoded.
const KEYS: [&str; 6] = ["/index.html", "/a", "/b", "user42", "x", "hello%20world"];

fn hash_balance(consistent: bool) -> Balance {
    Balance::Hash {
        key: crate::vars::Template::literal("$arg_k"),
        consistent,
    }
}

#[test]
fn hash_matches_nginx() {
    // Observed from nginx 1.22.1 (`hash $arg_k`); the formula is
    // ((crc32(key) >> 16) & 0x7fff) % total_weight, then the weighted walk.
    let g = group(hash_balance(false), ports(&[1, 1, 1]));
    let got: Vec<usize> = KEYS.iter().map(|k| key_pick(&g, k)).collect();
    assert_eq!(got, [2, 1, 2, 0, 1, 0]);
    let g = group(hash_balance(false), ports(&[2, 1, 1]));
    let got: Vec<usize> = KEYS.iter().map(|k| key_pick(&g, k)).collect();
    assert_eq!(got, [1, 0, 0, 2, 0, 2]);
}

#[test]
fn hash_empty_key_is_round_robin_and_retries_rehash() {
    let g = group(hash_balance(false), ports(&[1, 1, 1]));
    let seq: Vec<usize> = (0..3).map(|_| key_pick(&g, "")).collect();
    assert_eq!(seq, [0, 1, 2]);
    let mut s = ports(&[1, 1, 1]);
    s[2].down = true;
    let g = group(hash_balance(false), s);
    // "/index.html" maps to the down peer 2; the rehash lands elsewhere.
    let p = key_pick(&g, "/index.html");
    assert_ne!(p, 2);
    assert_eq!(p, key_pick(&g, "/index.html"));
    let g = group(hash_balance(false), ports(&[1, 1, 1]));
    let mut t = Tried::new();
    let k = input(Some(b"/index.html"));
    let mut seen: Vec<usize> = (0..3)
        .map(|_| ix(&g.pick_at(&k, &mut t, T0).unwrap()))
        .collect();
    assert_eq!(seen[0], 2);
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
}

// ---- consistent hash ----

/// nginx 1.22.1's answers for keys "key0".."key999" (digit = server index)
/// for `hash $arg_k consistent` over 127.0.0.1:18081..18083 (CH), with
/// 18082 weight=2 (CHW), and with 18082 removed (CH2, digits still name the
/// original index).
const NGINX_CH: &str = include_str!("testdata/ch.txt");
const NGINX_CHW: &str = include_str!("testdata/chw.txt");
const NGINX_CH2: &str = include_str!("testdata/ch2.txt");

fn thousand(g: &Arc<Group>) -> String {
    (0..1000)
        .map(|i| {
            let k = format!("key{i}");
            let p = g
                .pick_at(&input(Some(k.as_bytes())), &mut Tried::new(), T0)
                .unwrap();
            (b'0' + (p.addr().port() - 18081) as u8) as char
        })
        .collect()
}

#[test]
fn consistent_hash_matches_nginx() {
    let g = group(hash_balance(true), ports(&[1, 1, 1]));
    let got: Vec<usize> = KEYS.iter().map(|k| key_pick(&g, k)).collect();
    assert_eq!(got, [2, 0, 1, 2, 1, 1]);
    assert_eq!(thousand(&g), NGINX_CH.trim());
    let g = group(hash_balance(true), ports(&[1, 2, 1]));
    assert_eq!(thousand(&g), NGINX_CHW.trim());
    let g = group(
        hash_balance(true),
        vec![srv("127.0.0.1:18081", 1), srv("127.0.0.1:18083", 1)],
    );
    assert_eq!(thousand(&g), NGINX_CH2.trim());
}

#[test]
fn consistent_hash_removal_moves_only_that_servers_keys() {
    let full = thousand(&group(hash_balance(true), ports(&[1, 1, 1])));
    let without = thousand(&group(
        hash_balance(true),
        vec![srv("127.0.0.1:18081", 1), srv("127.0.0.1:18083", 1)],
    ));
    let mut moved = 0;
    for (a, b) in full.chars().zip(without.chars()) {
        if a == '1' {
            moved += 1;
            assert_ne!(b, '1');
        } else {
            assert_eq!(a, b, "a key not on the removed server kept its server");
        }
    }
    assert!(moved > 200 && moved < 450, "about a third moved: {moved}");
}

#[test]
fn consistent_hash_points_and_server_split() {
    use super::balance::{chash_points, split_server};
    assert_eq!(
        split_server(b"127.0.0.1:8080"),
        (&b"127.0.0.1"[..], &b"8080"[..])
    );
    assert_eq!(split_server(b"backend"), (&b"backend"[..], &b""[..]));
    assert_eq!(split_server(b"[::1]:80"), (&b"[::1]"[..], &b"80"[..]));
    assert_eq!(split_server(b"unix:/tmp/s:1"), (&b"/tmp/s:1"[..], &b""[..]));
    assert_eq!(split_server(b"host:x1"), (&b"host:x1"[..], &b""[..]));
    let g = group(hash_balance(true), ports(&[1, 1, 1]));
    let pts = chash_points(&g.peers()[..3]);
    // 3 * 160 points, no collisions here; first points as the Python model
    // (crc32(b"127.0.0.1\0" + b"18081" + prev.to_le_bytes()), sorted) gives.
    assert_eq!(pts.len(), 480);
    assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
    // Two addresses of one server line share its points and split its keys
    // by round robin.
    let mut s = srv("backend:80", 1);
    s.addrs = vec![
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    ];
    let g = group(hash_balance(true), vec![s, srv("10.0.0.3:80", 1)]);
    assert_eq!(chash_points(&g.peers()[..3]).len(), 320);
}

#[test]
fn consistent_hash_skips_failed_server_and_retries() {
    let mut s = ports(&[1, 1, 1]);
    s[1].down = true;
    let g = group(hash_balance(true), s);
    let got = thousand(&g);
    let full: Vec<char> = NGINX_CH.trim().chars().collect();
    for (i, c) in got.chars().enumerate() {
        assert_ne!(c, '1');
        if full[i] != '1' {
            assert_eq!(c, full[i]);
        }
    }
    let g = group(hash_balance(true), ports(&[1, 1, 1]));
    let k = input(Some(b"/index.html"));
    let mut t = Tried::new();
    let mut seen: Vec<usize> = (0..3)
        .map(|_| ix(&g.pick_at(&k, &mut t, T0).unwrap()))
        .collect();
    assert_eq!(seen[0], 2);
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    assert!(g.pick_at(&k, &mut t, T0).is_err());
}

// ---- random ----

#[test]
fn random_follows_weights() {
    let g = group(
        Balance::Random {
            two: false,
            least_conn: false,
        },
        ports(&[1, 2, 1]),
    );
    let mut n = [0usize; 3];
    for _ in 0..8000 {
        n[ix(&g.pick_at(&input(None), &mut Tried::new(), T0).unwrap())] += 1;
    }
    // Expected 2000/4000/2000; bounds are ~10 standard deviations wide.
    assert!(n[0] > 1600 && n[0] < 2400, "{n:?}");
    assert!(n[1] > 3550 && n[1] < 4450, "{n:?}");
    assert!(n[2] > 1600 && n[2] < 2400, "{n:?}");
}

#[test]
fn random_two_least_conn_balances_held_guards() {
    let g = group(
        Balance::Random {
            two: true,
            least_conn: true,
        },
        ports(&[1, 1, 1]),
    );
    let held: Vec<_> = (0..3000)
        .map(|_| g.pick_at(&input(None), &mut Tried::new(), T0).unwrap())
        .collect();
    let c: Vec<u32> = g.peers().iter().map(|p| p.state().conns()).collect();
    // The lesser loaded of two distinct peers is taken, so the spread of the
    // loads stays small however many are held: in a simulation of 2 million
    // runs it was above 2 in 1.8 % of them and never above 9. Picks at
    // random would leave the peers tens of connections apart (at most 10 in
    // 3 % of runs).
    let (mx, mn) = (c.iter().max().unwrap(), c.iter().min().unwrap());
    assert!(mx - mn <= 10, "{c:?}");
    drop(held);
}

#[test]
fn random_tried_and_skips() {
    let mut s = ports(&[1, 1, 1]);
    s[0].down = true;
    let g = group(
        Balance::Random {
            two: false,
            least_conn: false,
        },
        s,
    );
    for _ in 0..200 {
        assert_ne!(
            ix(&g.pick_at(&input(None), &mut Tried::new(), T0).unwrap()),
            0
        );
    }
    let mut t = Tried::new();
    let mut seen: Vec<usize> = (0..2)
        .map(|_| ix(&g.pick_at(&input(None), &mut t, T0).unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen, [1, 2]);
    assert!(g.pick_at(&input(None), &mut t, T0).is_err());
}

#[test]
fn tried_beyond_64_peers() {
    let servers: Vec<_> = (0..100u16)
        .map(|i| srv(&format!("127.0.0.1:{}", 20000 + i), 1))
        .collect();
    let g = group(Balance::RoundRobin, servers);
    let mut t = Tried::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        assert!(seen.insert(g.pick_at(&input(None), &mut t, T0).unwrap().addr()));
    }
    assert!(g.pick_at(&input(None), &mut t, T0).is_err());
}
