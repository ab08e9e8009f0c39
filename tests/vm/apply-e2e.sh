#!/usr/bin/env bash
# Kernel suite: `ipvs-migrate apply / status / rollback` end to end in one VM boot, on the
# iptables-legacy backend and then on iptables-nft — real
# kube-proxy rules, pods in network namespaces, connections counted by IPVS
# (tests/examples/vm_apply.rs says what is checked).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ipvs-migrate --bin ipvs-migrate  # the binary the guest runs
cargo build -q -p ipvsmig-tests --example vm_apply
dir=$(realpath target/debug)
tests/vm/ipvs-vm.sh run --share-ro "$dir" --share-ro "$dir/examples" \
  --modprobe ip_vs --modprobe ip_vs_rr --modprobe ip_vs_wrr --modprobe veth \
  --env IPVS_MIGRATE="$dir/ipvs-migrate" --timeout 900 -- \
  sh -c "'$dir/examples/vm_apply' legacy && '$dir/examples/vm_apply' nft"
