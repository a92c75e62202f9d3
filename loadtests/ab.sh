#!/usr/bin/env bash
# Two vigil-proxy builds side by side in one vigil-load run: the way to
# show what one change does to the proxy's CPU on a machine whose absolute
# figures drift by ±15 % between runs (the drift hits both builds alike).
#
#   loadtests/ab.sh BEFORE_BIN AFTER_BIN [seconds-per-round] [rounds]
#
# Each build serves its own copy of vigil-load's prepared config (the
# corpus's geo database, trusted egress list, an enforcing route and an
# `off.test` route) on its own ports, one worker pinned to CPU 1; the
# origin and vigil-load run on CPU 0. vigil-load plays the corpus
# (CLASSES, default `history`: the steady owners) against four targets —
# A-enforce, B-enforce, A-off, B-off — in alternating rounds, and prints
# each target's throughput, latency and CPU µs per request (from
# /proc/PID/stat). PORT_BASE=n moves the seven ports (default 28101-28113);
# VIGIL_LOAD_BIN picks vigil-load (default the release build).
# On a shared host one run is noisy: the same build against itself came
# out up to 11 % apart with the host's load at 1.5 (within 1 % when idle).
# Run it both ways (A B, then B A), average, and count instructions
# (callgrind.sh) for changes of a few per cent (docs/performance.md,
# "Issue 17, third pass").
# Everything started here is stopped by its pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

before=${1:?before: a vigil-proxy binary}
after=${2:?after: a vigil-proxy binary}
secs=${3:-5}
rounds=${4:-4}
load_bin=${VIGIL_LOAD_BIN:-${CARGO_TARGET_DIR:-target}/release/vigil-load}
base=${PORT_BASE:-28101}
origin=$base
. loadtests/lib.sh

need taskset curl python3

taskset -c 0 "$load_bin" origin --listen "127.0.0.1:$origin" 2>/dev/null & pids+=($!)
targets=()
for side in A B; do
  if [ "$side" = A ]; then bin=$before; listen=$((base + 1)); else bin=$after; listen=$((base + 11)); fi
  admin=$((listen + 1))
  "$load_bin" prepare --out "$work/$side" --listen "127.0.0.1:$listen" \
    --origin "127.0.0.1:$origin" --admin "127.0.0.1:$admin" >/dev/null
  taskset -c 1 "$bin" run -c "$work/$side/vigil-proxy.toml" 2>"$work/$side.err" & pid=$!; pids+=($pid)
  wait_for "$work/$side.err" "http://127.0.0.1:$admin/readyz"
  targets+=(--target "name=$side-enforce,url=http://127.0.0.1:$listen/,pid=$pid"
            --target "name=$side-off,url=http://127.0.0.1:$listen/,host=off.test,pid=$pid")
done
# A then B for each route, so that the table reads as pairs.
ordered=("${targets[0]}" "${targets[1]}" "${targets[4]}" "${targets[5]}"
         "${targets[2]}" "${targets[3]}" "${targets[6]}" "${targets[7]}")
extra=(--ja4-header x-load-ja4 --classes "${CLASSES:-history}")
# Warm-up: every user's profile learnt by both builds.
taskset -c 0 "$load_bin" run "${ordered[@]}" "${extra[@]}" --concurrency 16 --duration 2s >/dev/null
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
taskset -c 0 "$load_bin" run "${ordered[@]}" "${extra[@]}" --concurrency 64 \
  --duration "${secs}s" --rounds "$rounds" --json "$work/ab.json" >"$work/ab.txt"
python3 loadtests/compare-table.py "$work/ab.json"
