#!/usr/bin/env bash
# Kernel suite: `ipvs-migrate apply / status / rollback` end to end in one VM boot, on the
# iptables-legacy backend and then on iptables-nft — real
# kube-proxy rules, pods in network namespaces, connections counted by IPVS
# (tests/examples/vm_apply.rs says what is checked).
exec "$(dirname "$0")/e2e-example.sh" vm_apply
