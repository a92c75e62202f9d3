#!/usr/bin/env bash
# A profile-guided build of vigil-proxy: the release build, compiled again
# with what a run of the corpus taught the compiler about which branches,
# calls and blocks are hot (LLVM's PGO). docs/performance.md ("Issue 17,
# seventh pass") has what it measured to give; docs/deployment.md says
# where it fits in a build.
#
#   loadtests/pgo.sh [seconds-per-phase]
#
# 1. Builds vigil-proxy instrumented (`-Cprofile-generate`) under
#    $CARGO_TARGET_DIR/pgo-generate.
# 2. Trains it on vigil-load's prepared config (an enforcing route and an
#    `off.test` route) and corpus, each route for the given seconds
#    (default 5) per phase, each phase after a 2 s warm-up. One proxy
#    serves cleartext: the steady owners, then the whole corpus (logins,
#    replays, clones: refusals, step-ups, blocks). A second, fresh one
#    serves TLS: the owners kept alive, then with a new connection per
#    request. Each stops gracefully, which writes its profile.
# 3. Merges the profiles with `llvm-profdata` (rustup's `llvm-tools`
#    component: `rustup component add llvm-tools`) into
#    $CARGO_TARGET_DIR/pgo/vigil-proxy.profdata.
# 4. Builds vigil-proxy with it (`-Cprofile-use`) under
#    $CARGO_TARGET_DIR/pgo and prints the binary's path.
#
# The two builds use their own target directories, so neither undoes the
# plain release build (each is a whole-program build: about as long as the
# release build itself). VIGIL_LOAD_BIN picks vigil-load (default: the
# release build, built here if absent); PORT_BASE=n moves the four ports
# (default 28301-28304). Everything started here is stopped by its pid on
# exit.
set -euo pipefail
shopt -s inherit_errexit # a failed build inside $(...) stops the script too
# Paths given relative to where the script was started.
[ -z "${CARGO_TARGET_DIR:-}" ] || CARGO_TARGET_DIR=$(realpath -m "$CARGO_TARGET_DIR")
[ -z "${VIGIL_LOAD_BIN:-}" ] || VIGIL_LOAD_BIN=$(realpath -m "$VIGIL_LOAD_BIN")
cd "$(dirname "$0")/.." >/dev/null # (CDPATH would print it: stdout is the path alone)

