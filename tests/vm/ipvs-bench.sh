#!/usr/bin/env bash
# Kernel benchmark (not part of scripts/test.sh): our pipelined IPVS client vs `ipvsadm -R` for
# N services x 5 destinations, and one endpoint change, in one VM boot. Results: docs/benchmarks.md.
# Usage: tests/vm/ipvs-bench.sh [SERVICES] [WINDOW]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p ipvsmig-ipvs --example apply_bench
bin=$(realpath target/release/examples/apply_bench)
tests/vm/ipvs-vm.sh run --share-ro "$(dirname "$bin")" --modprobe ip_vs --modprobe ip_vs_rr \
  --mem 2048 --timeout 1200 -- "$bin" "$@"
