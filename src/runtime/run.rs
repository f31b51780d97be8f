//! Running a loaded configuration: worker threads, listeners, the pid file,
//! signals (reload, graceful and fast shutdown, log reopen).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cli::say;
use super::daemon::{Detached, Startup};
use super::workers::Workers;
use crate::conf::model::WorkerProcesses;
use crate::conf::{self, Config, LoadOptions};
use crate::log::writer::os_error;
use crate::log::AccessLogs;
use crate::server::vhost::ListenOptions;
use crate::server::{listen, Generation};

/// Runs until a shutdown signal; `reload_from` is how to re-read the
/// configuration on HUP (`None` for the embedded demo).
///
/// Listeners are bound first, with the process still single-threaded, so
/// that `daemon on` can fork (see daemon.rs) before the runtime's threads.
pub fn run(config: Config, reload_from: Option<LoadOptions>, demo: bool) -> ExitCode {
    let workers = match config.main.worker_processes {
        WorkerProcesses::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        WorkerProcesses::Count(n) => n,
    };
    super::workers::set_count(workers);
    if let Some(n) = config.main.worker_rlimit_nofile {
        raise_nofile(n);
    }
    if let Err(e) = crate::log::error::init(&config.main.error_log) {
        say(Some("emerg"), &e.to_string());
        return ExitCode::FAILURE;
    }
    let bound = match bind_all(&config, demo) {
        Ok(b) => b,
        Err(e) => {
            say(Some("emerg"), &e);
            return ExitCode::FAILURE;
        }
    };
    let mut startup = if config.main.daemon {
        let keep_stderr = config.main.error_log.target == conf::model::ErrorLogTarget::Stderr;
        match super::daemon::detach(keep_stderr) {
            Ok(Detached::Parent(code)) => return code,
            Ok(Detached::Child(s)) => s,
            Err(e) => {
                say(Some("emerg"), &format!("fork() failed ({})", os_error(&e)));
                return ExitCode::FAILURE;
            }
        }
    } else {
        Startup::foreground()
    };
    // The first worker's runtime, on this thread (workers.rs starts the
    // others). Nothing here blocks a worker (no `block_in_place`; reload
    // parses on a blocking thread).
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => return startup.fail(&format!("cannot start worker threads: {e}")),
    };
    rt.block_on(serve(config, reload_from, demo, workers, bound, startup))
}

/// The listening sockets of a configuration, bound before the runtime starts.
struct Bound {
    listeners: Vec<(SocketAddr, ListenOptions, std::net::TcpListener)>,
    /// The embedded demo's echo server.
    echo: Option<std::net::TcpListener>,
}

fn bind_all(config: &Config, demo: bool) -> Result<Bound, String> {
    let servers = config.http.as_ref().map_or(&[][..], |h| &h.servers[..]);
    let vhosts = crate::server::vhost::VhostTable::build(servers).map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for (addr, opts) in vhosts.listen_addrs() {
        let l = listen::bind_std(addr, opts)
            .map_err(|e| format!("bind() to {addr} failed ({})", os_error(&e)))?;
        listeners.push((addr, opts, l));
    }
    let echo = if demo {
        let addr = super::demo::ECHO_ADDR;
        let l = addr
            .parse()
            .map_err(std::io::Error::other)
            .and_then(|a| listen::bind_std(a, ListenOptions::default()))
            .map_err(|e| format!("bind() to {addr} failed ({})", os_error(&e)))?;
        Some(l)
    } else {
        None
    };
    Ok(Bound { listeners, echo })
}

fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = (n as libc::rlim_t).min(lim.rlim_max);
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                crate::error_log!(
                    crate::conf::model::LogLevel::Warn,
                    "setrlimit(RLIMIT_NOFILE, {n}) failed"
                );
            }
        }
    }
}

