#!/usr/bin/env bash
# Side by side on loopback with vigil-load's comparison mode: Vigil
# enforcing vs Vigil as a plain proxy (mode off) vs nginx as a plain reverse
# proxy vs the origin directly, in alternating rounds, over cleartext or TLS,
# with throughput, p50/p99, ratios against nginx, proxy CPU per request from
# /proc/PID/stat, and the detection figures under load. Everything started
# here is stopped by its pid on exit.
#
#   loadtests/compare.sh [cleartext|tls] [seconds-per-round] [rounds] [load]
#
# load is vigil-load's: "--concurrency 64" (default) or "--rate 5000".
# Layout on a 2-core machine: the proxies under test (one worker each) on
# CPU 1; vigil-load (one thread) and the origin on CPU 0. Reports go to
# $OUT (default ./compare-<transport>.{html,json}).
set -euo pipefail
cd "$(dirname "$0")/.."

transport=${1:-cleartext}
secs=${2:-10}
rounds=${3:-2}
load=${4:---concurrency 64}
out=${OUT:-compare-$transport}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in nginx taskset openssl curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
if [ -z "${VIGIL_BIN:-}" ]; then
  cargo build --release -p vigil-proxy -p vigil-load >/dev/null
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin=${VIGIL_BIN:-$target_dir/release/vigil-proxy}
load_bin=${VIGIL_LOAD_BIN:-$target_dir/release/vigil-load}

origin=18091; vigil=18092; admin=18093; nginx_port=18094; vigil_tls=18095; nginx_tls=18096

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# The proxy's config, geo database and trusted egress list for the corpus.
"$load_bin" prepare --out "$work" --listen 127.0.0.1:$vigil --tls-listen 127.0.0.1:$vigil_tls \
  --cert "$work/cert.pem" --key "$work/key.pem" --origin 127.0.0.1:$origin --admin 127.0.0.1:$admin >/dev/null

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
master_process off;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$origin; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    listen 127.0.0.1:$nginx_tls ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX

taskset -c 0 "$load_bin" origin --listen 127.0.0.1:$origin 2>/dev/null & pids+=($!)
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & npid=$!; pids+=($npid)
taskset -c 1 "$bin" run -c "$work/vigil-proxy.toml" 2>"$work/vigil.err" & vpid=$!; pids+=($vpid)

wait_for() { # url
  for _ in $(seq 100); do curl -skf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not serving: $1"; cat "$work/vigil.err"; exit 1
}
wait_for "http://127.0.0.1:$origin/"
wait_for "http://127.0.0.1:$nginx_port/"
wait_for "http://127.0.0.1:$admin/readyz"

if [ "$transport" = tls ]; then
  # Each simulated device brings its own TLS stack; Vigil reads JA4 from it.
  targets=(--target "name=vigil-enforce,url=https://127.0.0.1:$vigil_tls/,host=localhost,pid=$vpid"
           --target "name=vigil-off,url=https://127.0.0.1:$vigil_tls/,host=off.test,pid=$vpid"
           --target "name=nginx,url=https://127.0.0.1:$nginx_tls/,host=localhost,pid=$npid"
           --target "name=origin,url=http://127.0.0.1:$origin/")
  extra=(--insecure)
else
  # The corpus's JA4 arrives from the (simulated) balancer in a header.
  targets=(--target "name=vigil-enforce,url=http://127.0.0.1:$vigil/,pid=$vpid"
           --target "name=vigil-off,url=http://127.0.0.1:$vigil/,host=off.test,pid=$vpid"
           --target "name=nginx,url=http://127.0.0.1:$nginx_port/,pid=$npid"
           --target "name=origin,url=http://127.0.0.1:$origin/")
  extra=(--ja4-header x-load-ja4)
fi

# Warm-up over the same transport (users' profiles learn the devices' JA4s
# as this transport shows them): connection pools, code paths, profiles.
# shellcheck disable=SC2086
taskset -c 0 "$load_bin" run "${targets[0]}" "${targets[1]}" "${extra[@]}" \
  --concurrency 16 --duration 2s >/dev/null

# shellcheck disable=SC2086
taskset -c 0 "$load_bin" run "${targets[@]}" "${extra[@]}" $load --duration "${secs}s" \
  --rounds "$rounds" --baseline nginx --html "$out.html" --json "$out.json" ${SLO:+--slo "$SLO"}
