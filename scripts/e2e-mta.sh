#!/usr/bin/env bash
# End-to-end with real mail servers as the senders: Debian's Postfix 3.7, then Debian's
# Exim 4.96 (exim4-daemon-light), unmodified, each delivering to three farms that play
# tests/e2e/{aol,greylist,lossy}-fast.toml (the shipped scenarios with seconds for hours).
# Each MTA's own log is then checked against the farms' journals by
# scripts/e2e-mta-check.py: what the MTA sent was accepted once, a bounced address was
# refused with a 5xx and never offered again, and every attempt the MTA logged for a
# recipient is one RCPT in the journal. Then each MTA delivers to a farm that it finds
# through the farm's own DNS server alone (tests/e2e/dns-mta.toml; see test_mta_dns),
# checked by scripts/e2e-mta-dns-check.py. And each MTA is checked against its model in
# mxfarm simulate (tests/e2e/model-check.toml, scripts/e2e-mta-model-check.py): the same
# settings and messages in virtual time give the same tries, hosts and outcomes.
#
# It installs and purges packages (the two MTAs conflict as Debian packages), so it runs
# only as root on a machine meant for it: with CI=true, or MXFARM_E2E_MTA=1 to run it by
# hand. MXFARM_E2E_KEEP=1 keeps its work directory. The transcripts are checked against
# the MTAs' logs too (the same attempts per message, the same outcome), and the report
# must find no PROBLEM in a correctly configured MTA; then scripts/e2e-bad-sender.py, a
# sender that retries a 550 and never tries another MX, must get exactly those PROBLEMs.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly FIXTURES=tests/e2e
readonly SCENARIOS=(aol-fast greylist-fast lossy-fast)
readonly QUEUE_WAIT=150 # seconds; longer than the MTAs' 2-minute queue lifetime below
readonly MTA_TIMEOUT=5s # the MTAs' wait for the reply to the final dot: lossy-fast is silent for 12s

if [ "$(id -u)" != 0 ]; then echo "e2e-mta: needs root (it installs Postfix and Exim)"; exit 2; fi
if [ "${CI:-}" != true ] && [ "${MXFARM_E2E_MTA:-}" != 1 ]; then
  echo "e2e-mta: installs and purges Postfix and Exim; run it with CI=true or MXFARM_E2E_MTA=1"
  exit 2
fi

