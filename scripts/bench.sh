#!/usr/bin/env bash
# The benchmark: rushgate against its ceilings, side by side, in one run on this machine.
#
#   bash scripts/bench.sh            # full run (1,000,000 waiting; < 15 min)
#   bash scripts/bench.sh --quick    # short run (200,000 waiting; < 3 min once built)
#   BENCH_ONLY="join_64 redis_lua_64" bash scripts/bench.sh --quick
#                                    # only those runs, raw figures instead of the table
#   RUSHGATE_BIN=/tmp/rushgate-old BENCH_ONLY=... bash scripts/bench.sh --quick
#                                    # the same runs against another build of rushgate
#
# Builds release, starts its own redis-server and two nginx (Debian package, installed when
# missing: the baselines, and the static upstream both proxies forward to) and the loadtest
# baselines (hello, redis-lua, hyper-proxy) on free loopback ports in a temp dir, pins every
# server to one core and the load generator to another (taskset), and reports each row as a
# ratio to the baseline measured in the same run. Prints the table and writes
# target/bench/report.md and target/bench/report.json (raw per-run JSON and SVG plots in
# target/bench/raw/).
# Run it on an otherwise idle machine: anything else heavy skews both sides of every ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
if [ "$QUICK" = 1 ]; then
  WAITING=200000; DUR=5; WARM=1; MODE=quick
else
  WAITING=1000000; DUR=15; WARM=2; MODE=full
fi

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "==> cargo build --release"
cargo build --release --locked -p rushgate -p rushgate-loadtest
# RUSHGATE_BIN: another build to measure in the same setup (an A/B check of a change: build the
# old commit, copy its binary away, run once with and once without).
RG=${RUSHGATE_BIN:-target/release/rushgate}
LT=target/release/rushgate-loadtest

# Server side on the first core, the load generator on the second (when there is one).
CPUS=$(nproc)
SERVER_CPU=0
GEN_CPU=$(( CPUS > 1 ? 1 : 0 ))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

OUT=target/bench
RAW=$OUT/raw
rm -rf "$RAW"; mkdir -p "$RAW"
TMP=$(mktemp -d /tmp/rushgate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
REDIS_PORT=$(free_port); RG_PORT=$(free_port); ADMIN_PORT=$(free_port)
HELLO_PORT=$(free_port); LUA_PORT=$(free_port); HPROXY_PORT=$(free_port)
NGX_RETURN=$(free_port); NGX_PROXY=$(free_port); UPSTREAM=$(free_port)
WS_ECHO_PORT=$(free_port)


echo "==> redis-server :$REDIS_PORT, nginx :$NGX_RETURN/:$NGX_PROXY (upstream :$UPSTREAM)"
mkdir -p "$TMP/redis"
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" &
REDIS_PID=$!
PIDS+=($REDIS_PID)

# start_nginx NAME SERVERS: one single-worker nginx with its prefix, pid and temp paths under
# $TMP/NAME, serving the `http` block contents SERVERS, pinned to the server core.
start_nginx() {
  local dir=$TMP/$1
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
$2
}
EOF
  taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
  PIDS+=($!)
  NGINX_MASTER=$!
}

