//! The main and events contexts.

use super::{arg_flag, arg_num, arg_time, duplicate, http, invalid, slot_error, Cx, EVENTS, MAIN};
use crate::conf::error::{ConfError, ConfErrorKind, Result};
use crate::conf::model::{
    ErrorLog, ErrorLogTarget, EventsConf, HttpConf, LogLevel, MainConf, WorkerProcesses,
};
use crate::conf::parse::Directive;

pub(super) fn compile(
    cx: &mut Cx,
    tree: &[Directive],
) -> Result<(MainConf, EventsConf, Option<HttpConf>)> {
    let mut main = MainConf {
        user: None,
        worker_processes: WorkerProcesses::Count(1),
        worker_rlimit_nofile: None,
        worker_shutdown_timeout: None,
        websocket_drain_delay: None,
        websocket_drain_window: std::time::Duration::ZERO,
        websocket_drain_on_reload: false,
        busy_poll: None,
        error_log: ErrorLog {
            target: ErrorLogTarget::File(cx.full_path("logs/error.log")),
            level: LogLevel::Error,
        },
        pid: cx.full_path("logs/sluice.pid"),
        daemon: false,
        master_process: true,
    };
    let mut events = None;
    let mut http_block = None;
    let mut seen = std::collections::HashSet::new();
    for d in tree {
        cx.check(d, MAIN)?;
        let single = !matches!(
            d.name.as_str(),
            "error_log" | "env" | "load_module" | "thread_pool"
        );
        if single && !seen.insert(d.name.as_str()) {
            return Err(duplicate(d));
        }
        match d.name.as_str() {
            "user" => {
                check_user(d)?;
                main.user = Some((d.args[0].clone(), d.args.get(1).cloned()));
            }
            "worker_processes" => {
                main.worker_processes = if d.args[0] == "auto" {
                    WorkerProcesses::Auto
                } else {
                    // nginx: `"worker_processes" directive invalid value`.
                    match arg_num(d, 0) {
                        Ok(n) if n > 0 => WorkerProcesses::Count(n as usize),
                        _ => return Err(slot_error(d, "invalid value")),
                    }
                }
            }
            "worker_rlimit_nofile" => main.worker_rlimit_nofile = Some(arg_num(d, 0)?),
            "worker_shutdown_timeout" => main.worker_shutdown_timeout = Some(arg_time(d, 0)?),
            "websocket_drain_delay" => main.websocket_drain_delay = Some(arg_time(d, 0)?),
            "websocket_drain_window" => main.websocket_drain_window = arg_time(d, 0)?,
            "websocket_drain_on_reload" => main.websocket_drain_on_reload = arg_flag(d),
            "busy_poll" => {
                main.busy_poll = if d.args[0] == "off" {
                    None
                } else {
                    Some(arg_time(d, 0)?).filter(|w| !w.is_zero())
                }
            }
            "error_log" => main.error_log = error_log(cx, d)?,
            "pid" => main.pid = cx.full_path(&d.args[0]),
            "daemon" => main.daemon = arg_flag(d),
            "master_process" => main.master_process = arg_flag(d),
            "worker_cpu_affinity" => {
                let ok = d.args[0] == "auto"
                    || d.args
                        .iter()
                        .all(|m| m.bytes().all(|b| b == b'0' || b == b'1'));
                if !ok {
                    return Err(invalid(d, &d.args[0]));
                }
            }
            "worker_priority" => {
                let ok = d.args[0]
                    .parse::<i32>()
                    .is_ok_and(|p| (-20..=20).contains(&p));
                if !ok {
                    return Err(invalid(d, &d.args[0]));
                }
            }
            "events" => events = Some(compile_events(cx, d)?),
            "http" => http_block = Some(d),
            _ => {}
        }
    }
    let events = events.ok_or_else(|| ConfError::bare(ConfErrorKind::NoEvents))?;
    let http = match http_block {
        Some(d) => Some(http::compile(cx, d)?),
        None => None,
    };
    Ok((main, events, http))
}

/// `user name [group]`: as nginx, the names must exist when running as root
/// (the group defaults to the user's name); otherwise the directive is moot.
fn check_user(d: &Directive) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let user = &d.args[0];
    let group = d.args.get(1).unwrap_or(user);
    let c = |s: &str| std::ffi::CString::new(s).ok();
    // SAFETY: both calls get a valid NUL-terminated string; the returned
    // pointers are only tested for null, while loading is single-threaded.
    let user_ok = c(user).is_some_and(|u| !unsafe { libc::getpwnam(u.as_ptr()) }.is_null());
    if !user_ok {
        return Err(ConfError::msg(
            format!("getpwnam(\"{user}\") failed"),
            &d.loc,
        ));
    }
    let group_ok = c(group).is_some_and(|g| !unsafe { libc::getgrnam(g.as_ptr()) }.is_null());
    if !group_ok {
        return Err(ConfError::msg(
            format!("getgrnam(\"{group}\") failed"),
            &d.loc,
        ));
    }
    Ok(())
}

/// `error_log file [level]`: `stderr`, `syslog:...`, or a path.
pub(super) fn error_log(cx: &Cx, d: &Directive) -> Result<ErrorLog> {
    let target = match d.args[0].as_str() {
        "stderr" => ErrorLogTarget::Stderr,
        s if s.starts_with("syslog:") => ErrorLogTarget::Syslog(s.to_string()),
        s => ErrorLogTarget::File(cx.full_path(s)),
    };
    let level = match d.args.get(1) {
        None => LogLevel::Error,
        Some(l) => LogLevel::parse(l).ok_or_else(|| invalid(d, l))?,
    };
    if d.args.len() > 2 {
        return Err(invalid(d, &d.args[2]));
    }
    Ok(ErrorLog { target, level })
}

fn compile_events(cx: &mut Cx, block: &Directive) -> Result<EventsConf> {
    let mut events = EventsConf {
        worker_connections: 512,
    };
    for d in block.block.as_deref().unwrap_or_default() {
        cx.check(d, EVENTS)?;
        match d.name.as_str() {
            "worker_connections" => {
                let n = arg_num(d, 0)?;
                if n == 0 {
                    return Err(invalid(d, &d.args[0]));
                }
                events.worker_connections = n as usize;
            }
            "use"
                if !matches!(
                    d.args[0].as_str(),
                    "epoll" | "poll" | "select" | "kqueue" | "eventport" | "/dev/poll"
                ) =>
            {
                return Err(ConfError::msg(
                    format!("invalid event type \"{}\"", d.args[0]),
                    &d.loc,
                ));
            }
            "accept_mutex_delay" => {
                arg_time(d, 0)?;
            }
            _ => {}
        }
    }
    Ok(events)
}
