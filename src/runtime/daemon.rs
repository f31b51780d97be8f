//! `daemon on`: the process detaches once its configuration is good and every
//! listener is bound, as nginx's `ngx_daemon()`: fork, the child calls
//! setsid() and points stdin/stdout (and stderr, unless the error log is
//! stderr) at /dev/null.
//!
//! Unlike nginx, the parent does not exit at once: it waits on a pipe until
//! the child has written its pid file and serves (then exits 0), or has failed
//! (then prints the child's message and exits 1), so that a script or a
//! systemd `Type=forking` unit sees a ready server, or the error, when the
//! command returns. The fork must happen while the process has one thread:
//! before the tokio runtime and the access-log writer start theirs.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use super::cli::say;
use crate::conf::model::LogLevel;

/// What the child sends its parent once it serves.
const READY: &[u8] = b"ready\n";

/// Where the serving process reports the end of its start-up: its stderr,
/// and in a daemon, the parent waiting on the readiness pipe.
pub struct Startup {
    pipe: Option<File>,
}

/// The two sides of [`detach`].
pub enum Detached {
    /// The command's own process: exit with this code.
    Parent(ExitCode),
    /// The background process: go on starting, then report to the parent.
    Child(Startup),
}

impl Startup {
    /// `daemon off`: start-up messages go to stderr only.
    pub fn foreground() -> Startup {
        Startup { pipe: None }
    }

    /// Reports a start-up failure (an nginx `[emerg]` line) and returns the
    /// exit code for it.
    pub fn fail(&mut self, text: &str) -> ExitCode {
        say(Some("emerg"), text);
        if let Some(mut p) = self.pipe.take() {
            // The daemon's stderr is gone: the error log keeps the line too.
            crate::error_log!(LogLevel::Emerg, "{text}");
            let _ = writeln!(p, "sluice: [emerg] {text}");
        }
        ExitCode::FAILURE
    }

    /// The process serves: the parent may exit 0.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(READY);
        }
    }
}

/// Forks into the background. `keep_stderr` when the error log is stderr (as
/// nginx, which then leaves fd 2 alone).
pub fn detach(keep_stderr: bool) -> std::io::Result<Detached> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has a single thread here (see the module comment),
    // so the child's copy of memory is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions; the child of a
            // fork is never a process group leader, so it cannot fail.
            unsafe {
                libc::setsid();
            }
            redirect_stdio(keep_stderr)?;
            Ok(Detached::Child(Startup {
                pipe: Some(File::from(write_end)),
            }))
        }
        _ => {
            drop(write_end);
            Ok(Detached::Parent(wait_ready(File::from(read_end))))
        }
    }
}

/// The parent's side: the child's verdict, relayed to this command's stderr.
fn wait_ready(mut pipe: File) -> ExitCode {
    let mut got = Vec::new();
    // EOF comes when the child exits or has reported (its end closes then).
    let _ = pipe.read_to_end(&mut got);
    if got == READY {
        return ExitCode::SUCCESS;
    }
    if got.is_empty() {
        say(
            Some("emerg"),
            "the background process exited before serving (see the error log)",
        );
    } else {
        let _ = std::io::stderr().write_all(&got);
    }
    ExitCode::FAILURE
}

fn redirect_stdio(keep_stderr: bool) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let targets: &[libc::c_int] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &fd in targets {
        // SAFETY: dup2 onto the standard descriptors, which Rust's std
        // handles refer to by number only.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
