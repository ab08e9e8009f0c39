#!/usr/bin/env bash
# `ipvs-migrate plan -o ipvsadm` loads into a real IPVS kernel with `ipvsadm -R`, and
# `ipvsadm -Sn` gives the same configuration back, for every golden case (IPv4 and IPv6) and a
# generated cluster of every shape, with the rr and mh schedulers. One VM boot.
# Usage: tests/vm/ipvsadm-roundtrip.sh [path/to/ipvs-migrate]   (default target/debug/ipvs-migrate)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/ipvs-migrate}
[ -x "$bin" ] || { echo "ipvsadm-roundtrip: $bin not built (cargo build -p ipvs-migrate)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
for dir in agent/engine/tests/golden/*/; do
  case=$(basename "$dir")
  [ -f "$dir/expected.json" ] || continue
  if grep -q '"family": "IPv6"' "$dir/expected.json"; then flag=--ip6tables-save; node=fd00::2; else flag=--iptables-save; node=192.168.0.2; fi
  "$bin" plan "$flag" "$dir/restore.txt" --node-ip "$node" -o ipvsadm > "$work/$case.rr"
  n=$((n + 1))
done
cargo run -q -p ipvsmig-clustergen --bin kpgen -- --services 300 --endpoints 3 --seed 9 > "$work/gen.txt"
"$bin" plan --iptables-save "$work/gen.txt" --node-ip 192.168.0.2 --node-ip 10.0.0.2 -o ipvsadm > "$work/generated.rr"
printf 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  scheduler: mh\n' > "$work/kp-mh.yaml"
"$bin" plan --iptables-save "$work/gen.txt" --node-ip 192.168.0.2 --kube-proxy-config "$work/kp-mh.yaml" -o ipvsadm > "$work/generated-mh.mh"
n=$((n + 2))

cat > "$work/guest.sh" <<'GUEST'
set -u
pass=0; fail=0
for f in "$1"/*.rr "$1"/*.mh; do
  ipvsadm -C
  if ! ipvsadm -R < "$f" 2> "$f.err"; then
    echo "not ok - $(basename "$f"): ipvsadm -R failed: $(head -3 "$f.err")"; fail=$((fail + 1)); continue
  fi
  ipvsadm -Sn > "$f.saved"
  if [ "$(sort "$f")" = "$(sort "$f.saved")" ]; then
    echo "ok - $(basename "$f"): $(grep -c '^-A' "$f") virtual servers round-trip"; pass=$((pass + 1))
  else
    echo "not ok - $(basename "$f"): ipvsadm -Sn differs"; diff <(sort "$f") <(sort "$f.saved") | head -10; fail=$((fail + 1))
  fi
done
echo "ipvsadm-roundtrip: $pass passed, $fail failed"
[ "$fail" = 0 ]
GUEST
# This is a throw-away VM: `ipvsadm -C` clears only its own kernel's table.
tests/vm/ipvs-vm.sh run --share "$work" --modprobe ip_vs --modprobe ip_vs_rr --modprobe ip_vs_mh --timeout 300 -- bash "$work/guest.sh" "$work"
echo "($n plans)"
