#!/bin/sh
# Guest half of tests/vm/selftest.sh: runs INSIDE the VM as root (dash), one boot.
# Usage: selftest-guest.sh SHARE_DIR   (SHARE_DIR: read-write host share holding ./hello)
# Prints one "ok N - ..." / "not ok N - ..." line per check and a closing "N passed, N failed";
# exits 0 only if every check passed. All traffic stays inside the VM (it has no NIC).
share=${1:?usage: selftest-guest.sh SHARE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
n=0; pass=0; fail=0
out=/tmp/selftest.out

# check DESCRIPTION CMD...: run CMD (output to $out), record ok / not ok
check() {
  desc=$1; shift
  n=$((n + 1))
  if "$@" > "$out" 2>&1; then
    pass=$((pass + 1)); echo "ok $n - $desc"
  else
    fail=$((fail + 1)); echo "not ok $n - $desc"; sed 's/^/#   /' "$out"
  fi
}
# contains FILE/CMD-output pattern helpers
has() { grep -q -- "$1" "$out" || { cat "$out"; echo "missing: $1"; return 1; }; }

echo "# kernel $(uname -r), $(grep -c . /proc/modules) modules loaded at start"

t_kernel() { cat /proc/version; grep -q 'Debian' /proc/version && uname -r | grep -q -- '-amd64$'; }
check "guest runs Debian's stock kernel ($(uname -r))" t_kernel

t_modules() {
  for m in ip_vs ip_vs_rr ip_vs_sh nf_conntrack dummy; do modprobe "$m" || return 1; done
  for m in ip_vs ip_vs_rr ip_vs_sh nf_conntrack dummy; do
    grep -q "^$m " /proc/modules || { echo "$m not in /proc/modules"; return 1; }
  done
  cat /proc/net/ip_vs >/dev/null
}
check "modprobe ip_vs ip_vs_rr ip_vs_sh nf_conntrack dummy" t_modules

t_dummy() {
  ip link add kube-ipvs0 type dummy &&
  ip addr add 10.96.0.10/32 dev kube-ipvs0 &&
  ip link set kube-ipvs0 up &&
  ip -o addr show dev kube-ipvs0 > "$out.2" && cat "$out.2" &&
  grep -q 'inet 10.96.0.10/32' "$out.2" && ip -d link show kube-ipvs0 | grep -q dummy
}
check "dummy link kube-ipvs0 with 10.96.0.10/32" t_dummy

t_ipvs() {
  ipvsadm -A -t 10.96.0.10:80 -s rr &&
  ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.2:80 -m -w 1 &&
  ipvsadm -A -u 10.96.0.10:53 -s sh &&
  ipvsadm -a -u 10.96.0.10:53 -r 10.244.1.2:53 -m &&
  ipvsadm -Ln > "$out.2" && cat "$out.2" &&
  grep -Eq '^TCP +10\.96\.0\.10:80 rr' "$out.2" &&
  grep -Eq -- '-> 10\.244\.1\.2:80 +Masq +1 ' "$out.2" &&
  grep -Eq '^UDP +10\.96\.0\.10:53 sh' "$out.2" &&
  grep -Eq -- '-> 10\.244\.1\.2:53 +Masq' "$out.2"
}
check "ipvsadm -A/-a virtual + real servers, listed by ipvsadm -Ln" t_ipvs

t_ipset() {
  ipset create KUBE-CLUSTER-IP hash:ip,port &&
  ipset add KUBE-CLUSTER-IP 10.96.0.10,tcp:80 &&
  ipset create KUBE-LOOP-BACK hash:ip,port,ip &&
  ipset add KUBE-LOOP-BACK 10.244.1.2,tcp:80,10.244.1.2 &&
  ipset test KUBE-CLUSTER-IP 10.96.0.10,tcp:80 &&
  ipset list KUBE-CLUSTER-IP | grep -q '10.96.0.10,tcp:80'
}
check "ipset create/add/test (hash:ip,port and hash:ip,port,ip)" t_ipset

rules() {  # a kube-proxy (IPVS mode) style nat table
  cat <<'EOF'
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -m statistic --mode random --probability 0.5 -j RETURN
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
COMMIT
EOF
}
t_restore() {  # t_restore BACKEND (nft|legacy)
  rules | "iptables-$1-restore" &&
  "iptables-$1-save" -t nat > "$out.2" && cat "$out.2" &&
  grep -q -- '-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT' "$out.2" &&
  grep -q -- '--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE' "$out.2"
}
check "iptables-nft-restore of a kube-proxy nat table (iptables-nft-save shows it)" t_restore nft
check "iptables-legacy-restore of a kube-proxy nat table (iptables-legacy-save shows it)" t_restore legacy
t_default() { readlink -f "$(command -v iptables)" | grep -q xtables-nft-multi; }
check "iptables defaults to the nft backend (as on Debian 12)" t_default
# the legacy table would MASQUERADE/NAT the test traffic below as well: flush both again
iptables-legacy -t nat -F; iptables -t nat -F

t_traffic() {  # a TCP connection through the VIP: IPVS (NAT mode) -> real server in a netns
  ip netns add rs1 &&
  ip link add vrs1 type veth peer name eth0 netns rs1 &&
  ip addr add 10.244.1.1/24 dev vrs1 && ip link set vrs1 up &&
  ip -n rs1 addr add 10.244.1.2/24 dev eth0 && ip -n rs1 link set eth0 up && ip -n rs1 link set lo up &&
  ip -n rs1 route add default via 10.244.1.1 &&
  mkdir -p /tmp/www && echo "served-by-rs1" > /tmp/www/index.html &&
  ip netns exec rs1 busybox httpd -p 10.244.1.2:80 -h /tmp/www &&
  echo 1 > /proc/sys/net/ipv4/ip_forward &&
  body=$(timeout 10 wget -q -O - http://10.96.0.10/) && echo "body: $body" &&
  [ "$body" = served-by-rs1 ] &&
  grep -i '0A60000A 0050' /proc/net/ip_vs_conn
}
check "TCP to VIP 10.96.0.10:80 reaches the real server through IPVS (ip_vs_conn entry)" t_traffic

t_hostbin() {  # a dynamically linked glibc program built on the host (libcrypt copied in by the host)
  "$share/hello" > "$out.2" && cat "$out.2" && grep -q "hello from host binary on $(uname -r)" "$out.2"
}
check "dynamically linked host binary ($share/hello) runs" t_hostbin

t_no_nic() {  # without --forward, qemu runs with -nic none: no link backed by a device
  # (virtual links such as lo, dummy0, veth have no /sys/class/net/X/device)
  ls -l /sys/class/net && [ -z "$(ls -d /sys/class/net/*/device 2>/dev/null)" ]
}
check "no network device (run without --forward: -nic none)" t_no_nic

t_share() { echo "guest-was-here $(uname -r)" > "$share/guest-wrote.txt" && ! touch "$here/.ro-probe" 2>/dev/null; }
check "read-write share is writable, read-only share is not" t_share

echo "selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]
