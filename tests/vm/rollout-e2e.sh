#!/usr/bin/env bash
# Kernel suite: the fleet rollout end to end in one VM boot, on iptables-legacy and then on
# iptables-nft — serve with rollout.enabled against a stand-in API server on loopback claims
# the slot of an IPVSMigration, cuts shop over in the real kernel, reports Completed, and
# rolls back on Aborted (tests/examples/vm_rollout.rs says what is checked).
exec "$(dirname "$0")/e2e-example.sh" vm_rollout
