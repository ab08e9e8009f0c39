#!/usr/bin/env bash
# Kernel suite: the IPVS netlink client against the real kernel (one VM boot): what it adds a
# dump returns and `ipvsadm -Sn` agrees; edits; error cases; nothing left behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ipvsmig-ipvs --example kernel_roundtrip
bin=$(realpath target/debug/examples/kernel_roundtrip)
tests/vm/ipvs-vm.sh run --share-ro "$(dirname "$bin")" --modprobe ip_vs --modprobe ip_vs_rr --modprobe ip_vs_wrr --modprobe ip_vs_mh --timeout 300 -- "$bin"
