//! Running a loaded configuration.

use std::process::ExitCode;

use super::cli::say;
use crate::conf::Config;

pub fn run(config: Config, _error_log: Option<&str>, _demo: bool) -> ExitCode {
    let _ = config;
    say(Some("emerg"), "serving is not implemented yet");
    ExitCode::FAILURE
}
