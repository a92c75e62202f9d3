#!/usr/bin/env bash
# Side by side on loopback with vigil-load's comparison mode: Vigil
# enforcing vs Vigil as a plain proxy (mode off) vs nginx as a plain reverse
# proxy vs HAProxy (one thread) vs nginx with `auth_request` to an nginx
# auth endpoint (the oauth2-proxy pattern: a subrequest per request that
# checks only that a session cookie is present; its CPU counts the auth
# service's too) vs the origin directly, in alternating rounds, over cleartext or TLS,
# with throughput, p50/p99, ratios against nginx, proxy CPU per request from
# /proc/PID/stat, and the detection figures under load. Everything started
# here is stopped by its pid on exit.
#
#   loadtests/compare.sh [cleartext|tls|all] [seconds-per-round] [rounds] [load]
#
# load is vigil-load's: "--concurrency 64" (default) or "--rate 5000".
# Each transport is measured on kept-alive connections; TLS also with a new
# connection per request (`Connection: close`, resumption allowed), and the
# difference of the two CPU figures is the per-connection cost (handshake,
# hello capture, connection set-up). With a closed-loop load, each
# transport gets an open-loop run (before the TLS connection-per-request
# round) of Vigil off and enforcing at a fixed
# rate of half the lower of their measured peaks (RATE=N fixes it;
# OPEN_LOOP=0 skips it): p99 from the intended send times, and enforce − off.
# Layout on a 2-core machine: the proxies under test (one worker each) on
# CPU 1; vigil-load (one thread), the origin and the auth service on CPU 0.
# NO_HAPROXY=1 / NO_AUTH=1 leave those targets out; CLASSES=history plays
# only those corpus classes (steady owners: Vigil's allow path, no
# refusals). Reports go to $OUT-<transport>-<mode>.{txt,html,json} (OUT default
# ./compare), a summary table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

transport=${1:-cleartext}
secs=${2:-10}
rounds=${3:-2}
load=${4:---concurrency 64}
out=${OUT:-compare}
case $transport in
  cleartext|tls) transports=("$transport") ;;
  all)
    # One after the other, each with a fresh proxy: users' profiles learnt
    # over cleartext (the corpus's JA4 strings in a header) would make the
    # same users' TLS stacks look new, and the TLS run would measure refusals.
    "$0" cleartext "$secs" "$rounds" "$load"
    exec "$0" tls "$secs" "$rounds" "$load" ;;
  *) echo "transport: cleartext, tls or all"; exit 1 ;;
esac
. loadtests/lib.sh

need nginx taskset openssl curl
if [ -z "${VIGIL_BIN:-}" ]; then
  cargo build --release -p vigil-proxy -p vigil-load >/dev/null
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin=${VIGIL_BIN:-$target_dir/release/vigil-proxy}
load_bin=${VIGIL_LOAD_BIN:-$target_dir/release/vigil-load}

origin=18091; vigil=18092; admin=18093; nginx_port=18094; vigil_tls=18095; nginx_tls=18096
haproxy_port=18097; haproxy_tls=18098; authreq_port=18099; authreq_tls=18100; auth_port=18101
with_haproxy=1; with_auth=1
[ -n "${NO_HAPROXY:-}" ] || command -v haproxy >/dev/null || { echo "no haproxy: left out"; with_haproxy=; }
[ -z "${NO_HAPROXY:-}" ] || with_haproxy=
[ -z "${NO_AUTH:-}" ] || with_auth=
if [ -n "$with_auth" ] && ! nginx -V 2>&1 | grep -q -- --with-http_auth_request_module; then
  echo "this nginx lacks the auth_request module (nginx-light does; install nginx-core): left out"
  with_auth=
fi

self_signed_cert localhost

# The proxy's config, geo database and trusted egress list for the corpus.
"$load_bin" prepare --out "$work" --listen 127.0.0.1:$vigil --tls-listen 127.0.0.1:$vigil_tls \
  --cert "$work/cert.pem" --key "$work/key.pem" --origin 127.0.0.1:$origin --admin 127.0.0.1:$admin >/dev/null

