#!/usr/bin/env bash
# The whole test suite, as README.md documents it and .ci/run calls it.
# Installs what it needs when missing (Debian 12): iptables (legacy + nft), ipset, nfacct,
# promtool and prometheus (Debian's prometheus package), prometheus-alertmanager (their services
# not started: scripts/apt-install.sh), curl and jq, python3-venv (tests/deploy/validate.sh),
# chromium (the readiness report's page, tests/report/chromium.sh and alerting-e2e.sh), and
# for the VM test bed qemu-system-x86 plus the Debian packages of the guest (tests/vm/).
# Tests that change iptables run only in network namespaces they create themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in iptables-legacy-restore iptables-nft-restore ip6tables-legacy-restore ipset nfacct unshare promtool prometheus-alertmanager curl jq chromium; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# tests/deploy/validate.sh builds a venv (kubernetes-validate, jsonschema from PyPI).
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  echo "test.sh: installing packages for: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: need root to install iptables/ipset/nfacct (and to create network namespaces)" >&2
    exit 69
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends iptables ipset nfacct util-linux curl jq python3-venv chromium >/dev/null
  # promtool comes with Debian's prometheus package; the alerting suite also runs prometheus and
  # prometheus-alertmanager itself (tests/vm/alerting-e2e.sh): apt must not start their services.
  bash scripts/apt-install.sh prometheus prometheus-alertmanager
fi

# Every suite must run: a test that cannot (no root, a tool missing) fails instead of skipping.
export IPVSMIG_REQUIRE_ALL=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The real-IPVS test bed (Debian's stock kernel under qemu, no network device): one boot
# proving IPVS, dummy links, ipset and both iptables backends work in it. It installs qemu and
# downloads the Debian packages it needs into tests/vm/cache/ on first use.
bash tests/vm/selftest.sh

# deploy/: kubernetes-validate --strict for the Kubernetes versions we claim, the example
# IPVSMigration against the CRD's schema, the PrometheusRule against rules/ and promtool.
bash tests/deploy/validate.sh

cargo build --workspace --bins --locked

# The readiness report (issue 7): `audit --demo -o html` written with no network and rendered by
# headless Chromium in a network namespace with only loopback; asserts on the DOM, screenshot.
bash tests/report/chromium.sh target/debug/ipvs-migrate

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
# finalize end to end: refused while kube-proxy answers `iptables` (nothing changes), then with a
# stand-in for IPVS-mode kube-proxy: exactly the IPVS-mode state left, no client failure.
bash tests/vm/finalize-e2e.sh
bash tests/vm/cutover-e2e.sh
# the fleet rollout: serve follows an IPVSMigration on a stand-in API server on loopback (in the
# guest), claims the slot, cuts shop over in the real kernel, rolls back on Aborted.
bash tests/vm/rollout-e2e.sh
# serve in the VM behind a real Prometheus (short-window rules/) and Alertmanager on loopback,
# reached only through forwarded ports (qemu user networking, restrict=on): scrape, webhook,
# token, deduplication, and the guest's isolation.
bash tests/vm/alerting-e2e.sh target/debug/ipvs-migrate

cargo test --workspace --locked --no-fail-fast
