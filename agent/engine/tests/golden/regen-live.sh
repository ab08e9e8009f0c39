#!/bin/sh
# Regenerates live-legacy.txt / live-nft.txt of every golden case from its restore.txt by
# loading it into a private, empty network namespace (unshare -n) and printing it back with
# iptables-save. Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), iptables >= 1.8 with both
# backends, and nfacct (conntrack-tools' libnetfilter_acct CLI) for the nfacct counters.
# Usage: tests/golden/regen-live.sh [case ...]
set -eu
cd "$(dirname "$0")"
cases=${*:-$(for d in */; do [ -f "$d/restore.txt" ] && echo "${d%/}"; done)}
for c in $cases; do
    if grep -q '"family": "IPv6"' "$c/expected.json"; then p=ip6tables; else p=iptables; fi
    for b in legacy nft; do
        unshare -n sh -c "
            nfacct add localhost_nps_accepted_pkts && nfacct add ct_state_invalid_dropped_pkts &&
            $p-$b-restore < '$c/restore.txt' && $p-$b-save -c" > "$c/live-$b.txt"
    done
    echo "$c: ok ($p)"
done
