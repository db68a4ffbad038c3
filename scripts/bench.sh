#!/usr/bin/env bash
# The SMTP engine's speed and memory benchmark (benches/throughput.rs), in release mode.
#
#   scripts/bench.sh              one full run (about half a minute after the build)
#   scripts/bench.sh --quick      a small run that finishes in seconds (also when CI is set)
#   scripts/bench.sh --runs 5     five runs, then the best and the median of each number
#
# Parameters are MXFARM_BENCH_* environment variables; BENCHMARKS.md lists them, says what
# is measured, and keeps the numbers measured so far. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick) ;;
    --runs)
      [ $# -ge 2 ] || { echo "--runs needs a number" >&2; exit 2; }
      runs=$2
      shift
      ;;
    -h | --help)
      sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $1 (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done
case "$runs" in
  '' | *[!0-9]*) echo "--runs needs a number, not '$runs'" >&2; exit 2 ;;
esac
[ "$runs" -ge 1 ] && [ "$runs" -le 50 ] || { echo "--runs must be 1..50" >&2; exit 2; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -sr)"
echo "commit:  $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > n / 4) }'; then
  echo "note:    the machine is busy (load $load); numbers will be lower and noisier than on an idle one"
fi

# Build first, so that no run competes with the compiler.
cargo bench --bench throughput --no-run

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for run in $(seq "$runs"); do
  [ "$runs" -gt 1 ] && echo "--- run $run of $runs"
  # The bench checks its own results and exits non-zero when anything went wrong.
  cargo bench --bench throughput --quiet -- "${args[@]}" | tee -a "$results"
done

if [ "$runs" -gt 1 ]; then
  echo "--- over $runs runs: best and median (for CPU and memory, best is the lowest)"
  for key in messages_per_sec connections_per_sec farm_cpu_us_per_message \
    farm_cpu_us_per_connection peak_rss_kib; do
    grep -o "$key=[0-9.]*" "$results" | cut -d= -f2 | sort -n | awk -v key="$key" '
      { v[NR] = $1 }
      END {
        if (NR == 0) exit
        best = (key ~ /per_sec$/) ? v[NR] : v[1]
        median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        f = (key ~ /cpu/) ? "%10.1f" : "%10d"
        printf "%-28s best " f "   median " f "\n", key, best, median
      }'
  done
fi

# The comparison with Postfix's smtp-sink is a script of its own.
echo "--- beside Postfix's smtp-sink: scripts/bench-vs-smtp-sink.sh (see BENCHMARKS.md)"
