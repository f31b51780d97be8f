//! `sluice -s stop|quit|reopen|reload`: signals the running process named by
//! the `pid` file of the configuration.

use std::process::ExitCode;

use super::cli::say;
use crate::conf::{self, LoadOptions};

/// The signal nginx sends for each `-s` word.
pub fn signal_for(word: &str) -> Option<libc::c_int> {
    Some(match word {
        "stop" => libc::SIGTERM,
        "quit" => libc::SIGQUIT,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        _ => return None,
    })
}

pub fn send(opts: &LoadOptions, word: &str) -> ExitCode {
    let Some(sig) = signal_for(word) else {
        say(None, &format!("invalid option: \"-s {word}\""));
        return ExitCode::FAILURE;
    };
    // nginx reads the configuration to find the pid file.
    let config = match conf::load(opts) {
        Ok(c) => c,
        Err(e) => {
            say(Some("emerg"), &e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let path = &config.main.pid;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let code = e.raw_os_error().unwrap_or(0);
            let reason = e.to_string();
            let reason = reason.split(" (os error").next().unwrap_or(&reason);
            say(
                Some("error"),
                &format!("open() \"{}\" failed ({code}: {reason})", path.display()),
            );
            return ExitCode::FAILURE;
        }
    };
    let Some(pid) = text.trim().parse::<libc::pid_t>().ok().filter(|p| *p > 0) else {
        say(
            Some("error"),
            &format!(
                "invalid PID number \"{}\" in \"{}\"",
                text.trim(),
                path.display()
            ),
        );
        return ExitCode::FAILURE;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        say(
            Some("alert"),
            &format!(
                "kill({pid}, {sig}) failed ({}: {e})",
                e.raw_os_error().unwrap_or(0)
            ),
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