POLL_BODY=$("$LT" baseline body)
start_nginx nginx "
  upstream shop { server 127.0.0.1:$UPSTREAM; keepalive 64; }
  # Baseline of the poll rows: a fixed JSON answer of a poll's size.
  server { listen 127.0.0.1:$NGX_RETURN; location / { default_type application/json; return 200 '$POLL_BODY'; } }
  # Baseline of the proxy row.
  server {
    listen 127.0.0.1:$NGX_PROXY;
    location / { proxy_pass http://shop; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
NGX_MASTER=$NGINX_MASTER
# The static upstream both proxies forward to, in its own nginx: were it a server block of the
# baseline nginx, that one worker would answer its own proxied requests inside one event loop,
# while rushgate's every request crosses to another process and back (two context switches on
# the shared core), and the row would compare process layouts instead of proxies.
start_nginx upstream "
  server { listen 127.0.0.1:$UPSTREAM; location / { default_type text/html; return 200 '<!doctype html><title>item</title><p>A static product page.</p>'; } }"
UP_MASTER=$NGINX_MASTER

taskset -c "$SERVER_CPU" "$LT" baseline hello --listen "127.0.0.1:$HELLO_PORT" 2>"$TMP/hello.log" &
HELLO_PID=$!
PIDS+=($HELLO_PID)
wait_port "$REDIS_PORT"
taskset -c "$SERVER_CPU" "$LT" baseline redis-lua --listen "127.0.0.1:$LUA_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" --pool 4 2>"$TMP/lua.log" &
LUA_PID=$!
PIDS+=($LUA_PID)
taskset -c "$SERVER_CPU" "$LT" baseline hyper-proxy --listen "127.0.0.1:$HPROXY_PORT" --upstream "127.0.0.1:$UPSTREAM" 2>"$TMP/hproxy.log" &
HPROXY_PID=$!
PIDS+=($HPROXY_PID)
taskset -c "$SERVER_CPU" "$LT" baseline ws-echo --listen "127.0.0.1:$WS_ECHO_PORT" 2>"$TMP/ws-echo.log" &
PIDS+=($!)

# Two rooms for the Redis Cluster row whose keys (hash tag = the room id) fall in the slot ranges
# `redis-cli --cluster create` gives its first and second master (0-5460, 5461-10922).
read -r ROOM_A ROOM_B < <(python3 - <<'PY'
def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc
names = [f"pair-{i}" for i in range(100)]
a = next(n for n in names if crc16(n.encode()) % 16384 <= 5460)
b = next(n for n in names if 5461 <= crc16(n.encode()) % 16384 <= 10922)
print(a, b)
PY
)

cat > "$TMP/rushgate.toml" <<EOF
[server]
listen = "127.0.0.1:$RG_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
# The streams row opens every stream from four loopback addresses: 50,000 streams and the
# admitted one.
max_event_streams_per_client = 100000
max_event_streams = 60000

[store]
redis_url = "redis://127.0.0.1:$REDIS_PORT"

[passes]
signing_key_file = "$TMP/signing-key.pem"
generate_missing_key = true
ticket_secret = "bench-ticket-secret-0123456789abcdef"

[limits]
join_per_minute = 0
poll_per_minute = 0
purchase_per_minute = 0
coupon_per_minute = 0

[log]
level = "warn"

[[rooms]]
id = "bench"
admit_per_minute = 1
max_active = 1
idle_timeout_seconds = 3600
upstream = "http://127.0.0.1:$UPSTREAM"
protect = ["/products/*"]
# Tunnels reserve descriptors out of the public listener's cap; the streams row needs them.
max_tunnels = 128

[[rooms]]
id = "$ROOM_A"
admit_per_minute = 1
max_active = 1
idle_timeout_seconds = 3600

[[rooms]]
id = "$ROOM_B"
admit_per_minute = 1
max_active = 1
idle_timeout_seconds = 3600

# The admitted-poll row: 1,000 shoppers admitted at once, polling with their tickets.
[[rooms]]
id = "admitted"
admit_per_minute = 600000
max_active = 100000
idle_timeout_seconds = 3600
session_seconds = 3600

[[rooms]]
id = "streams"
admit_per_minute = 60000
max_active = 1
idle_timeout_seconds = 3600

[[rooms]]
id = "ws"
admit_per_minute = 1
max_active = 1
upstream = "http://127.0.0.1:$WS_ECHO_PORT"
bypass = ["/ws"]
max_tunnels = 128

[[sales]]
id = "bench-sale"
room = "bench"
stock = 1000000000
per_user_limit = 1000000000

[[coupons]]
id = "bench-coupons"
room = "bench"
limit = 1000000000
EOF
taskset -c "$SERVER_CPU" "$RG" serve --config "$TMP/rushgate.toml" >"$TMP/rushgate.log" 2>&1 &
RG_PID=$!
PIDS+=($RG_PID)
for p in "$RG_PORT" "$HELLO_PORT" "$LUA_PORT" "$HPROXY_PORT" "$NGX_RETURN" "$NGX_PROXY" "$UPSTREAM" "$WS_ECHO_PORT"; do wait_port "$p"; done
# CPU time per request of every server-side process, read by the generator over each run's
# measured window. The nginx workers do the work, not their masters; a master may still be
# forking its worker when its port already accepts.
worker_of() {
  local w
  for _ in $(seq 1 100); do
    w=$(pgrep -P "$1" | head -1 || true)
    [ -n "$w" ] && { echo "$w"; return 0; }
    sleep 0.05
  done
  echo "$1"
}
CPU_ARGS=(--cpu "rushgate=$RG_PID" --cpu "redis=$REDIS_PID" --cpu "hello=$HELLO_PID" --cpu "redis-lua=$LUA_PID"
  --cpu "hyper-proxy=$HPROXY_PID" --cpu "nginx=$(worker_of "$NGX_MASTER")" --cpu "upstream=$(worker_of "$UP_MASTER")")

run() { # name scenario target-port [loadtest args...]
  local name=$1 scenario=$2 port=$3; shift 3
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then return 0; fi
  echo "==> $name"
  taskset -c "$GEN_CPU" "$LT" run "loadtest/scenarios/$scenario.toml" --quiet --out "$RAW" --name "$name" \
    --config "$TMP/rushgate.toml" --target "127.0.0.1:$port" --admin "127.0.0.1:$ADMIN_PORT" \
    --server-pid "$RG_PID" "${CPU_ARGS[@]}" --set "duration_s=$DUR" --set "warmup_s=$WARM" "$@" | grep -v '^results:' || return 1
}

# No waiter goes idle during the run (the room's idle timeout is an hour): otherwise the
# waiters one row leaves behind are evicted while later rows run, and every row after the poll
# rows would share Redis with evicting a million idle waiters.
run poll_64 poll "$RG_PORT" --set "waiting=$WAITING" --set conns=64
run hello_64 get "$HELLO_PORT" --set conns=64
# Admitted tickets polling (passes picked up once): answered from the node's memory.
run poll_admitted_64 poll_admitted "$RG_PORT" --set room=admitted --set tickets=1000 --set conns=64
# 2,000 connections saturate the generator's core and the tail swings between runs for both
# servers, so each side runs twice, interleaved, and the row compares each side's better p99.
run poll_2000 poll "$RG_PORT" --set waiting=20000 --set conns=2000
run nginx_2000 get "$NGX_RETURN" --set conns=2000
run poll_2000b poll "$RG_PORT" --set waiting=20000 --set conns=2000
run nginx_2000b get "$NGX_RETURN" --set conns=2000
run join_64 join "$RG_PORT" --set conns=64
run purchase_64 purchase "$RG_PORT" --set conns=64
run redis_lua_64 get "$LUA_PORT" --set conns=64
run proxy_64 proxy "$RG_PORT" --set conns=64
run nginx_proxy_64 get "$NGX_PROXY" --set conns=64 --set path=/products/item
run hyper_proxy_64 get "$HPROXY_PORT" --set conns=64 --set path=/products/item
run upstream_64 get "$UPSTREAM" --set conns=64 --set path=/products/item
# Added latency without queueing: one connection, one request at a time, so p50 is the time a
# request takes through each path rather than the wait behind 63 others.
run proxy_1 proxy "$RG_PORT" --set conns=1
run nginx_proxy_1 get "$NGX_PROXY" --set conns=1 --set path=/products/item
run hyper_proxy_1 get "$HPROXY_PORT" --set conns=1 --set path=/products/item
run upstream_1 get "$UPSTREAM" --set conns=1 --set path=/products/item
# WebSockets: 64 connections, each sending its messages back to back while reading the echoes,
# through rushgate's tunnel (an unprotected path of the `ws` room) and to the echo server
# directly: round trips per second, and their ratio.
WS_MESSAGES=$(( QUICK == 1 ? 20000 : 60000 ))
rm -rf "$OUT/ws"
ws_run() { # name port
  local name=$1 port=$2
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then return 0; fi
  echo "==> $name"
  taskset -c "$GEN_CPU" "$LT" ws --target "127.0.0.1:$port" --path /ws --conns 64 \
    --messages "$WS_MESSAGES" --name "$name" --out "$OUT/ws" || return 1
}
ws_run ws_64 "$RG_PORT"
ws_run ws_echo_64 "$WS_ECHO_PORT"
# Redis Cluster: joins into two rooms at once, the same two rooms on the one Redis above and on a
# 3-master cluster whose first two masters each hold one of them (a second rushgate, same
# binary, `redis-cluster://`). Every server process shares the server core here, so this row
# shows what cluster mode costs per join on one core, and how the Redis work splits over two
# masters; the throughput a cluster adds comes from masters on their own machines.
if [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" join2_"* ]]; then
CL_PORTS=()
CL_PIDS=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$TMP/cluster$i"
  taskset -c "$SERVER_CPU" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-port "$(free_port)" \
    --cluster-config-file "$TMP/cluster$i/nodes.conf" --dir "$TMP/cluster$i" \
    --logfile "$TMP/cluster$i/redis.log" &
  CL_PIDS+=($!)
  PIDS+=($!)
  CL_PORTS+=("$port")
done
for p in "${CL_PORTS[@]}"; do wait_port "$p"; done
redis-cli --cluster create "127.0.0.1:${CL_PORTS[0]}" "127.0.0.1:${CL_PORTS[1]}" "127.0.0.1:${CL_PORTS[2]}" \
  --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -p "${CL_PORTS[0]}" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.1
done
CL_RG_PORT=$(free_port); CL_ADMIN_PORT=$(free_port)
cat > "$TMP/rushgate-cluster.toml" <<EOF
[server]
listen = "127.0.0.1:$CL_RG_PORT"
admin_listen = "127.0.0.1:$CL_ADMIN_PORT"

[store]
redis_url = "redis-cluster://127.0.0.1:${CL_PORTS[0]},127.0.0.1:${CL_PORTS[1]},127.0.0.1:${CL_PORTS[2]}"

[passes]
signing_key_file = "$TMP/signing-key.pem"
generate_missing_key = true
ticket_secret = "bench-ticket-secret-0123456789abcdef"

[limits]
join_per_minute = 0

[log]
level = "warn"

[[rooms]]
id = "$ROOM_A"
admit_per_minute = 1
max_active = 1
idle_timeout_seconds = 3600

[[rooms]]
id = "$ROOM_B"
admit_per_minute = 1
max_active = 1
idle_timeout_seconds = 3600
EOF
taskset -c "$SERVER_CPU" "$RG" serve --config "$TMP/rushgate-cluster.toml" >"$TMP/rushgate-cluster.log" 2>&1 &
CL_RG_PID=$!
PIDS+=($CL_RG_PID)
wait_port "$CL_RG_PORT" || { cat "$TMP/rushgate-cluster.log"; exit 1; }
python3 - "$CL_ADMIN_PORT" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
PY
run_pair() { # name port cpu-args...: two generators of 32 connections, one per room, at once
  local name=$1 port=$2; shift 2
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then return 0; fi
  echo "==> $name"
  local gens=()
  for room in "$ROOM_A" "$ROOM_B"; do
    taskset -c "$GEN_CPU" "$LT" run loadtest/scenarios/join.toml --quiet --out "$RAW" --name "${name}_$room" \
      --target "127.0.0.1:$port" "$@" --set "duration_s=$DUR" --set "warmup_s=$WARM" \
      --set "room=$room" --set conns=32 >"$TMP/$name-$room.out" 2>&1 &
    gens+=($!)
  done
  wait "${gens[@]}" || { cat "$TMP/$name"-*.out; return 1; }
}
run_pair join2_single "$RG_PORT" --cpu "rushgate=$RG_PID" --cpu "redis=$REDIS_PID"
run_pair join2_cluster "$CL_RG_PORT" --cpu "rushgate=$CL_RG_PID" --cpu "redis-m1=${CL_PIDS[0]}" \
  --cpu "redis-m2=${CL_PIDS[1]}" --cpu "redis-m3=${CL_PIDS[2]}"
if [ "$MODE" = full ]; then
  run_pair join2_clusterb "$CL_RG_PORT" --cpu "rushgate=$CL_RG_PID" --cpu "redis-m1=${CL_PIDS[0]}" \
    --cpu "redis-m2=${CL_PIDS[1]}" --cpu "redis-m3=${CL_PIDS[2]}"
  run_pair join2_singleb "$RG_PORT" --cpu "rushgate=$RG_PID" --cpu "redis=$REDIS_PID"
fi
fi

# A full run measures every throughput pair a second time, baseline first this time, and each
# side's row takes its better run: this machine's speed drifts by a third within minutes, and
# one run per side turned that drift into the ratio. The second poll run polls 20,000 new
# waiters behind the million already there.
if [ "$MODE" = full ]; then
  run hello_64b get "$HELLO_PORT" --set conns=64
  run poll_64b poll "$RG_PORT" --set waiting=20000 --set conns=64
  run redis_lua_64b get "$LUA_PORT" --set conns=64
  run join_64b join "$RG_PORT" --set conns=64
  run purchase_64b purchase "$RG_PORT" --set conns=64
  run nginx_proxy_64b get "$NGX_PROXY" --set conns=64 --set path=/products/item
  run proxy_64b proxy "$RG_PORT" --set conns=64
fi

# Event streams, last (the open streams would load every later run): a room change (a second
# session slot: every waiter's position moves) and a message change, each timed from the admin
# call until the last stream has its event. 50,000 streams as HTTP/2 streams, 200 on each of
# 250 connections, as browsers over HTTPS carry their EventSource streams (one descriptor per
# connection, not per stream); BENCH_STREAMS overrides the count. BENCH_STREAMS_HTTP1=1 gives
# each stream a connection of its own instead: then a node whose rooms proxy to a shop keeps
# half of what the open-file limit leaves for the shop side (src/app.rs public_cap), about
# 8,900 connections under this machine's 20,000, and the count is capped to fit.
STREAMS=${BENCH_STREAMS:-50000}
STREAMS_MODE=--http2
if [ -n "${BENCH_STREAMS_HTTP1:-}" ]; then
  STREAMS_MODE=
  STREAMS=${BENCH_STREAMS:-8000}
  HARD=$(ulimit -Hn)
  if [ "$HARD" != unlimited ] && [ "$HARD" -lt $(( STREAMS + 1000 )) ]; then STREAMS=$(( HARD - 1000 )); fi
fi
rm -rf "$OUT/streams"
if [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" streams "* ]]; then
  echo "==> streams ($STREAMS${STREAMS_MODE:+, HTTP/2})"
  taskset -c "$GEN_CPU" "$LT" streams --target "127.0.0.1:$RG_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --room streams --streams "$STREAMS" $STREAMS_MODE --pid "$RG_PID" --name streams --out "$OUT/streams" || exit 1
