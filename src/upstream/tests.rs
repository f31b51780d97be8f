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
