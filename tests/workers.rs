//! `worker_processes N`: N threads, each with an event loop of its own,
//! all accepting on every listen address; with `listen ... reuseport` each
//! has a socket of its own, as nginx's workers do.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::workers::{switches_per_worker, worker_states};
use common::{free_port, main_block, wait_until, Sluice};

fn conf(port: u16, workers: usize, listen_extra: &str) -> String {
    format!(
        "{}http {{\n access_log off;\n server {{\n  listen 127.0.0.1:{port}{listen_extra};\n  location / {{ return 200 \"ok\"; }}\n }}\n}}\n",
        main_block().replace(
            "worker_processes 1;",
            &format!("worker_processes {workers};")
        )
    )
}

/// One request on a connection of its own.
fn request(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("read");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{got:?}");
}

/// Listening sockets on `port`, from /proc/net/tcp (state 0A is LISTEN).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

#[test]
fn each_worker_is_a_thread_that_serves() {
    let port = free_port();
    let s = Sluice::start("workers-3", &conf(port, 3, ""));
    wait_until("three workers", || worker_states(&s).len() == 3);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..20 {
        request(addr);
    }
    // Without reuseport the workers share the one socket.
    assert_eq!(listening_sockets(port), 1);
}

#[test]
fn with_reuseport_each_worker_has_a_socket_and_gets_connections() {
    let port = free_port();
    let s = Sluice::start("workers-reuseport", &conf(port, 2, " reuseport"));
    wait_until("two listening sockets", || listening_sockets(port) == 2);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    request(addr);
    // The kernel spreads connections over the two sockets by their
    // addresses: of 64, each worker gets some (all on one: 2 in 2^64). A
    // worker that serves a connection sleeps again after it.
    let before = switches_per_worker(&s);
    for _ in 0..64 {
        request(addr);
    }
    let after = switches_per_worker(&s);
    assert_eq!(before.len(), 2);
    for (b, a) in before.iter().zip(&after) {
        assert!(a > b, "a worker served nothing: {before:?} -> {after:?}");
    }
}

#[test]
fn a_reload_adds_a_listen_address_to_every_worker() {
    let (port, extra) = (free_port(), free_port());
    let s = Sluice::start("workers-reload", &conf(port, 2, " reuseport"));
    let text = conf(port, 2, " reuseport").replace(
        &format!("  listen 127.0.0.1:{port} reuseport;\n"),
        &format!("  listen 127.0.0.1:{port} reuseport;\n  listen 127.0.0.1:{extra} reuseport;\n"),
    );
    std::fs::write(&s.conf, text).expect("write conf");
    s.signal(libc::SIGHUP);
    wait_until("the new address in both workers", || {
        listening_sockets(extra) == 2
    });
    request(SocketAddr::from(([127, 0, 0, 1], extra)));
}
