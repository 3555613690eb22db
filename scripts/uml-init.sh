#!/bin/bash
# PID 1 inside User-mode Linux, started by scripts/uml-run.sh (never run it on the host: it refuses).
#
# The root filesystem is the host's own (hostfs), so everything that must stay private to this kernel
# lives on tmpfs mounts made here: /run (ip netns, xtables lock), /dev/shm, HOME, the module directory
# and a copy of /etc/alternatives that selects iptables-legacy (the only backend this kernel has).
#
# Protocol with uml-run.sh: the kernel parameter SVCPLANE_UML_DIR reaches us as an environment variable
# and names a host directory (under /tmp, shared through hostfs) holding
#   cmd      the command, NUL-separated arguments      env      NUL-separated KEY=VALUE to export
#   cwd      working directory                          timeout  seconds for the command
# We write back: stdout, stderr, status (exit code of the command), init.log (our own messages).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
# FPU state is saved as x87/SSE only when the host's XSAVE area is too big for this UML (see the seccomp
# note in uml-run.sh): keep glibc (and OpenSSL) off AVX/AVX-512 so that threads sharing one host process
# never lose vector state. glibc picks its string functions at start-up, so re-exec this shell first.
# Node.js decodes UTF-8 with simdutf (and parses JSON with simdjson), which pick AVX-512 kernels by CPUID
# whatever glibc's tunables say: with the state saved as x87/SSE their results come out garbled (Node 26
# read non-ASCII source files as NULs and failed to compile them). SSE4.2 ("westmere") is what they keep.
export SIMDUTF_FORCE_IMPLEMENTATION=${SIMDUTF_FORCE_IMPLEMENTATION:-westmere}
export SIMDJSON_FORCE_IMPLEMENTATION=${SIMDJSON_FORCE_IMPLEMENTATION:-westmere}
if [[ -z ${GLIBC_TUNABLES:-} ]]; then
  export GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX_Fast_Unaligned_Load,-EVEX
  export OPENSSL_ia32cap='~0x1000000000000000:~0x642D0230020'
  exec /bin/bash "$0" "$@"
fi

dir=${SVCPLANE_UML_DIR:-}
unset SVCPLANE_UML_DIR

# Halt this kernel: flush hostfs writes, then reboot(2) with POWER_OFF (no systemd here).
halt() {
  sync
  echo o >/proc/sysrq-trigger 2>/dev/null
  systemctl --force --force poweroff 2>/dev/null
  perl -e 'syscall(169, 0xfee1dead, 672274793, 0x4321fedc)' 2>/dev/null
  sleep 1000
}

if [[ $$ -ne 1 ]] || [[ -z $dir ]]; then
  echo "uml-init.sh: must run as init inside User-mode Linux (started by scripts/uml-run.sh)" >&2
  exit 2
fi

log() { echo "uml-init: $*" >>"$dir/init.log"; }
fail() {
  log "FATAL: $*"
  echo "uml-init: FATAL: $*" >&2
  echo 125 >"$dir/status.tmp" && mv "$dir/status.tmp" "$dir/status"
  halt
}
trap 'fail "init script error at line $LINENO"' ERR

ms() { local t; read -r t _ </proc/uptime; echo "${t}s"; }