failures=0
passes=0
pass() { echo "ok   $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
step() { printf '\n=== %s ===\n' "$*"; }

# The work directory is under /var: Postfix writes its maillog_file only under
# maillog_file_prefixes, /var by default. Exim's delivery processes run as Debian-exim
# and must reach their log directory inside it.
work=$(mktemp -d /var/tmp/mxfarm-e2e-mta.XXXXXX)
chmod 755 "$work"
bin="${CARGO_TARGET_DIR:-target}/debug/mxfarm"
declare -A farm_pid=()
created_policy_rc=
installed_mta=

# ------------------------------------------------------------------ packages

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -y -qq "$@" >>"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; return 1; }; }

# dpkg starts a package's daemon after installing it. With policy-rc.d answering 101,
# invoke-rc.d (and deb-systemd-invoke) start nothing: this script starts what it uses.
block_daemon_starts() {
  [ -e /usr/sbin/policy-rc.d ] && return
  printf '#!/bin/sh\n# scripts/e2e-mta.sh: packages start no daemon\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy_rc=1
}

purge_mtas() {
  local packages
  mapfile -t packages < <(dpkg-query -W -f '${Package} ${Status}\n' postfix 'exim4*' 2>/dev/null \
    | awk '/ (installed|config-files)$/ {print $1}')
  [ "${#packages[@]}" = 0 ] || apt_get purge "${packages[@]}"
  rm -rf /etc/exim4 /var/spool/exim4 /var/log/exim4 /etc/postfix /var/spool/postfix /var/lib/postfix
  installed_mta=
}

install_postfix() {
  # "No configuration": the package writes no main.cf; configure_postfix writes one.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt_get install --no-install-recommends postfix
  installed_mta=postfix
}

install_exim() {
  # "no configuration at this time": no Debian-generated config; configure_exim writes one.
  echo "exim4-config exim4/dc_eximconfig_configtype select no configuration at this time" | debconf-set-selections
  apt_get install --no-install-recommends exim4-daemon-light
  installed_mta=exim
}

# ------------------------------------------------------------------ the farms

# The ports of a fixture's hosts, in the order of its [[host]] tables (its MX order).
ports_of() { grep -o '^listen = "127\.0\.0\.1:[0-9]*"' "$FIXTURES/$1.toml" | grep -o '[0-9]*"$' | tr -d '"' | tr '\n' ' '; }

start_farms() {
  local run=$1 name
  for name in "${SCENARIOS[@]}"; do
    "$bin" run "$FIXTURES/$name.toml" --journal "$run/$name.jsonl" >"$run/$name.out" 2>"$run/$name.err" &
    farm_pid[$name]=$!
  done
  for name in "${SCENARIOS[@]}"; do
    for _ in $(seq 100); do
      grep -q '^Ready\.' "$run/$name.out" 2>/dev/null && break
      kill -0 "${farm_pid[$name]}" 2>/dev/null || break
      sleep 0.1
    done
    if grep -q '^Ready\.' "$run/$name.out"; then
      pass "farm $name ready"
    else
      fail "farm $name did not start"; cat "$run/$name.out" "$run/$name.err"; return 1
    fi
  done
}

# A farm's journal is complete once every connection in it is closed. A lost reply
# (late-*) keeps the farm busy for seconds after the MTA gave up and retried.
wait_farms_idle() {
  local run=$1 name opened closed
  for name in "${SCENARIOS[@]}"; do
    for _ in $(seq 300); do
      opened=$(grep -c '"event":"connection-opened"' "$run/$name.jsonl" || true)
      closed=$(grep -c '"event":"connection-closed"' "$run/$name.jsonl" || true)
      [ "$opened" = "$closed" ] && break
      sleep 0.1
    done
    [ "$opened" = "$closed" ] || fail "farm $name: $((opened - closed)) connection(s) still open after 30s"
  done
}

stop_farms() {
  local name status
  for name in "${!farm_pid[@]}"; do
    kill -TERM "${farm_pid[$name]}" 2>/dev/null || true
    status=0
    wait "${farm_pid[$name]}" || status=$?
    if [ "$status" = 0 ]; then pass "farm $name stopped cleanly on SIGTERM"; else fail "farm $name exit status $status"; fi
    unset "farm_pid[$name]"
  done
}

# ------------------------------------------------------------------ Postfix

configure_postfix() {
  local run=$1 aol grey lossy
  read -r -a aol <<<"$(ports_of aol-fast)"
  read -r -a grey <<<"$(ports_of greylist-fast)"
  read -r -a lossy <<<"$(ports_of lossy-fast)"
  cat >/etc/postfix/main.cf <<EOF
# Written by mxfarm's scripts/e2e-mta.sh: Postfix as a sender to the farm, nothing more.
compatibility_level = 3.6
# The EHLO name and the domain of Postfix's own mail (bounces), in .test.
myhostname = sender.mxfarm-e2e.test
myorigin = \$myhostname
# Nothing is delivered here, and there is no relay host: every address goes out by
# transport_maps, which stands in for the farm's missing DNS.
mydestination =
relayhost =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
transport_maps = texthash:/etc/postfix/transport
# No syslog needed (Postfix 3.4+): postlogd writes this file.
maillog_file = $run/postfix.log
# The farm offers STARTTLS with a CA of its own: encrypt, don't verify. Log level 1
# names the port of each TLS session, the only place Postfix logs the port of a host
# that was not the last one it tried.
smtp_tls_security_level = may
smtp_tls_loglevel = 1
# The wait for the reply to the final dot (default 600s): shorter than lossy-fast's
# 12-second silences, so that Postfix's own timeout fires first.
smtp_data_done_timeout = $MTA_TIMEOUT
# Retries in seconds, as the fixtures play minutes and hours in seconds. The default
# minimal backoff (300s) equals postgrey's 5 minutes; here both are 5s.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
# Give up (and bounce) after 2 minutes, so that the suite ends whatever the farm does.
maximal_queue_lifetime = 2m
bounce_queue_lifetime = 2m
EOF
  # A list of next hops in one entry (Postfix 3.5+) is tried in order within one delivery,
  # as MX hosts are: Postfix's own failover runs. A 4xx from any host but the last keeps
  # the recipient for the next one. (smtp_fallback_relay would do it too, but it is one
  # list for every destination.) Bounces to our senders are discarded.
  cat >/etc/postfix/transport <<EOF
aol.test       smtp:[127.0.0.1]:${aol[0]}, [127.0.0.1]:${aol[1]}, [127.0.0.1]:${aol[2]}
greylist.test  smtp:[127.0.0.1]:${grey[0]}, [127.0.0.1]:${grey[1]}
lossy.test     smtp:[127.0.0.1]:${lossy[0]}
sender.test    discard:
EOF
  # Debian's master.cf chroots the daemons into /var/spool/postfix, which only Debian's
  # init script fills with what they need; `postfix start` here runs them unchrooted.
  postconf -F '*/*/chroot = n'
  # No SMTP server: mail comes in by sendmail only, and nothing listens on port 25.
  postconf -MX smtp/inet
  postfix check
}

start_postfix() { postfix start >"$work/postfix-start.log" 2>&1 || { cat "$work/postfix-start.log"; return 1; }; }
stop_postfix() { postfix stop >/dev/null 2>&1 || true; }
postfix_send() { local from=$1; shift; /usr/sbin/sendmail -i -f "$from" -- "$@"; }
postfix_queue_empty() { postqueue -p 2>/dev/null | grep -q '^Mail queue is empty'; }
postfix_show_queue() { postqueue -p || true; }

# ------------------------------------------------------------------ Exim

configure_exim() {
  local run=$1 aol grey lossy
  read -r -a aol <<<"$(ports_of aol-fast)"
  read -r -a grey <<<"$(ports_of greylist-fast)"
  read -r -a lossy <<<"$(ports_of lossy-fast)"
  mkdir -p "$run/exim"
  chown Debian-exim:Debian-exim "$run/exim" # deliveries run as Debian-exim and log too
  # Debian's exim4 reads /etc/exim4/exim4.conf, when it exists, before its generated file.
  cat >/etc/exim4/exim4.conf <<EOF
# Written by mxfarm's scripts/e2e-mta.sh: Exim as a sender to the farm, nothing more.
primary_hostname = sender.mxfarm-e2e.test
qualify_domain = mxfarm-e2e.test
log_file_path = $run/exim/%slog
# The port of each host (H=... [ip]:port), times to the millisecond, and the recipients
# of each message on its arrival line.
log_selector = +outgoing_port +millisec +received_recipients
# Exim warns at every start if this is unset.
keep_environment =
# No SMTP server here (no -bd), so nothing to advertise STARTTLS for.
tls_advertise_hosts =

begin routers

# Bounces to our senders are discarded.
discard_bounces:
  driver = redirect
  domains = sender.test
  data = :blackhole:

# The farm has no DNS yet: each domain's MX hosts, in order, with their ports
# (host::port, the colon doubled in a colon-separated list). Exim tries them in this
# order (hosts_randomize is off). self = send: the hosts are on 127.0.0.1, one of this
# machine's own addresses, and by default Exim freezes such a message ("remote host
# address is the local host").
farm:
  driver = manualroute
  route_list = aol.test "127.0.0.1::${aol[0]} : 127.0.0.1::${aol[1]} : 127.0.0.1::${aol[2]}" ; \\
               greylist.test "127.0.0.1::${grey[0]} : 127.0.0.1::${grey[1]}" ; \\
               lossy.test "127.0.0.1::${lossy[0]}"
  self = send
  transport = farm_smtp

begin transports

farm_smtp:
  driver = smtp
  # The wait for the reply to the final dot (default 10m): shorter than lossy-fast's
  # 12-second silences, so that Exim's own timeout fires first.
  final_timeout = $MTA_TIMEOUT

begin retry

# Every 5 seconds for 2 minutes, then bounce: the fixtures play hours in seconds.
*  *  F,2m,5s
EOF
  exim -bV >/dev/null
}

# A daemon that only runs the queue, every 5 seconds (no -bd: it listens on no port).
start_exim() { exim -q5s -oP "$work/exim.pid"; }
stop_exim() { [ -s "$work/exim.pid" ] && kill -TERM "$(cat "$work/exim.pid")" 2>/dev/null; rm -f "$work/exim.pid"; }
# -odi: the first delivery attempt runs before exim returns.
# In the DNS phase the delivery looks the MX up: it runs in the MTA's namespace.
exim_send() {
  local from=$1; shift
  if [ -n "$dns_ns_pid" ]; then
    nsenter --mount="/proc/$dns_ns_pid/ns/mnt" -- exim -odi -i -f "$from" -- "$@"
  else
    exim -odi -i -f "$from" -- "$@"
  fi
}
exim_queue_empty() { [ "$(exim -bpc 2>/dev/null)" = 0 ]; }
exim_show_queue() { exim -bp || true; }

# ------------------------------------------------------------------ the messages

# send_message MTA RUN SCENARIO TAG SENDER RECIPIENT...: one message with a Message-ID
# of its own, recorded in the manifest that e2e-mta-check.py reads.
send_message() {
  local mta=$1 run=$2 scenario=$3 tag=$4 from=$5 mid
  shift 5
  mid="$tag.$mta@e2e.mxfarm.test"
  printf '%s\t%s\t%s\t%s\n' "$scenario" "$mid" "$from" "$(IFS=,; echo "$*")" >>"$run/manifest.tsv"
  printf 'From: <%s>\nTo: %s\nSubject: e2e %s\nMessage-ID: <%s>\nDate: %s\n\nA test message from scripts/e2e-mta.sh.\n' \
    "$from" "$(IFS=,; echo "$*")" "$tag" "$mid" "$(date -R)" | "${mta}_send" "$from" "$@"
}

# Each message has an envelope sender of its own (letters only: the greylist folds
# digits), so that the journal's MAIL FROM names the message, except the two to carol@,
# which share one, as a sender's mail to one correspondent does.
send_messages() {
  local mta=$1 run=$2
  send_message "$mta" "$run" aol-fast alice alice@sender.test alice@aol.test
  send_message "$mta" "$run" aol-fast bob bob@sender.test bob@aol.test
  send_message "$mta" "$run" aol-fast full full@sender.test full-ann@aol.test   # 452 for 20s
  send_message "$mta" "$run" aol-fast gone gone@sender.test gone@aol.test       # 550: bounced
  send_message "$mta" "$run" aol-fast carol-first pair@sender.test carol@aol.test
  send_message "$mta" "$run" aol-fast two two@sender.test dave@aol.test full-eve@aol.test
  send_message "$mta" "$run" greylist-fast grey-alice greyalice@sender.test alice@greylist.test
  send_message "$mta" "$run" greylist-fast grey-two greytwo@sender.test bob@greylist.test carol@greylist.test
  send_message "$mta" "$run" lossy-fast lost lost@sender.test lost-ann@lossy.test # reply lost
  send_message "$mta" "$run" lossy-fast drop drop@sender.test drop-bob@lossy.test # closed at RCPT
  send_message "$mta" "$run" lossy-fast late late@sender.test late-cat@lossy.test # 12s, reply lost
  send_message "$mta" "$run" lossy-fast hang hang@sender.test hang-dan@lossy.test # 12s, not kept
  send_message "$mta" "$run" lossy-fast plain plain@sender.test ed@lossy.test
  # The second message to carol@ comes once mx1's greylisting of (pair@, carol@) is over.
  sleep 8
  send_message "$mta" "$run" aol-fast carol-second pair@sender.test carol@aol.test
}

wait_queue_empty() {
  local mta=$1 started=$SECONDS
  while ! "${mta}_queue_empty"; do
    if [ $((SECONDS - started)) -ge "$QUEUE_WAIT" ]; then
      fail "$mta: queue not empty after ${QUEUE_WAIT}s"; "${mta}_show_queue"; return 1
    fi
    sleep 1
  done
  pass "$mta: queue empty after $((SECONDS - started))s"
}

# ------------------------------------------------------------------ the checks

# Counts e2e-mta-check.py's ok/FAIL lines as this script's own.
run_checks() {
  local mta=$1 run=$2 log=$3 line
  local journals=() name
  for name in "${SCENARIOS[@]}"; do
    journals+=("$run/$name.jsonl")
    "$bin" transcript --json "$run/$name.jsonl" >"$run/$name.transcript.json" 2>"$run/$name.transcript.err" \
      || fail "$mta: mxfarm transcript --json of $name"
  done
  python3 scripts/e2e-mta-check.py "$mta" "$log" "$run/manifest.tsv" "${journals[@]}" >"$run/checks.txt" 2>&1 \
    || fail "$mta: e2e-mta-check.py failed"
  while IFS= read -r line; do
    case $line in
      "ok   "*) pass "${line#ok   }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      "--- "*) break ;;
      *) echo "$line" ;;
    esac
  done <"$run/checks.txt"
}

