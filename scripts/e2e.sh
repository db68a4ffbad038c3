#!/usr/bin/env bash
# End-to-end: the mxfarm binary on its embedded default scenario (aol), driven by swaks,
# a real SMTP client, exactly as the README's tour does it (installing swaks if it is
# missing); then the farm's DNS server (`run --dns`) asked by dig, which .ci/run installs
# (Debian's dnsutils).
set -euo pipefail
cd "$(dirname "$0")/.."

# swaks speaks STARTTLS through Net::SSLeay, only a Recommends of the package.
if ! command -v swaks >/dev/null 2>&1 || ! perl -MNet::SSLeay -e 1 2>/dev/null; then
  echo "installing swaks and Net::SSLeay"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks libnet-ssleay-perl >/dev/null
fi

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/mxfarm"
work=$(mktemp -d)
farm_pid=
dns_pids=()
trap 'kill "$farm_pid" "${dns_pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

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

# ------------------------------------------------------------------ the farm's DNS, asked by dig
# `mxfarm run --dns` on tests/e2e/dns.toml, asked by dig (dnsutils, which .ci/run installs):
# every record type, null MX, the negative answers, each fault, and `mxfarm dns` against
# what dig gets. A second farm plays the same zones with outside-zones = "refused".
dns_port=2553
refused_port=2554
start_dns_farm() { # start_dns_farm SCENARIO PORT NAME
  "$bin" run "$1" --dns "127.0.0.1:$2" --journal "$work/$3.jsonl" >"$work/$3.out" 2>"$work/$3.err" &
  dns_pids+=($!)
  for _ in $(seq 100); do grep -q '^Ready\.' "$work/$3.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^Ready\.' "$work/$3.out" || { cat "$work/$3.out" "$work/$3.err"; fail "farm $3 with --dns did not start"; return 1; }
}
# ask [dig options...]: dig at the farm's DNS server (never the machine's resolver).
ask() { dig @127.0.0.1 -p "$dns_port" "$@" 2>&1 || true; }
# dig_is WHAT EXPECTED [dig options...]: what dig prints is exactly EXPECTED.
dig_is() {
  local what=$1 expected=$2 out; shift 2
  out=$(ask "$@")
  if [ "$out" = "$expected" ]; then pass "dig $what"; else fail "dig $what: expected $(printf %q "$expected")"; echo "$out" | sed 's/^/    /'; fi
}
# dig_has WHAT REGEX [dig options...]: dig's full output has a line matching REGEX.
dig_has() {
  local what=$1 regex=$2 out; shift 2
  out=$(ask "$@")
  if grep -Eq -- "$regex" <<<"$out"; then pass "dig $what"; else fail "dig $what: no line /$regex/"; echo "$out" | sed 's/^/    /'; fi
}
status() { sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }

if ! command -v dig >/dev/null 2>&1; then
  fail "dig is not installed (Debian's dnsutils; .ci/run installs it)"