fi

if [ -n "${BENCH_ONLY:-}" ]; then
  python3 - "$RAW" <<'PY'
import json, os, sys
for n in sorted(os.listdir(sys.argv[1])):
    if n.endswith(".json"):
        j = json.load(open(os.path.join(sys.argv[1], n)))
        s, cpu = j["summary"], j.get("extra", {}).get("cpu_us_per_request", {})
        busy = "  ".join(f"{k} {v['user']:.1f}+{v['system']:.1f}" for k, v in cpu.items() if v["user"] + v["system"] >= 0.1)
        print(f"{n[:-5]:16} {s['req_per_s']:>10,.0f} req/s  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  errors {s['errors']}  cpu us/req (user+sys): {busy}")
PY
  exit 0
fi
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
python3 - "$RAW" "$OUT" "$MODE" "$WAITING" "$MACHINE" <<'PY'
import json, sys, os, datetime
raw, out, mode, waiting, machine = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
r = {n[:-5]: json.load(open(os.path.join(raw, n))) for n in os.listdir(raw) if n.endswith(".json")}
s = lambda n: r[n]["summary"]
x = lambda n: r[n].get("extra", {})
rows = []
def cpu_total(n):
    # Server CPU per request of a run, µs: every process on the server core (Redis included).
    return sum(v["user"] + v["system"] for v in x(n).get("cpu_us_per_request", {}).values()) if n in r else float("nan")