# 4. The views read each journal without error; their output is for a human to read.
show_views() {
  local mta=$1 run=$2 name status
  for name in "${SCENARIOS[@]}"; do
    step "$mta: mxfarm transcript of $name"
    if "$bin" transcript "$run/$name.jsonl" >"$run/$name.transcript" 2>&1; then
      cat "$run/$name.transcript"; pass "$mta: mxfarm transcript reads the $name journal"
    else
      cat "$run/$name.transcript"; fail "$mta: mxfarm transcript of $name"
    fi
    step "$mta: mxfarm report of $name"
    status=0
    "$bin" report "$run/$name.jsonl" >"$run/$name.report" 2>&1 || status=$?
    cat "$run/$name.report"
    # Exit 2 means "a finding is a problem": the report ran. 1 is an error.
    if [ "$status" != 1 ] && grep -q '^retry report:' "$run/$name.report"; then
      pass "$mta: mxfarm report reads the $name journal (exit $status)"
    else
      fail "$mta: mxfarm report of $name (exit $status)"
    fi
    judge_report "$mta" "$name" "$run/$name.report"
  done
}

# A correctly configured MTA should get no PROBLEM finding.
judge_report() {
  local mta=$1 name=$2 report=$3
  if grep -q 'PROBLEM' "$report"; then
    fail "$mta: mxfarm report finds problems in $name:"; grep -B3 'PROBLEM' "$report" | sed 's/^/    /'
  else
    pass "$mta: mxfarm report finds no problem in $name"
  fi
}

