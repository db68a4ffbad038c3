#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each, and fails on any crash.
#
#   scripts/fuzz.sh              60 seconds per target
#   scripts/fuzz.sh 600          ten minutes per target
#   scripts/fuzz.sh 30 views     30 seconds, one target (see `cargo +nightly fuzz list`)
#
# Needs the nightly toolchain (installed with rustup if missing) and cargo-fuzz
# (installed with `cargo install` if missing). Each target starts from its seeds,
# committed in fuzz/seeds/ (and the shipped scenarios for the loader), with a dictionary
# from fuzz/dict/; what libFuzzer finds on the way goes to fuzz/corpus/ (not committed),
# a crash to fuzz/artifacts/TARGET/. A crash is a bug: make it a regression test in
# tests/integration/, fix it, and keep the input as a seed. fuzz/README.md says more.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
only=${2:-}
case "$seconds" in
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '' | *[!0-9]*) echo "SECONDS must be a number, not '$seconds' (try --help)" >&2; exit 2 ;;
esac
[ "$seconds" -ge 1 ] && [ "$seconds" -le 86400 ] || { echo "SECONDS must be 1..86400" >&2; exit 2; }

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
# libfuzzer-sys builds libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing a C++ compiler for libFuzzer"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
# No sanitizer: mxfarm has no unsafe code, and a panic (with overflow checks and debug
# assertions on, as cargo-fuzz builds by default) is what these targets look for.
build=(--sanitizer none)
cargo +nightly fuzz build "${build[@]}"

# TARGET -> its seed directories and dictionary.
seeds() {
  case "$1" in
    smtp_session | smtp_session_rules) echo "seeds/smtp" ;;
    scenario) echo "seeds/scenario scenarios ../scenarios ../tests/e2e ../tests/fixtures/broken" ;;
    journal_file) echo "seeds/journal" ;;
    views) echo "seeds/views" ;;
    *) echo "no seeds are set for fuzz target $1 in scripts/fuzz.sh" >&2; exit 2 ;;
  esac
}
dict() {
  case "$1" in
    smtp_session | smtp_session_rules) echo "-dict=dict/smtp.dict" ;;
    scenario) echo "-dict=dict/scenario.dict" ;;
  esac
}

targets=$(cargo +nightly fuzz list)
if [ -n "$only" ] && ! grep -qx "$only" <<<"$targets"; then
  echo "no fuzz target named $only; the targets are:" $targets >&2
  exit 2
fi
failed=()
for target in $targets; do
  [ -n "$only" ] && [ "$target" != "$only" ] && continue
  mkdir -p "corpus/$target"
  echo "=== fuzz $target for ${seconds}s"
  # shellcheck disable=SC2046 # the seed directories are words
  if cargo +nightly fuzz run "${build[@]}" "$target" "corpus/$target" $(seeds "$target") -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 $(dict "$target") 2>"corpus/$target.log"; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)' "corpus/$target.log" |
      tr '\n' ' ' | sed 's/^/    /'
    echo
  else
    failed+=("$target")
    tail -n 40 "corpus/$target.log"
    echo "FAIL fuzz target $target; the input is in fuzz/artifacts/$target/."
    echo "     replay it: (cd fuzz && cargo +nightly fuzz run ${build[*]} $target artifacts/$target/<file>)"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
