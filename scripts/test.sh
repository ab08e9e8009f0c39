#!/usr/bin/env bash
# The whole test suite, as README.md documents it and .ci/run calls it.
# Installs what it needs when missing (Debian 12): iptables (legacy + nft), ipset, nfacct,
# promtool (Debian's prometheus package, its service not started), and
# for the VM test bed qemu-system-x86 plus the Debian packages of the guest (tests/vm/).
# Tests that change iptables run only in network namespaces they create themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in iptables-legacy-restore iptables-nft-restore ip6tables-legacy-restore ipset nfacct unshare promtool; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  echo "test.sh: installing packages for: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: need root to install iptables/ipset/nfacct (and to create network namespaces)" >&2
    exit 69
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends iptables ipset nfacct util-linux >/dev/null
  if ! command -v promtool >/dev/null 2>&1; then
    # promtool comes with Debian's prometheus package; keep apt from starting the server.
    policy=/usr/sbin/policy-rc.d
    [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi

# Every suite must run: a test that cannot (no root, a tool missing) fails instead of skipping.
export IPVSMIG_REQUIRE_ALL=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The real-IPVS test bed (Debian's stock kernel under qemu, no network device): one boot
# proving IPVS, dummy links, ipset and both iptables backends work in it. It installs qemu and
# downloads the Debian packages it needs into tests/vm/cache/ on first use.
bash tests/vm/selftest.sh

cargo build --workspace --bins --locked

# Kernel suites (one VM boot each): the plan's ipvsadm rendering round-trips through the
# real IPVS kernel.
bash tests/vm/ipvsadm-roundtrip.sh target/debug/ipvs-migrate
# preflight --probe creates, reads back and deletes a virtual server over our netlink client.
bash tests/vm/preflight-probe.sh target/debug/ipvs-migrate
# The IPVS netlink client: add, dump, edit, delete, error cases, against the real kernel.
bash tests/vm/ipvs-client.sh
# The host crate's link layer: kube-ipvs0 (dummy, down) and its addresses over rtnetlink.
bash tests/vm/host-kernel.sh
# The node-level signal readers: IPVS totals, ICMP unreachables, TCP resets, conntrack drops
# from the real /proc files, exact deltas after known traffic.
bash tests/vm/node-signals.sh
# apply / status / rollback end to end: kube-proxy's rules, pods in netns, connections counted
# by IPVS, the dead man's switch, a conflict, a rollback that leaves nothing.
bash tests/vm/apply-e2e.sh
bash tests/vm/cutover-e2e.sh

cargo test --workspace --locked --no-fail-fast