# ------------------------------------------------------------------ the MTAs through the farm's DNS

# Each MTA finds the MX hosts by itself: no transport map or manualroute, no /etc/hosts
# entry. The farm plays tests/e2e/dns-mta.toml with its hosts on 127.0.0.2-5:25 and its
# DNS server on DNS_ADDR:53 (resolv.conf takes no port). The MTA runs in a mount
# namespace of its own (unshare), where the farm's resolv.conf is bind-mounted over
# /etc/resolv.conf (and, for Postfix, over the chroot's copy,
# /var/spool/postfix/etc/resolv.conf: Debian's service start copies /etc/resolv.conf there
# for chrooted daemons; this suite runs them unchrooted, the copy is covered all the
# same). The rest of the machine keeps its own resolver, nothing that asks about the
# simulated names runs outside the namespace, and nothing is left to restore: the
# namespace goes with its last process.
readonly DNS_SCENARIO=dns-mta
readonly DNS_ADDR=127.0.0.153
readonly DNS_SPREAD=16 # messages over mx1 and mx2: all on one of them by chance is 2^-15
dns_ns_pid= # a process in the MTA's namespace, while it runs there

# write_farm_resolv_conf DIR [SCENARIO ADDR]: the farm's DNS (dns-mta's by default).
write_farm_resolv_conf() {
  printf '# scripts/e2e-mta.sh: the farm'"'"'s DNS (tests/e2e/%s.toml)\nnameserver %s\n' \
    "${2:-$DNS_SCENARIO}" "${3:-$DNS_ADDR}" >"$1/resolv.conf"
}

# in_farm_namespace RUN COMMAND...: COMMAND in a new mount namespace that sees the farm's
# resolv.conf; a daemon it starts stays there.
in_farm_namespace() {
  local run=$1; shift
  unshare --mount --propagation private sh -c '
    set -e
    conf=$1; shift
    mount --bind "$conf" /etc/resolv.conf
    if [ -d /var/spool/postfix ]; then
      mkdir -p /var/spool/postfix/etc
      [ -e /var/spool/postfix/etc/resolv.conf ] || : >/var/spool/postfix/etc/resolv.conf
      mount --bind "$conf" /var/spool/postfix/etc/resolv.conf
    fi
    exec "$@"' sh "$run/resolv.conf" "$@"
}

