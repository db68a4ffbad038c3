#!/usr/bin/env bash
# The farm beside Postfix's smtp-sink under smtp-source (issue 15): CPU per message and
# per RCPT, peak RSS, RSS per idle connection, as ratios. See scripts/bench-vs-smtp-sink.py
# for what is measured; BENCHMARKS.md keeps the results.
#
#   scripts/bench-vs-smtp-sink.sh              three interleaved rounds (a few minutes)
#   scripts/bench-vs-smtp-sink.sh --quick      one small round, for CI (under a minute)
#   scripts/bench-vs-smtp-sink.sh --check ...  exit 1 when a ratio regresses far beyond noise
#
# Installs Debian's postfix package for smtp-source and smtp-sink when they are missing
# (as root, with debconf set to "No configuration", so no Postfix daemon starts), builds
# the release binary, and raises the open-file limit for the idle connections.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

if ! command -v smtp-source >/dev/null 2>&1 || ! command -v smtp-sink >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "smtp-source and smtp-sink are missing; as root this script installs Debian's postfix package" >&2
    exit 2
  fi
  echo "bench-vs-smtp-sink: installing postfix for smtp-source and smtp-sink (no daemon)"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
fi

cargo build --release --quiet
# The idle connections: up to 15,000 held, each an open file in both processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 scripts/bench-vs-smtp-sink.py "$@"
