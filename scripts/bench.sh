#!/usr/bin/env bash
# npm run bench [-- OPTIONS]: svcplane's benchmark, iptables mode, the manifest source, then IPVS mode.
#
# iptables part: everything kernel-side happens inside a private, empty network namespace (unshare -n):
# the machine's own rules are never read or touched. Default sizes 1k,5k,10k (≈10 min on 2 shared
# cores); 30k is opt-in: --sizes 30000. Its options: --sizes, --changes, --latency-at, --out.
#
# Manifest part (bench/manifests-bench.ts, after the iptables part): `svcplane sync` and `svcplane run` on
# a manifest directory in both layouts (100 Services per JSON file; one YAML file per Service), each
# process in its own `unshare -n`: load time, whole command vs the restore floor, idle CPU,
# event-to-rules vs the partial-restore floor, RSS. Default 1k,10k (≈10 min). Options:
#   --no-manifests  skip it     --manifests-only  only it     --manifest-sizes LIST (e.g. 1k,10k)
#   --manifest-changes N (default 30)   --manifest-idle-ms MS (default 90000: the daemon's idle window)   --manifest-out FILE (default bench/results/manifests-<date>.json)
#
# IPVS part (after the manifest part): one User-mode Linux boot per size (scripts/uml-run.sh; the
# host's network is never touched), default 1k,10k (≈10 min, most of it the 10k size). Options:
#   --no-ipvs            skip it                      --ipvs-only       skip the iptables part
#   --ipvs-sizes LIST    e.g. 1000,10000 (or 1k,10k)  --ipvs-mem SIZE   UML memory (default 4G)
#   --ipvs-timeout SECS  per size inside UML (default max(600, services × 0.15))
#   --ipvs-out FILE      JSON (default bench/results/ipvs-<date>.json)
# NetworkPolicy part (bench/netpol-bench.ts, last; under `unshare -n`): 1k policies x 10k pods (1k on this
# node), the real enforcer into the real kernel: first program, one pod label change to enforced (p50,
# max, per stage) against the nft element-transaction floor, peak RSS (≈1 min). Options:
#   --no-netpol  skip it     --netpol-only  only it     --netpol-changes N (default 30)
#   --netpol-out FILE (default bench/results/netpol-<date>.json)
# nftables part (bench/nftables-bench.ts, after the iptables part, under `unshare -n` too): full sync
# into an empty and a populated kernel against the floor (a bare `nft -f` of the same transaction),
# one-endpoint changes at 10k (change to rules p50/max against the replayed input, bytes per change),
# peak RSS; each size once per nft: the machine's and .nft/bin/nft (nft 1.1.3, scripts/nft-install.sh).
# Default 1k,10k; options: --no-nftables  --nftables-only  --nftables-sizes LIST (e.g. 1k,10k,30k)
#          --nftables-changes N (default 50)  --nftables-out FILE
#          --nftables-binaries LIST (default nft,.nft/bin/nft)
#          --nftables-repeat-up-to N (sizes above N skip the repeated full sync and its floor)
#          --nftables-part-lines N (commands per Services transaction of a full sync; default the proxier's)
# Results: tables on stdout, JSON in bench/results/ (gitignored).
# Env: SVCPLANE_SKIP_BUILD=1 skips scripts/setup.sh (installs, npm ci, rebuild of dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

iptables_args=()
ipvs_args=()
manifest_args=()
netpol_args=()
run_netpol=1
nft_args=()
nft_binaries=nft,.nft/bin/nft
run_nftables=1
run_iptables=1
run_ipvs=1
run_manifests=1
while (($#)); do
  case $1 in
    --no-ipvs) run_ipvs=0; shift ;;
    --no-netpol) run_netpol=0; shift ;;
    --netpol-only) run_iptables=0; run_ipvs=0; run_manifests=0; run_nftables=0; shift ;;
    --no-nftables) run_nftables=0; shift ;;
    --nftables-only) run_iptables=0; run_manifests=0; run_ipvs=0; run_netpol=0; shift ;;
    --nftables-sizes) nft_args+=(--sizes "${2:?--nftables-sizes wants a list}"); shift 2 ;;
    --nftables-changes) nft_args+=(--changes "${2:?--nftables-changes wants a number}"); shift 2 ;;
    --nftables-out) nft_args+=(--out "${2:?--nftables-out wants a file}"); shift 2 ;;
    --nftables-binaries) nft_binaries=${2:?--nftables-binaries wants a list}; shift 2 ;;
    --nftables-repeat-up-to) nft_args+=(--repeat-up-to "${2:?--nftables-repeat-up-to wants a size}"); shift 2 ;;
    --nftables-part-lines) nft_args+=(--part-lines "${2:?--nftables-part-lines wants a number}"); shift 2 ;;
    --netpol-changes) netpol_args+=(--changes "${2:?--netpol-changes wants a number}"); shift 2 ;;
    --netpol-out) netpol_args+=(--out "${2:?--netpol-out wants a file}"); shift 2 ;;
    --ipvs-only) run_iptables=0; run_manifests=0; run_netpol=0; run_nftables=0; shift ;;
    --no-manifests) run_manifests=0; shift ;;
    --manifests-only) run_iptables=0; run_ipvs=0; run_netpol=0; run_nftables=0; shift ;;
    --manifest-sizes) manifest_args+=(--sizes "${2:?--manifest-sizes wants a list}"); shift 2 ;;
    --manifest-changes) manifest_args+=(--changes "${2:?--manifest-changes wants a number}"); shift 2 ;;
    --manifest-idle-ms) manifest_args+=(--idle-ms "${2:?--manifest-idle-ms wants a number}"); shift 2 ;;
    --manifest-out) manifest_args+=(--out "${2:?--manifest-out wants a file}"); shift 2 ;;
    --ipvs-sizes) ipvs_args+=(--sizes "${2:?--ipvs-sizes wants a list}"); shift 2 ;;
    --ipvs-mem) ipvs_args+=(--mem "${2:?--ipvs-mem wants a size}"); shift 2 ;;
    --ipvs-timeout) ipvs_args+=(--timeout "${2:?--ipvs-timeout wants seconds}"); shift 2 ;;
    --ipvs-out) ipvs_args+=(--out "${2:?--ipvs-out wants a file}"); shift 2 ;;
    *) iptables_args+=("$1"); shift ;;
  esac
done
((run_iptables || run_ipvs || run_manifests || run_netpol || run_nftables)) || { echo "bench: nothing left to run" >&2; exit 2; }

if [[ ${SVCPLANE_SKIP_BUILD:-} != 1 ]]; then bash scripts/setup.sh; fi
. scripts/node-env.sh
if ! command -v /usr/bin/time >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
fi
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if ((run_iptables)); then
  unshare -n node dist/bench/bench.js "${iptables_args[@]}"
fi
if ((run_nftables)); then
  echo "bench: nftables part, $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  unshare -n node dist/bench/nftables-bench.js --nft-binaries "$nft_binaries" "${nft_args[@]}"
fi
if ((run_manifests)); then
  echo "bench: manifest part, $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  node dist/bench/manifests-bench.js "${manifest_args[@]}"
fi
if ((run_ipvs)); then
  echo "bench: IPVS part, $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  node dist/bench/ipvs-bench.js "${ipvs_args[@]}"
fi
if ((run_netpol)); then
  echo "bench: NetworkPolicy part, $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  unshare -n node dist/bench/netpol-bench.js "${netpol_args[@]}"
fi
