#!/usr/bin/env bash
# `ipvs-migrate preflight --probe` in the real IPVS kernel: the probe virtual server is created,
# read back and deleted (nothing left behind); an unknown scheduler is a blocker; a virtual
# server someone else created on the probe's address is left alone. One VM boot.
# Usage: tests/vm/preflight-probe.sh [path/to/ipvs-migrate]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/ipvs-migrate}")
[ -x "$bin" ] || { echo "preflight-probe: $bin not built" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'kind: KubeProxyConfiguration\nipvs:\n  scheduler: nosuch\n' > "$work/kp-nosuch.yaml"
cat > "$work/guest.sh" <<'GUEST'
set -u
bin=$1; work=$2
pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass + 1)); else echo "not ok - $1"; fail=$((fail + 1)); fi; }
"$bin" preflight --probe -o json > "$work/ok.json"
check "the probe succeeds with rr" "grep -q '\"outcome\": \"ok\"' $work/ok.json"
check "the probe leaves no virtual server behind" "[ -z \"\$(ipvsadm -Sn)\" ]"
"$bin" preflight --probe --kube-proxy-config "$work/kp-nosuch.yaml" -o json > "$work/nosuch.json"; rc=$?
check "an unknown scheduler is a blocker (exit 1)" "[ $rc = 1 ] && grep -q '\"outcome\": \"unavailable\"' $work/nosuch.json"
ipvsadm -A -t 198.51.100.0:20000 -s wrr
"$bin" preflight --probe -o json > "$work/exists.json"
check "a foreign virtual server on the probe address is left alone" "grep -q 'left alone' $work/exists.json && ipvsadm -Sn | grep -q '198.51.100.0:20000 -s wrr'"
echo "preflight-probe: $pass passed, $fail failed"
[ "$fail" = 0 ]
GUEST
tests/vm/ipvs-vm.sh run --share "$work" --share-ro "$(dirname "$bin")" --modprobe ip_vs --modprobe ip_vs_rr --modprobe ip_vs_wrr --timeout 300 -- bash "$work/guest.sh" "$bin" "$work"
