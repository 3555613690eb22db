#!/usr/bin/env bash
# Installs Debian 13's nft (nftables 1.1.3, libnftnl 1.2.9) into .nft/ for `--nft-binary .nft/bin/nft`
# (docs/performance.md, "nftables mode": at 10k Services a partial sync takes a half to a third of the
# time, because it no longer dumps every chain of the table before each transaction). Debian 12's
# archive has no newer nft and the archive serves no trixie sources here, so this takes trixie's binary
# packages with their own C library and loader (Debian 12's glibc 2.36 is older than they need) and
# runs them through that loader: nothing on the machine changes, nothing outside .nft/ is written.
# Idempotent (seconds when present). Usage: bash scripts/nft-install.sh [DIR] (default .nft).
set -euo pipefail
cd "$(dirname "$0")/.."

NFT_VERSION=1.1.3-1
dir=${1:-.nft}
if [[ -x $dir/bin/nft ]] && "$dir/bin/nft" --version 2>/dev/null | grep -q "v${NFT_VERSION%-*} "; then
  exit 0
fi

case $(dpkg --print-architecture) in
  amd64) triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
  arm64) triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
  *) echo "nft-install: no recipe for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

# The machine's own Debian mirror (from apt's configuration, never written down here), suite trixie.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' |
  awk '$2 == "bookworm" && $3 == "main" { print $1; exit }')
if [[ -z $mirror ]]; then
  echo "nft-install: no Debian bookworm main repository in apt's sources" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache" -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
echo "nft-install: nftables $NFT_VERSION from Debian 13 into $dir/" >&2
apt-get "${apt_opts[@]}" -qq update
# nft, its libraries and theirs (Depends of nftables/libnftables1/libnftnl11/libedit2), and the C library.
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "nftables=$NFT_VERSION" "libnftables1=$NFT_VERSION" \
  libnftnl11 libmnl0 libjansson4 libgmp10 libxtables12 libedit2 libbsd0 libmd0 libtinfo6 libc6)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/lib"
cp -a "$work/root/usr/lib/$triplet/." "$dir/lib/"
rm -rf "$dir/lib/gconv"
cp "$work/root/usr/sbin/nft" "$dir/bin/nft.real"
cat >"$dir/bin/nft" <<EOF
#!/bin/sh
# Debian 13's nft $NFT_VERSION, run by its own loader on its own libraries (scripts/nft-install.sh).
lib=\$(dirname "\$(readlink -f "\$0")")/../lib
exec "\$lib/$loader" --library-path "\$lib" "\$lib/../bin/nft.real" "\$@"
EOF
chmod 0755 "$dir/bin/nft"
"$dir/bin/nft" --version >&2
