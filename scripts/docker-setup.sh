#!/usr/bin/env bash
# Sets up what the container image and the Docker tests need on a Debian 12 machine (as root):
#   1. apt packages docker.io and debootstrap (installed only when absent);
#   2. a Docker engine: reuses one that answers, else starts dockerd in the background;
#   3. local base images (nothing can be pulled here):
#        svcplane-base:bookworm  Debian bookworm minbase (debootstrap) + the dataplane tools
#        svcplane-node:bookworm  svcplane-base + the host's Node binary and npm
# Idempotent: takes a second or two when everything is there. Prints what it did and how long it took.
#
# Exit status: 0 ready; 3 the engine cannot be provided here (the reason on stderr and in
# SVCPLANE_DOCKER_REASON_FILE); anything else is another failure. Callers treat both as failures
# (scripts/test-docker.sh: the docker suite fails with the reason).
#
# Environment:
#   SVCPLANE_DOCKER_STARTED_FILE  if set, the PID of a dockerd this run started is written there
#                                 (empty file when an engine was already running)
#   SVCPLANE_DOCKER_REASON_FILE   if set, why the engine is unavailable is written there (exit 3)
#   SVCPLANE_DOCKER_DATA_ROOT     dockerd's data root (default /var/lib/svcplane-docker)
#
# Why dockerd runs with --iptables=false --ip-forward=false --ip-masq=false --bridge=none:
# dockerd must not rewrite the host's firewall or sysctls. Containers then have no default bridge
# and no NAT to the outside, which is what the tests want: they create their own --internal bridge
# network (container-to-container traffic is plain L2 bridging and needs neither forwarding nor NAT).
# Image builds need no network either (the app is built on the host, see Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's Node.js is the one svcplane is tested with (scripts/node-env.sh).
. scripts/node-env.sh

DOCKER=/usr/bin/docker # Debian's client: has BuildKit built in (a newer client on PATH may lack buildx)
DATA_ROOT=${SVCPLANE_DOCKER_DATA_ROOT:-/var/lib/svcplane-docker}
EXEC_ROOT=/run/svcplane-docker
PIDFILE=/run/svcplane-dockerd.pid
LOGFILE=/var/log/svcplane-dockerd.log
BASE_IMAGE=svcplane-base:bookworm
NODE_IMAGE=svcplane-node:bookworm
# The runtime needs these; installing them into the debootstrap tree (one pass, no apt in docker build)
# is about twice as fast as a second apt run and needs no network inside containers.
BASE_PACKAGES=iptables,nftables,ipset,ipvsadm,conntrack,iproute2,kmod,ca-certificates,libatomic1

t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1fs", b - a}'; }
say() { echo "docker-setup: $*" >&2; }
unavailable() {
  say "engine unavailable: $*"
  if [[ -n ${SVCPLANE_DOCKER_REASON_FILE:-} ]]; then echo "$*" >"$SVCPLANE_DOCKER_REASON_FILE"; fi
  exit 3
}

[[ $(id -u) == 0 ]] || unavailable "must run as root"
if [[ -n ${SVCPLANE_DOCKER_STARTED_FILE:-} ]]; then : >"$SVCPLANE_DOCKER_STARTED_FILE"; fi

# --- 1. packages (and, on a fresh machine, the base rootfs in parallel) ---------------------------
has_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {
  local t ok=1 own_policy=
  t=$(date +%s.%N)
  say "installing $*"
  # Keep the package's maintainer scripts from starting a dockerd with its default configuration
  # (which would rewrite the host's iptables): a policy-rc.d that denies, only for this install.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || ok=
  if [[ -n $own_policy ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ -n $ok ]] || unavailable "apt-get install $* failed"
  say "installed $* in $(since "$t")"
}

# The Debian archive apt itself uses for bookworm/main; read at run time, never stored in the project.
debian_mirror() {
  apt-get indextargets --no-release-info --format '$(REPO_URI)' \
    'Identifier: Packages' 'Release: bookworm' 'Component: main' 2>/dev/null | head -n 1
}