async fn serve(
    config: Config,
    reload_from: Option<LoadOptions>,
    demo: bool,
    workers: usize,
    bound: Bound,
    mut startup: Startup,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    let tunnels = TaskTracker::new();
    let logs = match AccessLogs::from_config(&config) {
        Ok(l) => Arc::new(l),
        Err(e) => return startup.fail(&e.to_string()),
    };
    let pid_path = config.main.pid.clone();
    let worker_connections = config.events.worker_connections;
    let gen = match Generation::build(
        config,
        None,
        1,
        logs.clone(),
        shutdown.clone(),
        tunnels.clone(),
    ) {
        Ok(g) => g,
        Err(e) => return startup.fail(&e.to_string()),
    };
    // Active health checks of the current generation (replaced on reload).
    let mut checks = crate::upstream::check::start(&gen.upstreams);
    let current = Arc::new(ArcSwap::from_pointee(gen));
    let permits = Arc::new(Semaphore::new(worker_connections.saturating_mul(workers)));
    let accept_stop = CancellationToken::new();
    let worker_loops = match Workers::start(workers) {
        Ok(w) => w,
        Err(e) => return startup.fail(&format!("cannot start worker threads: {e}")),
    };

    let mut listeners: HashMap<SocketAddr, CancellationToken> = HashMap::new();
    for (addr, opts, l) in bound.listeners {
        let stop = accept_stop.child_token();
        if let Err(e) = worker_loops.accept(addr, opts, &l, &current, &permits, &stop) {
            return startup.fail(&format!("bind() to {addr} failed ({})", os_error(&e)));
        }
        listeners.insert(addr, stop);
    }
    // Freed memory back to the system after bursts of closed connections.
    tokio::spawn(super::trim::run());
    worker_loops.busy_poll(current.load().config.main.busy_poll);
    let mut echo_task = None;
    if let Some(l) = bound.echo {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                echo_task = Some(tokio::spawn(crate::tools::echo::serve(l, true)));
            }
            Err(e) => {
                return startup.fail(&format!(
                    "bind() to {} failed ({})",
                    super::demo::ECHO_ADDR,
                    os_error(&e)
                ))
            }
        }
    }
    if demo {
        println!(
            "sluice demo: WebSocket proxy on ws://127.0.0.1:8020 -> echo server on 127.0.0.1:8010"
        );
        println!("  try:  sluice wscat --connect ws://127.0.0.1:8020");
        println!("  or open http://127.0.0.1:8020/ in a browser");
    }
    // Handlers before the pid file: a signal sent as soon as the pid file
    // appears must not meet the default action.
    let (Ok(mut hup), Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        return startup.fail("cannot install signal handlers");
    };
    if let Err(e) = write_pid(&pid_path) {
        return startup.fail(&format!(
            "open() \"{}\" failed ({})",
            pid_path.display(),
            os_error(&e)
        ));
    }
    startup.ready();

    let mut next_id = 2;
    let graceful = loop {
        tokio::select! {
            _ = hup.recv() => {
                let Some(opts) = &reload_from else {
                    crate::error_log!(crate::conf::model::LogLevel::Warn, "reload is not available for the embedded demo");
                    continue;
                };
                // Parsed off the runtime's thread: with one worker, that
                // thread also serves every connection.
                let opts = opts.clone();
                let loaded = tokio::task::spawn_blocking(move || conf::load(&opts)).await;
                let Ok(loaded) = loaded else {
                    crate::error_log!(crate::conf::model::LogLevel::Emerg, "reload: configuration loader failed");
                    super::metrics::reloaded(None);
                    continue;
                };
                match loaded {
                    Ok(c) => {
                        for w in &c.warnings {
                            crate::error_log!(crate::conf::model::LogLevel::Warn, "{w}");
                        }
                        let old = current.load_full();
                        match Generation::build(c, Some(&old), next_id, logs.clone(), shutdown.clone(), tunnels.clone()) {
                            Ok(g) => {
                                next_id += 1;
                                let wanted: HashMap<SocketAddr, ListenOptions> = g.vhosts.listen_addrs().into_iter().collect();
                                checks = crate::upstream::check::start(&g.upstreams);
                                super::drain::reloaded(&g);
                                worker_loops.busy_poll(g.config.main.busy_poll);
                                current.store(Arc::new(g));
                                old.retired.cancel(); // h2: GOAWAY on the old generation's connections
                                listeners.retain(|addr, stop| {
                                    let keep = wanted.contains_key(addr);
                                    if !keep {
                                        stop.cancel();
                                    }
                                    keep
                                });
                                for (addr, opts) in wanted {
                                    if listeners.contains_key(&addr) {
                                        continue;
                                    }
                                    let stop = accept_stop.child_token();
                                    match listen::bind_std(addr, opts).and_then(|l| worker_loops.accept(addr, opts, &l, &current, &permits, &stop)) {
                                        Ok(()) => {
                                            listeners.insert(addr, stop);
                                        }
                                        Err(e) => crate::error_log!(crate::conf::model::LogLevel::Error, "bind() to {addr} failed ({})", os_error(&e)),
                                    }
                                }
                                crate::error_log!(crate::conf::model::LogLevel::Info, "reconfiguring: generation {}", next_id - 1);
                                super::metrics::reloaded(Some(next_id - 1));
                            }
                            Err(e) => {
                                crate::error_log!(crate::conf::model::LogLevel::Error, "{e}");
                                super::metrics::reloaded(None);
                            }
                        }
                    }
                    Err(e) => {
                        // nginx logs a configuration it refuses on reload at emerg.
                        crate::error_log!(crate::conf::model::LogLevel::Emerg, "{e}");
                        super::metrics::reloaded(None);
                    }
                }
            }
            _ = usr1.recv() => {
                for e in logs.reopen() {
                    crate::error_log!(crate::conf::model::LogLevel::Error, "{e}");
                }
                if let Err(e) = crate::log::error::reopen() {
                    crate::error_log!(crate::conf::model::LogLevel::Error, "{e}");
                }
            }
            _ = quit.recv() => break true,
            _ = term.recv() => break false,
            _ = int.recv() => break false,
        }
    };
    // No more probes once shutdown starts.
    drop(checks);

    accept_stop.cancel();
    if graceful {
        let all = worker_connections.saturating_mul(workers);
        super::drain::graceful(
            &current.load().config.main,
            &tunnels,
            &shutdown,
            &permits,
            all,
        )
        .await;
    }
    shutdown.cancel();
    worker_loops.stop();
    if let Some(t) = echo_task {
        t.abort();
    }
    logs.flush_all();
    let _ = std::fs::remove_file(&pid_path);
    ExitCode::SUCCESS
}

fn write_pid(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}
