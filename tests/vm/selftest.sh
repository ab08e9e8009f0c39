#!/usr/bin/env bash
# selftest.sh — proves the VM test bed works with real IPVS: ONE VM boot that loads ip_vs & co.,
# creates the dummy link kube-ipvs0, adds IPVS services with ipvsadm, creates ipsets, restores a
# kube-proxy nat table with iptables-nft-restore and iptables-legacy-restore, sends a TCP
# connection through the VIP, and runs a dynamically linked program built here with gcc.
#
#   tests/vm/selftest.sh              # ensure + one boot; exit 0 only if every check passed
#   tests/vm/selftest.sh --extended   # + 3 short boots checking the harness itself (and a usage error): exit status
#                                     #   propagation, stdout/stderr separation, timeout, boot failure
# shellcheck disable=SC2016 # the --extended check commands are single-quoted for eval, on purpose
set -euo pipefail
VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM="$VM_DIR/ipvs-vm.sh"
extended=
case "${1:-}" in --extended) extended=1 ;; "") ;; *) echo "usage: $0 [--extended]" >&2; exit 2 ;; esac

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
T0=$(now)

"$VM" ensure
T1=$(now)

# a small dynamically linked host program (gcc + libc6-dev, which brings libcrypt-dev)
if ! command -v gcc >/dev/null 2>&1 || [ ! -e /usr/include/crypt.h ]; then
  [ "$(id -u)" = 0 ] || { echo "selftest: needs gcc and libc6-dev (apt-get install gcc libc6-dev)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >&2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ipvs-vm-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/hello" "$VM_DIR/selftest-hello.c" -lcrypt
"$work/hello" >/dev/null   # works on the host

T2=$(now)
rc=0
(cd "$work" && "$VM" run --timeout 300 --share "$work" --share-ro "$VM_DIR" --libs-of "$work/hello" \
   -- /bin/sh "$VM_DIR/selftest-guest.sh" "$work") | tee "$work/guest.out" || rc=${PIPESTATUS[0]}
T3=$(now)

host_ok=1
if [ "$(cut -d' ' -f1 "$work/guest-wrote.txt" 2>/dev/null)" = guest-was-here ]; then
  echo "ok - host sees the file the guest wrote into the share"
else
  echo "not ok - host does not see the file the guest wrote into the share"; host_ok=
fi

ext_pass=0 ext_fail=0
if [ -n "$extended" ]; then
  ext() {  # ext DESC EXPECTED_RC CHECK_OUTPUT_CMD -- run args...
    local desc=$1 want=$2 grepcmd=$3; shift 4
    local got=0
    "$VM" run "$@" > "$work/ext.out" 2> "$work/ext.err" || got=$?
    if [ "$got" = "$want" ] && eval "$grepcmd"; then
      ext_pass=$((ext_pass + 1)); echo "ok - $desc"
    else
      ext_fail=$((ext_fail + 1)); echo "not ok - $desc (exit $got, wanted $want)"
      sed 's/^/#   out: /' "$work/ext.out"; sed 's/^/#   err: /' "$work/ext.err"
    fi
  }
  ext "exit status and separate stdout/stderr come back from the guest" 7 \
    'grep -qx to-stdout "$work/ext.out" && grep -qx to-stderr "$work/ext.err" && ! grep -q to-stderr "$work/ext.out"' \
    -- -- sh -c 'echo to-stdout; echo to-stderr >&2; exit 7'
  ext "a hanging guest is killed at --timeout and reported (exit 124)" 124 \
    'grep -q TIMEOUT "$work/ext.err"' \
    -- --timeout 15 -- sleep 1000
  ext "a guest that cannot set up is reported as a boot failure (exit 125)" 125 \
    'grep -q "BOOT FAILURE" "$work/ext.err"' \
    -- --modprobe no_such_module -- true
  ext "a malformed --forward is a usage error (exit 2)" 2 \
    'grep -q "HOSTPORT:GUESTPORT" "$work/ext.err"' \
    -- --forward 70000:80 -- true
fi
T4=$(now)

echo "selftest timings: ensure $(secs "$T0" "$T1") s, gcc $(secs "$T1" "$T2") s, VM boot+checks $(secs "$T2" "$T3") s${extended:+, extended boots $(secs "$T3" "$T4") s}, total $(secs "$T0" "$T4") s"
host_pass=0 host_fail=1; [ -z "$host_ok" ] || { host_pass=1; host_fail=0; }
passed=$(( $(grep -c '^ok ' "$work/guest.out" || true) + host_pass + ext_pass ))
failed=$(( $(grep -c '^not ok ' "$work/guest.out" || true) + host_fail + ext_fail ))
[ "$rc" = 0 ] || [ "$failed" -gt 0 ] || failed=1   # the guest died before reporting a failure
echo "vm-selftest: $passed passed, $failed failed"
if [ "$rc" = 0 ] && [ -n "$host_ok" ] && [ "$ext_fail" = 0 ]; then
  echo "selftest: PASS"
  exit 0
fi
echo "selftest: FAIL (guest exit $rc)"
exit 1
