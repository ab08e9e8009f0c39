#!/usr/bin/env bash
# Regenerates demo/node-snapshot/{iptables-save,ip6tables-save}.txt: a generated cluster in
# kube-proxy's layout (kpgen), plus a CNI's own NAT chain, loaded into a private network
# namespace with the real iptables-nft and printed back with iptables-nft-save -c, so the
# snapshot is exactly what a live node's iptables-save shows. Needs root, iptables, nfacct.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p ipvsmig-clustergen --bin kpgen
kpgen=target/debug/kpgen
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$kpgen" --services 220 --endpoints 3 --seed 2026 > "$tmp/v4.txt"
"$kpgen" --services 40 --endpoints 2 --seed 6 --family 6 > "$tmp/v6.txt"
python3 - "$tmp/v4.txt" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
nat = s.index("*nat\n")
first_rule = s.index("-A PREROUTING", nat)
s = s[:first_rule] + ":FLANNEL-POSTRTG - [0:0]\n" + s[first_rule:]
hook = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n'
s = s.replace(hook, hook
    + '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG\n'
    + '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN\n'
    + '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN\n'
    + '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully\n')
open(p, "w").write(s)
PY
unshare -n sh -c "nfacct add localhost_nps_accepted_pkts >/dev/null; iptables-nft-restore < $tmp/v4.txt && iptables-nft-save -c" > demo/node-snapshot/iptables-save.txt
unshare -n sh -c "ip6tables-nft-restore < $tmp/v6.txt && ip6tables-nft-save -c" > demo/node-snapshot/ip6tables-save.txt
wc -l demo/node-snapshot/*.txt
