#!/usr/bin/env bash
# The main job on its embedded default: set up what is missing, then run the demo
# (a sandbox node with pods, svcplane on examples/, real requests, a table, teardown).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "svcplane demo: run as root (it creates network namespaces)" >&2
  exit 1
fi
bash scripts/setup.sh
. scripts/node-env.sh
exec node bin/svcplane.js demo "$@"
