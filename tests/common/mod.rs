//! Test harness: the real `sluice` binary on loopback ports, with a prefix
//! directory of its own, and peers to talk to.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod backend;
pub mod certs;
pub mod nginx;
mod seed;
pub mod workers;

#[allow(unused_imports)]
pub use seed::*;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir for one test, with `logs/`
/// and `conf/` made.
pub fn temp_dir(tag: &str) -> TestDir {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).expect("create test dir");
    std::fs::create_dir_all(dir.join("conf")).expect("create test dir");
    TestDir(dir, AtomicBool::new(false))
}

/// A test's temporary directory: removed on drop when the test passes, kept
/// when the thread is panicking so a failure can be inspected. Whatever runs
/// in it (sluice, nginx, a peer) must be stopped before this drops, so it is
/// declared first or owned by the process's handle.
pub struct TestDir(PathBuf, AtomicBool);

impl TestDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Keeps the directory on drop even though the thread is not panicking:
    /// for a test that gathers failures and reports them later.
    pub fn keep(&self) {
        self.1.store(true, Ordering::Relaxed);
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || self.1.load(Ordering::Relaxed) {
            eprintln!("kept test dir {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port nobody listens on right now, released before the server
/// under test binds it. Ports come from below Linux's ephemeral range
/// (32768-60999), so an outgoing connection of another test cannot take one
/// as its local port in between; each is handed out once per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Processes running at once start at different places.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// Waits until `cond` holds, polling a readiness signal (a file, a port);
/// panics with `what` after 20 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running sluice, stopped (TERM, then waited for) on drop; its prefix
/// directory goes after it.
pub struct Sluice {
    pub child: Option<Child>,
    pub conf: PathBuf,
    pub prefix: TestDir,
}

impl Sluice {
    /// Writes `conf` (a whole nginx.conf) into a fresh prefix and starts
    /// sluice on it; returns once the pid file says every listener is bound.
    pub fn start(tag: &str, conf: &str) -> Sluice {
        let prefix = temp_dir(tag);
        Self::start_in(prefix, conf)
    }

    pub fn start_in(prefix: TestDir, conf: &str) -> Sluice {
        let conf_path = prefix.join("conf/nginx.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let pid_path = prefix.join("logs/sluice.pid");
        let child = Command::new(bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg("conf/nginx.conf")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("logs/stderr.log")).expect("stderr file"))
            .spawn()
            .expect("spawn sluice");
        let mut s = Sluice {
            child: Some(child),
            conf: conf_path,
            prefix,
        };
        let mut exited = None;
        wait_until("sluice's pid file", || {
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            pid_path.exists()
        });
        if let Some(status) = exited {
            s.child = None;
            panic!("sluice exited early ({status}): {}", s.stderr());
        }
        s
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/stderr.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Sends QUIT and waits for the exit. The prefix stays until drop, for
    /// what the test checks afterwards.
    pub fn quit(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGQUIT);
        let mut c = self.child.take().expect("child");
        c.wait().expect("wait sluice")
    }

    /// Stops sluice (TERM, then waited for); the prefix stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The standard top of a test config: logs and pid under the prefix.
pub fn main_block() -> &'static str {
    "worker_processes 1;\nerror_log logs/error.log info;\npid logs/sluice.pid;\nevents { worker_connections 1024; }\n"
}

/// Sends raw bytes to `addr` and reads until the server closes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status code of a raw HTTP response.
pub fn status_of(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
