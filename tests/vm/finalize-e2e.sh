#!/usr/bin/env bash
# Kernel suite: `ipvs-migrate finalize` end to end in one VM boot, on iptables-legacy and then
# on iptables-nft — kube-proxy's iptables-mode rules, `apply` of a namespace, a stand-in for
# kube-proxy's /proxyMode and for its IPVS-mode state, a client connecting throughout
# (tests/examples/vm_finalize.rs says what is checked).
exec "$(dirname "$0")/e2e-example.sh" vm_finalize