configure_postfix_dns() {
  local run=$1
  # The suite's main.cf as configure_postfix wrote it, less the transport map, with a log
  # of its own.
  # Only the bounces to our senders (sender.test, which has SPF records here) are
  # discarded; every other destination is found by DNS.
  printf 'sender.test    discard:\n.sender.test   discard:\n' >/etc/postfix/transport-dns
  postmap /etc/postfix/transport-dns
  postconf -e "transport_maps = hash:/etc/postfix/transport-dns"
  postconf -e "maillog_file = $run/postfix.log"
  postfix check
}

# Postfix's master and every daemon it starts see the farm's resolv.conf; sendmail
# (postdrop, which looks nothing up), postqueue and `postfix stop` work from outside,
# through the queue directory.
start_postfix_dns() {
  local run=$1
  in_farm_namespace "$run" postfix start >"$run/postfix-start.log" 2>&1 || { cat "$run/postfix-start.log"; return 1; }
  dns_ns_pid=$(head -1 /var/spool/postfix/pid/master.pid | tr -d ' ')
}

configure_exim_dns() {
  local run=$1
  mkdir -p "$run/exim"
  chown Debian-exim:Debian-exim "$run/exim"
  # configure_exim's file with a dnslookup router in place of the manualroute one.
  cat >/etc/exim4/exim4.conf <<EOF
# Written by mxfarm's scripts/e2e-mta.sh: Exim as a sender that finds the farm by DNS.
primary_hostname = sender.mxfarm-e2e.test
qualify_domain = mxfarm-e2e.test
log_file_path = $run/exim/%slog
log_selector = +outgoing_port +millisec +received_recipients
keep_environment =
tls_advertise_hosts =
# The farm's hosts have IPv4 addresses only: no AAAA lookups.
disable_ipv6 = true

begin routers

discard_bounces:
  driver = redirect
  domains = sender.test : *.sender.test
  data = :blackhole:

# The MX records from the farm's DNS, with Exim's own ordering (equal preferences in a
# random order) and failover.
farm_dns:
  driver = dnslookup
  transport = farm_smtp
  no_more

begin transports

farm_smtp:
  driver = smtp
  final_timeout = $MTA_TIMEOUT

begin retry

*  *  F,2m,5s
EOF
  exim -bV >/dev/null
}

# The queue runner starts in the namespace; exim_send enters it (nsenter), as an
# immediate delivery (-odi) runs in the sending process.
start_exim_dns() {
  local run=$1
  in_farm_namespace "$run" exim -q5s -oP "$work/exim.pid" || return 1
  for _ in $(seq 50); do [ -s "$work/exim.pid" ] && break; sleep 0.1; done
  dns_ns_pid=$(cat "$work/exim.pid")
}

# Seconds since the farm started.
farm_seconds() { echo $((SECONDS - $1)); }

