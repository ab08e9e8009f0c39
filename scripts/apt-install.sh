#!/usr/bin/env bash
# apt-install.sh PKG... — install Debian packages for the test suites (scripts/test.sh,
# tests/vm/alerting-e2e.sh): --no-install-recommends, `apt-get update` and one retry when the
# first try fails (stale or missing lists), and no service started: packages such as prometheus
# and prometheus-alertmanager start their daemon on install unless a policy-rc.d forbids it
# (invoke-rc.d(8): exit status 101 = "action forbidden"). The suites start their own instances,
# on loopback, and stop them by pid.
# Exit: 0 installed; 69 not root; 1 apt failed.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: apt-install.sh PKG..." >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then
  echo "apt-install: need root to install: $*" >&2
  exit 69
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
echo "apt-install: installing $*" >&2
if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
