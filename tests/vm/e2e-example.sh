#!/usr/bin/env bash
# Runs one end-to-end example of tests/examples (vm_apply, vm_finalize, vm_rollout) in one VM boot, on the
# iptables-legacy backend and then on iptables-nft, with ipvs-migrate beside it.
# Usage: tests/vm/e2e-example.sh EXAMPLE
set -euo pipefail
cd "$(dirname "$0")/../.."
example=${1:?usage: e2e-example.sh EXAMPLE}
cargo build -q -p ipvs-migrate --bin ipvs-migrate  # the binary the guest runs
cargo build -q -p ipvsmig-tests --example "$example"
dir=$(realpath target/debug)
tests/vm/ipvs-vm.sh run --share-ro "$dir" --share-ro "$dir/examples" \
  --modprobe ip_vs --modprobe ip_vs_rr --modprobe ip_vs_wrr --modprobe veth \
  --env IPVS_MIGRATE="$dir/ipvs-migrate" --timeout 900 -- \
  sh -c "'$dir/examples/$example' legacy && '$dir/examples/$example' nft"
