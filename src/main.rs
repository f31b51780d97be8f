use std::process::ExitCode;

// See sluice::runtime::trim for why jemalloc.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    sluice::runtime::cli::main(std::env::args_os().collect())
}