# test_mta_dns MTA LOG-NAME: the installed MTA through the farm's DNS, then its log
# checked against the journal by scripts/e2e-mta-dns-check.py.
test_mta_dns() {
  local mta=$1 run="$work/$1-dns" started=$SECONDS farm_started status=0 i line log
  mkdir -p "$run"
  case $mta in
    postfix) log="$run/postfix.log" ;;
    exim) log="$run/exim/mainlog" ;;
  esac
  step "$mta: through the farm's DNS (tests/e2e/$DNS_SCENARIO.toml)"
  if ! command -v unshare >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
    fail "$mta-dns: unshare and nsenter (util-linux) are needed"; return
  fi
  "$bin" run "$FIXTURES/$DNS_SCENARIO.toml" --dns "$DNS_ADDR:53" --journal "$run/$DNS_SCENARIO.jsonl" \
    >"$run/$DNS_SCENARIO.out" 2>"$run/$DNS_SCENARIO.err" &
  farm_pid[$DNS_SCENARIO]=$!
  farm_started=$SECONDS
  for _ in $(seq 100); do
    grep -q '^Ready\.' "$run/$DNS_SCENARIO.out" 2>/dev/null && break
    kill -0 "${farm_pid[$DNS_SCENARIO]}" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^Ready\.' "$run/$DNS_SCENARIO.out"; then
    pass "$mta-dns: farm $DNS_SCENARIO ready, its DNS on $DNS_ADDR:53"
  else
    fail "$mta-dns: farm $DNS_SCENARIO did not start"; cat "$run/$DNS_SCENARIO.out" "$run/$DNS_SCENARIO.err"; return
  fi
  write_farm_resolv_conf "$run"
  "configure_${mta}_dns" "$run"
  if ! "start_${mta}_dns" "$run" || [ -z "$dns_ns_pid" ]; then
    fail "$mta-dns: $mta did not start in its namespace"; stop_farms; return
  fi
  # (c) dnsfail.test's MX SERVFAILs for 20s: deferred, then delivered on a later run.
  send_message "$mta" "$run" "$DNS_SCENARIO" dnsfail dnsfail@sender.test ann@dnsfail.test
  # (d) mx5 checks SPF at MAIL: sender.test fails (550, bounced); slow.sender.test's TXT
  # lookup takes 2s and SERVFAILs for 20s (451, deferred), then passes.
  send_message "$mta" "$run" "$DNS_SCENARIO" spffail spffail@sender.test ann@spf.test
  send_message "$mta" "$run" "$DNS_SCENARIO" spfslow spfslow@slow.sender.test bob@spf.test
  # (b) mx1 and mx2 greet with 421 for 15s: these go to mx3, preference 20.
  for i in 1 2 3; do
    send_message "$mta" "$run" "$DNS_SCENARIO" "failover$i" "failover$i@sender.test" "fail$i@aol.test"
  done
  # After the 421s (farm time 15s), one at a time, so that each is a delivery of its own.
  while [ "$(farm_seconds "$farm_started")" -lt 17 ]; do sleep 0.5; done
  for i in $(seq "$DNS_SPREAD"); do
    send_message "$mta" "$run" "$DNS_SCENARIO" "spread$i" "spread$i@sender.test" "spread$i@aol.test"
    sleep 0.3
  done
  wait_queue_empty "$mta" || true
  "stop_$mta"
  dns_ns_pid=
  wait_farms_idle_one "$run/$DNS_SCENARIO.jsonl"
  stop_farms
  step "$mta-dns: its log against the journal"
  python3 scripts/e2e-mta-dns-check.py "$mta" "$log" "$run/manifest.tsv" "$run/$DNS_SCENARIO.jsonl" \
    >"$run/checks.txt" 2>&1 || status=$?
  [ "$status" = 0 ] || fail "$mta-dns: e2e-mta-dns-check.py failed ($status)"
  while IFS= read -r line; do
    case $line in
      "ok   "*) pass "${line#ok   }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      *) echo "$line" ;;
    esac
  done <"$run/checks.txt"
  step "$mta-dns: mxfarm transcript"
  if "$bin" transcript "$run/$DNS_SCENARIO.jsonl" >"$run/transcript" 2>&1; then
    cat "$run/transcript"; pass "$mta-dns: mxfarm transcript reads the journal"
  else
    cat "$run/transcript"; fail "$mta-dns: mxfarm transcript"
  fi
  # A correctly configured MTA is blamed for nothing, DNS faults and SPF refusals included.
  if "$bin" report "$run/$DNS_SCENARIO.jsonl" >"$run/report" 2>&1 && grep -q '; 0 problems' "$run/report"; then
    pass "$mta-dns: mxfarm report finds no PROBLEM ($(head -1 "$run/report"))"
  else
    cat "$run/report"; fail "$mta-dns: mxfarm report blames $mta"
  fi
  pass "$mta-dns: tested in $((SECONDS - started))s"
}

# wait_farms_idle for one journal.
wait_farms_idle_one() {
  local journal=$1 opened closed
  for _ in $(seq 300); do
    opened=$(grep -c '"event":"connection-opened"' "$journal" || true)
    closed=$(grep -c '"event":"connection-closed"' "$journal" || true)
    [ "$opened" = "$closed" ] && return
    sleep 0.1
  done
  fail "$(basename "$journal"): $((opened - closed)) connection(s) still open after 30s"
}

# ------------------------------------------------------------------ the MTA against its model

# tests/e2e/model-check.toml: deferrals counted in attempts, three MX hosts of distinct
# preference on 127.0.0.6-8:25, found through the farm's DNS on MODEL_DNS_ADDR, as in the
# DNS phase (the MTA in a mount namespace that sees the farm's resolv.conf). Each message
# has a sender of its own, which names its deliveries in both transcripts.
readonly MODEL_SCENARIO=model-check
readonly MODEL_DNS_ADDR=127.0.0.154

# The model of this MTA, with the settings written above and the same messages, run by
# `mxfarm simulate` in virtual time, must tell the same story of model-check as the real
# MTA did: the same tries, hosts in the same order, the same outcomes.
check_model() {
  local mta=$1 run=$2 line settings=()
  case $mta in
    postfix) settings=(--sender postfix --set queue_run_delay=5s --set minimal_backoff_time=5s
      --set maximal_backoff_time=10s --set maximal_queue_lifetime=2m --set bounce_queue_lifetime=2m
      --set "smtp_data_done_timeout=$MTA_TIMEOUT") ;;
    exim) settings=(--sender exim --set "retry=F,2m,5s" --set queue_run_interval=5s
      --set "final_timeout=$MTA_TIMEOUT") ;;
  esac
  awk -F '\t' '$1 == "model-check" { print $3, $4 }' "$run/manifest.tsv" >"$run/model-messages.txt"
  "$bin" transcript --json "$run/$MODEL_SCENARIO.jsonl" >"$run/model-real.json" 2>/dev/null \
    || fail "$mta model: mxfarm transcript --json of model-check"
  local sims=()
  # The cache phase (Postfix only) with the cache on, as Postfix ships; the messages at
  # the offsets test_mta_model sent them at.
  if [ "$mta" = postfix ]; then
    simulate_phase "$run" cache "$run/cache-messages.txt" "${settings[@]}" && sims+=("$run/model-sim-cache.json")
    settings+=(--set smtp_connection_cache_on_demand=no)
  fi
  simulate_phase "$run" queue "$run/model-messages.txt" "${settings[@]}" && sims+=("$run/model-sim-queue.json")
  [ "${#sims[@]}" -gt 0 ] || return
  while IFS= read -r line; do
    case $line in
      "ok   "*) pass "${line#ok   }" ;;
      "FAIL "*) fail "${line#FAIL }" ;;
      *) echo "$line" ;;
    esac
  done < <(python3 scripts/e2e-mta-model-check.py "$mta" "$run/model-real.json" "${sims[@]}")
}

