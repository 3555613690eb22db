#!/usr/bin/env bash
# Container tests: sets up the Docker engine and local base images (scripts/docker-setup.sh), builds
# the image svcplane:test from the host-built app, runs test/docker with testcontainers, and stops
# the dockerd it started (an engine that was already running is left alone).
# When no engine can be started (or anything else of the setup fails) the suite FAILS: it prints
# "FAILED: docker tests: <reason>", records one failed test and the reason in $SVCPLANE_SUMMARY_FILE
# and exits 1. It is skipped only when asked: SVCPLANE_SKIP naming "docker" (then nothing is started,
# and the skip is recorded with that reason).
#
# Environment: SVCPLANE_IMAGE (default svcplane:test), SVCPLANE_DOCKER_KEEP=1 leaves a dockerd this
# script started running (faster reruns).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh

DOCKER=/usr/bin/docker
IMAGE=${SVCPLANE_IMAGE:-svcplane:test}
BASE=svcplane-node:bookworm
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1fs", b - a}'; }
say() { echo "test-docker: $*" >&2; }
summary() { if [[ -n ${SVCPLANE_SUMMARY_FILE:-} ]]; then printf '%s\n' "$@" >>"$SVCPLANE_SUMMARY_FILE"; fi; }
# fail REASON: the suite failed before any test ran.
fail() {
  echo "FAILED: docker tests: $1"
  summary "0 passed, 1 failed, 0 skipped" "failed: docker: $1"
  exit 1
}

if [[ ",${SVCPLANE_SKIP:-}," == *,docker,* ]]; then
  echo "SKIP: docker tests: asked by SVCPLANE_SKIP=$SVCPLANE_SKIP"
  summary "0 passed, 0 failed, 1 skipped" "skipped: docker (asked by SVCPLANE_SKIP=$SVCPLANE_SKIP)"
  exit 0
fi

started_file=$(mktemp /tmp/svcplane-dockerd-started.XXXXXX)
reason_file=$(mktemp /tmp/svcplane-docker-reason.XXXXXX)
dockerd_pid=
stop_engine() {
  if [[ -n $dockerd_pid && ${SVCPLANE_DOCKER_KEEP:-} != 1 ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
    say "stopping dockerd $dockerd_pid (started by this run)"
    kill -TERM "$dockerd_pid"
    for _ in $(seq 1 100); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      say "dockerd $dockerd_pid still running after 10s; killing it"
      kill -KILL "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  rm -f "$started_file" "$reason_file"
}
# Leftovers of a crashed test run (the tests remove their own containers and networks).
remove_leftovers() {
  local ids
  ids=$("$DOCKER" ps -aq --filter label=svcplane.test.run 2>/dev/null)
  if [[ -n $ids ]]; then "$DOCKER" rm -f $ids >/dev/null 2>&1 || true; fi
  ids=$("$DOCKER" network ls -q --filter label=svcplane.test.run 2>/dev/null)
  if [[ -n $ids ]]; then "$DOCKER" network rm $ids >/dev/null 2>&1 || true; fi
}
trap 'remove_leftovers; stop_engine' EXIT

t=$(now)
SVCPLANE_DOCKER_STARTED_FILE=$started_file SVCPLANE_DOCKER_REASON_FILE=$reason_file bash scripts/docker-setup.sh
rc=$?
dockerd_pid=$(cat "$started_file" 2>/dev/null)
if ((rc != 0)); then
  reason=$(cat "$reason_file" 2>/dev/null)
  if ((rc == 3)); then fail "engine unavailable: ${reason:-no reason given}"; fi
  fail "scripts/docker-setup.sh failed (exit $rc${reason:+: $reason}; its messages above)"
fi
say "engine and base images ready in $(since "$t")"

# The image takes the host-built app (see the Dockerfile); scripts/setup.sh has built it.
if [[ ! -f dist/src/cli/main.js ]]; then
  npx tsc -p tsconfig.build.json || fail "tsc -p tsconfig.build.json failed"
fi
# …and Debian 13's nft, which the image ships in /opt/svcplane-nft (idempotent: seconds when present).
bash scripts/nft-install.sh || fail "scripts/nft-install.sh failed"
t=$(now)
old_id=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)
if ! DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --network=none -t "$IMAGE" \
  --build-arg PREBUILT=1 --build-arg BUILD_BASE="$BASE" --build-arg RUNTIME_BASE="$BASE" . >/dev/null; then
  fail "docker build of $IMAGE failed"
fi
say "built $IMAGE in $(since "$t")"
# The previous build of the tag would stay behind as a dangling image: remove it (only that one).
if [[ -n $old_id && $old_id != "$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
  "$DOCKER" rmi "$old_id" >/dev/null 2>&1 || true
fi

t=$(now)
TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=localhost SVCPLANE_IMAGE=$IMAGE \
  npx mocha --timeout 120000 'test/docker/**/*.test.ts'
status=$?
say "tests finished in $(since "$t")"
exit "$status"