def cpu_ratio(rg_run, base_run):
    # Baseline µs ÷ rushgate µs: 1.0 costs the server core what the baseline does per request.
    a, b = cpu_total(rg_run), cpu_total(base_run)
    return b / a if a and a == a and b == b else float("nan")
def row(name, rg, base, ratio, target, ok, raw, cpu=None):
    # cpu: (rushgate run, baseline run) for the CPU-ratio column.
    c = cpu_ratio(*cpu) if cpu else None
    if cpu:
        raw = dict(raw, rushgate_cpu_us=cpu_total(cpu[0]), baseline_cpu_us=cpu_total(cpu[1]), cpu_ratio=c)
    rows.append(dict(row=name, rushgate=rg, baseline=base, ratio=ratio, cpu_ratio=("-" if c is None else f"{c:.2f}x ({cpu_total(cpu[1]):.1f} / {cpu_total(cpu[0]):.1f} µs)"), target=target, ok=ok, raw=raw))
wk = f"{waiting:,}"
# The better of a side's runs (a full run has two per side, see above).
best = lambda *names: max((s(n) for n in names if n in r), key=lambda v: v["req_per_s"])
a, b = best("poll_64", "poll_64b"), best("hello_64", "hello_64b")
q = a["req_per_s"] / b["req_per_s"]
row(f"poll, {wk} waiting, 64 conns", f"{a['req_per_s']:,.0f} req/s", f"hello {b['req_per_s']:,.0f} req/s", f"{q:.2f}x req/s", ">= 0.8x CPU ratio", cpu_ratio("poll_64", "hello_64") >= 0.8,
    dict(rushgate=a["req_per_s"], baseline=b["req_per_s"], rushgate_p99_ms=a["p99_ms"], baseline_p99_ms=b["p99_ms"], errors=a["errors"]), cpu=("poll_64", "hello_64"))
