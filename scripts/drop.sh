#!/usr/bin/env bash
# The whole event at full size: the `drop` scenario (loadtest/scenarios/drop.toml: 100,000
# shoppers for 1,000 units, a 5-second spike then a 20-second tail, 10% abandoning) against a
# release rushgate node spawned by the load generator, on a private redis-server.
#
#   bash scripts/drop.sh                      # 100,000 shoppers
#   bash scripts/drop.sh --set shoppers=20000 # any scenario override
#
# Exits non-zero on any correctness finding (oversell, duplicate coupon, FIFO inversion,
# increased position, server error). Report, JSON and plots: target/drop/.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server
}
cargo build --release --locked -p rushgate-loadtest
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/rushgate-drop.XXXXXX)
REDIS_PID=
cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >/dev/null &
REDIS_PID=$!
for _ in $(seq 1 200); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

cat > "$TMP/rushgate.toml" <<TOML
# --spawn binds both listeners on free ports instead.
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"

[store]
redis_url = "redis://127.0.0.1:$PORT"

[passes]
signing_key_file = "$TMP/key.pem"
generate_missing_key = true
ticket_secret = "drop-run-ticket-secret-0123456789"

[limits]
join_per_minute = 0
poll_per_minute = 0
purchase_per_minute = 0
coupon_per_minute = 0

[log]
level = "error"

[[rooms]]
id = "drop"
admit_per_minute = 30000
max_active = 300
idle_timeout_seconds = 5
session_seconds = 60

[[sales]]
id = "drop-sale"
room = "drop"
stock = 1000
per_user_limit = 1

[[coupons]]
id = "drop-coupons"
room = "drop"
limit = 500
TOML

mkdir -p target/drop
target/release/rushgate-loadtest run loadtest/scenarios/drop.toml --spawn --config "$TMP/rushgate.toml" \
  --out target/drop "$@"
