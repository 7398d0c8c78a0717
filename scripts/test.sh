#!/usr/bin/env bash
# The one test command: installs what a fresh machine lacks, checks formatting and lints, builds
# once, and runs the whole suite (unit, integration against private redis-servers, benches
# compiled). Tests never use the machine's shared Redis: each starts its own on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

# --- Prometheus (tests/it/ops: a real Prometheus scrapes a node; promtool checks deploy/) -------
# The ops tests fail (never skip) without it. The Debian package ships prometheus and promtool;
# its service is not needed (the tests start their own server on a free port).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus
fi
# --- end Prometheus ----------------------------------------------------------------------------

# --- Proxy: nginx + browser (tests/it/proxy nginx gate test; tests/browser/flow.mjs) ---------------
# nginx (Debian package) for the gate-mode test, which fails (never skips) without it; Debian's
# chromium and npm playwright-core (no browser download) for the browser test below.
need_proxy=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_proxy+=(nginx)
[ -x /usr/bin/chromium ] || need_proxy+=(chromium)
command -v node >/dev/null 2>&1 || need_proxy+=(nodejs npm)
if [ ${#need_proxy[@]} -gt 0 ]; then
  echo "==> installing ${need_proxy[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_proxy[@]}"
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> npm ci (tests/browser: playwright-core)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund
fi
# --- end Proxy (install) -----------------------------------------------------------------------

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build tests"
cargo test --locked --no-run

echo "==> tests"
# The workspace's default members are rushgate and loadtest/, so this also runs
# loadtest/tests/drop.rs: a short `drop` event (2,000 shoppers, a few seconds) against a node on a
# private redis-server, failing on any correctness finding (oversell, duplicate coupon, FIFO
# inversion, increased position, server error), never on a speed figure. The benchmark itself
# (scripts/bench.sh) is not part of CI.
cargo test --locked -- --test-threads="${RUSHGATE_TEST_THREADS:-3}"

# --- Proxy: browser tests (headless Chromium: waiting page → product → buy; moving a place;
# a storefront on another origin calling the API) ---
echo "==> browser test"
cargo build --locked
node tests/browser/flow.mjs
node tests/browser/transfer.mjs
node tests/browser/cors.mjs
# --- end Proxy (browser) -----------------------------------------------------------------------

echo "==> benches compile"
# The dev profile reuses the test build: this checks the benches compile without a second,
# release build of every dependency (scripts/bench.sh and `cargo bench` run them optimized).
cargo bench --locked --no-run --profile dev

echo "==> all green"
