#!/usr/bin/env bash
# Runs one command inside User-mode Linux: a real 6.1 kernel with IPVS, dummy, veth, bridge, ipset,
# conntrack and iptables-legacy, booted on the host's root filesystem (hostfs). The host's network,
# /run, /etc/alternatives and /lib/modules are never touched.
#
#   scripts/uml-run.sh [--timeout SECONDS] [--mem SIZE] [--env NAME[=VALUE]]... [--cwd DIR]
#                      [--console FILE] [--verbose] -- CMD ARGS...
#
# Prints CMD's stdout and stderr (after it finished) and exits with CMD's exit status;
# 124 = CMD timed out inside UML, 125 = UML could not boot / panicked / hit the hard timeout.
# Inside: cwd as given (default: the caller's), HOME on a tmpfs, stdin /dev/null, lo up, all the
# modules kube-proxy uses preloaded. SVCPLANE_* variables of the caller are passed in; more with --env.
set -uo pipefail

die() {
  echo "uml-run: $*" >&2
  exit 125
}
usage() {
  sed -n '6,7p' "$0" | sed 's/^# \{0,3\}//' >&2
  exit 125
}

timeout_s=600
mem=1G
cwd=$PWD
console_copy=
verbose=0
envs=()
while (($#)); do
  case $1 in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --cwd) cwd=${2:?}; shift 2 ;;
    --console) console_copy=${2:?}; shift 2 ;;
    --verbose | -v) verbose=1; shift ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "uml-run: unknown option $1" >&2; usage ;;
  esac