better = lambda *names: min((s(n) for n in names if n in r), key=lambda v: v["p99_ms"])
a, b = better("poll_2000", "poll_2000b"), better("nginx_2000", "nginx_2000b")
q = a["p99_ms"] / max(b["p99_ms"], 1e-6)
row("poll, 2,000 conns", f"p99 {a['p99_ms']:.2f} ms ({a['req_per_s']:,.0f} req/s)", f"nginx p99 {b['p99_ms']:.2f} ms ({b['req_per_s']:,.0f} req/s)", f"{q:.2f}x p99", "p99 <= 1.5x nginx", q <= 1.5,
    dict(rushgate_p99_ms=a["p99_ms"], baseline_p99_ms=b["p99_ms"], rushgate_req_per_s=a["req_per_s"], baseline_req_per_s=b["req_per_s"], errors=a["errors"]))
c = x("poll_64").get("redis_commands_per_request", float("nan"))
row("Redis commands per poll", f"{c:.4f}", "-", f"{c:.4f}", "<= 0.05", c <= 0.05, dict(commands=x("poll_64").get("redis_commands"), polls=s("poll_64")["requests"]))
if "poll_admitted_64" in r:
    a, b, w = s("poll_admitted_64"), best("hello_64", "hello_64b"), best("poll_64", "poll_64b")
    q, qw = a["req_per_s"] / b["req_per_s"], a["req_per_s"] / w["req_per_s"]
    c = x("poll_admitted_64").get("redis_commands_per_request", float("nan"))
    row("poll of an admitted ticket (pass picked up), 1,000 tickets, 64 conns", f"{a['req_per_s']:,.0f} req/s; {c:.4f} Redis commands per poll (background included)", f"hello {b['req_per_s']:,.0f} req/s; waiting-ticket poll {w['req_per_s']:,.0f} req/s", f"{q:.2f}x hello, {qw:.2f}x waiting poll", ">= 0.8x waiting poll, <= 0.05 commands", qw >= 0.8 and c <= 0.05,
        dict(rushgate=a["req_per_s"], baseline=b["req_per_s"], waiting_poll=w["req_per_s"], redis_commands_per_request=c, errors=a["errors"]), cpu=("poll_admitted_64", "hello_64"))