# --- file systems -----------------------------------------------------------------------------------------
# What this init hides behind private mounts must never hold the checkout (its scripts, node_modules,
# dist) or the command's working directory: /run and /dev are private whatever happens (uml-run.sh
# refuses such a checkout before booting), /var/tmp only when neither lives there.
checkout=$(cd "$(dirname "$0")/.." && pwd -P)
cwd=$(<"$dir/cwd")
under() { [[ $1/ == "$2"/* ]]; }
var_tmp_private=1
for p in "$checkout" "$cwd"; do
  for hidden in /run /dev /proc /sys; do
    if under "$p" "$hidden"; then fail "$p is under $hidden, which is private inside User-mode Linux"; fi
  done
  if under "$p" /var/tmp; then var_tmp_private=; fi
done
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
log "kernel up at $(ms)"
# The kernel mounts devtmpfs on /dev itself (CONFIG_DEVTMPFS_MOUNT); mount it only if it did not.
if ! grep -q '^devtmpfs /dev ' /proc/mounts; then mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs /dev"; fi
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts || fail "mount devpts"
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# /run is shared with the host otherwise: ip netns add would write the host's /run/netns.
mount -t tmpfs -o mode=755 tmpfs /run || fail "mount /run"
mkdir -p /run/lock /run/netns /run/uml/home /run/uml/bin /run/uml/alternatives
# /var/tmp would also land on the host's disk: private, unless the checkout or the working directory
# is there (a CI runner or a user may clone under /var/tmp); then it stays the host's, and we say so.
if [[ -n $var_tmp_private ]]; then
  mount -t tmpfs -o mode=1777 tmpfs /var/tmp || fail "mount /var/tmp"
else
  log "the checkout ($checkout) or the working directory ($cwd) is under /var/tmp: /var/tmp stays the host's"
fi
export HOME=/run/uml/home

# --- modules: modprobe -d DIR, DIR/lib/modules/<ver> -> the UML modules (never created on the host) --------
kver=$(uname -r)
[[ -d /usr/lib/uml/modules/$kver ]] || fail "no UML modules for kernel $kver under /usr/lib/uml/modules"
mkdir -p /run/uml/mod/lib/modules
ln -s "/usr/lib/uml/modules/$kver" "/run/uml/mod/lib/modules/$kver"
real_modprobe=$(command -v modprobe) || fail "modprobe not found (install kmod)"
# The same wrapper serves callers on PATH and the kernel's own module autoload (kernel.modprobe), which
# starts it with a bare environment: without GLIBC_TUNABLES, glibc's AVX code paths lose their state in
# this kernel (see the top of this file) and modprobe misread its own arguments ("Module /run/uml/mod
# not found", "invalid option"), so every autoload failed. env sets them before the shell starts.
# Modules listed in /run/uml/hidden-modules (one name per line, after alias resolution) are refused as
# if not installed: the tests of a missing kernel module hide one and bring it back.
cat >/run/uml/bin/modprobe <<EOF
#!/usr/bin/env -S GLIBC_TUNABLES=$GLIBC_TUNABLES /bin/sh
if [ -s /run/uml/hidden-modules ]; then
  for arg in "\$@"; do
    case \$arg in -*) continue ;; esac
    for m in \$($real_modprobe -d /run/uml/mod -R "\$arg" 2>/dev/null) "\$arg"; do
      if grep -qxF -- "\$m" /run/uml/hidden-modules; then
        echo "modprobe: FATAL: Module \$arg not found (hidden by /run/uml/hidden-modules)" >&2
        exit 1
      fi
    done
  done
fi
exec $real_modprobe -d /run/uml/mod "\$@"
EOF
chmod 755 /run/uml/bin/modprobe
echo /run/uml/bin/modprobe >/proc/sys/kernel/modprobe
export PATH=/run/uml/bin:$PATH

# Everything kube-proxy (and svcplane) may need, in one modprobe run: br_netfilter and the net.ipv4.vs.*
# sysctls only exist once loaded.
modules=(
  ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq
  ip_vs_mh ip_vs_fo ip_vs_ovf
  nf_conntrack nf_conntrack_netlink nf_nat nfnetlink
  ip_tables ip6_tables iptable_nat iptable_filter iptable_mangle iptable_raw
  ip6table_nat ip6table_filter ip6table_mangle ip6table_raw
  xt_comment xt_mark xt_addrtype xt_conntrack xt_set xt_multiport xt_statistic xt_recent xt_MASQUERADE
  xt_ipvs xt_nat xt_REDIRECT xt_physdev xt_tcpudp xt_CT xt_LOG xt_NFLOG xt_limit xt_state xt_connmark
  xt_iprange xt_pkttype xt_hashlimit ipt_REJECT ip6t_REJECT
  ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet ip_set_hash_net
  ip_set_hash_netport ip_set_hash_netiface ip_set_bitmap_port ip_set_bitmap_ip ip_set_list_set
  veth bridge br_netfilter dummy
  # SCTP's listen() needs hmac(md5) for its cookies. These failed to autoload ("sctp: failed to load
  # transform for md5: -2", listen() ENOSYS) while the autoload wrapper ran without GLIBC_TUNABLES (fixed
  # above); preloading them stays the cheaper way.
  sctp hmac xt_sctp
)
if ! out=$(modprobe -a "${modules[@]}" 2>&1); then log "modprobe reported: $out"; fi
[[ -d /proc/sys/net/ipv4/vs ]] || fail "ip_vs did not load: $out"
log "modules loaded at $(ms)"

# --- iptables-legacy via a private copy of /etc/alternatives --------------------------------------------
# One perl process re-creates the symlinks (cp -a plus one ln per tool is ~1.5 s slower over hostfs),
# pointing {ip,ip6,arp,eb}tables{,-restore,-save} at their -legacy variants where those exist.
perl -e '
  my $dst = "/run/uml/alternatives";
  for my $p (glob "/etc/alternatives/*") {
    my $t = readlink($p); next unless defined $t;
    my $n = substr($p, length "/etc/alternatives/");
    $t = "/usr/sbin/$1-legacy$2" if $n =~ /^(ip6?tables|arptables|ebtables)(|-restore|-save)$/ && -e "/usr/sbin/$1-legacy$2";
    symlink($t, "$dst/$n") or die "$n: $!\n";
  }' || fail "copy /etc/alternatives"
mount --bind /run/uml/alternatives /etc/alternatives || fail "bind mount over /etc/alternatives"
log "iptables-legacy selected at $(ms)"

# --- network: only loopback; tests build their own namespaces -------------------------------------------
ip link set lo up || fail "lo up"
hostname svcplane-uml 2>/dev/null || true

# --- the command -----------------------------------------------------------------------------------------
export SVCPLANE_IN_UML=1
while IFS= read -r -d '' kv; do export "${kv?}"; done <"$dir/env"
# The caller's Node.js (scripts/node-env.sh: the current LTS from the checkout's .node/) first here too.
if [[ -n ${SVCPLANE_NODE_BIN:-} && -x $SVCPLANE_NODE_BIN/node ]]; then export PATH=$SVCPLANE_NODE_BIN:$PATH; fi
mapfile -d '' -t cmd <"$dir/cmd"
limit=$(<"$dir/timeout")
((${#cmd[@]} > 0)) || fail "empty command"
cd "$cwd" || fail "cd $cwd"
log "running at $(ms): ${cmd[*]}"
trap - ERR
timeout --kill-after=5 "$limit" "${cmd[@]}" </dev/null >"$dir/stdout" 2>"$dir/stderr"
rc=$?
if ((rc == 124)); then echo "uml-init: command timed out after ${limit}s" >>"$dir/stderr"; fi
log "command exited $rc at $(ms)"
echo "$rc" >"$dir/status.tmp" && mv "$dir/status.tmp" "$dir/status"
halt
