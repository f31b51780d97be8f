//! Reload (`-s reload`, HUP) and log reopen (USR1) on the real binary:
//! new configuration in force, broken ones refused with file:line, and
//! traffic (WebSockets and HTTP) untouched by a series of reloads.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::backend::Backend;
use common::{main_block, Sluice};
use futures_util::{SinkExt, StreamExt};
use sluice::tools::echo::{serve_with, EchoOptions, REPLY_PREFIX};
use tokio_tungstenite::tungstenite::Message;

fn get(addr: SocketAddr, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    common::status_of(&common::raw_exchange(addr, req.as_bytes()))
}

/// Waits (bounded) until `path` answers `status`.
fn wait_status(addr: SocketAddr, path: &str, status: u16) {
    common::wait_until(&format!("{path} to answer {status}"), || {
        get(addr, path) == status
    });
}

/// `sluice -p PREFIX -c conf/nginx.conf -s WORD`; (success, stderr).
fn signal_cmd(s: &Sluice, word: &str) -> (bool, String) {
    let out = Command::new(common::bin())
        .arg("-p")
        .arg(&s.prefix)
        .arg("-c")
        .arg("conf/nginx.conf")
        .arg("-s")
        .arg(word)
        .output()
        .expect("run sluice -s");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn simple_conf(port: u16, locations: &str) -> String {
    format!(
        "{}http {{\n access_log logs/access.log;\n server {{\n  listen 127.0.0.1:{port};\n  location /old {{ return 200 \"old\\n\"; }}\n{locations} }}\n}}\n",
        main_block()
    )
}

#[test]
fn reload_from_another_process_and_a_broken_config() {
    let port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Sluice::start("reload-s", &simple_conf(port, ""));
    assert_eq!(get(addr, "/new"), 404);

    std::fs::write(
        &s.conf,
        simple_conf(port, "  location /new { return 200 \"new\\n\"; }\n"),
    )
    .expect("write conf");
    let (ok, err) = signal_cmd(&s, "reload");
    assert!(ok, "sluice -s reload failed: {err}");
    wait_status(addr, "/new", 200);
    assert_eq!(get(addr, "/old"), 200);

    // A broken configuration: `-s reload` reports it as nginx does, and a
    // HUP is refused by the running process with file:line in its error log.
    let broken = simple_conf(port, "  location /newer { bogus_directive on; }\n");
    let line = broken
        .lines()
        .position(|l| l.contains("bogus_directive"))
        .expect("line")
        + 1;
    std::fs::write(&s.conf, &broken).expect("write conf");
    let (ok, err) = signal_cmd(&s, "reload");
    assert!(!ok, "a broken configuration must not be signalled");
    assert!(
        err.contains("unknown directive \"bogus_directive\""),
        "{err}"
    );
    s.signal(libc::SIGHUP);
    let want = format!(
        "unknown directive \"bogus_directive\" in {}:{line}",
        s.conf.display()
    );
    common::wait_until("the refusal in the error log", || {
        s.error_log().contains(&want)
    });
    assert_eq!(get(addr, "/new"), 200, "the old configuration stays");
    assert_eq!(get(addr, "/old"), 200);
}

#[test]
fn usr1_reopens_the_access_log_without_losing_lines() {
    let port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Sluice::start(
        "reopen",
        &simple_conf(port, "  location /r { return 200 \"ok\\n\"; }\n"),
    );
    let log = s.path("logs/access.log");
    let moved = s.path("logs/access.log.1");
    for i in 0..20 {
        assert_eq!(get(addr, &format!("/r{i}")), 200);
    }
    std::fs::rename(&log, &moved).expect("move the log");
    for i in 20..40 {
        assert_eq!(get(addr, &format!("/r{i}")), 200);
    }
    s.signal(libc::SIGUSR1);
    common::wait_until("a new access log", || log.exists());
    for i in 40..60 {
        assert_eq!(get(addr, &format!("/r{i}")), 200);
    }
    let has_all = || {
        let old = common::read_file(&moved);
        let new = common::read_file(&log);
        (0..60).all(|i| {
            let needle = format!("GET /r{i} ");
            old.contains(&needle) || new.contains(&needle)
        })
    };
    common::wait_until("every line in one of the files", has_all);
    let new = common::read_file(&log);
    assert!(new.contains("GET /r59 "), "new lines go to the new file");
    let old = common::read_file(&moved);
    assert!(old.contains("GET /r0 ") && old.contains("GET /r39 "));
    let total = old.lines().count() + new.lines().count();
    assert_eq!(total, 60, "no line lost or doubled");
}

const SOCKETS: usize = 200;
const RELOADS: usize = 20;

/// The configuration of reload `n`: the WebSocket and HTTP locations stay;
/// a location `/v{n}` and, every other time, a second server come and go.
fn load_conf(port: u16, extra_port: u16, echo: SocketAddr, api: SocketAddr, n: usize) -> String {
    let extra_server = if n % 2 == 1 {
        format!(" server {{\n  listen 127.0.0.1:{extra_port};\n  location / {{ return 200 \"extra\\n\"; }}\n }}\n")
    } else {
        String::new()
    };
    format!(
        "{}http {{\n access_log logs/access.log;\n upstream echo {{ server {echo}; }}\n upstream api {{ server {api}; }}\n\
 server {{\n  listen 127.0.0.1:{port};\n  location /ws {{ proxy_pass http://echo; proxy_http_version 1.1;\n\
   proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"Upgrade\"; proxy_read_timeout 1h; }}\n\
  location /api {{ proxy_pass http://api; }}\n  location = /v{n} {{ return 200 \"v{n}\\n\"; }}\n }}\n{extra_server}}}\n",
        main_block()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = l.local_addr().expect("addr");
    tokio::spawn(serve_with(
        l,
        EchoOptions {
            log: false,
            name: None,
        },
    ));
    let api = Backend::ok("api");
    let port = common::free_port();
    let extra_port = common::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = Sluice::start(
        "reload-load",
        &load_conf(port, extra_port, echo, api.addr, 0),
    );

    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .expect("handshake");
        sockets.push(ws);
    }
    let done = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let (done, messages) = (done.clone(), messages.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: at most 10 000 round trips a socket.
            for k in 0..10_000u32 {
                if done.load(Ordering::Relaxed) && k > 0 {
                    break;
                }
                let text = format!("c{i}-m{k}");
                ws.send(Message::text(text.clone()))
                    .await
                    .map_err(|e| format!("socket {i}: send {k}: {e}"))?;
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == format!("{REPLY_PREFIX}{text}") => {
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                    other => return Err(format!("socket {i}: message {k}: got {other:?}")),
                }
            }
            ws.close(None)
                .await
                .map_err(|e| format!("socket {i}: close: {e}"))?;
            Ok::<(), String>(())
        }));
    }
    let http_done = done.clone();
    let http = tokio::task::spawn_blocking(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        for n in 0..100_000 {
            if http_done.load(Ordering::Relaxed) && n > 0 {
                break;
            }
            match get(addr, "/api/x") {
                200 => ok += 1,
                st => failed.push(st),
            }
        }
        (ok, failed)
    });

    let conf = s.conf.clone();
    let before = messages.load(Ordering::Relaxed);
    let s = tokio::task::spawn_blocking(move || {
        for n in 1..=RELOADS {
            if n == RELOADS / 2 {
                // A broken configuration in the middle: refused and logged,
                // the previous one keeps serving.
                let broken = load_conf(port, extra_port, echo, api.addr, n).replace(
                    "access_log logs/access.log;",
                    "access_log logs/access.log;\n bogus_directive on;",
                );
                std::fs::write(&conf, broken).expect("write conf");
                s.signal(libc::SIGHUP);
                common::wait_until("the refused reload in the error log", || {
                    s.error_log()
                        .contains("unknown directive \"bogus_directive\"")
                });
                assert_eq!(get(addr, &format!("/v{}", n - 1)), 200);
            }
            std::fs::write(&conf, load_conf(port, extra_port, echo, api.addr, n))
                .expect("write conf");
            s.signal(libc::SIGHUP);
            wait_status(addr, &format!("/v{n}"), 200);
            let extra: SocketAddr = ([127, 0, 0, 1], extra_port).into();
            if n % 2 == 1 {
                wait_status(extra, "/", 200);
            } else {
                common::wait_until("the extra listener to close", || {
                    std::net::TcpStream::connect(extra).is_err()
                });
            }
        }
        let emerg: Vec<_> = s
            .error_log()
            .lines()
            .filter(|l| l.contains("[emerg]"))
            .map(str::to_owned)
            .collect();
        assert_eq!(emerg.len(), 1, "{emerg:?}");
        assert!(emerg[0].contains("bogus_directive"), "{emerg:?}");
        s
    })
    .await
    .expect("reloads");
    let during = messages.load(Ordering::Relaxed) - before;
    done.store(true, Ordering::Relaxed);

    let mut errors = Vec::new();
    for c in clients {
        if let Err(e) = c.await.expect("client task") {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} sockets failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let (ok, failed) = http.await.expect("http");
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}",
        failed.len()
    );
    assert!(ok > 0);
    assert!(during > 0, "messages flowed while reloading");
    assert!(messages.load(Ordering::Relaxed) >= SOCKETS as u64);
    assert!(!s.error_log().contains("[error]"), "{}", s.error_log());
}
