# Sourced by the load scripts after they `cd` to the repository root (and
# after any `exec` of themselves: its exit trap does not survive one), never
# run: one temporary work directory, the pids of what the script starts
# (stopped by pid on exit, never by name), and two small checks.
#
#   . loadtests/lib.sh
#   need nginx wrk                 # exits naming the first tool missing
#   some-server & pids+=($!)       # stopped on exit
#   wait_for "$work/x.err" URL     # up to 10 s; shows the log if not
#   on_exit() { ...; }             # optional: runs before $work goes

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
