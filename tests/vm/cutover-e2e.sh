#!/usr/bin/env bash
# Kernel suite: the `serve` daemon end to end in one VM boot (iptables-legacy) — cutover under
# load with probe-first verification, manual rollback with long and short drains, automatic
# rollback by the built-in evaluator on an IPVS-only fault, the dead man's switch (SIGSTOP),
# and churn of kube-proxy's endpoints, services and our hooks while migrated
# (tests/examples/vm_cutover.rs says what is checked).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ipvs-migrate --bin ipvs-migrate  # the binary the guest runs
cargo build -q -p ipvsmig-tests --example vm_cutover
dir=$(realpath target/debug)
tests/vm/ipvs-vm.sh run --share-ro "$dir" --share-ro "$dir/examples" \
  --modprobe ip_vs --modprobe ip_vs_rr --modprobe veth --modprobe xt_ipvs \
  --env IPVS_MIGRATE="$dir/ipvs-migrate" --timeout 480 -- \
  "$dir/examples/vm_cutover"
