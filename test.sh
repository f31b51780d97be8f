#!/usr/bin/env bash
# The whole test suite: installs the third-party peers the tests talk to
# (tests/peers/install.sh), then runs every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")"
tests/peers/install.sh
cargo test --all-targets "$@"
