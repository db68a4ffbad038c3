#!/usr/bin/env bash
# End-to-end: the mxfarm binary on its embedded default scenario (aol), driven by swaks,
# a real SMTP client, exactly as the README's tour does it. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swaks >/dev/null 2>&1; then
  echo "installing swaks"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks >/dev/null
fi

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/mxfarm"
work=$(mktemp -d)
trap 'kill "$farm_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

failures=0
passes=0
pass() { echo "ok   $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# Every shipped scenario passes `mxfarm check`.
if "$bin" check scenarios/*.toml >"$work/check.out" 2>&1; then
  pass "mxfarm check scenarios/*.toml"
else
  fail "mxfarm check scenarios/*.toml"; cat "$work/check.out"
fi

"$bin" run --journal "$work/journal.jsonl" >"$work/stdout" 2>"$work/stderr" &
farm_pid=$!
for _ in $(seq 100); do
  grep -q '^Ready\.' "$work/stdout" 2>/dev/null && break
  sleep 0.1
done
grep -q '^Ready\.' "$work/stdout" || { cat "$work/stdout" "$work/stderr"; echo "FAIL farm did not start"; exit 1; }
cat "$work/stdout"

# send PORT RECIPIENT EXPECTED-REPLY-PREFIX
send() {
  local port=$1 to=$2 expected=$3 out
  out=$(swaks --server "127.0.0.1:$port" --helo client.example.test \
    --from sender@example.test --to "$to" --timeout 10 2>&1 || true)
  if grep -q "^<[-~*]* *$expected" <<<"$out"; then
    pass "port $port to $to: $expected"
  else
    fail "port $port to $to: expected a reply starting $expected"; echo "$out" | sed 's/^/    /'
  fi
}

# The farm's state is farm-wide and its clock is real time here, so the order below
# matters (see scenarios/aol.toml): nothing waits out mx1's 5 minutes or mx2's hour.
send 2527 alice@aol.test "250 2.0.0 Ok: queued"          # mx3 accepts
send 2526 alice@aol.test "421 4.7.0 \[TSS04\] Messages from 127.0.0.1" # mx2: IP first seen < 1h ago
send 2525 bob@aol.test "451 Message temporarily deferred" # mx1: new triplet, greylisted
send 2525 bob@aol.test "451 Message temporarily deferred" # early retry, still greylisted
send 2527 full-bob@aol.test "452 4.2.2"                  # over quota for 6 hours
send 2527 gone@aol.test "550 5.1.1"                      # unknown user, permanent
send 2527 carol@aol.test "250 2.0.0 Ok: queued"          # mx3 still accepts

kill -TERM "$farm_pid"
wait "$farm_pid" && pass "farm stopped cleanly on SIGTERM" || fail "farm exit status $?"

accepted=$(grep -c '"event":"message-accepted"' "$work/journal.jsonl" || true)
if [ "$accepted" = 2 ]; then pass "journal holds the 2 accepted messages"; else fail "journal has $accepted accepted messages, expected 2"; fi
# The journal reads back as transcripts and a report.
if "$bin" transcript "$work/journal.jsonl" >"$work/transcript.txt" 2>&1 \
   && grep -q 'delivery <sender@example.test> -> <full-bob@aol.test>' "$work/transcript.txt"; then
  pass "mxfarm transcript reads the journal"
else
  fail "mxfarm transcript"; cat "$work/transcript.txt"
fi
set +e
"$bin" report "$work/journal.jsonl" >"$work/report.txt" 2>&1
report_status=$?
set -e
if [ "$report_status" -ne 1 ] && grep -q '^retry report:' "$work/report.txt"; then
  pass "mxfarm report reads the journal (exit $report_status)"
else
  fail "mxfarm report (exit $report_status)"; cat "$work/report.txt"
fi
if grep -q 'accepted as message' "$work/stderr"; then pass "one log line per transaction"; else fail "no transaction log lines"; cat "$work/stderr"; fi

echo
echo "e2e: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