# One `mxfarm simulate` of a phase's messages: JSON to model-sim-PHASE.json, the sender's
# side shown.
simulate_phase() {
  local run=$1 phase=$2 messages=$3
  shift 3
  if ! "$bin" simulate "$FIXTURES/$MODEL_SCENARIO.toml" "$@" --client 127.0.0.1 \
    --messages-file "$messages" --json >"$run/model-sim-$phase.json" 2>"$run/model-sim-$phase.err"; then
    fail "$mta model: mxfarm simulate ($phase phase)"; cat "$run/model-sim-$phase.err"; return 1
  fi
  "$bin" simulate "$FIXTURES/$MODEL_SCENARIO.toml" "$@" --client 127.0.0.1 \
    --messages-file "$messages" --show sender 2>&1 || true
}

# Postfix's on-demand connection cache, as it ships: model-hold@'s delivery keeps the
# in-core queue for model.test busy for 3 s (mx1 answers its end of data late), so the
# deliveries half a second apart come back to back (qmgr_entry_select): model-first@
# has no delivery just before it, model-turn@ does and keeps its connection (mx1 says
# 421, mx2 takes it), and model-reuse@ goes over that connection straight to mx2. The
# model is given the same offsets (cache-messages.txt).
send_cache_messages() {
  local run=$1 offset=0 entry tag from to
  : >"$run/cache-messages.txt"
  for entry in hold:ann first:ben turn:cat reuse:dan; do
    tag=${entry%%:*} from="model-$tag@sender.test" to="${entry#*:}@model.test"
    [ "$offset" -gt 0 ] && sleep 0.5
    send_message postfix "$run" model-cache "model-$tag" "$from" "$to"
    printf '%s %s +%sms\n' "$from" "$to" "$offset" >>"$run/cache-messages.txt"
    offset=$((offset + 500))
  done
  wait_queue_empty postfix || true
  sleep 3 # the cache's last connection closed (smtp_connection_cache_time_limit 2s)
}

test_mta_model() {
  local mta=$1 run="$work/$1-model" started=$SECONDS
  mkdir -p "$run"
  step "$mta: against its model in virtual time (tests/e2e/$MODEL_SCENARIO.toml)"
  "$bin" run "$FIXTURES/$MODEL_SCENARIO.toml" --dns "$MODEL_DNS_ADDR:53" --journal "$run/$MODEL_SCENARIO.jsonl" \
    >"$run/$MODEL_SCENARIO.out" 2>"$run/$MODEL_SCENARIO.err" &
  farm_pid[$MODEL_SCENARIO]=$!
  for _ in $(seq 100); do
    grep -q '^Ready\.' "$run/$MODEL_SCENARIO.out" 2>/dev/null && break
    kill -0 "${farm_pid[$MODEL_SCENARIO]}" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^Ready\.' "$run/$MODEL_SCENARIO.out"; then
    pass "$mta model: farm $MODEL_SCENARIO ready, its DNS on $MODEL_DNS_ADDR:53"
  else
    fail "$mta model: farm $MODEL_SCENARIO did not start"; cat "$run/$MODEL_SCENARIO.out" "$run/$MODEL_SCENARIO.err"; return
  fi
  write_farm_resolv_conf "$run" "$MODEL_SCENARIO" "$MODEL_DNS_ADDR"
  "configure_${mta}_dns" "$run"
  [ "$mta" = postfix ] && postconf -e smtp_connection_cache_on_demand=yes
  if ! "start_${mta}_dns" "$run" || [ -z "$dns_ns_pid" ]; then
    fail "$mta model: $mta did not start in its namespace"; stop_farms; return
  fi
  if [ "$mta" = postfix ]; then
    send_cache_messages "$run"
    # The queue phase without the cache: which of six messages sent at once finds
    # another's open connection hangs on which delivery ends first in real time.
    postconf -e smtp_connection_cache_on_demand=no
    postfix reload >/dev/null 2>&1 || fail "$mta model: postfix reload"
    sleep 1
  fi
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-plain model-plain@sender.test alice@model.test
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-slow model-slow@sender.test slow-bob@model.test
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-busy model-busy@sender.test carol@model.test
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-gone model-gone@sender.test gone@model.test
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-mixed model-mixed@sender.test dave@model.test slow-eve@model.test
  send_message "$mta" "$run" "$MODEL_SCENARIO" model-late model-late@sender.test frank@model.test
  wait_queue_empty "$mta" || true
  "stop_$mta"
  dns_ns_pid=
  wait_farms_idle_one "$run/$MODEL_SCENARIO.jsonl"
  stop_farms
  "$bin" transcript "$run/$MODEL_SCENARIO.jsonl" 2>&1 || true
  check_model "$mta" "$run"
  pass "$mta model: tested in $((SECONDS - started))s"
}

# ------------------------------------------------------------------ one MTA

