#!/usr/bin/env bash
# End-to-end: the repository's own Dockerfile, docker/sender/Dockerfile and
# docker-compose.yml, run for real with Debian's Postfix as the sender under test, then
# checked through the farm's API by scripts/e2e-docker.py. As root; installs what it
# needs (docker.io, docker-compose, debootstrap) and starts dockerd if none runs.
#
# No image registry is reachable here, so the base image the Dockerfiles name,
# debian:bookworm-slim, is made locally (debootstrap, then `docker import`), and the farm's
# image is built from the host's release binary (docker/docker-compose.ci.yml, the
# Dockerfile's `prebuilt` stage): there is no Rust image to build in.
#
# Traffic: only on the compose project's own networks and loopback (the API is published
# on 127.0.0.1), and the Debian mirror for apt inside the image builds. At the end,
# `docker-compose down -v` must leave no container, network or volume of the project.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly PROJECT=mxfarm-e2e
readonly WORK=target/e2e-docker
readonly ARTIFACTS=target/e2e-artifacts
readonly BASE_IMAGE=debian:bookworm-slim
mkdir -p "$WORK" "$ARTIFACTS"

if [ "$(id -u)" != 0 ]; then
  echo "e2e-docker: needs root (dockerd, debootstrap)"; exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "# installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables >/dev/null
fi
# Debian's docker client, the one docker-compose 1.29 is made for (another docker client
# earlier on PATH may lack the classic builder).
docker() { /usr/bin/docker "$@"; }

started_dockerd=
compose=()
stop_dockerd() {
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null
    wait "$started_dockerd" 2>/dev/null
  fi
}
status=0
finish() {
  local rc=$?
  set +e
  [ "$rc" -eq 0 ] || status=$rc
  [ ${#compose[@]} -gt 0 ] || { stop_dockerd; exit "$status"; }
  "${compose[@]}" logs --no-color >"$ARTIFACTS/compose.log" 2>&1 || true
  "${compose[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1 || status=1
  local label="label=com.docker.compose.project=$PROJECT" left
  left="$(docker ps -aq --filter "$label")$(docker network ls -q --filter "$label")$(docker volume ls -q --filter "$label")"
  if [ -z "$left" ]; then
    echo "ok - docker-compose down -v leaves no container, network or volume of the project"
  else
    echo "not ok - left behind by down -v: $left"; status=1
  fi
  stop_dockerd
  exit "$status"
}
trap finish EXIT
if ! docker info >/dev/null 2>&1; then
  echo "# starting dockerd (log: $WORK/dockerd.log)"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "not ok - dockerd did not start"; tail -20 "$WORK/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "# making $BASE_IMAGE: debootstrap --variant=minbase bookworm, then docker import"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { echo "not ok - debootstrap"; tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

echo "# the host's release binary, for the image's prebuilt stage and for mxfarm ctl"
cargo build --release --locked --quiet --bin mxfarm

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export MXFARM_API_PORT=$api_port MXFARM_API_TOKEN=$token MXFARM_SCENARIO=aol
compose=(docker-compose -p "$PROJECT" -f docker-compose.yml -f docker/docker-compose.ci.yml)

echo "# docker-compose build (farm: Dockerfile, target prebuilt; sender: docker/sender/Dockerfile)"
if "${compose[@]}" build >"$WORK/build.log" 2>&1; then
  echo "ok - the images build from the repository's Dockerfiles"
else
  echo "not ok - docker-compose build"; tail -30 "$WORK/build.log"; exit 1
fi
if "${compose[@]}" up -d >"$WORK/up.log" 2>&1; then
  echo "ok - docker-compose up -d: the farm became healthy (HEALTHCHECK: mxfarm ctl ready), then the sender started"
else
  echo "not ok - docker-compose up -d"; cat "$WORK/up.log"; "${compose[@]}" logs --no-color mxfarm | tail -30; exit 1
fi
summary=$("${compose[@]}" logs --no-color mxfarm)
for line in "host mx1    172.28.25.11:25" "host mx2    172.28.25.12:25" "host mx3    172.28.25.13:25" \
  "dns  172.28.25.53:53" "addresses 172.28.25.11, 172.28.25.12, 172.28.25.13 on" "they stay until the container's network goes"; do
  if grep -qF "$line" <<<"$summary"; then echo "ok - the farm's summary says: $line"; else echo "not ok - no '$line' in the summary"; status=1; fi
done
# Capabilities belong to each thread: none of the farm's may keep CAP_NET_ADMIN (bit 12)
# once its addresses are in place.
held=$("${compose[@]}" exec -T mxfarm sh -c 'for f in /proc/1/task/*/status; do
  p=$(sed -n "s/^CapPrm:[[:space:]]*//p" "$f"); [ $(( 0x$p & 0x1000 )) -eq 0 ] || echo "$f"; done; ls /proc/1/task | wc -l' | tr -d '\r')
if [ "$(echo "$held" | wc -l)" -eq 1 ] && [ "$held" -gt 1 ]; then
  echo "ok - none of the farm's $held threads holds CAP_NET_ADMIN"
else
  echo "not ok - threads that hold CAP_NET_ADMIN: $held"; status=1
fi
user=$("${compose[@]}" exec -T mxfarm id -un | tr -d '\r')
[ "$user" = mxfarm ] && echo "ok - the farm runs as the user mxfarm" || { echo "not ok - the farm runs as '$user'"; status=1; }
page=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api_port/")
[ "$page" = 200 ] && echo "ok - the timeline answers on the host's loopback, port $api_port" || { echo "not ok - the timeline: HTTP $page"; status=1; }

if docker-compose -p "$PROJECT" -f docker-compose.yml -f docker/docker-compose.override.example.yml config -q >"$WORK/override.log" 2>&1; then
  echo "ok - docker/docker-compose.override.example.yml is a valid override (docker-compose config)"
else
  echo "not ok - the override example: $(cat "$WORK/override.log")"; status=1
fi

python3 scripts/e2e-docker.py --compose "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${compose[@]}")" \
  --api "http://127.0.0.1:$api_port" --token "$token" --mxfarm target/release/mxfarm \
  --golden tests/e2e/compose-transcript.txt || status=1

echo "# the README's testcontainers recipe (docker/testcontainers, a crate of its own) on the image built above"
if (cd docker/testcontainers && MXFARM_TEST_IMAGE=mxfarm:local CARGO_TARGET_DIR=../../target/testcontainers \
  cargo test --locked --quiet) >"$WORK/testcontainers.log" 2>&1; then
  echo "ok - testcontainers: GenericImage, wait on the HEALTHCHECK (/readyz), SMTP and the API on mapped ports"
else
  echo "not ok - the testcontainers recipe"; tail -30 "$WORK/testcontainers.log"; status=1
fi
exit $status
