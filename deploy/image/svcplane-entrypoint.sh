#!/bin/sh
# Installed in the image as /usr/local/bin/svcplane, and as /usr/local/bin/kube-proxy so that kube-proxy's
# DaemonSet runs svcplane with only its image changed. Picks the iptables backend the way kube-proxy's
# iptables-wrapper does and hands it to svcplane as --iptables-binary (iptables-nft or
# iptables-legacy). Nothing is written anywhere: the image runs with a read-only root filesystem, and
# /etc/alternatives keeps Debian's default (nft) for anything else that calls plain `iptables`.
#
# SVCPLANE_IPTABLES_MODE=nft|legacy forces a backend; auto (default) uses the one that already holds
# kube-proxy's/kubelet's hint chains, else the one with more rules (hostNetwork pods see the node's
# rules), else nft. The legacy backend needs CAP_NET_RAW, even to be read: auto refuses to guess
# without it. An explicit --iptables-binary in the arguments wins.
set -eu

APP=${SVCPLANE_APP_DIR:-/app}
MODE=${SVCPLANE_IPTABLES_MODE:-auto}

count_rules() { # $1 = legacy|nft: number of rules in all tables, IPv4 and IPv6
  { "iptables-$1-save" 2>/dev/null || true; "ip6tables-$1-save" 2>/dev/null || true; } | grep -c '^-' || true
}
has_hint() { # kube-proxy / kubelet leave these chains in the backend they use
  { "iptables-$1-save" -t mangle 2>/dev/null || true; } | grep -qE '^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) '
}

# The subcommands that program or read iptables take --iptables-binary, and so does kube-proxy's form
# (`svcplane [flags]`, no subcommand: the daemon, --cleanup or --init-only), except when the flags only
# print (--version, --help) or write the configuration (--write-config-to).
case ${1:-} in
  run | sync | cleanup | diff | explain | trace) ;;
  "" | -*)
    for arg in "$@"; do
      case $arg in
        --version | --version=* | -h | --help | --write-config-to | --write-config-to=*)
          exec node "$APP/bin/svcplane.js" "$@"
          ;;
      esac
    done
    ;;
  *) exec node "$APP/bin/svcplane.js" "$@" ;;
esac
for arg in "$@"; do
  case $arg in
    --iptables-binary | --iptables-binary=*) exec node "$APP/bin/svcplane.js" "$@" ;;
  esac
done

case $MODE in
  nft | legacy) ;;
  auto)
    if ! iptables-legacy-save -t mangle >/dev/null 2>&1; then
      echo "svcplane: SVCPLANE_IPTABLES_MODE=auto cannot read the legacy iptables backend (it needs" \
        "CAP_NET_RAW): set SVCPLANE_IPTABLES_MODE=nft, or add NET_RAW to inspect both" >&2
      exit 2
    elif has_hint legacy; then
      MODE=legacy
    elif has_hint nft; then
      MODE=nft
    elif [ "$(count_rules legacy)" -gt "$(count_rules nft)" ]; then
      MODE=legacy
    else
      MODE=nft
    fi
    ;;
  *)
    echo "svcplane: SVCPLANE_IPTABLES_MODE must be nft, legacy or auto, not '$MODE'" >&2
    exit 2
    ;;
esac

case ${1:-} in
  "" | -*) exec node "$APP/bin/svcplane.js" "--iptables-binary=iptables-$MODE" "$@" ;;
esac
cmd=$1
shift
exec node "$APP/bin/svcplane.js" "$cmd" "--iptables-binary=iptables-$MODE" "$@"
