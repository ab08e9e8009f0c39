#!/usr/bin/env bash
# Kernel suite: the host crate's link layer (agent/host/src/link.rs) against the real kernel,
# one VM boot: kube-ipvs0 is created over rtnetlink as a dummy link left down (`ip -d link
# show` agrees), takes an IPv4 /32 and an IPv6 /128 (not tentative), refuses each twice, loses
# them and goes away; every error is the typed one, and the recording fake answers the same.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ipvsmig-host --example link_roundtrip
bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug/examples/link_roundtrip")
tests/vm/ipvs-vm.sh run --share-ro "$(dirname "$bin")" --timeout 300 -- "$bin"