secs=${1:-5}
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
# The flags below go through RUSTFLAGS, which cargo splits at whitespace and
# which CARGO_ENCODED_RUSTFLAGS would override: refuse both cases rather
# than build a binary that is silently not instrumented or not optimised.
case $target_dir in *[[:space:]]*) echo "a target directory without spaces, please: $target_dir" >&2; exit 2 ;; esac
[ -z "${CARGO_ENCODED_RUSTFLAGS:-}" ] || { echo "unset CARGO_ENCODED_RUSTFLAGS (use RUSTFLAGS)" >&2; exit 2; }
rustc=${RUSTC:-rustc} # the compiler cargo builds with, and its llvm-profdata
host=$("$rustc" -vV | sed -n 's/^host: //p')
profdata_tool=$("$rustc" --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
base=${PORT_BASE:-28301}
origin=$base; listen=$((base + 1)); tls=$((base + 2)); admin=$((base + 3))
. loadtests/lib.sh

NEED_HINT="apt-get install curl openssl" need curl openssl
[ -x "$profdata_tool" ] || {
  echo "no llvm-profdata at $profdata_tool: rustup component add llvm-tools" >&2
  exit 1
}
load_bin=${VIGIL_LOAD_BIN:-$target_dir/release/vigil-load}
if [ -z "${VIGIL_LOAD_BIN:-}" ] && [ ! -x "$load_bin" ]; then
  CARGO_TARGET_DIR=$target_dir cargo build --release --locked -p vigil-load
fi

# `--target` keeps the flags off build scripts and procedural macros: only
# what runs in the proxy is instrumented, then optimised. The instrumented
# binary's own default profile path is fixed (a changed flag would rebuild
# everything); each run names its own with LLVM_PROFILE_FILE.
build() { # target-subdirectory rustflag
  RUSTFLAGS="${RUSTFLAGS:-} $2" cargo build --release --locked -p vigil-proxy \
    --target "$host" --target-dir "$target_dir/$1" >&2
  echo "$target_dir/$1/$host/release/vigil-proxy"
}
echo "== 1. instrumented build" >&2
instrumented=$(build pgo-generate "-Cprofile-generate=$target_dir/pgo-generate/profiles")

echo "== 2. training ($secs s per phase)" >&2
self_signed_cert localhost
"$load_bin" origin --listen "127.0.0.1:$origin" >/dev/null 2>&1 & pids+=($!)
wait_for /dev/null "http://127.0.0.1:$origin/"
mkdir "$work/profiles"

# One instrumented proxy per transport, each from its own freshly prepared
# config and state, so that each transport's training starts from the
# same empty state. (The first version trained both on one proxy and saw
# 94-95 % refused over TLS: that was vigil-load replaying the cleartext
# phases' sessions, fixed since by its run id; docs/performance.md, eighth
# pass.) Each writes its own profile when it stops.
serve() { # name: starts the proxy, sets $proxy
  "$load_bin" prepare --out "$work/$1" --listen "127.0.0.1:$listen" --tls-listen "127.0.0.1:$tls" \
    --cert "$work/cert.pem" --key "$work/key.pem" --origin "127.0.0.1:$origin" \
    --admin "127.0.0.1:$admin" >/dev/null
  LLVM_PROFILE_FILE="$work/profiles/vigil-proxy-%p.profraw" \
    "$instrumented" run -c "$work/$1/vigil-proxy.toml" >/dev/null 2>"$work/$1.err" & proxy=$!; pids+=($proxy)
  wait_for "$work/$1.err" "http://127.0.0.1:$admin/readyz"
}
stop_proxy() { # name: a graceful stop ends in exit(3), which writes the profile
  local stopped=0
  stop "$proxy" || stopped=$?
  [ "$stopped" = 0 ] || { echo "the instrumented proxy did not stop cleanly ($stopped):" >&2; cat "$work/$1.err" >&2; exit 1; }
}
train() { # phase-name vigil-load options...
  echo "   $1" >&2
  shift
  # A warm-up first, as compare.sh's: the owners' profiles learn their
  # devices before the phase.
  "$load_bin" run "$@" --concurrency 16 --duration 2s >/dev/null
  "$load_bin" run "$@" --concurrency 64 --duration "${secs}s" >"$work/train.txt" ||
    { cat "$work/train.txt" >&2; exit 1; }
  # What each route served and refused: the paths the profile saw.
  grep -E '^target |requests in' "$work/train.txt" | sed 's/^/     /' >&2 || true
}
routes() { # scheme port: the enforcing route and the `off.test` one
  # (over TLS, the name the certificate is for; as compare.sh's targets)
  local sni=""
  [ "$1" = http ] || sni=",host=localhost"
  echo "name=enforce,url=$1://127.0.0.1:$2/$sni,pid=$proxy"
  echo "name=off,url=$1://127.0.0.1:$2/,host=off.test,pid=$proxy"
}
# Mostly the steady owners (`history`), allowed as most of production is;
# in cleartext then the whole corpus (logins, replays, clones: refusals,
# step-ups and blocks), last, as its attacks raise the risk of the users
# they target.
owners=(--classes history)
serve cleartext
clear=(--ja4-header x-load-ja4)
while read -r t; do clear+=(--target "$t"); done < <(routes http "$listen")
train "owners, cleartext, kept alive" "${clear[@]}" "${owners[@]}"
train "the whole corpus, cleartext, kept alive" "${clear[@]}"
stop_proxy cleartext
serve tls
over_tls=(--insecure)
while read -r t; do over_tls+=(--target "$t"); done < <(routes https "$tls")
train "owners, TLS, kept alive" "${over_tls[@]}" "${owners[@]}"
train "owners, TLS, a new connection per request" "${over_tls[@]}" "${owners[@]}" --new-connection --tls-resume
stop_proxy tls
[ "$(find "$work/profiles" -name '*.profraw' | wc -l)" = 2 ] || { echo "the proxies did not write their two profiles" >&2; exit 1; }

echo "== 3. merging" >&2
mkdir -p "$target_dir/pgo"
profile=$target_dir/pgo/vigil-proxy.profdata
"$profdata_tool" merge -o "$profile" "$work"/profiles/*.profraw

echo "== 4. optimised build" >&2
build pgo "-Cprofile-use=$profile"
