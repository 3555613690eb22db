#!/usr/bin/env bash
# Runs every test: static checks, unit, real-kernel integration (in private network namespaces),
# IPVS inside User-mode Linux, and the container tests when a Docker engine can be started.
# Ends with one line "N passed, N failed, N skipped" over all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

summary=$(mktemp /tmp/svcplane-summary.XXXXXX)
export SVCPLANE_SUMMARY_FILE=$summary
status=0
step() {
  local name=$1
  shift
  echo "=== $name"
  if ! "$@"; then
    echo "=== $name: FAILED"
    status=1
  fi
}

step typecheck npx tsc -p tsconfig.json --noEmit
step lint npx eslint .
step format npx prettier --check .
step unit npx mocha 'test/unit/**/*.test.ts'
step integration npx mocha --timeout 120000 'test/integration/**/*.test.ts'
if [[ -x scripts/test-ipvs.sh ]]; then step ipvs bash scripts/test-ipvs.sh; fi
if [[ -x scripts/test-docker.sh ]]; then step docker bash scripts/test-docker.sh; fi

# Static steps count as one test each so a lint failure shows in the closing line.
read -r p f s < <(awk '{p+=$1; f+=$3; s+=$5} END {print p+0, f+0, s+0}' "$summary")
rm -f "$summary"
if ((status != 0 && f == 0)); then f=1; fi
echo
echo "$p passed, $f failed, $s skipped"
exit "$status"
