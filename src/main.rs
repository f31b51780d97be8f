use std::process::ExitCode;

fn main() -> ExitCode {
    sluice::runtime::cli::main(std::env::args_os().collect())
}
