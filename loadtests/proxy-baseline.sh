#!/usr/bin/env bash
# Load run on loopback: Vigil enforcing vs. Vigil as a plain proxy (mode off)
# vs. nginx as a plain reverse proxy vs. the origin directly, reported as
# requests/s and p99 latency with ratios. Everything started here is stopped
# by its pid on exit.
#
#   loadtests/proxy-baseline.sh [seconds-per-run] [connections]
#
# Needs: wrk and nginx (Debian: apt-get install wrk nginx-light), taskset.
# Layout on a 2-core machine: the system under test (one worker thread) on
# CPU 1; wrk (one thread) and the origin (one nginx worker) on CPU 0. Every
# configuration shares that layout, so the ratios compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
conns=${2:-32}
. loadtests/lib.sh

NEED_HINT="apt-get install wrk nginx-light util-linux" need wrk nginx taskset

# VIGIL_BIN runs another build (e.g. one without mimalloc); VIGIL_WORK_STEALING=true
# turns on tokio's work-stealing runtime.
if [ -z "${VIGIL_BIN:-}" ]; then
  cargo build --release -p vigil-proxy >/dev/null
fi
bin=${VIGIL_BIN:-target/release/vigil-proxy}
work_stealing=${VIGIL_WORK_STEALING:-false}

origin_port=18091; vigil_port=18092; vigil_admin=18093; nginx_port=18094

# Origin: a single nginx worker answering a small fixed body.
nginx_origin_conf "$work/origin.conf" "$origin_port"

# nginx as a plain reverse proxy, one worker, keep-alive to the origin.
nginx_proxy_conf "$work/proxy.conf" "$nginx_port" "$origin_port"

# Vigil: one worker thread; host enforce.test runs the engine, off.test does not.
cat > "$work/vigil.toml" <<TOML
[server]
threads = 1
work_stealing = $work_stealing
state_dir = "$work/vigil-state"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$vigil_admin"
[[listeners]]
name = "load"
listen = "127.0.0.1:$vigil_port"
[[upstreams]]
name = "origin"
addresses = ["127.0.0.1:$origin_port"]
[upstreams.health]
interval_seconds = 0
[[routes]]
name = "enforce"
hosts = ["enforce.test"]
upstream = "origin"
mode = "enforce"
[[routes]]
name = "off"
hosts = ["off.test"]
upstream = "origin"
mode = "off"
TOML

# 10,000 distinct sessions, each from a steady browser: the realistic
# allow path, where every request is scored against its baseline.
cat > "$work/sessions.lua" <<'LUA'
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
request = function()
  local sid = math.random(1, 10000)
  return wrk.format("GET", "/", {
    ["User-Agent"] = ua,
    ["Accept-Language"] = "en-GB,en;q=0.9",
    ["Cookie"] = "_ga=GA1.2.12345.67890; session=s" .. sid .. "; theme=dark",
  })
end
LUA

taskset -c 0 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
taskset -c 1 nginx -c "$work/proxy.conf" -p "$work" & pids+=($!)
taskset -c 1 "$bin" run -c "$work/vigil.toml" 2>"$work/vigil.err" & pids+=($!)

wait_for "$work/vigil.err" "http://127.0.0.1:$origin_port/"
wait_for "$work/vigil.err" "http://127.0.0.1:$nginx_port/"
wait_for "$work/vigil.err" "http://127.0.0.1:$vigil_admin/readyz"

run() { # name url host
  local out
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/sessions.lua" -H "Host: $3" "$2")
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  local errors
  errors=$(awk '/Non-2xx or 3xx responses:|Socket errors:/ {print}' <<<"$out")
  printf '%-28s %12s req/s   p99 %8s  %s\n' "$1" "$rps" "$p99" "$errors"
  echo "$1 $rps $p99" >> "$work/results"
}

to_ms() { # wrk latency such as 512.00us, 1.20ms, 1.01s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# Warm up every path once (connection pools, session baselines).
taskset -c 0 wrk -t1 -c"$conns" -d2s -s "$work/sessions.lua" -H "Host: enforce.test" "http://127.0.0.1:$vigil_port/" >/dev/null

echo "wrk: 1 thread, $conns connections, ${secs}s per run; servers under test: 1 worker on CPU 1"
run origin-direct        "http://127.0.0.1:$origin_port/" origin.test
run nginx-proxy          "http://127.0.0.1:$nginx_port/"  origin.test
run vigil-off            "http://127.0.0.1:$vigil_port/"  off.test
run vigil-enforce        "http://127.0.0.1:$vigil_port/"  enforce.test

echo
echo "ratios (requests/s, p99 latency):"
ratio() { # a b
  local ra pa rb pb
  read -r _ ra pa < <(grep "^$1 " "$work/results")
  read -r _ rb pb < <(grep "^$2 " "$work/results")
  awk -v ra="$ra" -v rb="$rb" -v pa="$(to_ms "$pa")" -v pb="$(to_ms "$pb")" -v a="$1" -v b="$2" \
    'BEGIN { printf "  %-14s / %-14s  throughput %.2f   p99 %.2f\n", a, b, ra / rb, pa / pb }'
}
ratio vigil-enforce vigil-off
ratio vigil-enforce nginx-proxy
ratio vigil-off nginx-proxy
ratio vigil-enforce origin-direct

curl -s "http://127.0.0.1:$vigil_admin/metrics" | grep -E '^vigil_proxy_decisions_total\{action="(allow|block)",enforced="true"\}|^vigil_engine_sessions_tracked'
