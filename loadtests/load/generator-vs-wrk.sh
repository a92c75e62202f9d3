#!/usr/bin/env bash
# The generator's own cost: vigil-load's request rate on one core as a
# share of wrk's, against the same origin (issue 16: at least 80 %).
#
# Usage: loadtests/load/generator-vs-wrk.sh [seconds] [rounds] [connections]
#   (defaults 6 2 64). BIN=path/to/vigil-load (default
#   target/release/vigil-load); several space-separated paths in BIN
#   compare builds (e.g. before and after a change) in the same rounds.
# Layout: the origin (one nginx worker) on CPU 0, each generator alone on
# CPU 1 with one thread; wrk and vigil-load alternate, round by round.
# wrk sends, through a Lua script, the header set the corpus's requests
# carry (User-Agent, Accept-Language, client hints, Sec-Fetch-Site,
# X-Forwarded-For, a session cookie). Loopback only; bounded in time.
set -euo pipefail
secs=${1:-6}; rounds=${2:-2}; conns=${3:-64}
bin=${BIN:-target/release/vigil-load}
port=${PORT:-18191}
for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
for b in $bin; do
  [ -x "$b" ] || { echo "$b: build it first: cargo build --release -p vigil-load"; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/origin.conf" <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $work/origin.pid;
error_log $work/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location / { default_type text/plain; return 200 "hello from the origin\n"; }
  }
}
NGINX

cat > "$work/sessions.lua" <<'LUA'
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {
    ["User-Agent"] = ua,
    ["Accept-Language"] = "en-GB,en;q=0.9",
    ["Sec-CH-UA"] = "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
    ["Sec-CH-UA-Mobile"] = "?0",
    ["Sec-CH-UA-Platform"] = "\"Windows\"",
    ["Sec-Fetch-Site"] = "same-origin",
    ["X-Forwarded-For"] = "203.0.113." .. (n % 250),
    ["Cookie"] = "session=s" .. (n % 10000) .. ".0.0",
  })
end
LUA

taskset -c 0 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

head='| round | wrk req/s |'; rule='| --- | --- |'
for b in $bin; do head="$head $b req/s | share |"; rule="$rule --- | --- |"; done
echo "$head"; echo "$rule"
for r in $(seq "$rounds"); do
  w=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "$work/sessions.lua" "http://127.0.0.1:$port/" \
      | awk '/Requests\/sec/ {print $2}')
  row="| $r | $(printf "%'.0f" "$w") |"
  for b in $bin; do
    v=$(taskset -c 1 "$b" run "http://127.0.0.1:$port/" --threads 1 --concurrency "$conns" \
        --duration "${secs}s" --json - | python3 -c 'import json,sys; print(json.load(sys.stdin)["reports"][0]["throughput"])')
    row="$row $(python3 -c "import sys; w,v=float(sys.argv[1]),float(sys.argv[2]); print(f'{v:,.0f} | {100*v/w:.0f} % |')" "$w" "$v")"
  done
  echo "$row"
done
