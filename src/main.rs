use std::ffi::OsString;
use std::process::ExitCode;

// Temporary dispatch for the demo peers until the CLI is wired.
fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("echo") => sluice::tools::echo::run(args.split_off(2)),
        Some("wscat") => sluice::tools::wscat::run(args.split_off(2)),
        _ => ExitCode::SUCCESS,
    }
}