done
(($# > 0)) || usage
[[ $timeout_s =~ ^[0-9]+$ ]] && ((timeout_s > 0)) || die "--timeout wants a positive number of seconds"
[[ $mem =~ ^[0-9]+[KMG]?$ ]] || die "--mem wants a size like 512M or 1G"
cwd_in=$cwd
cwd=$(cd "$cwd_in" 2>/dev/null && pwd -P) || die "no such directory: $cwd_in"

((EUID == 0)) || die "must run as root (User-mode Linux needs it for hostfs as root inside)"
uml=$(command -v linux.uml || command -v linux) || die "User-mode Linux is not installed (apt-get install user-mode-linux kmod)"
"$uml" --version >/dev/null 2>&1 || true
command -v modprobe >/dev/null || die "kmod is not installed (apt-get install kmod)"
ls -d /usr/lib/uml/modules/*/ >/dev/null 2>&1 || die "no UML modules under /usr/lib/uml/modules"
init=$(cd "$(dirname "$0")" && pwd -P)/uml-init.sh
[[ -x $init ]] || die "$init is missing or not executable"
[[ $init != *[[:space:]]* ]] || die "the init path may not contain spaces: $init"
# uml-init.sh mounts private file systems over /run and /dev (and /var/tmp, unless the checkout or the
# working directory is there): a checkout or working directory under /run or /dev would vanish.
checkout=${init%/scripts/uml-init.sh}
for p in "$checkout" "$cwd"; do
  for hidden in /run /dev /proc /sys; do
    [[ $p/ != "$hidden"/* ]] || die "$p is under $hidden, which is private inside User-mode Linux: use a checkout elsewhere"
  done
done

# RAM file: UML backs guest memory with a file in TMPDIR; /dev/shm keeps it off the disk.
mem_bytes=$(numfmt --from=iec "$mem")
shm_free=$(($(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1 || echo 0)))
if ((shm_free > mem_bytes + (256 << 20))); then ram_dir=/dev/shm; else ram_dir=${TMPDIR:-/tmp}; fi

# Shared directory (hostfs sees the host's /tmp): command, environment, results, console log.
work=$(mktemp -d /tmp/svcplane-uml.XXXXXXXX) || die "mktemp failed"
# (Tests find this run's kernel processes by it: their command lines hold uml_dir=$work/uml.)
if ((verbose)); then echo "uml-run: work directory $work" >&2; fi
uml_pid=
cleanup() {
  if [[ -n $uml_pid ]]; then
    kill -KILL "$uml_pid" 2>/dev/null
    kill -KILL -- "-$uml_pid" 2>/dev/null
    wait "$uml_pid" 2>/dev/null
    uml_pid=
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

printf '%s\0' "$@" >"$work/cmd"
{
  # The caller's SVCPLANE_* variables (e.g. SVCPLANE_SUMMARY_FILE for the test reporter), then --env.
  while IFS= read -r -d '' kv; do
    [[ $kv == SVCPLANE_* ]] && printf '%s\0' "$kv"
  done < <(env -0)
  for e in "${envs[@]}"; do
    if [[ $e == *=* ]]; then printf '%s\0' "$e"; elif [[ -v $e ]]; then printf '%s=%s\0' "$e" "${!e}"; fi
  done
} >"$work/env"
printf '%s' "$cwd" >"$work/cwd"
printf '%s' "$timeout_s" >"$work/timeout"
mkdir "$work/uml"

# UML 6.1 saves a task's FPU state with PTRACE_SETREGSET(NT_X86_XSTATE) using a fixed 832-byte buffer;
# hosts whose XSAVE area is larger (AVX-512, PKU, AMX) answer EFAULT and UML panics at the first process
# ("ptrace set fp regs failed, errno = 14"). This seccomp filter makes the XSTATE regset calls fail with
# EIO, so UML falls back to PTRACE_GETFPREGS/SETFPREGS (x87/SSE). uml-init.sh then turns off glibc's
# AVX code paths so that state is all user code needs.
read -r -d '' fpu_shim <<'PERL'
use strict;
my @f = (
  [0x20, 0, 0, 4],  [0x15, 0, 8, 0xc000003e],                          # arch == x86_64, else allow
  [0x20, 0, 0, 0],  [0x15, 0, 6, 101],                                 # nr == ptrace, else allow
  [0x20, 0, 0, 16], [0x15, 1, 0, 0x4204], [0x15, 0, 3, 0x4205],        # GETREGSET or SETREGSET
  [0x20, 0, 0, 32], [0x15, 0, 1, 0x202],                               # regset NT_X86_XSTATE
  [0x06, 0, 0, 0x00050005], [0x06, 0, 0, 0x7fff0000],                  # errno EIO | allow
);
my $prog = join '', map { pack 'SCCL', @$_ } @f;
my $fprog = pack 'Sx6Q', scalar(@f), unpack('Q', pack('p', $prog));
syscall(157, 38, 1, 0, 0, 0) == 0 or die "uml-run: PR_SET_NO_NEW_PRIVS: $!\n";
syscall(157, 22, 2, unpack('Q', pack('p', $fprog)), 0, 0) == 0 or die "uml-run: seccomp: $!\n";
exec { $ARGV[0] } @ARGV or die "uml-run: exec $ARGV[0]: $!\n";
PERL

# Own session (setsid), own PID namespace (all UML helper processes die with its PID 1), and a parent-
# death signal so even a SIGKILLed uml-run.sh takes UML down. stdin/stdout are never the caller's.
started=$(date +%s%N)
TMPDIR=$ram_dir setpriv --pdeathsig KILL -- setsid unshare --pid --fork --kill-child -- \
  perl -e "$fpu_shim" -- "$uml" mem="$mem" rootfstype=hostfs rootflags=/ rw init="$init" \
  con=null con0=fd:0,fd:1 ssl=null umid=svcplane uml_dir="$work/uml" \
  SVCPLANE_UML_DIR="$work" \
  </dev/null >"$work/console.log" 2>&1 &
uml_pid=$!

hard_limit=$((timeout_s + 90)) # boot + module load + the inner timeout's kill grace
reason=
while kill -0 "$uml_pid" 2>/dev/null; do
  if [[ -f $work/status ]]; then
    # Command done; give the kernel a moment to power off, then take it down anyway.
    for _ in $(seq 50); do kill -0 "$uml_pid" 2>/dev/null || break; sleep 0.1; done
    break
  fi
  if grep -q -e 'Kernel panic' -e 'Attempted to kill init' "$work/console.log" 2>/dev/null; then
    reason="kernel panic"
    break
  fi
  if (($(date +%s%N) - started > hard_limit * 1000000000)); then
    reason="hard timeout of ${hard_limit}s"
    break
  fi
  sleep 0.1
done
kill -KILL "$uml_pid" 2>/dev/null
kill -KILL -- "-$uml_pid" 2>/dev/null
wait "$uml_pid" 2>/dev/null
uml_pid=
elapsed_ms=$((($(date +%s%N) - started) / 1000000))

[[ -n $console_copy ]] && cp "$work/console.log" "$console_copy"
[[ -f $work/stdout ]] && cat "$work/stdout"
[[ -f $work/stderr ]] && cat "$work/stderr" >&2
if ((verbose)); then
  [[ -f $work/init.log ]] && sed 's/^/uml-run: /' "$work/init.log" >&2
  echo "uml-run: total ${elapsed_ms}ms" >&2
fi

if [[ -f $work/status ]]; then
  status=$(<"$work/status")
  if ((status == 125 && !verbose)) && [[ -f $work/init.log ]]; then sed 's/^/uml-run: /' "$work/init.log" >&2; fi
  exit "$status"
fi
echo "uml-run: User-mode Linux did not finish the command (${reason:-kernel exited without a status}) after ${elapsed_ms}ms" >&2
[[ -f $work/init.log ]] && sed 's/^/uml-run: /' "$work/init.log" >&2
echo "uml-run: last console lines:" >&2
tail -n 25 "$work/console.log" 2>/dev/null | sed 's/^/  | /' >&2
exit 125