elif "$bin" dns tests/e2e/dns.toml >"$work/zone.txt" 2>"$work/zone.err" \
     && start_dns_farm tests/e2e/dns.toml "$dns_port" dns; then
  pass "mxfarm dns tests/e2e/dns.toml prints its zone; the farm serves it on 127.0.0.1:$dns_port"
  dig_is "MX with preferences (+short)" $'5 mx1.aol.test.\n10 mx2.aol.test.\n20 mx6.aol.test.' +short aol.test MX
  dig_is "A of a host" 192.0.2.1 +short mx1.aol.test A
  dig_is "AAAA of a host" 2001:db8::6 +short mx6.aol.test AAAA
  dig_is "PTR of a host (-x)" mx1.aol.test. +short -x 192.0.2.1
  dig_is "PTR from [reverse-dns] (-x)" mail.sender.test. +short -x 192.0.2.77
  dig_is "PTR of an IPv6 host (-x)" mx6.aol.test. +short -x 2001:db8::6
  dig_is "TXT of a domain (SPF)" '"v=spf1 ip4:192.0.2.0/24 -all"' +short aol.test TXT
  spf="v=spf1$(for i in $(seq 18); do printf ' ip4:192.0.2.%s' "$i"; done) -all"
  dig_is "TXT over 255 bytes comes as two strings, 255 bytes and the rest" "\"${spf:0:255}\" \"${spf:255}\"" +short sender.test TXT
  dig_is "CNAME, followed by its target's A" $'mail.sender.test.\n192.0.2.77' +short www.sender.test A
  dig_is "CNAME asked for itself" mail.sender.test. +short www.sender.test CNAME
  dig_is "null MX (RFC 7505)" '0 .' +short nomail.test MX
  [ "$(ask nope.aol.test A | status)" = NXDOMAIN ] && pass "dig NXDOMAIN status for a name inside a zone" \
    || fail "dig NXDOMAIN status for nope.aol.test"
  dig_has "NXDOMAIN inside a zone carries the zone's SOA" '^aol\.test\.[[:space:]]+60[[:space:]]+IN[[:space:]]+SOA[[:space:]]' +noall +authority nope.aol.test A
  [ "$(ask www.example.com A | status)" = NXDOMAIN ] && pass "dig NXDOMAIN status for a name outside the zones (the default)" \
    || fail "dig NXDOMAIN status for www.example.com"
  dig_has "NODATA: NOERROR and ANSWER: 0 for a type the name lacks" 'status: NOERROR' mx1.aol.test TXT
  dig_has "NODATA: no answer, the zone's SOA in authority" '^;; flags: qr aa[a-z ]*; QUERY: 1, ANSWER: 0, AUTHORITY: 1,' mx1.aol.test TXT
  [ "$(ask servfail.aol.test A | status)" = SERVFAIL ] && pass "dig SERVFAIL status from a rule" || fail "dig SERVFAIL from a rule"
  [ "$(ask gone.aol.test A | status)" = NXDOMAIN ] && pass "dig NXDOMAIN status from a rule" || fail "dig NXDOMAIN from a rule"
  [ "$(ask refused.aol.test A | status)" = REFUSED ] && pass "dig REFUSED status from a rule" || fail "dig REFUSED from a rule"
  dig_has "an empty answer from a rule: NOERROR, ANSWER: 0, although the zone has the A" 'ANSWER: 0,' mx2.aol.test A
  dig_has "a dropped query times out (+time=1 +tries=1)" 'timed out' +time=1 +tries=1 silent.aol.test A
  dig_has "a truncated UDP answer has the tc flag (+notcp +ignore)" '^;; flags: qr[a-z ]* tc[ ;]' +notcp +ignore big.sender.test A
  dig_has "plain dig retries a truncated answer over TCP" '^;; Truncated, retrying in TCP mode\.' big.sender.test A
  dig_has "... and gets the records over TCP" '^;; SERVER: 127\.0\.0\.1#[0-9]+\(127\.0\.0\.1\) \(TCP\)' big.sender.test A
  dig_is "+tcp gets the records at once" $'192.0.2.91\n192.0.2.92' +tcp +short big.sender.test A
  dig_has "a UDP answer fits the buffer dig advertises (+bufsize=512 +ignore): cut, with tc" \
    '^;; flags: qr[a-z ]* tc[ ;]' +bufsize=512 +ignore many.sender.test A
  size=$(ask +bufsize=512 +ignore many.sender.test A | sed -n 's/^;; MSG SIZE  rcvd: //p')
  [ -n "$size" ] && [ "$size" -le 512 ] && pass "dig: that answer is $size bytes, at most 512" || fail "dig: a $size-byte answer for a 512-byte buffer"
  [ "$(ask +short many.sender.test A | wc -l)" = 40 ] && pass "dig gets all 40 A records of a large answer (EDNS 1232, else TCP)" \
    || fail "dig: not the 40 A records of many.sender.test"
  [ "$(ask version.bind CH TXT | status)" = REFUSED ] && pass "dig REFUSED for another class (CHAOS version.bind)" || fail "dig: no REFUSED for version.bind CH TXT"
  # Refused at once: no record comes (a NODATA with the SOA would start a transfer).
  dig_is "a zone transfer (AXFR) is refused: no record" '; Transfer failed.' +noall +answer aol.test AXFR
  # `mxfarm dns` prints what dig gets: every (name, type) of the zone text, asked once,
  # gives exactly its lines (whitespace aside). mx2.aol.test A is left out: rule 6
  # empties it, which the zone text (the data, not the faults) does not show.
  grep -v -e '^;' -e '^\$TTL' -e '^$' "$work/zone.txt" | awk '{$1=$1} 1' | grep -v '^mx2\.aol\.test\. 60 IN A ' | sort >"$work/zone.lines"
  awk '{print $1, $4}' "$work/zone.lines" | sort -u | while read -r name type; do
    ask +noall +answer "$name" "$type"
  done | grep -v '^;' | awk '{$1=$1} 1' | sort >"$work/dig.lines"
  if [ -s "$work/zone.lines" ] && cmp -s "$work/zone.lines" "$work/dig.lines"; then
    pass "mxfarm dns prints the same $(wc -l <"$work/zone.lines") records dig gets"
  else
    fail "mxfarm dns and dig differ (< mxfarm dns, > dig)"; diff "$work/zone.lines" "$work/dig.lines" | sed 's/^/    /'
  fi
  # outside-zones = "refused": the same zones, REFUSED outside them.
  sed 's/^\[dns\]$/[dns]\noutside-zones = "refused"/' tests/e2e/dns.toml >"$work/dns-refused.toml"
  if start_dns_farm "$work/dns-refused.toml" "$refused_port" dns-refused; then
    [ "$(dig @127.0.0.1 -p "$refused_port" www.example.com A 2>&1 | status)" = REFUSED ] \
      && pass "dig REFUSED outside the zones with outside-zones = \"refused\"" || fail "dig: no REFUSED outside the zones"
    [ "$(dig @127.0.0.1 -p "$refused_port" +short aol.test MX | head -1)" = "5 mx1.aol.test." ] \
      && pass "dig: the zones are still answered with outside-zones = \"refused\"" || fail "dig: zones not answered with outside-zones = refused"
  fi
  for pid in "${dns_pids[@]}"; do kill -TERM "$pid"; wait "$pid" || fail "a farm with --dns exited with $?"; done
  dns_pids=()
  # The journal names each query's transport and answer.
  if python3 - "$work/dns.jsonl" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
dns = [e for e in events if e.get("event") == "dns-query"]
def seen(name, transport, answer):
    return any(e["name"] == name and e["transport"] == transport and e["answer"] == answer for e in dns)
ok = (seen("big.sender.test", "udp", "truncated") and seen("big.sender.test", "tcp", "records")
      and seen("silent.aol.test", "udp", "dropped") and seen("servfail.aol.test", "udp", "servfail")
      and seen("www.example.com", "udp", "nxdomain") and seen("mx1.aol.test", "udp", "nodata")
      and seen("aol.test", "tcp", "refused") and seen("version.bind", "udp", "refused")
      and all(e["client"].startswith("127.0.0.1:") for e in dns))
sys.exit(0 if ok else 1)
PY
  then pass "the journal holds each dig query: truncated over UDP then records over TCP, dropped, servfail, nxdomain, nodata, refused"
  else fail "the journal's dns-query events"; grep '"dns-query"' "$work/dns.jsonl" | sed 's/^/    /'; fi
else
  fail "mxfarm dns or run --dns on tests/e2e/dns.toml"; cat "$work/zone.err"
fi

echo
echo "e2e: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
