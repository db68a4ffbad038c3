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
farm_pid=
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

# The CA to install once (`mxfarm ca`): its key is its owner's alone, a second run leaves
# it alone, and its name constraints make OpenSSL refuse what its key signs for a real
# name while it accepts the farm's names.
ca="$work/farm-ca"
"$bin" ca "$ca" >/dev/null
if [ "$(stat -c %a "$ca/ca-key.pem")" = 600 ]; then pass "mxfarm ca: the key is 0600"; else fail "mxfarm ca: the key is $(stat -c %a "$ca/ca-key.pem")"; fi
cp "$ca/ca-key.pem" "$work/key-before"
if "$bin" ca "$ca" >/dev/null 2>"$work/ca-again.err"; then
  fail "mxfarm ca replaced an existing CA"
elif grep -q -- '--force' "$work/ca-again.err" && cmp -s "$ca/ca-key.pem" "$work/key-before"; then
  pass "mxfarm ca keeps an existing CA and says how to replace it"
else
  fail "mxfarm ca on an existing CA"; cat "$work/ca-again.err"
fi
# mint NAME...: a certificate for NAME... signed with the CA's key, as anyone holding it could.
mint() {
  local out=$1; shift
  local sans; sans=$(printf 'DNS:%s,' "$@"); sans=${sans%,}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/$out.key" \
    -subj "/CN=$1" -addext "subjectAltName=$sans" -out "$work/$out.csr" 2>/dev/null
  openssl x509 -req -in "$work/$out.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca-key.pem" \
    -copy_extensions copy -days 1 -out "$work/$out.pem" 2>/dev/null
}
mint farm mx1.aol.test
mint real www.google.com
verified=$(openssl verify -CAfile "$ca/ca.pem" "$work/farm.pem" 2>&1 || true)
if grep -q ': OK$' <<<"$verified"; then
  pass "openssl accepts what the CA signs for mx1.aol.test"
else
  fail "openssl refuses what the CA signs for mx1.aol.test"; echo "$verified"
fi
verified=$(openssl verify -CAfile "$ca/ca.pem" "$work/real.pem" 2>&1 || true)
if grep -q 'permitted subtree violation' <<<"$verified"; then
  pass "openssl refuses what the CA's key signs for www.google.com"
else
  fail "openssl does not refuse www.google.com signed by the CA"; echo "$verified"
fi

"$bin" run --ca "$ca" --journal "$work/journal.jsonl" >"$work/stdout" 2>"$work/stderr" &
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

# Over STARTTLS, verifying the host's certificate against the CA.
out=$(swaks --server 127.0.0.1:2527 --helo client.example.test --from sender@example.test \
  --to dave@aol.test --tls --tls-verify --tls-ca-path "$ca/ca.pem" --timeout 10 2>&1 || true)
if grep -q '^=== TLS started' <<<"$out" && grep -q '^<~ *250 2.0.0 Ok: queued' <<<"$out"; then
  pass "swaks over STARTTLS verifies the host against the CA"
else
  fail "swaks over STARTTLS with the CA"; echo "$out" | sed 's/^/    /'
fi

kill -TERM "$farm_pid"
wait "$farm_pid" && pass "farm stopped cleanly on SIGTERM" || fail "farm exit status $?"

accepted=$(grep -c '"event":"message-accepted"' "$work/journal.jsonl" || true)
if [ "$accepted" = 3 ]; then pass "journal holds the 3 accepted messages"; else fail "journal has $accepted accepted messages, expected 3"; fi
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