# debootstrap runs in its own process group (setsid) so a failure here can stop all of it.
tmp=
rootfs_pid=
rootfs_t=
cleanup() {
  if [[ -n $rootfs_pid ]]; then kill -- "-$rootfs_pid" 2>/dev/null || true; fi
  if [[ -n $tmp ]]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
start_rootfs() {
  local mirror
  mirror=$(debian_mirror)
  [[ -n $mirror ]] || {
    say "no bookworm/main source in apt's configuration"
    exit 1
  }
  tmp=$(mktemp -d /tmp/svcplane-rootfs.XXXXXX)
  rootfs_t=$(date +%s.%N)
  say "debootstrap bookworm minbase (+ $BASE_PACKAGES) from apt's configured mirror"
  setsid -w debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$tmp/root" "$mirror" \
    </dev/null >"$tmp/debootstrap.log" 2>&1 &
  rootfs_pid=$!
}
finish_rootfs() {
  local rc=0
  wait "$rootfs_pid" || rc=$?
  rootfs_pid=
  if ((rc != 0)); then
    tail -n 30 "$tmp/debootstrap.log" >&2
    say "debootstrap failed ($rc)"
    exit 1
  fi
  say "debootstrap done in $(since "$rootfs_t")"
}

need_docker=
has_pkg docker.io || need_docker=1
if [[ -n $need_docker ]] || ! has_pkg debootstrap; then
  apt-get update -qq || unavailable "apt-get update failed"
fi
if ! has_pkg debootstrap; then apt_install debootstrap; fi
# A fresh machine has no images: build the rootfs while docker.io installs and the engine starts.
if [[ -n $need_docker && ! -d $DATA_ROOT/image ]]; then start_rootfs; fi
if [[ -n $need_docker ]]; then apt_install docker.io; fi
[[ -x $DOCKER ]] || unavailable "$DOCKER missing after installing docker.io"

# --- 2. engine ----------------------------------------------------------------------------------
engine_answers() { timeout 5 "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if engine_answers; then
  say "engine already running (server $("$DOCKER" version --format '{{.Server.Version}}'))"
else
  t=$(date +%s.%N)
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    unavailable "dockerd $(cat "$PIDFILE") from $PIDFILE runs but does not answer (see $LOGFILE)"
  fi
  rm -f "$PIDFILE"
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  # setsid: dockerd outlives this script and gets no signals meant for the caller's process group.
  # It must not inherit the caller's other descriptors either: under `flock /tmp/svcplane-heavy.lock`
  # the lock's descriptor would keep the shared heavy lock held for as long as dockerd runs (seen with
  # SVCPLANE_DOCKER_KEEP=1: every other helper's heavy step waited).
  (
    for fd in /proc/self/fd/*; do
      n=${fd##*/}
      if ((n > 2)); then eval "exec $n>&-" 2>/dev/null || true; fi
    done
    exec setsid /usr/sbin/dockerd \
      --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$PIDFILE" \
      --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
      --log-level=warn </dev/null >>"$LOGFILE" 2>&1
  ) &
  pid=$!
  for _ in $(seq 1 150); do
    if engine_answers; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOGFILE" >&2 || true
      unavailable "dockerd exited at start (log: $LOGFILE)"
    fi
    sleep 0.2
  done
  if ! engine_answers; then
    kill "$pid" 2>/dev/null || true
    tail -n 20 "$LOGFILE" >&2 || true
    unavailable "dockerd did not answer within 30s (log: $LOGFILE)"
  fi
  if [[ -n ${SVCPLANE_DOCKER_STARTED_FILE:-} ]]; then echo "$pid" >"$SVCPLANE_DOCKER_STARTED_FILE"; fi
  say "started dockerd pid $pid (data root $DATA_ROOT, log $LOGFILE) in $(since "$t")"
fi

# --- 3. base images -----------------------------------------------------------------------------
# An image counts only when built with today's package list (a base from before a package was added
# would make the Dockerfile's offline apt step fail).
has_image() {
  [[ $("$DOCKER" image inspect --format '{{index .Config.Labels "svcplane.base.packages"}}' "$1" 2>/dev/null) == "$BASE_PACKAGES" ]]
}
IMPORT_CHANGES=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["bash"]'
  --change "LABEL svcplane.base.packages=$BASE_PACKAGES")

# The Node image counts only with the Node.js the tests run (a new LTS rebuilds it).
has_node_image() {
  has_image "$NODE_IMAGE" &&
    [[ $("$DOCKER" image inspect --format '{{index .Config.Labels "svcplane.node.version"}}' "$NODE_IMAGE" 2>/dev/null) == "$(node --version)" ]]
}

if ! has_image "$BASE_IMAGE" || ! has_node_image; then
  if [[ -z $rootfs_pid ]]; then start_rootfs; fi
  finish_rootfs
  root=$tmp/root
  # Slim: package caches and lists, docs, man pages, locales; keep future apt installs slim too.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/debootstrap
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/svcplane-slim"
  : >"$root/etc/apt/sources.list" # no archive address in the image: pass sources in at build time
  rm -f "$root"/etc/apt/sources.list.d/* "$root"/etc/resolv.conf "$root"/etc/hostname

  t=$(date +%s.%N)
  tar -C "$root" -c . | "$DOCKER" import "${IMPORT_CHANGES[@]}" - "$BASE_IMAGE" >/dev/null
  say "imported $BASE_IMAGE in $(since "$t")"

  # Node runtime: the host's Node binary and npm, laid out like the official node images.
  t=$(date +%s.%N)
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(readlink -m "$(dirname "$node_bin")/../lib/node_modules/npm")
  # A node from .node/ (scripts/setup.sh) has no npm beside it: the machine's npm (it runs on any
  # current Node) goes into the image, where the Dockerfile's prune step needs it.
  if [[ ! -d $npm_dir ]] && command -v npm >/dev/null; then
    npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  fi
  install -D -m 0755 "$node_bin" "$root/usr/local/bin/node"
  if [[ -d $npm_dir ]]; then
    mkdir -p "$root/usr/local/lib/node_modules"
    cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  fi
  tar -C "$root" -c . | "$DOCKER" import "${IMPORT_CHANGES[@]}" --change 'CMD ["node"]' \
    --change "LABEL svcplane.node.version=$("$node_bin" --version)" - "$NODE_IMAGE" >/dev/null
  say "imported $NODE_IMAGE (node $("$node_bin" --version)) in $(since "$t")"
  rm -rf "$tmp"
  tmp=
else
  say "base images present ($BASE_IMAGE, $NODE_IMAGE)"
fi

say "ready in $(since "$t0")"
