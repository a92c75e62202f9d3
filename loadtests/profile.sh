#!/usr/bin/env bash
# Where the release proxy's CPU goes under the corpus: samples of the CPU
# clock, as callgrind cannot give them (callgrind counts instructions of one
# steady client; the corpus is many users, logins, refusals, events and a
# geo database, and the kernel's share of a request shows only here).
#
#   loadtests/profile.sh [enforce|off] [seconds]
#
# Serves vigil-load's prepared config (its geo database, trusted egress
# list, an enforcing route and an `off.test` route) from one worker pinned
# to CPU 1, the origin and vigil-load on CPU 0; warms up (every user's
# profile learnt), then plays the corpus (CLASSES, default `history`) at 64
# connections against the route while `perf record -e cpu-clock` samples the
# proxy for the given seconds (default 6) with DWARF call graphs (the
# release build keeps line tables; it has no frame pointers). Prints:
#
# - the proxy's CPU µs per request over the sampled window (/proc/PID/stat;
#   sampling with DWARF call graphs adds its own cost to the proxy's CPU,
#   so compare it only with other runs of this script, not with ab.sh);
# - the functions with the most samples of their own (self);
# - the share of the proxy's samples under each of Vigil's phases and the
#   engine's stages (inclusive: the function and what it calls).
#
# The machine needs `perf` (Debian's linux-perf) and a kernel that lets a
# process sample its child (kernel.perf_event_paranoid <= 2, or root).
# Where the hardware has no counters `cpu-clock`, a software clock, still
# samples. PORT_BASE=n moves the three ports (default 28201-28203);
# VIGIL_BIN and VIGIL_LOAD_BIN pick the builds; KEEP=dir keeps perf.data.
# Everything started here is stopped by its pid on exit.
set -euo pipefail
# KEEP names a directory from where the script was started.
[ -z "${KEEP:-}" ] || KEEP=$(realpath -m "$KEEP")
cd "$(dirname "$0")/.."

route=${1:-enforce}
secs=${2:-6}
case $route in enforce | off) ;; *) echo "route: enforce or off, not $route" >&2; exit 2 ;; esac
target_dir=${CARGO_TARGET_DIR:-target}
bin=${VIGIL_BIN:-$target_dir/release/vigil-proxy}
load_bin=${VIGIL_LOAD_BIN:-$target_dir/release/vigil-load}
base=${PORT_BASE:-28201}
origin=$base; listen=$((base + 1)); admin=$((base + 2))
. loadtests/lib.sh
on_exit() {
  if [ -n "${KEEP:-}" ] && [ -f "$work/perf.data" ]; then mkdir -p "$KEEP" && cp "$work/perf.data" "$KEEP"/; fi
}
NEED_HINT="apt-get install linux-perf" need perf taskset curl
[ -x "$bin" ] && [ -x "$load_bin" ] || {
  echo "no release build at $bin / $load_bin: cargo build --release -p vigil-proxy -p vigil-load" >&2
  exit 1
}

taskset -c 0 "$load_bin" origin --listen "127.0.0.1:$origin" 2>/dev/null & pids+=($!)
"$load_bin" prepare --out "$work/cfg" --listen "127.0.0.1:$listen" \
  --origin "127.0.0.1:$origin" --admin "127.0.0.1:$admin" >/dev/null
taskset -c 1 "$bin" run -c "$work/cfg/vigil-proxy.toml" 2>"$work/proxy.err" & proxy=$!; pids+=($proxy)
wait_for "$work/proxy.err" "http://127.0.0.1:$admin/readyz"

host=""
[ "$route" = enforce ] || host=",host=off.test"
target=(--target "name=$route,url=http://127.0.0.1:$listen/$host,pid=$proxy")
extra=(--ja4-header x-load-ja4 --classes "${CLASSES:-history}")
taskset -c 0 "$load_bin" run "${target[@]}" "${extra[@]}" --concurrency 16 --duration 2s >/dev/null

# The load runs a second longer on each side of the sampled window, so the
# window holds only steady load.
taskset -c 0 "$load_bin" run "${target[@]}" "${extra[@]}" --concurrency 64 \
  --duration "$((secs + 2))s" --json "$work/load.json" >"$work/load.txt" & load=$!; pids+=($load)
sleep 1 # the load's ramp-up is not sampled; nothing waits on this
# perf pads its symbol column to the terminal's width and ends each row
# with empty columns; the report keeps only the figures and the name.
trim() { sed -E 's/ +- +- *$//; s/ +$//'; }
ticks() { awk '{print $14 + $15}' "/proc/$proxy/stat"; }
requests() {
  curl -sf "http://127.0.0.1:$admin/metrics" | awk '/^vigil_proxy_requests_total/ {s += $2} END {print s + 0}' ||
    { echo "the proxy's metrics did not answer" >&2; exit 1; }
}
t0=$(ticks); r0=$(requests)
perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$proxy" -o "$work/perf.data" -- sleep "$secs" 2>"$work/perf.err" ||
  { cat "$work/perf.err" >&2; exit 1; }
t1=$(ticks); r1=$(requests)
wait "$load" || { cat "$work/load.txt" >&2; exit 1; }
# Reaped: its pid is no longer ours to stop.
keep=(); for p in "${pids[@]}"; do [ "$p" = "$load" ] || keep+=("$p"); done; pids=("${keep[@]}")

hz=$(getconf CLK_TCK)
awk -v t=$((t1 - t0)) -v r=$((r1 - r0)) -v hz="$hz" -v route="$route" 'BEGIN {
  if (r > 0) printf "%s: %d requests sampled, %.1f CPU µs per request\n\n", route, r, t * 1e6 / hz / r
}'
echo "== where the samples are (the kernel's share is the TCP path's)"
perf report -i "$work/perf.data" --sort dso --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | grep -E 'kernel|vigil-proxy|libc' | trim || true
echo
echo "== self (the function's own samples), top 30"
perf report -i "$work/perf.data" --no-children --sort symbol --percent-limit 0.4 --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | head -30 | trim || true
echo
echo "== inclusive: Vigil's phases, the engine's stages, Pingora's header inserts"
perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | grep -v '(inlined)' |
  grep -E 'VigilProxy::(judge|file_open)|ProxyHttp>::[a-z_]+::|vigil_engine::pipeline::Engine::|Stage::(observe|credentials|resolve)|Scorer::score|respond::send|insert_header_value|forwarding::values|HeadLimited' |
  head -30 | trim || true
