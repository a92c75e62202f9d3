#!/usr/bin/env bash
# Instructions per request of the release proxy, counted by callgrind: a
# figure that holds on a busy machine where wall-clock load runs do not.
#
#   loadtests/callgrind.sh [requests] [top]
#
# Runs vigil-proxy (one worker thread) under `valgrind --tool=callgrind`
# behind nothing, in front of an nginx origin, and drives it from one
# keep-alive connection with loadtests/callgrind-client.py (the browser
# headers of proxy-baseline.sh, 1,000 sessions in turn). For each route —
# `off.test` (mode off, passthrough) and `enforce.test` (enforcing) — it
# warms up (every session seen once, pools filled), zeroes the counters
# (`callgrind_control --zero`), sends the requests, dumps the counters
# (`callgrind_control --dump`), and prints total instructions (Ir) divided
# by the requests, with the top inclusive functions of that window (per
# request). An idle
# window of the same length (no requests) is dumped too: its Ir is the
# background (timers, the sweeper) and is subtracted. Only request handling
# is counted: startup, warm-up and shutdown fall outside the windows.
#
# Over TLS (TLS=0 skips it), on the enforcing route: `tls-keepalive`, the
# requests on one kept-alive TLS 1.3 connection (Ir per request over TLS),
# and `tls-close` / `tls-full`, every request on a connection of its own
# (`Connection: close`) with the previous session resumed / with a full
# handshake each time; their difference from `tls-keepalive` is the Ir per
# connection: accept, handshake, the ClientHello's capture and JA4,
# connection set-up and teardown. TLS windows send requests/4 requests.
#
# The same client then drives nginx as a plain reverse proxy (one worker,
# upstream keep-alive: compare.sh's nginx) under callgrind too, so Vigil's
# passthrough and enforcing figures have a reference counted the same way:
# `nginx` Ir per request and each route's ratio to it (NGINX_REFERENCE=0 skips it).
#
# PORT_BASE=n moves its five loopback ports (default 18191-18195).
# THREADS=n and WORK_STEALING=true set those `[server]` settings (one
# thread, no work stealing by default, as shipped).
# VIGIL_BIN=path profiles another build; KEEP=dir keeps the profiles there
# (callgrind_annotate them). Needs valgrind, nginx, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-2000}
top=${2:-25}
. loadtests/lib.sh
on_exit() {
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/*.out "$KEEP"/ 2>/dev/null || true; fi
}

need valgrind callgrind_control callgrind_annotate nginx python3 curl openssl
if [ -z "${VIGIL_BIN:-}" ]; then
  cargo build --release -p vigil-proxy >/dev/null
fi
bin=${VIGIL_BIN:-${CARGO_TARGET_DIR:-target}/release/vigil-proxy}
client=loadtests/callgrind-client.py

base=${PORT_BASE:-18191}   # four ports from here
origin=$base; vigil=$((base + 1)); admin=$((base + 2)); vigil_tls=$((base + 3))
nginx_port=$((base + 4))
self_signed_cert enforce.test off.test

nginx_origin_conf "$work/origin.conf" "$origin"

cat > "$work/vigil.toml" <<TOML
[server]
threads = ${THREADS:-1}
work_stealing = ${WORK_STEALING:-false}
state_dir = "$work/vigil-state"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$admin"
[[listeners]]
name = "load"
listen = "127.0.0.1:$vigil"
[[listeners]]
name = "tls"
listen = "127.0.0.1:$vigil_tls"
[[listeners.certificates]]
cert = "$work/cert.pem"
key = "$work/key.pem"
server_names = ["enforce.test", "off.test"]
[[upstreams]]
name = "origin"
addresses = ["127.0.0.1:$origin"]
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

nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
  "$bin" run -c "$work/vigil.toml" 2>"$work/vigil.err" & vpid=$!; pids+=($vpid)

for _ in $(seq 600); do
  curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break
  kill -0 "$vpid" 2>/dev/null || { cat "$work/vigil.err"; exit 1; }
  sleep 0.2
done
curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" || { echo "proxy not ready"; exit 1; }

window() { # label command...: zero, run, dump; echoes "Ir seconds"
  local label=$1; shift
  local pid=${cg_pid:-$vpid} base=${cg_base:-cg.out}
  callgrind_control --zero "$pid" >/dev/null 2>&1
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >&2
  t1=$(date +%s.%N)
  # Dumps are numbered from 1; this function runs in a subshell, so count
  # the files rather than keep a counter.
  local file
  file="$work/$base.$(( $(find "$work" -maxdepth 1 -name "$base.*" | wc -l) + 1 ))"
  callgrind_control --dump="$label" "$pid" >/dev/null 2>&1
  for _ in $(seq 300); do
    [ -s "$file" ] && grep -q '^totals:' "$file" && break
    sleep 0.1
  done
  cp "$file" "$work/$label.out"
  local ir
  ir=$(awk '/^totals:/ {print $2; exit}' "$file")
  echo "$ir $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
}

echo "vigil-proxy under callgrind, $requests requests per route on one keep-alive connection"
read -r idle_ir idle_s < <(window idle sleep 5)
idle_rate=$(awk -v i="$idle_ir" -v s="$idle_s" 'BEGIN {print i / s}')
printf 'idle: %.0f Ir/s of background\n' "$idle_rate"
for route in off enforce; do
  python3 "$client" "127.0.0.1:$vigil" "$route.test" 1000 1000 0   # every session once
  python3 "$client" "127.0.0.1:$vigil" "$route.test" 200 1000 0    # steady
  read -r ir secs < <(window "$route" python3 "$client" "127.0.0.1:$vigil" "$route.test" "$requests" 1000 0)
  awk -v ir="$ir" -v s="$secs" -v r="$requests" -v idle="$idle_rate" -v n="$route" \
    'BEGIN { printf "%-8s %12.0f Ir / %d requests = %8.0f Ir/request (%.0f after the idle background; window %.1f s)\n",
             n, ir, r, ir / r, (ir - idle * s) / r, s }'
  echo "$route $ir $secs" >> "$work/results"
done
if [ "${TLS:-1}" != 0 ]; then
  tls_requests=$(( requests / 4 ))
  c="python3 $client --tls"
  $c "127.0.0.1:$vigil_tls" enforce.test 1000 1000 0          # every session once, over TLS
  $c --close "127.0.0.1:$vigil_tls" enforce.test 200 1000 0 2>/dev/null  # connections, resumption
  for w in "tls-keepalive:" "tls-close:--close" "tls-full:--close --no-resume"; do
    label=${w%%:*}; opts=${w#*:}
    # shellcheck disable=SC2086
    read -r ir secs < <(window "$label" $c $opts "127.0.0.1:$vigil_tls" enforce.test "$tls_requests" 1000 0)
    awk -v ir="$ir" -v s="$secs" -v r="$tls_requests" -v idle="$idle_rate" -v n="$label" \
      'BEGIN { printf "%-14s %12.0f Ir / %d requests = %8.0f Ir/request (%.0f after the idle background; window %.1f s)\n",
               n, ir, r, ir / r, (ir - idle * s) / r, s }'
    echo "$label $ir $secs" >> "$work/results"
  done
  read -r _ ka_ir ka_s < <(grep '^tls-keepalive ' "$work/results")
  for label in tls-close tls-full; do
    read -r _ cl_ir cl_s < <(grep "^$label " "$work/results")
    awk -v a="$cl_ir" -v b="$ka_ir" -v as="$cl_s" -v bs="$ka_s" -v r="$tls_requests" -v idle="$idle_rate" -v n="$label" \
      'BEGIN { printf "per connection (%s − tls-keepalive): %.0f Ir\n", n, ((a - idle * as) - (b - idle * bs)) / r }'
  done
fi
if [ "${NGINX_REFERENCE:-1}" != 0 ]; then
  # nginx as a plain reverse proxy, counted the same way: its own idle
  # background, the same warm-up, the same requests.
  nginx_proxy_conf "$work/nginx.conf" "$nginx_port" "$origin"
  valgrind --tool=callgrind --callgrind-out-file="$work/ng.out" \
    nginx -c "$work/nginx.conf" -p "$work" 2>"$work/nginx-valgrind.err" & npid=$!; pids+=($npid)
  wait_for "$work/nginx-valgrind.err" "http://127.0.0.1:$nginx_port/"
  read -r nidle_ir nidle_s < <(cg_pid=$npid cg_base=ng.out window nginx-idle sleep 5)
  python3 "$client" "127.0.0.1:$nginx_port" off.test 1000 1000 0
  python3 "$client" "127.0.0.1:$nginx_port" off.test 200 1000 0
  read -r ng_ir ng_s < <(cg_pid=$npid cg_base=ng.out window nginx python3 "$client" "127.0.0.1:$nginx_port" off.test "$requests" 1000 0)
  ng_idle=$(awk -v i="$nidle_ir" -v s="$nidle_s" 'BEGIN {print i / s}')
  awk -v ir="$ng_ir" -v s="$ng_s" -v r="$requests" -v idle="$ng_idle" \
    'BEGIN { printf "%-8s %12.0f Ir / %d requests = %8.0f Ir/request (%.0f after its idle background; window %.1f s)\n",
             "nginx", ir, r, ir / r, (ir - idle * s) / r, s }'
  for route in off enforce; do
    read -r _ v_ir v_s < <(grep "^$route " "$work/results")
    awk -v a="$v_ir" -v as="$v_s" -v idle="$idle_rate" -v b="$ng_ir" -v bs="$ng_s" -v bidle="$ng_idle" -v n="$route" \
      'BEGIN { printf "%s ÷ nginx: %.2f× in instructions\n", n, (a - idle * as) / (b - bidle * bs) }'
  done
fi
read -r _ off_ir off_s < <(grep '^off ' "$work/results")
read -r _ enf_ir enf_s < <(grep '^enforce ' "$work/results")
awk -v a="$enf_ir" -v b="$off_ir" -v as="$enf_s" -v bs="$off_s" -v r="$requests" -v idle="$idle_rate" \
  'BEGIN { printf "enforcement increment: %.0f Ir/request\n", ((a - idle * as) - (b - idle * bs)) / r }'

tops="off enforce"
[ "${NGINX_REFERENCE:-1}" = 0 ] || tops="$tops nginx"
[ "${TLS:-1}" = 0 ] || tops="$tops tls-keepalive tls-close"
for route in $tops; do
  # (callgrind_annotate 3.19's --inclusive=no listed inclusive costs on
  # these dumps, so only the inclusive view is printed.)
  for mode in yes; do
    echo
    echo "== $route: top inclusive functions (Ir per request) =="
    r=$requests
    [[ $route != tls-* ]] || r=$tls_requests
    callgrind_annotate --inclusive=$mode --auto=no --threshold=100 "$work/$route.out" 2>/dev/null |
      awk -v r="$r" -v top="$top" '
        /^-+$/ { dashes++; next }
        dashes >= 4 && $1 ~ /^[0-9,]+$/ {
          ir = $1; gsub(",", "", ir); line = $0;
          sub(/^ *[0-9,]+ +(\([^)]*\))? */, "", line);
          printf "%10.0f  %s\n", ir / r, substr(line, 1, 150);
          if (++n >= top) exit }' || true   # awk stops reading early
  done
done
