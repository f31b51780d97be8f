//! `daemon on`: the command returns once the background process serves; the
//! pid file names that process; `-s quit` stops it through the pid file.
//! Start-up errors, before and after the fork, reach the command's stderr.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::{bin, free_port, main_block, raw_exchange, status_of, temp_dir};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn conf(port: u16, backend: std::net::SocketAddr, http_extra: &str) -> String {
    format!(
        "{}daemon on;\nhttp {{\n access_log logs/access.log;\n{http_extra}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://{backend}; }}\n }}\n}}\n",
        main_block()
    )
}

/// Runs `sluice -p prefix -c conf/nginx.conf ARGS` to its end, bounded.
fn sluice(prefix: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .arg("-p")
        .arg(prefix)
        .args(["-c", "conf/nginx.conf"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice {args:?} did not return within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("sluice output")
}

/// Whether `pid` is a running process (a zombie nobody reaped yet counts as
/// gone: the daemon's parent has exited, and init may be slow to reap).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The background process, stopped by its pid (TERM) if the test ends
/// without having stopped it.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0 > 0 && alive(self.0) {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe {
                libc::kill(self.0, libc::SIGTERM);
            }
            wait_gone(self.0);
        }
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid number")
}

fn write_conf(prefix: &Path, text: &str) -> PathBuf {
    let p = prefix.join("conf/nginx.conf");
    std::fs::write(&p, text).expect("write conf");
    p
}

fn fails_with(out: &Output, text: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.contains(text), "stderr: {err}");
}

#[test]
fn daemon_on_detaches_serves_and_stops_on_quit() {
    let backend = Backend::ok("from the backend");
    let port = free_port();
    let prefix = temp_dir("daemon");
    write_conf(&prefix, &conf(port, backend.addr, ""));
    let pid_path = prefix.join("logs/sluice.pid");

    let mut guard = Daemon(0);
    let mut cmd = Command::new(bin());
    cmd.arg("-p")
        .arg(&prefix)
        .args(["-c", "conf/nginx.conf"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn sluice");
    let command_pid = child.id() as i32;
    let deadline = Instant::now() + WAIT;
    let status: ExitStatus = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The pid file may name a daemon to stop.
            if let Ok(t) = std::fs::read_to_string(&pid_path) {
                guard.0 = t.trim().parse().unwrap_or(0);
            }
            panic!("`sluice -c` with daemon on did not return");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The command returns once the daemon serves: its pid file is there.
    let pid = read_pid(&pid_path);
    guard.0 = pid;
    assert!(status.success(), "{status}");
    assert_ne!(pid, command_pid);
    assert!(alive(pid), "the daemon {pid} is not running");

    let resp = raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert!(String::from_utf8_lossy(&resp).ends_with("from the backend"));

    // The daemon left the command's session and has no terminal.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id: {stat}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/1")).expect("fd 1"),
        Path::new("/dev/null")
    );

    let out = sluice(&prefix, &["-s", "quit"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_gone(pid), "the daemon did not exit after quit");
    assert!(!pid_path.exists(), "the pid file is left behind");
}

#[test]
fn daemon_on_reload_and_stop_through_the_pid_file() {
    let backend = Backend::ok("one");
    let port = free_port();
    let prefix = temp_dir("daemon-reload");
    write_conf(&prefix, &conf(port, backend.addr, ""));
    let out = sluice(&prefix, &[]);
    let pid_path = prefix.join("logs/sluice.pid");
    let _guard = Daemon(if pid_path.exists() {
        read_pid(&pid_path)
    } else {
        0
    });
    assert!(out.status.success(), "{out:?}");
    let pid = read_pid(&pid_path);

    // A second listener appears on reload.
    let port2 = free_port();
    let text = conf(port, backend.addr, "").replace(
        &format!("  listen 127.0.0.1:{port};\n"),
        &format!("  listen 127.0.0.1:{port};\n  listen 127.0.0.1:{port2};\n"),
    );
    write_conf(&prefix, &text);
    let out = sluice(&prefix, &["-s", "reload"]);
    assert!(out.status.success(), "{out:?}");
    common::wait_until("the reloaded listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok()
    });
    let resp = raw_exchange(
        ([127, 0, 0, 1], port2).into(),
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 200);

    let out = sluice(&prefix, &["-s", "stop"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_gone(pid), "the daemon did not exit after stop");
    assert!(!pid_path.exists());
}

#[test]
fn a_bind_error_stops_the_command_before_the_fork() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let prefix = temp_dir("daemon-bind");
    write_conf(
        &prefix,
        &conf(port, "127.0.0.1:9".parse().expect("addr"), ""),
    );
    let out = sluice(&prefix, &[]);
    fails_with(&out, &format!("[emerg] bind() to 127.0.0.1:{port} failed"));
    assert!(!prefix.join("logs/sluice.pid").exists());
}

#[test]
fn an_error_in_the_background_process_reaches_the_command() {
    let port = free_port();
    let prefix = temp_dir("daemon-late");
    // Access logs are opened after the fork (their writer is a thread).
    let text = conf(port, "127.0.0.1:9".parse().expect("addr"), "").replace(
        "access_log logs/access.log;",
        "access_log logs/missing-dir/access.log;",
    );
    write_conf(&prefix, &text);
    let out = sluice(&prefix, &[]);
    fails_with(&out, "[emerg]");
    fails_with(&out, "missing-dir/access.log");
    assert!(!prefix.join("logs/sluice.pid").exists());
    // The background process goes away with its listener.
    common::wait_until("the failed daemon's listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
}
