#!/usr/bin/env bash
# End-to-end: the timeline page at / in headless Chromium (Debian's chromium package),
# live, while a scripted sender (python smtplib) is greylisted and retries. It runs the
# release binary on the embedded `greylist` scenario with the API on, loads the page
# before the first try, and waits (bounded) for the marks to appear through the page's
# live updates; the checks are in scripts/e2e-page.py. Loopback only. A screenshot is kept
# as an artifact: target/e2e-artifacts/timeline.png (and timeline-details.png).
set -euo pipefail
cd "$(dirname "$0")/.."

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
artifacts="$target/e2e-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d)
farm_pid=
driver_pid=
cleanup() {
  [ -n "$driver_pid" ] && kill "$driver_pid" 2>/dev/null || true
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null || true
  [ -n "$farm_pid" ] && wait "$farm_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Free loopback ports, picked by the system. Something else (a parallel test) may take one
# before the farm binds it: then the farm exits at once, and we try again with new ports,
# three times at most.
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))' "$1"
}

ready=
for _ in 1 2 3; do
  read -r api_port mx1_port mx2_port < <(free_ports 3)
  "$bin" run greylist --api "127.0.0.1:$api_port" \
    --bind "mx1=127.0.0.1:$mx1_port" --bind "mx2=127.0.0.1:$mx2_port" \
    >"$work/farm.log" 2>&1 &
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
  echo "FAIL the farm never became ready"; cat "$work/farm.log"; exit 1
fi

status=0
python3 scripts/e2e-page.py --api "http://127.0.0.1:$api_port" \
  --mx1 "127.0.0.1:$mx1_port" --mx2 "127.0.0.1:$mx2_port" --artifacts "$artifacts" &
driver_pid=$!
wait "$driver_pid" || status=$?
driver_pid=
if [ "$status" -ne 0 ]; then
  echo "--- the farm's log"; cat "$work/farm.log"
fi
exit "$status"