lua = best("redis_lua_64", "redis_lua_64b")
for n, label in (("join_64", "join"), ("purchase_64", "purchase (never sells out)")):
    a = best(n, n + "b"); q = a["req_per_s"] / lua["req_per_s"]
    row(label, f"{a['req_per_s']:,.0f} req/s", f"redis-lua {lua['req_per_s']:,.0f} req/s", f"{q:.2f}x req/s", ">= 0.8x CPU ratio", cpu_ratio(n, "redis_lua_64") >= 0.8,
        dict(rushgate=a["req_per_s"], baseline=lua["req_per_s"], statuses=a["statuses"], redis_commands_per_request=x(n).get("redis_commands_per_request")), cpu=(n, "redis_lua_64"))
pairs = lambda prefix: [n for n in r if n.startswith(prefix + "_pair-")]
def pair_side(*prefixes):
    # The better of a side's runs; a run's req/s is the sum of its two rooms' generators.
    runs = [(sum(s(n)["req_per_s"] for n in pairs(p)), p) for p in prefixes if len(pairs(p)) == 2]
    return max(runs) if runs else (float("nan"), None)
(cl, clp), (sg, sgp) = pair_side("join2_cluster", "join2_clusterb"), pair_side("join2_single", "join2_singleb")
if clp and sgp:
    def redis_cpu(p):
        # Each generator divides the servers' CPU over its window by its own requests; both
        # ran at once, so one generator's figure times its share of the requests is per join.
        n = pairs(p)[0]
        share = s(n)["requests"] / max(sum(s(m)["requests"] for m in pairs(p)), 1)
        return {k: (v["user"] + v["system"]) * share
                for k, v in x(n).get("cpu_us_per_request", {}).items() if k.startswith("redis")}
    ccpu, scpu = redis_cpu(clp), redis_cpu(sgp)
    busiest = max(ccpu.values()) if ccpu else float("nan")
    row("joins, two rooms on two Cluster masters (all on one core)", f"{cl:,.0f} req/s; busiest master {busiest:.1f} µs/join",
        f"same rooms on one Redis {sg:,.0f} req/s; Redis {scpu.get('redis', float('nan')):.1f} µs/join",
        f"{cl/sg:.2f}x req/s", "- (context: one core; masters on their own machines add their CPU)", None,
        dict(cluster=cl, single=sg, cluster_redis_cpu_us=ccpu, single_redis_cpu_us=scpu))
