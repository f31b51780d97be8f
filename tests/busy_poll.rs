//! `busy_poll` (a sluice extension): the worker keeps polling for events
//! while traffic flows, and sleeps again once it has been quiet for the
//! window. Seen from outside through the worker threads' voluntary context
//! switches and their scheduler state in /proc: a worker that sleeps in
//! epoll_wait is switched out voluntarily and shows `S`, one that polls
//! never is and shows `R`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::workers::{all_asleep, voluntary_switches, worker_states};
use common::{free_port, main_block, wait_until, Sluice};

fn conf(port: u16, main_extra: &str) -> String {
    format!(
        "{}{main_extra}\nhttp {{\n access_log off;\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ return 200 \"ok\"; }}\n }}\n}}\n",
        main_block()
    )
}

/// `n` requests one after the other on one keep-alive connection, the
/// client pausing briefly before each, as a real one would: long enough that
/// a worker that does not poll goes to sleep in the meantime.
fn requests(addr: SocketAddr, n: usize) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        std::thread::sleep(Duration::from_micros(200));
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        while !got.ends_with(b"ok") {
            let k = c.read(&mut buf).expect("read");
            assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{got:?}");
    }
}

/// Voluntary switches of the worker over `n` requests after a first one.
fn switches_over(s: &Sluice, addr: SocketAddr, n: usize) -> u64 {
    requests(addr, 1);
    let before = voluntary_switches(s);
    requests(addr, n);
    voluntary_switches(s) - before
}

#[test]
fn a_busy_polling_worker_does_not_sleep_between_requests() {
    // Without busy_poll the worker sleeps in epoll_wait while the client
    // reads a response and writes the next request.
    let port = free_port();
    let plain = Sluice::start("busy-off", &conf(port, ""));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let slept = switches_over(&plain, addr, 300);
    assert!(slept >= 150, "without busy_poll: {slept} switches");
    drop(plain);

    // A window far longer than the test: no sleep at all while the client
    // comes back, and none after the last request either.
    let port = free_port();
    let busy = Sluice::start("busy-on", &conf(port, "busy_poll 1h;"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let slept = switches_over(&busy, addr, 300);
    assert!(slept <= 5, "with busy_poll: {slept} switches");
    assert_eq!(worker_states(&busy), ['R']);
}

#[test]
fn a_busy_polling_worker_sleeps_once_traffic_stops() {
    let port = free_port();
    let s = Sluice::start("busy-idle", &conf(port, "busy_poll 1ms;"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    requests(addr, 200);
    wait_until("the worker to sleep after its window", || all_asleep(&s));
}

#[test]
fn a_reload_turns_busy_polling_on_and_off() {
    let port = free_port();
    let s = Sluice::start("busy-reload", &conf(port, ""));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let reload = |main_extra: &str, generation: &str| {
        std::fs::write(&s.conf, conf(port, main_extra)).expect("write conf");
        s.signal(libc::SIGHUP);
        wait_until("the reload", || {
            s.error_log()
                .contains(&format!("reconfiguring: generation {generation}"))
        });
    };
    reload("busy_poll 1h;", "2");
    let slept = switches_over(&s, addr, 300);
    assert!(slept <= 5, "after turning it on: {slept} switches");

    // Off: the spinner stops at the next request instead of at the end of
    // its hour.
    reload("busy_poll off;", "3");
    requests(addr, 1);
    wait_until("the worker to sleep", || all_asleep(&s));
}

#[test]
fn each_of_several_workers_busy_polls() {
    let port = free_port();
    let text = conf(port, "busy_poll 1h;").replace("worker_processes 1;", "worker_processes 2;");
    let s = Sluice::start("busy-workers", &text);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("two workers", || worker_states(&s).len() == 2);
    let slept = switches_over(&s, addr, 300);
    assert!(slept <= 5, "with two workers: {slept} switches");
    assert!(worker_states(&s).contains(&'R'));
}

#[test]
fn busy_poll_takes_off_or_a_time() {
    let dir = common::temp_dir("busy-t");
    for (value, ok) in [
        ("off", true),
        ("0", true),
        ("1ms", true),
        ("200ms", true),
        ("2s", true),
        ("on", false),
        ("1us", false),
        ("-1", false),
    ] {
        let path = dir.join("conf/nginx.conf");
        std::fs::write(&path, conf(free_port(), &format!("busy_poll {value};"))).expect("write");
        let out = Command::new(common::bin())
            .args(["-t", "-p"])
            .arg(dir.path())
            .args(["-c", "conf/nginx.conf"])
            .output()
            .expect("run sluice -t");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "busy_poll {value}: {stderr}");
        if !ok {
            let line = main_block().lines().count() + 1;
            assert!(
                stderr.contains(&format!(
                    "sluice: [emerg] \"busy_poll\" directive invalid value in {}:{line}",
                    path.display()
                )),
                "busy_poll {value}: {stderr}"
            );
        }
    }
}
