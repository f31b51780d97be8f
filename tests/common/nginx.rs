//! Differential testing against real nginx: starts Debian's nginx on a
//! config under a temp prefix, and reads one HTTP response off a socket
//! the way a client would (so keep-alive answers need no close).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const NGINX: &str = "/usr/sbin/nginx";

/// The top of a config shared by nginx and sluice in a differential run:
/// every path nginx writes (logs, pid, temp dirs) is under the prefix.
/// `pid` names the pid file, so each server's readiness signal is its own.
pub fn diff_conf(pid: &str, http_body: &str) -> String {
    format!(
        "worker_processes 1;\nerror_log logs/error.log info;\npid logs/{pid};\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         client_body_temp_path tmp/client_body;\n proxy_temp_path tmp/proxy;\n\
         fastcgi_temp_path tmp/fastcgi;\n uwsgi_temp_path tmp/uwsgi;\n scgi_temp_path tmp/scgi;\n\
         access_log logs/access.log;\n\
         {http_body}\n}}\n"
    )
}

/// A running nginx (single process, foreground), stopped by PID on drop;
/// its prefix directory goes after it.
pub struct Nginx {
    child: Option<Child>,
    pub prefix: super::TestDir,
}

impl Nginx {
    /// Spawns nginx on `conf` in `prefix` without waiting; call `ready()`.
    pub fn spawn(prefix: super::TestDir, conf: &str) -> Nginx {
        for d in ["conf", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(d)).expect("create nginx prefix");
        }
        std::fs::write(prefix.join("conf/nginx.conf"), conf).expect("write nginx conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg("logs/error.log")
            .arg("-c")
            .arg("conf/nginx.conf")
            .arg("-g")
            .arg("daemon off; master_process off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("logs/stderr.log")).expect("stderr file"))
            .spawn()
            .expect("spawn /usr/sbin/nginx (tests/peers/install.sh installs it)");
        Nginx {
            child: Some(child),
            prefix,
        }
    }

    /// Waits for the pid file (nginx writes it once its listeners are open).
    pub fn ready(&mut self, pid_file: &str) {
        let pid_path = self.prefix.join("logs").join(pid_file);
        let mut exited = None;
        super::wait_until("nginx's pid file", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            pid_path.exists()
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "nginx exited early ({status}): {}{}",
                super::read_file(&self.prefix.join("logs/stderr.log")),
                super::read_file(&self.prefix.join("logs/error.log"))
            );
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

/// One HTTP response as the client saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientResponse {
    /// 0 when the server closed without answering.
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Chunked framing on the wire.
    pub chunked: bool,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` on a fresh connection and reads one response (framed by
/// Content-Length, chunked encoding or close). `head` says the request was
/// HEAD, so the response has no body.
pub fn exchange(addr: SocketAddr, request: &[u8], head: bool) -> ClientResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let _ = s.write_all(request);
    read_response(&mut s, head)
}

fn read_response(s: &mut TcpStream, head: bool) -> ClientResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return ClientResponse::default(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut rest = buf[end + 4..].to_vec();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    parts.next();
    let status = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    let mut r = ClientResponse {
        status,
        reason,
        headers,
        ..Default::default()
    };
    if head || status / 100 == 1 || status == 204 || status == 304 {
        return r;
    }
    let mut fill = |rest: &mut Vec<u8>, want: usize| -> bool {
        while rest.len() < want {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        r.chunked = true;
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(i) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    break Some(pos + i);
                }
                let want = rest.len() + 1;
                if !fill(&mut rest, want) {
                    break None;
                }
            };
            let Some(line_end) = line_end else { break };
            let size_text = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            if !fill(&mut rest, pos + size + 2) {
                r.body.extend_from_slice(&rest[pos..]);
                break;
            }
            r.body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(len) = r.header("content-length").and_then(|v| v.parse().ok()) {
        fill(&mut rest, len);
        rest.truncate(len);
        r.body = rest;
    } else {
        let _ = s.read_to_end(&mut rest);
        r.body = rest;
    }
    r
}

/// `prefix/logs/<name>` as text.
pub fn log_text(prefix: &Path, name: &str) -> String {
    super::read_file(&prefix.join("logs").join(name))
}