a, b = best("proxy_64", "proxy_64b"), best("nginx_proxy_64", "nginx_proxy_64b")
a1, b1, u1 = s("proxy_1"), s("nginx_proxy_1"), s("upstream_1")
q = a["req_per_s"] / b["req_per_s"]
added, ngx_added = a1["p50_ms"] - u1["p50_ms"], b1["p50_ms"] - u1["p50_ms"]
row("proxy (pass cookie -> static upstream)", f"{a['req_per_s']:,.0f} req/s; p50 at 1 conn {a1['p50_ms']:.3f} ms",
    f"nginx {b['req_per_s']:,.0f} req/s; p50 at 1 conn {b1['p50_ms']:.3f} ms (upstream alone {u1['p50_ms']:.3f} ms)",
    f"{q:.2f}x req/s, added p50 {added:.3f} ms (nginx {ngx_added:.3f} ms)", ">= 0.8x req/s, added p50 <= 0.2 ms", q >= 0.8 and added <= 0.2,
    dict(rushgate=a["req_per_s"], baseline=b["req_per_s"], rushgate_p50_ms_64=a["p50_ms"], nginx_p50_ms_64=b["p50_ms"],
         upstream_p50_ms_1=u1["p50_ms"], rushgate_p50_ms_1=a1["p50_ms"], nginx_p50_ms_1=b1["p50_ms"], statuses=a["statuses"]), cpu=("proxy_64", "nginx_proxy_64"))
h = s("hyper_proxy_64")
row("context: bare hyper + hyper-util pooled client, no checks (rushgate has its own pool)", f"rushgate {a['req_per_s']:,.0f} req/s",
    f"bare hyper-util proxy {h['req_per_s']:,.0f} req/s (itself {h['req_per_s']/b['req_per_s']:.2f}x nginx)",
    f"{a['req_per_s']/h['req_per_s']:.2f}x req/s", "- (not a target)", None,
    dict(rushgate=a["req_per_s"], hyper_proxy=h["req_per_s"], nginx=b["req_per_s"]))
e = x("poll_64")
m, z = e.get("redis_bytes_per_waiter", float("nan")), e.get("bare_zset_bytes_per_entry", float("nan"))
row(f"Redis memory per waiter at {wk}", f"{m:.1f} B", f"bare ZSET {z:.1f} B", f"{m/z:.2f}x", "<= 160 B", m <= 160, dict(bytes_per_waiter=m, bare_zset=z))
d = e.get("rss_delta_bytes", float("nan"))
row(f"rushgate RSS, 0 -> {wk} waiting", f"{d/1e6:+.1f} MB", "-", f"{d/1e6:+.1f} MB", "<= 20 MB", d <= 20e6, dict(rss_before=e.get("rss_bytes_before"), rss_after=e.get("rss_bytes_after_join"), rss_after_polls=e.get("rss_bytes_after")))

