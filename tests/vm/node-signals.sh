#!/usr/bin/env bash
# Kernel suite: the node-level signal readers (agent/host/src/counters.rs, calico.rs) against
# the real kernel, one VM boot: /proc/net/ip_vs_stats, /proc/net/snmp and
# /proc/net/stat/nf_conntrack parse, and known events (3 connections through a virtual
# service, 4 TCP connects to a closed port, 5 UDP datagrams to a closed port) show up as
# exactly those deltas (agent/host/examples/node_signals.rs says what is checked).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p ipvsmig-host --example node_signals
bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug/examples/node_signals")
tests/vm/ipvs-vm.sh run --share-ro "$(dirname "$bin")" \
  --modprobe ip_vs --modprobe ip_vs_rr --modprobe nf_conntrack --timeout 300 -- "$bin"
