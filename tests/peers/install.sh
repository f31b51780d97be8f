#!/usr/bin/env bash
# Installs the third-party peers the tests talk to, on a fresh Debian machine:
# nginx (for differential tests) and the Prometheus text parser of the
# prometheus_client Python package (tests/metrics.rs). Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

apt_install nginx-light python3-prometheus-client
