#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, one after the other, and prints
# per target: executions, executions per second, coverage (libFuzzer's
# `cov:` edges and `ft:` features), new inputs and crashes. Exits non-zero
# if any target crashed, hung or ran out of memory.
#
#   fuzz/run-all.sh [--merge] [--only a,b] [--no-proxy] SECONDS [JOBS]
#
# SECONDS  run time per target (0: no run; with --merge, only minimise).
# JOBS     parallel libFuzzer processes per target (fork mode); default 1.
# --merge  afterwards minimise the committed corpus plus this run's finds
#          (libFuzzer -merge=1, what `cargo fuzz cmin` does) back into
#          fuzz/corpus/<target>/; the seeds (seed-*) are always kept.
# --only   a comma-separated list of targets instead of all of them.
# --no-proxy  build without the proxy crate (no config, paths or dbsc_proof target, no rendering
#          of forwarding headers): leaves Pingora out of the build, about 5
#          minutes cold on 2 cores instead of about 18. The CI smoke uses it.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz
# --locked`). Builds all targets once (`cargo +nightly fuzz build`, release
# with debug assertions and AddressSanitizer), then runs the binaries
# directly. New inputs go to fuzz/scratch/<target>/ (ignored by git), never
# into the committed corpus unless --merge is given; crash inputs go to
# fuzz/artifacts/<target>/. Logs: fuzz/scratch/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

merge=false
only=""
build_flags=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --merge) merge=true ;;
    --only) only="$2"; shift ;;
    --no-proxy) build_flags+=(--no-default-features) ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done
seconds="${args[0]:-}"
jobs="${args[1]:-1}"
if ! [[ "$seconds" =~ ^[0-9]+$ && "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run-all.sh [--merge] [--only a,b] [--no-proxy] SECONDS [JOBS]" >&2
  exit 2
fi

# Every [[bin]] of fuzz/Cargo.toml is a target; without the proxy, all but
# those that require it.
mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^vigil-fuzz$')
if [ ${#build_flags[@]} -gt 0 ]; then
  mapfile -t all < <(printf '%s\n' "${all[@]}" | grep -v -x -e config -e paths -e dbsc_proof)
fi
if [ -n "$only" ]; then
  IFS=, read -r -a targets <<< "$only"
else
  targets=("${all[@]}")
fi

# Longest input per target: a config file or a ClientHello with post-quantum
# key shares is several KB; header sets stay well inside the engine's caps.
max_len() {
  case "$1" in
    config) echo 16384 ;;
    ja4) echo 8192 ;;
    session_record) echo 4096 ;;
    *) echo 8192 ;;
  esac
}

triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"

build_started=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}" >&2
echo "build: $(( $(date +%s) - build_started ))s" >&2

mkdir -p scratch
failed=0
rows=()
for t in "${targets[@]}"; do
  bin="$bin_dir/$t"
  [ -x "$bin" ] || { echo "no fuzz target $t" >&2; exit 2; }
  mkdir -p "scratch/$t" "artifacts/$t" "corpus/$t"
  [ "$seconds" -gt 0 ] || continue
  log="scratch/$t.log"
  before=$(find "artifacts/$t" -type f | wc -l)
  scratch_before=$(find "scratch/$t" -type f | wc -l)
  flags=(
    -max_total_time="$seconds"
    -max_len="$(max_len "$t")"
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
    # The targets keep engines across inputs, so most inputs allocate more
    # than they free and libFuzzer would run LeakSanitizer after each of
    # them: measured 296 executions/s with it, 1,860 without
    # (response_headers). A leak in safe Rust is not a memory-safety bug.
    -detect_leaks=0
    -artifact_prefix="artifacts/$t/"
  )
  [ "$jobs" -gt 1 ] && flags+=(-fork="$jobs" -ignore_crashes=0)
  started=$(date +%s)
  status=0
  # New inputs go to the first directory; the committed corpus is read only.
  "$bin" "${flags[@]}" "scratch/$t" "corpus/$t" > "$log" 2>&1 || status=$?
  took=$(( $(date +%s) - started ))
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  [ "$crashes" -eq 0 ] || failed=1
  # libFuzzer's final stats, or in fork mode the last status line.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" | tail -1 || true)
  [ -n "$execs" ] || execs=$(sed -E 's/^#([0-9]+).*/\1/' <<< "$last")
  cov=$(grep -oE 'cov: [0-9]+' <<< "$last" | cut -d' ' -f2 || true)
  ft=$(grep -oE 'ft: [0-9]+' <<< "$last" | cut -d' ' -f2 || true)
  new=$(( $(find "scratch/$t" -type f | wc -l) - scratch_before ))
  rate=$(( ${execs:-0} / (took > 0 ? took : 1) ))
  rows+=("$(printf '%-18s %6ss %12s %9s %7s %7s %6s %7s' \
    "$t" "$took" "${execs:-?}" "$rate" "${cov:-?}" "${ft:-?}" "$new" "$crashes")")
  echo "${rows[-1]}" >&2
done

if [ "$seconds" -gt 0 ]; then
  printf '\n%-18s %7s %12s %9s %7s %7s %6s %7s\n' \
    target time execs exec/s cov ft new crashes
  printf '%s\n' "${rows[@]}"
fi

if $merge; then
  for t in "${targets[@]}"; do
    out=$(mktemp -d)
    # The seeds stay whole and by name; what the corpus and this run found
    # is added only where it covers an edge the seeds and earlier picks do
    # not. Edges, not hit counts (-use_counters=0): with counts, config
    # kept 2,226 files (12 MB) of one 5-minute run, edges alone 550.
    cp corpus/"$t"/seed-* "$out"/ 2>/dev/null || true
    find "corpus/$t" -type f ! -name 'seed-*' -exec mv {} "scratch/$t/" \;
    "$bin_dir/$t" -merge=1 -use_counters=0 -detect_leaks=0 -max_len="$(max_len "$t")" \
      -timeout=10 "$out" "scratch/$t" > "scratch/$t.merge.log" 2>&1
    for f in "$out"/*; do
      case "$(basename "$f")" in
        seed-*) ;;
        *) mv "$f" "corpus/$t/" ;;
      esac
    done
    rm -rf "$out"
    echo "merged $t: $(find "corpus/$t" -type f | wc -l) files, $(du -sh "corpus/$t" | cut -f1)" >&2
  done
fi

exit "$failed"
