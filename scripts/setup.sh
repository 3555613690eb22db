#!/usr/bin/env bash
# Installs what svcplane needs on a Debian 12 machine (as root), then npm ci and build.
# Idempotent: takes seconds when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iptables ipset ipvsadm conntrack iproute2 nftables kmod user-mode-linux procps socat time curl openssl)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.svcplane-lock
if [[ ! -f $stamp ]] || ! cmp -s package-lock.json "$stamp"; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# Build only when a source is newer than the last build.
if [[ ! -f dist/.built ]] || [[ -n "$(find src test bench tsconfig*.json package.json -newer dist/.built -print -quit 2>/dev/null)" ]]; then
  echo "setup: build" >&2
  rm -rf dist
  npx tsc -p tsconfig.build.json
  touch dist/.built
fi
