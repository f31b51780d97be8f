#!/usr/bin/env bash
# The whole test suite: installs the third-party peers the tests talk to,
# then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --all-targets "$@"
