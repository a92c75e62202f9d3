# Sourced by the load scripts after they `cd` to the repository root (and
# after any `exec` of themselves: its exit trap does not survive one), never
# run: one temporary work directory, the pids of what the script starts
# (stopped by pid on exit, never by name), and two small checks.
#
#   . loadtests/lib.sh
#   need nginx wrk                 # exits naming the first tool missing
#   some-server & pids+=($!)       # stopped on exit
#   wait_for "$work/x.err" URL     # up to 10 s; shows the log if not
#   stop PID                       # SIGTERM, wait, forget; fails if it did
#                                  # not exit 0 (a pid stopped before the end)
#   self_signed_cert NAME...       # $work/cert.pem and key.pem, P-256, for
#                                  # the DNS names given
#   on_exit() { ...; }             # optional: runs before $work goes
#   nginx_origin_conf F PORT       # writes nginx configs: the origin, and
#   nginx_proxy_conf F PORT ORIGIN # the plain reverse proxy measured against
#   nginx_conf F < HTTP_BLOCK      # (both through this one)

work=$(mktemp -d)
pids=()
on_exit() { :; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  on_exit
  rm -rf "$work"
}
trap cleanup EXIT

need() { # tool...; NEED_HINT says how to install them
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool${NEED_HINT:+ ($NEED_HINT)}" >&2; exit 1; }
  done
}

wait_for() { # log url [curl options]: until the url answers 2xx
  local log=$1; shift
  for _ in $(seq 100); do curl -skf -o /dev/null "$@" && return 0; sleep 0.1; done
  echo "not serving: $1" >&2
  [ ! -f "$log" ] || cat "$log" >&2
  exit 1
}

# An nginx config at FILE (FILE.conf: its pid and error log beside it as
# FILE.pid and FILE.err): one worker, no master process (its pid is the one
# `$!` gives), no access log, connections kept alive for as long as a run
# lasts, and the http block's contents read from stdin.
# Stops one of $pids before the script ends (SIGTERM, then waits for it) and
# drops it from $pids: once reaped, its pid may be reused, and cleanup must
# not signal it. Returns the process's exit status.
stop() { # pid
  kill -TERM "$1"
  local rc=0 p kept=()
  wait "$1" || rc=$?
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  pids=("${kept[@]}")
  return "$rc"
}

self_signed_cert() { # dns-name...: $work/cert.pem and $work/key.pem
  local san
  san=$(printf 'DNS:%s,' "$@")
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$1" -addext "subjectAltName=${san%,}" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
}

nginx_conf() { # file < http-block
  {
    cat <<NGINX
worker_processes 1;
master_process off;
daemon off;
pid ${1%.conf}.pid;
error_log ${1%.conf}.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
NGINX
    cat
    echo "}"
  } > "$1"
}

# nginx answering a small fixed body: the origin behind every proxy measured.
nginx_origin_conf() { # file port
  nginx_conf "$1" <<NGINX
  server {
    listen 127.0.0.1:$2;
    location / { default_type text/plain; return 200 "hello from the origin\n"; }
  }
NGINX
}

# nginx as a plain reverse proxy, connections to the origin kept alive: the
# reference Vigil is measured against (compare.sh's nginx target is the same
# server, with TLS listeners and the auth_request one beside it).
nginx_proxy_conf() { # file port origin-port
  nginx_conf "$1" <<NGINX
  upstream origin { server 127.0.0.1:$3; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
NGINX
}
