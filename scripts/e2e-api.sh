#!/usr/bin/env bash
# End-to-end: the control API of the mxfarm binary (`run --api`), as a shell CI uses it.
# swaks is the sender, curl and `mxfarm ctl` the API's clients: a greylisted delivery
# passes after `mxfarm ctl advance` without waiting, `ctl transcript --check` passes and
# fails like `mxfarm transcript --check`, the event stream resumes with Last-Event-ID,
# changes need the token. Then schemathesis (PyPI, in a venv under target/) fuzzes every
# operation of the OpenAPI document the farm serves: no 5xx, responses match their
# schemas. Loopback only; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in swaks curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks curl python3 python3-venv >/dev/null
    break
  fi
done

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/mxfarm"
work=$(mktemp -d)
farm_pid=
trap 'kill "$farm_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

failures=0
passes=0
pass() { echo "ok   $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

api_port=18925 mx1_port=2725 mx2_port=2726
api="http://127.0.0.1:$api_port"
token=e2e-token
export MXFARM_API="$api" MXFARM_API_TOKEN="$token"

"$bin" run greylist --bind "mx1=127.0.0.1:$mx1_port" --bind "mx2=127.0.0.1:$mx2_port" \
  --api "127.0.0.1:$api_port" --api-token "$token" --journal "$work/journal.jsonl" \
  >"$work/stdout" 2>"$work/stderr" &
farm_pid=$!
for _ in $(seq 100); do
  grep -q '^Ready\.' "$work/stdout" 2>/dev/null && break
  sleep 0.1
done
grep -q '^Ready\.' "$work/stdout" || { cat "$work/stdout" "$work/stderr"; echo "FAIL farm did not start"; exit 1; }
if grep -q "^  api  127.0.0.1:$api_port" "$work/stdout"; then pass "the summary names the API"; else fail "no API line in the summary"; cat "$work/stdout"; fi

deliver() { # deliver RECIPIENT: the code of the last reply before QUIT
  { swaks --server "127.0.0.1:$mx1_port" --from alice@sender.test --to "$1" \
    --header "Message-Id: <$1.e2e@sender.test>" 2>&1 || true; } | sed -n 's/^<[-*]* *\([0-9][0-9][0-9]\) .*/\1/p' | grep -v '^221$' | tail -1
}

# Greylisted, then through after the farm's clock moved: no five-minute wait.
code=$(deliver bob@greylist.test)
if [ "$code" = 450 ]; then pass "swaks is greylisted"; else fail "swaks got $code, not 450"; fi
if curl -fsS "$api/api/v1/greylist" | grep -q '"recipient":"bob@greylist.test"'; then pass "GET /greylist shows the triplet"; else fail "GET /greylist"; fi
if "$bin" ctl advance 6m | grep -q '^advanced by 6m'; then pass "mxfarm ctl advance 6m"; else fail "mxfarm ctl advance"; fi
code=$(deliver bob@greylist.test)
if [ "$code" = 250 ]; then pass "the retry passes after the advance"; else fail "the retry got $code"; fi

# Changes need the token; reads do not.
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/api/v1/reset")
if [ "$status" = 401 ]; then pass "a change without the token gets 401"; else fail "a change without the token got $status"; fi
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'X-Mxfarm-Token: guess' "$api/api/v1/clock/advance" -d '{"by":"1m"}')
if [ "$status" = 401 ]; then pass "a wrong token gets 401"; else fail "a wrong token got $status"; fi
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: attacker.test' "$api/api/v1/messages")
if [ "$status" = 403 ]; then pass "a foreign Host header gets 403"; else fail "a foreign Host got $status"; fi
if curl -fsS "$api/readyz" | grep -q '"ready":true'; then pass "GET /readyz"; else fail "GET /readyz"; fi
if curl -fsS "$api/metrics" | grep -q '^mxfarm_messages_accepted_total{host="mx1"} 1$'; then pass "GET /metrics counts the message"; else fail "GET /metrics"; curl -s "$api/metrics" | head -20; fi