wsdir = os.path.join(out, "ws")
wsr = {n[:-5]: json.load(open(os.path.join(wsdir, n))) for n in (os.listdir(wsdir) if os.path.isdir(wsdir) else []) if n.endswith(".json")}
if "ws_64" in wsr and "ws_echo_64" in wsr:
    t, e_ = wsr["ws_64"]["messages_per_s"], wsr["ws_echo_64"]["messages_per_s"]
    row("WebSocket echoes/s through the proxy, 64 sockets", f"{t:,.0f}/s", f"echo server direct {e_:,.0f}/s", f"{t/e_:.2f}x", "- (not a target)", None, dict(rushgate=t, direct=e_))

sp = os.path.join(out, "streams", "streams.json")
if os.path.exists(sp):
    st = json.load(open(sp))
    n, sc, mc = st["streams"], st["slot_change"], st["message_change"]
    how = f"HTTP/2, {st.get('connections', n):,} connections" if st.get("http2") else "HTTP/1.1, a connection each"
    row(f"Event streams: a room change reaches all {n:,} open streams ({how})", f"{sc['to_last_stream_ms']:,.0f} ms after the admin call", "one refresh (250 ms)", f"{sc['node_cpu_us_per_event']:.1f} µs node CPU per event", "<= 1 s after the refresh", sc["to_last_stream_ms"] <= 1250, sc)
    row(f"Event streams: a message change reaches all {n:,}", f"{mc['to_last_stream_ms']:,.0f} ms after the admin call", "one refresh (250 ms)", f"{mc['node_cpu_us_per_event']:.1f} µs node CPU per event", "<= 1 s after the refresh", mc["to_last_stream_ms"] <= 1250, mc)
    m = st["rss_bytes_per_stream"]
    row(f"rushgate memory per open event stream ({n:,}, {how})", f"{m/1024:.1f} KiB", "-", f"{m/1024:.1f} KiB", "<= 8 KiB", m <= 8192, dict(rss_before=st["rss_bytes_before"], rss_after=st["rss_bytes_after"]))

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [f"# rushgate benchmark ({mode} run, {now})", "", f"Machine: {machine}. Server side (rushgate, nginx, redis-server, baselines) pinned to core 0, load generator to core 1." + (" Throughput rows: the better of two interleaved runs per side." if mode == "full" else ""), "",
         "CPU ratio: the baseline's server CPU per request ÷ rushgate's (all server processes, Redis included); where the generator's core is the limit, req/s ratios flatter the faster side, so throughput targets are judged on it.", "",
         "| row | rushgate | baseline (same run) | ratio | CPU ratio (baseline µs / rushgate µs) | target | met |", "|---|---|---|---|---|---|---|"]
for x_ in rows:
    lines.append(f"| {x_['row']} | {x_['rushgate']} | {x_['baseline']} | {x_['ratio']} | {x_['cpu_ratio']} | {x_['target']} | {'-' if x_['ok'] is None else 'yes' if x_['ok'] else 'NO'} |")
# Where each run's time went on the server core: CPU per request of every busy process.
cpu_runs = [n for n in ("poll_64", "poll_admitted_64", "hello_64", "join_64", "purchase_64", "redis_lua_64", "proxy_64", "nginx_proxy_64", "hyper_proxy_64") if n in r]
cpu_table = {}
lines += ["", "CPU time per request on the server core, µs (user + system; `/proc/<pid>/stat` over each run's measured window):", "",
          "| run | req/s | processes | total |", "|---|---|---|---|"]
for n in cpu_runs:
    cpu = {k: v for k, v in x(n).get("cpu_us_per_request", {}).items() if v["user"] + v["system"] >= 0.1}
    cpu_table[n] = cpu
    total = sum(v["user"] + v["system"] for v in cpu.values())
    procs = ", ".join(f"{k} {v['user']:.1f} + {v['system']:.1f}" for k, v in cpu.items())
    lines.append(f"| {n} | {s(n)['req_per_s']:,.0f} | {procs} | {total:.1f} |")
md = "\n".join(lines) + "\n"
print(); print(md)
open(os.path.join(out, "report.md"), "w").write(md + "\nRaw per-run results and plots: `target/bench/raw/`.\n")
json.dump(dict(mode=mode, waiting=waiting, machine=machine, at=now, rows=rows, cpu_us_per_request=cpu_table), open(os.path.join(out, "report.json"), "w"), indent=2)
PY
echo "==> wrote $OUT/report.md and $OUT/report.json"
