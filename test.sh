#!/usr/bin/env bash
# The whole test suite: installs the third-party peers the tests talk to
# (tests/peers/install.sh), then runs every unit and integration test, and
# the load generator's.
set -euo pipefail
cd "$(dirname "$0")"
tests/peers/install.sh
cargo test --all-targets "$@"
# The benchmark's load generator is its own package (bench/loadgen): its wire
# code has unit tests too. Skipped when a filter was given for the above.
if [ $# -eq 0 ]; then
    cargo test --release --manifest-path bench/loadgen/Cargo.toml
fi
