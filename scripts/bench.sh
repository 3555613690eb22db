#!/usr/bin/env bash
# npm run bench [-- --sizes 1000,10000 --changes 100]: svcplane's iptables-mode benchmark.
# Everything kernel-side happens inside a private, empty network namespace (unshare -n): the
# machine's own rules are never read or touched. Default sizes 1k,5k,10k (≈10 min on 2 shared
# cores); 30k is opt-in: --sizes 30000. Results: a table on stdout, JSON in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v /usr/bin/time >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
fi
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec unshare -n node dist/bench/bench.js "$@"
