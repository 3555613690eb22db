#!/bin/sh
# Installed in the image as /usr/local/bin/svcplane. Picks the iptables backend the way kube-proxy's
# iptables-wrapper does, then runs svcplane. svcplane calls iptables/iptables-restore/iptables-save by
# their plain names, so the choice is made with Debian's alternatives (inside the container only).
#
# SVCPLANE_IPTABLES_MODE=nft|legacy forces a backend; auto (default) uses the one that already holds
# kube-proxy's hint chains or more rules on the host (hostNetwork pods see the node's rules), else nft.
set -eu

APP=${SVCPLANE_APP_DIR:-/app}
MODE=${SVCPLANE_IPTABLES_MODE:-auto}
MARKER=/run/svcplane-iptables-mode

count_rules() { # $1 = legacy|nft: number of rules in all tables, IPv4 and IPv6
  { "iptables-$1-save" 2>/dev/null || true; "ip6tables-$1-save" 2>/dev/null || true; } | grep -c '^-' || true
}
has_hint() { # kube-proxy / kubelet leave these chains in the backend they use
  { "iptables-$1-save" -t mangle 2>/dev/null || true; } | grep -qE '^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) '
}

case $MODE in
  nft | legacy) ;;
  auto)
    if [ -r "$MARKER" ]; then
      MODE=$(cat "$MARKER")
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

case $(readlink -f /usr/sbin/iptables 2>/dev/null || true) in
  *"xtables-$MODE-multi") ;;
  *)
    if ! update-alternatives --quiet --set iptables "/usr/sbin/iptables-$MODE" >/dev/null 2>&1 ||
      ! update-alternatives --quiet --set ip6tables "/usr/sbin/ip6tables-$MODE" >/dev/null 2>&1; then
      echo "svcplane: warning: could not select the iptables $MODE backend (read-only root?)" >&2
    fi
    ;;
esac
echo "$MODE" >"$MARKER" 2>/dev/null || true

exec node "$APP/bin/svcplane.js" "$@"
