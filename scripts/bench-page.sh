#!/usr/bin/env bash
# Bench: the timeline page with many deliveries (10,000; 1,000 with --quick) in headless
# Chromium. Fills a farm (release binary, an inline scenario with no rules, loopback
# only) over a few SMTP connections, then measures the page's first render, a scroll, a
# filter and one live update, and prints the figures. No thresholds: it fails only if
# the page never renders. Not part of `cargo test`; .ci/run runs --quick.
#   bash scripts/bench-page.sh [--quick] [--deliveries N]
set -euo pipefail
cd "$(dirname "$0")/.."

deliveries=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) deliveries=1000 ;;
    --deliveries) deliveries=$2; shift ;;
    *) echo "usage: bash scripts/bench-page.sh [--quick] [--deliveries N]" >&2; exit 2 ;;
  esac
  shift
done

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/mxfarm"
if [ -z "${MXFARM_E2E_NO_BUILD:-}" ]; then
  cargo build --release --quiet
fi
work=$(mktemp -d)
farm_pid=
cleanup() {
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null || true
  [ -n "$farm_pid" ] && wait "$farm_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Free loopback ports, picked by the system; if something takes one before the farm binds
# it, the farm exits at once and we try again with new ones, three times at most.
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

ready=
for _ in 1 2 3; do
  read -r api_port mx_port < <(free_ports 2)
  # No rules: every message is accepted. The journal holds every event of the run (about
  # ten a delivery); the capture keeps only a few messages, which the page does not read.
  cat >"$work/bench-page.toml" <<TOML
name = "bench-page"
description = "no rules: $deliveries deliveries for the timeline bench"

[capture]
max-messages = 100

[journal]
max-events = $((deliveries * 20 + 1000))

[[host]]
name = "mx1"
listen = "127.0.0.1:$mx_port"
TOML
  "$bin" run "$work/bench-page.toml" --api "127.0.0.1:$api_port" >"$work/farm.log" 2>&1 &
  farm_pid=$!
  for _ in $(seq 1 100); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$api_port/readyz" 2>/dev/null; then ready=1; break; fi
    if ! kill -0 "$farm_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  [ -n "$ready" ] && break
  kill "$farm_pid" 2>/dev/null || true
  wait "$farm_pid" 2>/dev/null || true
  farm_pid=
  grep -q 'already in use' "$work/farm.log" || break
done
if [ -z "$ready" ]; then
  echo "the farm never became ready"; cat "$work/farm.log"; exit 1
fi

python3 scripts/bench-page.py --api "http://127.0.0.1:$api_port" --mx "127.0.0.1:$mx_port" \
  --deliveries "$deliveries"