# The golden file, from the running farm, and the same check on the journal file.
"$bin" ctl transcript --granularity minutes >"$work/expected.txt"
if grep -q 'farm clock advanced by 6m' "$work/expected.txt"; then pass "the transcript shows the clock jump"; else fail "no clock jump in the transcript"; cat "$work/expected.txt"; fi
if "$bin" ctl transcript --granularity minutes --check "$work/expected.txt" >/dev/null 2>&1 \
  && "$bin" transcript "$work/journal.jsonl" --granularity minutes --check "$work/expected.txt" >/dev/null 2>&1; then
  pass "ctl transcript --check and transcript --check pass"
else
  fail "a --check of the right transcript failed"
fi
sed -i 's/+6m /+9m /' "$work/expected.txt"
set +e
"$bin" ctl transcript --granularity minutes --check "$work/expected.txt" >/dev/null 2>"$work/ctl.err"; ctl_code=$?
"$bin" transcript "$work/journal.jsonl" --granularity minutes --check "$work/expected.txt" >/dev/null 2>"$work/file.err"; file_code=$?
set -e
if [ "$ctl_code" = 1 ] && [ "$file_code" = 1 ] && grep -q '^-  #2  +9m' "$work/ctl.err" && grep -q '^-  #2  +9m' "$work/file.err"; then
  pass "both --checks fail with the same diff on a changed sender"
else
  fail "ctl $ctl_code / file $file_code on a changed transcript"; cat "$work/ctl.err" "$work/file.err"
fi

# The event stream: read a few, then resume after the last id without a gap.
curl -sN --max-time 2 "$api/api/v1/events" >"$work/sse1" || true
last=$(sed -n 's/^id: //p' "$work/sse1" | sed -n 5p)
deliver carol@greylist.test >/dev/null
curl -sN --max-time 2 -H "Last-Event-ID: $last" "$api/api/v1/events" >"$work/sse2" || true
first=$(sed -n 's/^id: //p' "$work/sse2" | head -1)
if [ -n "$last" ] && [ "$first" = $((last + 1)) ]; then pass "the stream resumes after Last-Event-ID $last"; else fail "resumed at ${first:-nothing} after ${last:-nothing}"; fi
seen=$(sed -n 's/^id: //p' "$work/sse2" | tail -1)
lines=$(wc -l <"$work/journal.jsonl")
if [ "$seen" = "$lines" ]; then pass "the stream reached the journal's last event ($lines)"; else fail "stream at $seen, journal has $lines"; fi

# A scenario replaced over HTTP keeps the greylist's state; a broken one is refused whole.
if "$bin" ctl scenario greylist | grep -q '^now playing "greylist" (state kept): kept mx1, mx2;'; then pass "ctl scenario keeps both listeners"; else fail "ctl scenario"; fi
printf 'name = "broken"\n[[host]]\nname = "mx1"\nlisten = "127.0.0.1:0"\nmax-connectoins = 5\n' >"$work/broken.toml"
if ! "$bin" ctl scenario "$work/broken.toml" 2>"$work/broken.err" && grep -q -- '--> scenario:5:1' "$work/broken.err"; then
  pass "a broken scenario is refused with its line and column"
else
  fail "a broken scenario"; cat "$work/broken.err"
fi

# Schemathesis over the document the farm serves. /events is left out: a stream ends only
# with the farm, and schemathesis reads a whole body. Schema-valid requests that the farm
# refuses on purpose (a reset of nothing, an empty scenario, more than a year at once)
# are expected, so that check is off; every other check is on.
venv="${CARGO_TARGET_DIR:-target}/e2e-venv"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
if timeout 900 "$venv/bin/st" run "$api/api/v1/openapi.json" -H "X-Mxfarm-Token: $token" \
  --exclude-path /api/v1/events --exclude-checks positive_data_acceptance \
  --request-timeout 10 --max-examples 50 --seed 1 >"$work/st.out" 2>&1; then
  pass "schemathesis: $(grep -E '[0-9]+ generated' "$work/st.out" | tr -s ' ' | sed 's/^ //')"
else
  fail "schemathesis"; tail -80 "$work/st.out"
fi
if kill -0 "$farm_pid" 2>/dev/null; then pass "the farm still runs after the fuzzing"; else fail "the farm died"; cat "$work/stderr"; fi

kill -TERM "$farm_pid"; wait "$farm_pid" || true; farm_pid=
echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
