//! The error log: nginx's line format, a minimum level, a file or stderr.
//!
//! `2026/11/21 06:40:00 [error] 12345#0: *7 connect() failed (111: Connection
//! refused) while connecting to upstream, client: 127.0.0.1, server: localhost,
//! request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:9000/", host: "127.0.0.1:8080"`
//!
//! Error lines are rare, so each is one `write()` of a whole line under a
//! mutex, straight to the file opened with O_APPEND (no buffering to lose).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use crate::conf::model::{ErrorLog, ErrorLogTarget, LogLevel};
use crate::vars::eval::{with_cached_time, VarCtx};

use super::writer::{os_error, LogError};

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

static LEVEL: AtomicU8 = AtomicU8::new(level_rank(LogLevel::Error));
static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

const fn level_rank(l: LogLevel) -> u8 {
    match l {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Notice => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
        LogLevel::Crit => 5,
        LogLevel::Alert => 6,
        LogLevel::Emerg => 7,
    }
}

fn open(path: &std::path::Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| LogError::Open {
            path: path.display().to_string(),
            reason: os_error(&e),
        })
}

/// Sets the error log from the configuration. Until this is called, lines of
/// level `error` and above go to stderr. `syslog:` targets write to stderr.
pub fn init(conf: &ErrorLog) -> Result<(), LogError> {
    let sink = match &conf.target {
        ErrorLogTarget::Stderr | ErrorLogTarget::Syslog(_) => Sink::Stderr,
        ErrorLogTarget::File(path) => Sink::File {
            path: path.clone(),
            file: open(path)?,
        },
    };
    *lock() = sink;
    LEVEL.store(level_rank(conf.level), Ordering::Relaxed);
    Ok(())
}

/// Re-opens the error log file by its path (USR1); on failure the old file
/// stays in use.
pub fn reopen() -> Result<(), LogError> {
    let mut g = lock();
    if let Sink::File { path, file } = &mut *g {
        *file = open(path)?;
    }
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, Sink> {
    // A panic while holding the lock leaves a usable sink behind.
    SINK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a line of `level` would be written; check before formatting
/// anything costly.
pub fn enabled(level: LogLevel) -> bool {
    level_rank(level) >= LEVEL.load(Ordering::Relaxed)
}

/// Formats one line: time, `[level]`, `pid#0:`, `*conn ` when given, message.
pub fn format_line(level: LogLevel, conn: Option<u64>, msg: fmt::Arguments<'_>) -> Vec<u8> {
    let mut line = Vec::with_capacity(160);
    with_cached_time(|t| line.extend_from_slice(t.error_log()));
    // nginx prints the thread id after '#'; it is 0 without thread pools.
    let _ = write!(line, " [{}] {}#0: ", level.name(), std::process::id());
    if let Some(c) = conn {
        let _ = write!(line, "*{c} ");
    }
    let _ = line.write_fmt(msg);
    line.push(b'\n');
    line
}

/// Writes one line at `level` if the configured level lets it through.
pub fn write(level: LogLevel, conn: Option<u64>, msg: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format_line(level, conn, msg);
    let mut g = lock();
    let _ = match &mut *g {
        Sink::Stderr => std::io::stderr().write_all(&line),
        Sink::File { file, .. } => file.write_all(&line),
    };
}

/// nginx's request context appended to error lines (`ngx_http_log_error_handler`):
/// `, client: A, server: S, request: "R", upstream: "U", host: "H", referrer: "F"`.
/// `upstream` is the peer URL as nginx prints it (`http://127.0.0.1:9000/`).
pub fn request_context(cx: &VarCtx<'_>, upstream: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(128);
    let _ = write!(s, ", client: {}", cx.conn.remote.ip());
    let _ = write!(s, ", server: {}", cx.server_name);
    let mut req = Vec::new();
    crate::vars::eval::eval_var(
        &crate::vars::Var::Builtin(crate::vars::Builtin::Request),
        cx,
        &mut req,
    );
    let _ = write!(s, ", request: \"{}\"", String::from_utf8_lossy(&req));
    if let Some(u) = upstream {
        let _ = write!(s, ", upstream: \"{u}\"");
    }
    if let Some(h) = cx.req.headers.get(http::header::HOST) {
        let _ = write!(s, ", host: \"{}\"", String::from_utf8_lossy(h.as_bytes()));
    }
    if let Some(r) = cx.req.headers.get(http::header::REFERER) {
        let _ = write!(
            s,
            ", referrer: \"{}\"",
            String::from_utf8_lossy(r.as_bytes())
        );
    }
    s
}

/// `error_log!(LogLevel::Error, "connect() failed ({})", e)` or, with the
/// connection number, `error_log!(LogLevel::Error, conn = 7, "...")`.
#[macro_export]
macro_rules! error_log {
    ($level:expr, conn = $conn:expr, $($arg:tt)+) => {
        if $crate::log::error::enabled($level) {
            $crate::log::error::write($level, Some($conn), format_args!($($arg)+));
        }
    };
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::error::enabled($level) {
            $crate::log::error::write($level, None, format_args!($($arg)+));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::eval::tests::{conn, ctx, parts};

    #[test]
    fn line_format() {
        let line = format_line(
            LogLevel::Error,
            Some(7),
            format_args!("connect() failed (111: Connection refused) while connecting to upstream"),
        );
        let s = String::from_utf8(line).unwrap();
        // "2026/11/21 06:40:00 " is 20 bytes.
        assert_eq!(&s[4..5], "/");
        assert_eq!(&s[19..20], " ");
        assert_eq!(
            &s[20..],
            format!(
                "[error] {}#0: *7 connect() failed (111: Connection refused) while connecting to upstream\n",
                std::process::id()
            )
        );
    }

    #[test]
    fn context_suffix() {
        let c = conn();
        let p = parts("/", &[("host", "127.0.0.1:8080")]);
        let mut cx = ctx(&c, &p, None);
        cx.server_name = "localhost";
        assert_eq!(
            request_context(&cx, Some("http://127.0.0.1:9000/")),
            ", client: 192.0.2.7, server: localhost, request: \"GET / HTTP/1.1\", \
             upstream: \"http://127.0.0.1:9000/\", host: \"127.0.0.1:8080\""
        );
    }

    #[test]
    fn levels_and_file() {
        let dir = super::super::writer::tests::temp_dir("error");
        let path = dir.join("error.log");
        init(&ErrorLog {
            target: ErrorLogTarget::File(path.clone()),
            level: LogLevel::Warn,
        })
        .unwrap();
        assert!(enabled(LogLevel::Emerg) && enabled(LogLevel::Warn));
        assert!(!enabled(LogLevel::Notice));
        crate::error_log!(LogLevel::Info, "not written");
        crate::error_log!(LogLevel::Warn, conn = 3, "written {}", 1);
        let moved = dir.join("error.log.1");
        std::fs::rename(&path, &moved).unwrap();
        reopen().unwrap();
        crate::error_log!(LogLevel::Crit, "after reopen");
        // Back to stderr so other tests' lines do not land in this file.
        init(&ErrorLog {
            target: ErrorLogTarget::Stderr,
            level: LogLevel::Error,
        })
        .unwrap();
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.ends_with(&format!("[warn] {}#0: *3 written 1\n", std::process::id())),
            "{old}"
        );
        assert_eq!(old.lines().count(), 1);
        assert!(new.ends_with("#0: after reopen\n"), "{new}");
        assert!(init(&ErrorLog {
            target: ErrorLogTarget::File(dir.join("nope/error.log")),
            level: LogLevel::Error,
        })
        .is_err());
    }
}
