#!/usr/bin/env bash
# Runs every test: static checks, unit, real-kernel integration (in private network namespaces),
# IPVS inside User-mode Linux, and the container tests (a Docker engine this script starts).
# Ends with one line "N passed, N failed, N skipped", followed on the same line by what was skipped
# and why, and which step failed and why.
#
# Nothing is skipped silently: a suite that cannot run (no Docker engine, no User-mode Linux, not
# root) fails. Skips happen only when asked for:
#   SVCPLANE_SKIP=SUITE[,SUITE]   suites not to run (typecheck, lint, format, unit, integration, ipvs,
#                                 docker); each is reported as skipped, "asked by SVCPLANE_SKIP". A test
#                                 that skips itself fails unless SVCPLANE_SKIP names its suite.
# Each mocha suite must run at least as many tests as test/floors.json says (SVCPLANE_SUITE tells the
# reporter which suite it runs), so a suite that quietly shrinks fails.
set -uo pipefail
cd "$(dirname "$0")/.."

summary=$(mktemp /tmp/svcplane-summary.XXXXXX)
trap 'rm -f "$summary"' EXIT
export SVCPLANE_SUMMARY_FILE=$summary
status=0

asked_skip() { [[ ",${SVCPLANE_SKIP:-}," == *",$1,"* ]]; }
# record COUNTS [DETAIL]: one "P passed, F failed, S skipped" line and an optional detail line.
record() {
  echo "$1" >>"$summary"
  if [[ -n ${2:-} ]]; then echo "$2" >>"$summary"; fi
}

# step NAME COUNTS_TESTS CMD...: COUNTS_TESTS=1 for suites whose reporter writes the summary itself.
step() {
  local name=$1 counts=$2 before rc
  shift 2
  if asked_skip "$name"; then
    echo "=== $name: skipped (asked by SVCPLANE_SKIP=$SVCPLANE_SKIP)"
    record "0 passed, 0 failed, 1 skipped" "skipped: $name (asked by SVCPLANE_SKIP=$SVCPLANE_SKIP)"
    return
  fi
  echo "=== $name"
  before=$(grep -c 'passed, .* failed' "$summary")
  SVCPLANE_SUITE=$name "$@"
  rc=$?
  if ((rc == 0)); then return; fi
  status=1
  echo "=== $name: FAILED (exit $rc)"
  # A step that failed without reporting a failed test (a crash, a static check) still counts as one.
  if ((counts == 0)) || ! tail -n +"$((before + 1))" "$summary" | grep -q '^[0-9]* passed, [1-9][0-9]* failed'; then
    record "0 passed, 1 failed, 0 skipped" "failed: $name (exit $rc)"
  fi
}

if ! bash scripts/setup.sh; then
  echo "setup failed"
  echo "0 passed, 1 failed, 0 skipped; failed: setup (scripts/setup.sh)"
  exit 1
fi
# The Node.js setup.sh provided (the current LTS) first on PATH for every step.
. scripts/node-env.sh
if [[ $(node -p 'process.versions.node.split(".")[0]') != "${SVCPLANE_NODE_VERSION%%.*}" ]]; then
  echo "setup: node $(node --version) at $(command -v node), not Node.js $SVCPLANE_NODE_VERSION (scripts/node-env.sh)"
  echo "0 passed, 1 failed, 0 skipped; failed: setup (node $(node --version), want $SVCPLANE_NODE_VERSION)"
  exit 1
fi
echo "=== node $(node --version) ($(command -v node))"

step typecheck 0 npx tsc -p tsconfig.json --noEmit
step lint 0 npx eslint .
step format 0 npx prettier --check .
step unit 1 npx mocha 'test/unit/**/*.test.ts'
step integration 1 npx mocha --timeout 120000 'test/integration/**/*.test.ts'
step ipvs 1 bash scripts/test-ipvs.sh
step docker 1 bash scripts/test-docker.sh

read -r p f s < <(awk '/^[0-9]+ passed, / {p+=$1; f+=$3; s+=$5} END {print p+0, f+0, s+0}' "$summary")
if ((status != 0 && f == 0)); then f=1; fi
details=$(grep -E '^(skipped|failed): ' "$summary" | paste -sd ';' | sed 's/;/; /g')
echo
echo "$p passed, $f failed, $s skipped${details:+; $details}"
exit "$status"
