# The farm as a container: `docker compose up` (docker-compose.yml) or
#   docker build -t mxfarm .
#   docker run --rm -e MXFARM_API_TOKEN=s3cret -p 127.0.0.1:8025:8025 \
#     -p 127.0.0.1:2525-2527:2525-2527 mxfarm
#
# Stages: `runtime-base` (Debian slim, the user, the tools), `prebuilt` (a binary built on
# the host: what CI uses, as no Rust image can be pulled there), `build` (cargo in the
# Rust image), and the default last stage, `runtime`, with the binary `build` made. The
# classic builder builds every stage before the one it is asked for, so `prebuilt` comes
# before `build`: `--target prebuilt` needs no Rust image.
#
# It runs as the user mxfarm (uid and gid 10025). The binary holds two file capabilities, as
# permitted only (no effective bit: a container that grants neither still runs it):
# CAP_NET_BIND_SERVICE, for ports 25 and 53 where the runtime does not open low ports to
# every user (docker does), and CAP_NET_ADMIN, which the farm lends to `ip` for
# `--add-addresses` (every MX host at an address of its own) and then drops; it has it
# only where the container is given it (`cap_add: [NET_ADMIN]`).

ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-slim-bookworm

FROM ${DEBIAN_IMAGE} AS runtime-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 libcap2-bin \
 && groupadd --system --gid 10025 mxfarm \
 && useradd --system --uid 10025 --gid 10025 --home-dir /data --no-create-home --shell /usr/sbin/nologin mxfarm \
 && install -d -o mxfarm -g mxfarm -m 0750 /data \
 && install -d -m 0755 /scenarios /usr/share/mxfarm \
 && rm -rf /var/lib/apt/lists/*
# The embedded scenarios are inside the binary; these copies are to read and start from.
COPY scenarios/ /usr/share/mxfarm/scenarios/
# Where `mxfarm ctl` (and so the HEALTHCHECK) finds the API.
ENV MXFARM_API=http://127.0.0.1:8025
WORKDIR /data
# The journal file (--journal /data/journal.jsonl). The user's own scenarios are bind-
# mounted at /scenarios (docker-compose.yml mounts ./scenarios there, read-only).
VOLUME ["/data"]
EXPOSE 25 53/udp 53/tcp 2525 2526 2527 8025
HEALTHCHECK --interval=5s --timeout=6s --start-period=20s --retries=3 CMD ["mxfarm", "ctl", "ready"]
ENTRYPOINT ["mxfarm"]
# The default scenario with its hosts on every interface, on their own ports (2525-2527),
# the DNS on 53 and the API on 8025. A non-loopback API needs a token: set
# MXFARM_API_TOKEN. docker-compose.yml gives each host an address of its own instead.
CMD ["run", "aol", "--bind", "mx1=0.0.0.0:2525", "--bind", "mx2=0.0.0.0:2526", "--bind", "mx3=0.0.0.0:2527", \
     "--dns", "0.0.0.0:53", "--api", "0.0.0.0:8025", "--journal", "/data/journal.jsonl"]

# A binary built on the host (`cargo build --release`, on Debian 12 or its glibc): CI's way,
# `--target prebuilt`. The classic builder builds this stage for the default target too,
# where no binary may exist: the pattern `mxfar[m]` lets the COPY match nothing then, and
# the stage stays without a binary (and says so) instead of failing the build.
FROM runtime-base AS prebuilt
COPY Cargo.toml target/release/mxfar[m] /tmp/prebuilt/
RUN if [ -f /tmp/prebuilt/mxfarm ]; then \
      install -m 0755 /tmp/prebuilt/mxfarm /usr/local/bin/mxfarm \
      && setcap cap_net_bind_service,cap_net_admin=p /usr/local/bin/mxfarm && mxfarm --version; \
    else echo "no target/release/mxfarm: the prebuilt stage has no binary (run cargo build --release first)"; fi \
 && rm -rf /tmp/prebuilt
USER mxfarm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mxfarm

FROM runtime-base AS runtime
COPY --from=build /src/target/release/mxfarm /usr/local/bin/mxfarm
RUN setcap cap_net_bind_service,cap_net_admin=p /usr/local/bin/mxfarm && mxfarm --version
USER mxfarm
