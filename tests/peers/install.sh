#!/usr/bin/env bash
# Installs the third-party peers the tests talk to, on a fresh Debian machine:
# nginx (for differential tests), Chromium (the browser WebSocket client),
# npm's ws and wscat (the nginx guide's Node server and its client), pinned in
# package-lock.json, and the Prometheus text parser of the prometheus_client
# Python package (tests/metrics.rs), and openssl, curl and Python websockets
# for the TLS tests (tests/tls.rs), and h2load (nghttp2-client) and Python's h2 and
# wsproto for the HTTP/2 tests (tests/h2.rs). Idempotent: skips what is already there.
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

apt_install nginx-light chromium python3-prometheus-client openssl curl python3-websockets \
    nghttp2-client python3-h2 python3-wsproto

# npm ci wipes node_modules: only run it when the lock file changed since.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s node_modules/.sluice-lock package-lock.json; then
    echo "installing npm peers (ws, wscat) into tests/peers/node_modules"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    cp package-lock.json node_modules/.sluice-lock
fi