test_mta() {
  local mta=$1 started=$SECONDS run="$work/$1" log
  mkdir -p "$run"
  step "$mta: install"
  "install_$mta"
  case $mta in
    postfix) log="$run/postfix.log"; pass "installed postfix $(dpkg-query -W -f '${Version}' postfix)" ;;
    exim) log="$run/exim/mainlog"; pass "installed exim4-daemon-light $(dpkg-query -W -f '${Version}' exim4-daemon-light)" ;;
  esac
  step "$mta: farms, configuration, messages"
  start_farms "$run"
  "configure_$mta" "$run"
  "start_$mta"
  send_messages "$mta" "$run"
  wait_queue_empty "$mta" || true
  wait_farms_idle "$run"
  "stop_$mta"
  stop_farms
  step "$mta: its log against the journals"
  run_checks "$mta" "$run" "$log"
  show_views "$mta" "$run"
  step "$mta: its log lines, message by message"
  sed -n '/^--- /,$p' "$run/checks.txt" | tail -n +2
  test_mta_dns "$mta"
  test_mta_model "$mta"
  step "$mta: purge"
  purge_mtas
  pass "$mta: tested and purged in $((SECONDS - started))s"
}

# ------------------------------------------------------------------ a wrong sender

# scripts/e2e-bad-sender.py retries a 550 and never tries a second MX after a 421: the
# report must say exactly that, and exit with 2.
test_bad_sender() {
  local run="$work/bad" status=0 ports
  mkdir -p "$run"
  step "a sender that retries wrong"
  read -r -a ports <<<"$(ports_of aol-fast)"
  "$bin" run "$FIXTURES/aol-fast.toml" --journal "$run/aol-fast.jsonl" >"$run/farm.out" 2>"$run/farm.err" &
  farm_pid[bad]=$!
  for _ in $(seq 100); do grep -q '^Ready\.' "$run/farm.out" 2>/dev/null && break; sleep 0.1; done
  if python3 scripts/e2e-bad-sender.py "${ports[1]}" "${ports[2]}"; then
    pass "bad sender: the farm answered as the scenario says"
  else
    fail "bad sender: the farm did not answer as expected"
  fi
  kill "${farm_pid[bad]}" 2>/dev/null; wait "${farm_pid[bad]}" 2>/dev/null || true
  unset 'farm_pid[bad]'
  "$bin" transcript "$run/aol-fast.jsonl" >"$run/transcript" 2>&1 || fail "bad sender: mxfarm transcript"
  cat "$run/transcript"
  "$bin" report "$run/aol-fast.jsonl" >"$run/report" 2>&1 || status=$?
  cat "$run/report"
  if [ "$status" = 2 ]; then pass "bad sender: mxfarm report exits with 2"; else fail "bad sender: mxfarm report exits with $status, 2 expected"; fi
  local expect
  for expect in \
    'delivery [0-9]* <bad550@sender.test> -> <gone@aol.test>' \
    'PROBLEM retry-after-5xx tried 1 time more after the permanent 550' \
    'PROBLEM duplicate .*<bad-550@bad.test> accepted 2 times' \
    'PROBLEM mx-failover .*went to mx2 again'; do
    if grep -q -- "$expect" "$run/report"; then pass "bad sender: the report says /$expect/"; else fail "bad sender: the report lacks /$expect/"; fi
  done
  # One PROBLEM per mistake: the 550 retried, the copy resent after its 250, no failover.
  local problems
  problems=$(sed -n '1,/^overall$/p' "$run/report" | grep -c '^  PROBLEM' || true)
  if [ "$problems" = 3 ]; then
    pass "bad sender: 3 problems, one per mistake"
  else
    fail "bad sender: $problems problems, 3 expected (one per mistake)"
  fi
}

cleanup() {
  local status=$?
  set +e
  [ -n "${farm_pid[*]}" ] && stop_farms >/dev/null
  case $installed_mta in
    postfix) stop_postfix ;;
    exim) stop_exim ;;
  esac
  [ -n "$installed_mta" ] && purge_mtas
  [ -n "$created_policy_rc" ] && rm -f /usr/sbin/policy-rc.d
  if [ "${MXFARM_E2E_KEEP:-}" = 1 ]; then echo "e2e-mta: kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT

main() {
  local started=$SECONDS
  step "prepare"
  apt_get update
  command -v python3 >/dev/null || apt_get install --no-install-recommends python3
  cargo build --quiet
  local fixtures=() name
  for name in "${SCENARIOS[@]}" "$DNS_SCENARIO" "$MODEL_SCENARIO"; do fixtures+=("$FIXTURES/$name.toml"); done
  if "$bin" check "${fixtures[@]}" >"$work/check.out" 2>&1; then
    pass "mxfarm check tests/e2e/*-fast.toml $DNS_SCENARIO.toml"
  else
    fail "mxfarm check tests/e2e/*-fast.toml $DNS_SCENARIO.toml"; cat "$work/check.out"; exit 1
  fi
  block_daemon_starts
  purge_mtas # a clean start: the two conflict, and a leftover queue would skew the counts
  test_mta postfix
  test_mta exim
  test_bad_sender
  echo
  echo "e2e-mta: ran in $((SECONDS - started))s"
  echo "e2e-mta: $passes passed, $failures failed"
  [ "$failures" -eq 0 ]
}

main "$@"
