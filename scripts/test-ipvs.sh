#!/usr/bin/env bash
# IPVS test suite: builds on the host, then runs every test/ipvs/**/*.test.ts (compiled to
# dist/test/ipvs/**/*.test.js) in ONE User-mode Linux boot and ONE mocha process (plain node, no tsx:
# the TS loader is slow under UML). SVCPLANE_SUMMARY_FILE is passed in (uml-run.sh passes SVCPLANE_*),
# so the reporter's closing line lands in the host's summary file (/tmp is shared through hostfs).
#   scripts/test-ipvs.sh [mocha args...]      e.g. --grep smoke
# Env: SVCPLANE_IPVS_TIMEOUT (seconds for the whole suite, default 1200), SVCPLANE_SKIP_BUILD=1.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/node-env.sh

if [[ ${SVCPLANE_SKIP_BUILD:-} != 1 ]]; then
  # Type errors elsewhere are the typecheck step's business: tsc still emits, so go on with what it wrote.
  npx tsc -p tsconfig.build.json >/dev/null 2>&1 || echo "test-ipvs: tsc reported errors (see the typecheck step); running the emitted JS" >&2
fi

# Only tests whose TypeScript source still exists (dist/ may hold compiled leftovers of deleted files).
files=()
while IFS= read -r -d '' ts; do
  js=dist/${ts%.ts}.js
  if [[ -f $js ]]; then files+=("$js"); else echo "test-ipvs: $ts was not compiled ($js missing)" >&2; fi
done < <(find test/ipvs -name '*.test.ts' -print0 | sort -z)
summary() { if [[ -n ${SVCPLANE_SUMMARY_FILE:-} ]]; then printf '%s\n' "$@" >>"$SVCPLANE_SUMMARY_FILE"; fi; }
if ((${#files[@]} == 0)); then
  echo "test-ipvs: no compiled tests under dist/test/ipvs" >&2
  summary "0 passed, 1 failed, 0 skipped" "failed: ipvs: no compiled tests under dist/test/ipvs"
  exit 1
fi

bash scripts/uml-run.sh --timeout "${SVCPLANE_IPVS_TIMEOUT:-1200}" --mem 1G -- \
  node node_modules/mocha/bin/mocha.js --no-config --forbid-only --reporter ./test/support/reporter.cjs \
  --timeout 60000 --exit "$@" "${files[@]}"
status=$?
if ((status == 125)); then
  echo "test-ipvs: User-mode Linux failed; no IPVS test ran" >&2
  summary "0 passed, 1 failed, 0 skipped" "failed: ipvs: User-mode Linux failed, no IPVS test ran (uml-run.sh's reason above)"
fi
exit "$status"