nginx_conf "$work/nginx.conf" <<NGINX
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
  # nginx + auth_request: every request first asks the auth service (a
  # subrequest over a kept-alive connection), then goes to the origin;
  # the sign-in route goes straight there, as an oauth2-proxy deployment
  # exempts its own. (The corpus's logins carry no cookie yet: behind the
  # check they were answered 401 and never reached the origin, while every
  # other target proxies them.)
  upstream auth { server 127.0.0.1:$auth_port; keepalive 64; }
  server {
    listen 127.0.0.1:$authreq_port;
    listen 127.0.0.1:$authreq_tls ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      auth_request /_auth;
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /login {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /_auth {
      internal;
      proxy_pass http://auth/check;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
NGINX

# The auth service: judges nothing but whether a cookie is there.
nginx_conf "$work/auth.conf" <<NGINX
  server {
    listen 127.0.0.1:$auth_port;
    location = /check {
      if (\$http_cookie = "") { return 401; }
      return 204;
    }
  }
NGINX

# HAProxy as a plain reverse proxy, one thread, connections to the origin reused.
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"
cat > "$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
  log stderr format short local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend load
  bind 127.0.0.1:$haproxy_port
  bind 127.0.0.1:$haproxy_tls ssl crt $work/haproxy.pem alpn http/1.1
  default_backend origin
backend origin
  server o1 127.0.0.1:$origin
HAPROXY

taskset -c 0 "$load_bin" origin --listen 127.0.0.1:$origin 2>/dev/null & pids+=($!)
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & npid=$!; pids+=($npid)
taskset -c 1 "$bin" run -c "$work/vigil-proxy.toml" 2>"$work/vigil.err" & vpid=$!; pids+=($vpid)
if [ -n "$with_auth" ]; then
  taskset -c 0 nginx -c "$work/auth.conf" -p "$work" & apid=$!; pids+=($apid)
fi
if [ -n "$with_haproxy" ]; then
  taskset -c 1 haproxy -db -f "$work/haproxy.cfg" & hpid=$!; pids+=($hpid)
fi

wait_for "$work/vigil.err" "http://127.0.0.1:$origin/"
wait_for "$work/vigil.err" "http://127.0.0.1:$nginx_port/"
wait_for "$work/vigil.err" "http://127.0.0.1:$admin/readyz"
[ -z "$with_haproxy" ] || wait_for "$work/vigil.err" "http://127.0.0.1:$haproxy_port/"
# (the auth service refuses a request without a cookie)
[ -z "$with_auth" ] || wait_for "$work/vigil.err" "http://127.0.0.1:$authreq_port/" -H "Cookie: probe=1"

targets_for() { # transport: sets targets and extra
  if [ "$1" = tls ]; then
    # Each simulated device brings its own TLS stack; Vigil reads JA4 from it.
    targets=(--target "name=vigil-enforce,url=https://127.0.0.1:$vigil_tls/,host=localhost,pid=$vpid"
             --target "name=vigil-off,url=https://127.0.0.1:$vigil_tls/,host=off.test,pid=$vpid"
             --target "name=nginx,url=https://127.0.0.1:$nginx_tls/,host=localhost,pid=$npid"
             --target "name=origin,url=http://127.0.0.1:$origin/")
    [ -z "$with_haproxy" ] || targets+=(--target "name=haproxy,url=https://127.0.0.1:$haproxy_tls/,host=localhost,pid=$hpid")
    [ -z "$with_auth" ] || targets+=(--target "name=nginx+auth_request,url=https://127.0.0.1:$authreq_tls/,host=localhost,pid=$npid+$apid")
    extra=(--insecure)
  else
    # The corpus's JA4 arrives from the (simulated) balancer in a header.
    targets=(--target "name=vigil-enforce,url=http://127.0.0.1:$vigil/,pid=$vpid"
             --target "name=vigil-off,url=http://127.0.0.1:$vigil/,host=off.test,pid=$vpid"
             --target "name=nginx,url=http://127.0.0.1:$nginx_port/,pid=$npid"
             --target "name=origin,url=http://127.0.0.1:$origin/")
    [ -z "$with_haproxy" ] || targets+=(--target "name=haproxy,url=http://127.0.0.1:$haproxy_port/,pid=$hpid")
    [ -z "$with_auth" ] || targets+=(--target "name=nginx+auth_request,url=http://127.0.0.1:$authreq_port/,pid=$npid+$apid")
    extra=(--ja4-header x-load-ja4)
  fi
  [ -z "${CLASSES:-}" ] || extra+=(--classes "$CLASSES")
}

compare() { # report-name vigil-load options...: one comparison run
  local name=$1; shift
  echo "== $name: $* =="
  # shellcheck disable=SC2086
  taskset -c 0 "$load_bin" run "$@" "${extra[@]}" --duration "${secs}s" \
    --rounds "$rounds" --baseline nginx --html "$out-$name.html" --json "$out-$name.json" \
    ${SLO:+--slo "$SLO"} >"$out-$name.txt"
  python3 loadtests/compare-table.py "$out-$name.json"
  echo
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
for t in "${transports[@]}"; do
  targets_for "$t"
  # Warm-up over the same transport (users' profiles learn the devices' JA4s
  # as this transport shows them): connection pools, code paths, profiles.
  taskset -c 0 "$load_bin" run "${targets[0]}" "${targets[1]}" "${extra[@]}" \
    --concurrency 16 --duration 2s >/dev/null
  # shellcheck disable=SC2086
  compare "$t-keepalive" "${targets[@]}" $load
  if [ "${OPEN_LOOP:-1}" != 0 ] && [[ "$load" != *--rate* ]]; then
    # Open loop at half the measured peak: the p99 enforcement adds when
    # the proxy is not saturated (coordinated omission corrected: latency
    # from each request's intended send time).
    rate=${RATE:-$(python3 loadtests/compare-table.py --half-peak "$out-$t-keepalive.json")}
    # (vigil-enforce, vigil-off and nginx: the first three targets)
    compare "$t-open" "${targets[@]:0:6}" --rate "$rate"
    python3 loadtests/compare-table.py --p99-increment "$out-$t-open.json"
    echo
  fi
  if [ "$t" = tls ]; then
    # A new connection per request, resumption allowed: what a handshake
    # and a hello capture cost beside a request. Last: a resumed hello's
    # JA4 differs from a full one's (pre_shared_key), and users' profiles
    # learn both.
    # shellcheck disable=SC2086
    compare "$t-close" "${targets[@]}" $load --new-connection --tls-resume
    python3 loadtests/compare-table.py --per-connection "$out-$t-keepalive.json" "$out-$t-close.json"
    echo
  fi
done
