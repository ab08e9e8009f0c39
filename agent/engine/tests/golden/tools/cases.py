"""Golden cases: render spec (what kube-proxy was told) + hand-written expectations.

The expected ServicePort objects below are written from the intended Services/EndpointSlices
and kube-proxy's documented behaviour, NOT derived from the rendered rules. Chain names are
computed with kube-proxy's hash (kp.h16) because the hash formula is part of the intent.
"""
import json
import os
import sys

from kp import h16, modern_file
from legacy import render_legacy

OUT = sys.argv[1]


def C(prefix, spn_, proto):
    return prefix + h16(spn_ + proto)


def S(spn_, proto, ep):
    return "KUBE-SEP-" + h16(spn_ + proto + ep)


def nm(ns, n, p=None):
    d = {"namespace": ns, "name": n}
    if p:
        d["port_name"] = p
    return d


def ep(ip, port, local=None):
    d = {"ip": ip, "port": port}
    if local is not None:
        d["local"] = local
    return d


def disp(chain, pairs):
    return {"chain": chain, "endpoints": [{"endpoint": e, "probability": p} for e, p in pairs]}


def sp(name, protocol, family, clusterIp, port, itp="Cluster", etp="Cluster", endpoints=(), **kw):
    d = {"name": name, "protocol": protocol, "family": family, "clusterIp": clusterIp, "port": port}
    d.update(kw)
    d["internalTrafficPolicy"] = itp
    d["externalTrafficPolicy"] = etp
    d["endpoints"] = list(endpoints)
    return d


def node(detector, masq_all=False, random_fully=False, npa=None, drops_invalid=True):
    m = {"mark": 16384, "bit": 14, "masqueradeAll": masq_all}
    if detector:
        m["localDetector"] = detector
    m["randomFully"] = random_fully
    return {"masquerade": m, "nodePortAddresses": npa, "dropsInvalid": drops_invalid}


CIDR8 = {"mode": "cidr", "cidr": "10.0.0.0/8"}
ALL_EXCL_LO = {"mode": "allLocal", "excluded": ["127.0.0.0/8"]}
ALL_LOCAL = {"mode": "allLocal", "excluded": []}
V4 = "IPv4"
MARK_REAL = "0x00004000"  # fmt.Sprintf("%#08x", 1<<14) in NewProxier; iptables-save prints 0x4000

cases = {}

# ---------------------------------------------------------------------------------------------
# overall: kube-proxy's TestOverallIPTablesRules, same services/endpoints/flags.
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), localhost_nodeports=True,
           nfacct_localhost=True, nfacct_invalid=True, random_fully=False, mark="0x4000")
svcs = [
    dict(ns="ns1", name="svc1", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.41", port=80,
         eps=[("10.180.0.1", 80, False)]),
    dict(ns="ns2", name="svc2", pname="p80", proto="tcp", type="LoadBalancer", etp="Local", cip="172.30.0.42",
         port=80, np=3001, lb_ips=["1.2.3.4"], ext_ips=["192.168.99.22"], hc=30000,
         eps=[("10.180.0.2", 80, False)]),  # the test's endpoint has no NodeName: non-local
    dict(ns="ns3", name="svc3", pname="p80", proto="tcp", type="NodePort", cip="172.30.0.43", port=80, np=3003,
         eps=[("10.180.0.3", 80, False)]),
    dict(ns="ns4", name="svc4", pname="p80", proto="tcp", type="NodePort", cip="172.30.0.44", port=80,
         ext_ips=["192.168.99.33"], eps=[("10.180.0.4", 80, False), ("10.180.0.5", 80, True)]),
    dict(ns="ns5", name="svc5", pname="p80", proto="tcp", type="LoadBalancer", etp="Cluster", cip="172.30.0.45",
         port=80, np=3002, lb_ips=["5.6.7.8"], ranges=["203.0.113.0/25"], affinity=10800,
         eps=[("10.180.0.3", 80, False)]),
    dict(ns="ns6", name="svc6", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.46", port=80, eps=[]),
]
exp = [
    sp(nm("ns1", "svc1", "p80"), "tcp", V4, "172.30.0.41", 80,
       endpoints=[ep("10.180.0.1", 80)],
       clusterDispatch=disp("KUBE-SVC-XPGD46QRK7WJZT7O", [("10.180.0.1:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "svc2", "p80"), "tcp", V4, "172.30.0.42", 80, etp="Local",
       nodePort=3001, localhostNodePort=True, externalIps=["192.168.99.22"], loadBalancerIps=["1.2.3.4"],
       healthCheckNodePort=30000,
       endpoints=[ep("10.180.0.2", 80, False)],
       clusterDispatch=disp("KUBE-SVC-GNZBNJ2PO5MGZ6GT", [("10.180.0.2:80", 1.0)]),
       externalNoEndpoints="Drop", masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "svc3", "p80"), "tcp", V4, "172.30.0.43", 80, nodePort=3003, localhostNodePort=True,
       endpoints=[ep("10.180.0.3", 80)],
       clusterDispatch=disp("KUBE-SVC-X27LE4BHSL4DOUIK", [("10.180.0.3:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns4", "svc4", "p80"), "tcp", V4, "172.30.0.44", 80, externalIps=["192.168.99.33"],
       endpoints=[ep("10.180.0.4", 80), ep("10.180.0.5", 80)],
       clusterDispatch=disp("KUBE-SVC-4SW47YFZTEDKD3PK", [("10.180.0.4:80", 0.5), ("10.180.0.5:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns5", "svc5", "p80"), "tcp", V4, "172.30.0.45", 80, nodePort=3002, localhostNodePort=True,
       loadBalancerIps=["5.6.7.8"], loadBalancerSourceRanges=["203.0.113.0/25"], sessionAffinitySeconds=10800,
       endpoints=[ep("10.180.0.3", 80)],
       clusterDispatch=disp("KUBE-SVC-NUKIZ6OKUXPJNT4C", [("10.180.0.3:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns6", "svc6", "p80"), "tcp", V4, "172.30.0.46", 80, endpoints=[], internalNoEndpoints="Reject"),
]
cases["overall"] = dict(
    text=modern_file(cfg, svcs, sort=True), family=V4, nfacct=["localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts"],
    exp=exp, node=node(CIDR8, npa=ALL_LOCAL),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go TestOverallIPTablesRules (v1.32-v1.34 era; "
           "services, endpoints, chain hashes and kube-proxy rules as in its expected dump; NewFakeProxier has "
           "localhost NodePorts and nfacct counters on, no --random-fully, mark 0x4000). Built-in chains, the "
           "iptablesJumpChains/iptablesKubeletJumpChains jumps, canary and mangle hint chains added per "
           "proxier.go syncProxyRules and kube-proxy-facts.md s1.1. Rules ordered as the test's sorted dump.",
)

# ---------------------------------------------------------------------------------------------
# policies
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), random_fully=True, mark=MARK_REAL)
svcs = [
    dict(ns="ns1", name="itp-local", pname="http", proto="tcp", type="ClusterIP", itp="Local", cip="172.30.1.1",
         port=80, eps=[("10.180.0.1", 8080, True), ("10.180.0.2", 8080, True), ("10.181.0.3", 8080, False)]),
    dict(ns="ns1", name="itp-nolocal", pname="http", proto="tcp", type="ClusterIP", itp="Local", cip="172.30.1.2",
         port=80, eps=[("10.181.0.4", 8080, False)]),
    dict(ns="ns2", name="etp-nolocal", pname="http", proto="tcp", type="NodePort", etp="Local", cip="172.30.1.3",
         port=80, np=30080, eps=[("10.181.0.5", 8080, False)]),
    dict(ns="ns3", name="mixed", pname="http", proto="tcp", type="LoadBalancer", etp="Local", cip="172.30.1.4",
         port=80, np=30081, ext_ips=["192.168.99.44"], lb_ips=["1.2.3.10"], hc=30500,
         eps=[("10.180.0.7", 8080, True), ("10.180.0.9", 8080, True), ("10.181.0.8", 8080, False)]),
]
exp = [
    sp(nm("ns1", "itp-local", "http"), "tcp", V4, "172.30.1.1", 80, itp="Local",
       endpoints=[ep("10.180.0.1", 8080, True), ep("10.180.0.2", 8080, True)],
       localDispatch=disp(C("KUBE-SVL-", "ns1/itp-local:http", "tcp"),
                          [("10.180.0.1:8080", 0.5), ("10.180.0.2:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns1", "itp-nolocal", "http"), "tcp", V4, "172.30.1.2", 80, itp="Local", endpoints=[],
       internalNoEndpoints="Drop"),
    sp(nm("ns2", "etp-nolocal", "http"), "tcp", V4, "172.30.1.3", 80, etp="Local", nodePort=30080,
       endpoints=[ep("10.181.0.5", 8080, False)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns2/etp-nolocal:http", "tcp"), [("10.181.0.5:8080", 1.0)]),
       externalNoEndpoints="Drop", masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "mixed", "http"), "tcp", V4, "172.30.1.4", 80, etp="Local", nodePort=30081,
       externalIps=["192.168.99.44"], loadBalancerIps=["1.2.3.10"], healthCheckNodePort=30500,
       endpoints=[ep("10.180.0.7", 8080, True), ep("10.180.0.9", 8080, True), ep("10.181.0.8", 8080, False)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns3/mixed:http", "tcp"),
                            [("10.180.0.7:8080", 0.3333333333), ("10.180.0.9:8080", 0.5), ("10.181.0.8:8080", 1.0)]),
       localDispatch=disp(C("KUBE-SVL-", "ns3/mixed:http", "tcp"),
                          [("10.180.0.7:8080", 0.5), ("10.180.0.9:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
]
cases["policies"] = dict(
    text=modern_file(cfg, svcs), family=V4, nfacct=[], exp=exp,
    node=node(CIDR8, random_fully=True, npa=ALL_EXCL_LO),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules (v1.32-v1.34): internal/external "
           "policy chains, hasInternalEndpoints/hasExternalEndpoints, 'has no local endpoints' DROP, EXT chain "
           "without final jump; pkg/proxy/topology.go CategorizeEndpoints + serviceport.go UsesClusterEndpoints "
           "(iTP=Local ClusterIP-only services get only KUBE-SVL with local endpoints; externally accessible "
           "services always keep KUBE-SVC for short-circuiting); tests TestExternalTrafficPolicyLocal, "
           "TestInternalTrafficPolicy; kube-proxy-facts.md s1.4. Mark written as %#08x (0x00004000).",
)

# ---------------------------------------------------------------------------------------------
# protocols
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), random_fully=True, mark=MARK_REAL)
dns_eps = [("10.180.0.20", 53, False), ("10.180.0.21", 53, False)]
svcs = [
    dict(ns="kube-system", name="kube-dns", pname="dns", proto="udp", type="ClusterIP", cip="172.30.0.10", port=53, eps=dns_eps),
    dict(ns="kube-system", name="kube-dns", pname="dns-tcp", proto="tcp", type="ClusterIP", cip="172.30.0.10", port=53, eps=dns_eps),
    dict(ns="ns1", name="sctp-svc", pname="sctp", proto="sctp", type="ClusterIP", cip="172.30.0.60", port=9999,
         eps=[("10.180.0.30", 9999, False)]),
    dict(ns="ns1", name="unnamed", pname="", proto="tcp", type="ClusterIP", cip="172.30.0.61", port=80,
         eps=[("10.180.0.31", 8080, False)]),
    dict(ns="ns2", name="three", pname="web", proto="tcp", type="ClusterIP", cip="172.30.0.62", port=80,
         eps=[("10.180.0.40", 8080, False), ("10.180.0.41", 8080, False), ("10.180.0.42", 8080, False)]),
    dict(ns="ns3", name="noep", pname="http", proto="tcp", type="LoadBalancer", cip="172.30.0.63", port=80,
         np=30055, ext_ips=["192.168.99.55"], lb_ips=["1.2.3.55"], eps=[]),
]
exp = [
    sp(nm("kube-system", "kube-dns", "dns"), "udp", V4, "172.30.0.10", 53,
       endpoints=[ep("10.180.0.20", 53), ep("10.180.0.21", 53)],
       clusterDispatch=disp(C("KUBE-SVC-", "kube-system/kube-dns:dns", "udp"),
                            [("10.180.0.20:53", 0.5), ("10.180.0.21:53", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("kube-system", "kube-dns", "dns-tcp"), "tcp", V4, "172.30.0.10", 53,
       endpoints=[ep("10.180.0.20", 53), ep("10.180.0.21", 53)],
       clusterDispatch=disp(C("KUBE-SVC-", "kube-system/kube-dns:dns-tcp", "tcp"),
                            [("10.180.0.20:53", 0.5), ("10.180.0.21:53", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns1", "sctp-svc", "sctp"), "sctp", V4, "172.30.0.60", 9999,
       endpoints=[ep("10.180.0.30", 9999)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns1/sctp-svc:sctp", "sctp"), [("10.180.0.30:9999", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns1", "unnamed"), "tcp", V4, "172.30.0.61", 80,
       endpoints=[ep("10.180.0.31", 8080)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns1/unnamed", "tcp"), [("10.180.0.31:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "three", "web"), "tcp", V4, "172.30.0.62", 80,
       endpoints=[ep("10.180.0.40", 8080), ep("10.180.0.41", 8080), ep("10.180.0.42", 8080)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns2/three:web", "tcp"),
                            [("10.180.0.40:8080", 0.3333333333), ("10.180.0.41:8080", 0.5), ("10.180.0.42:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "noep", "http"), "tcp", V4, "172.30.0.63", 80, nodePort=30055,
       externalOrLoadBalancerIps=["192.168.99.55", "1.2.3.55"], endpoints=[],
       internalNoEndpoints="Reject", externalNoEndpoints="Reject"),
]
cases["protocols"] = dict(
    text=modern_file(cfg, svcs), family=V4, nfacct=[], exp=exp,
    node=node(CIDR8, random_fully=True, npa=ALL_EXCL_LO),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules + writeServiceToEndpointRules + "
           "computeProbability (v1.32-v1.34): '-m <proto> -p <proto>' for udp/sctp, unnamed port name 'ns/name' "
           "(pkg/proxy/types.go ServicePortName.String), 1/(n-i) probabilities '%0.10f' (TestComputeProbability), "
           "no-endpoints REJECT in filter KUBE-SERVICES and KUBE-EXTERNAL-SERVICES (TestNoEndpointsReject); "
           "kube-proxy-facts.md s1.2-s1.4.",
)

# ---------------------------------------------------------------------------------------------
# ipv6
V6 = "IPv6"
cfg = dict(family=V6, detector=("cidr", "fd00:10::/64"), random_fully=True, mark=MARK_REAL)
svcs = [
    dict(ns="ns1", name="web", pname="http", proto="tcp", type="ClusterIP", cip="fd00:10:96::10", port=80,
         eps=[("fd00:10::1", 8080, False), ("fd00:10::2", 8080, False)]),
    dict(ns="ns2", name="np", pname="http", proto="tcp", type="NodePort", cip="fd00:10:96::11", port=80, np=30090,
         eps=[("fd00:10::3", 8080, False)]),
    dict(ns="ns3", name="gone", pname="http", proto="tcp", type="ClusterIP", cip="fd00:10:96::12", port=80, eps=[]),
]
exp = [
    sp(nm("ns1", "web", "http"), "tcp", V6, "fd00:10:96::10", 80,
       endpoints=[ep("fd00:10::1", 8080), ep("fd00:10::2", 8080)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns1/web:http", "tcp"),
                            [("[fd00:10::1]:8080", 0.5), ("[fd00:10::2]:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "np", "http"), "tcp", V6, "fd00:10:96::11", 80, nodePort=30090,
       endpoints=[ep("fd00:10::3", 8080)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns2/np:http", "tcp"), [("[fd00:10::3]:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "gone", "http"), "tcp", V6, "fd00:10:96::12", 80, endpoints=[], internalNoEndpoints="Reject"),
]
cases["ipv6"] = dict(
    text=modern_file(cfg, svcs), family=V6, nfacct=[], exp=exp,
    node=node({"mode": "cidr", "cidr": "fd00:10::/64"}, random_fully=True,
              npa={"mode": "allLocal", "excluded": ["::1/128"]}),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules (v1.32-v1.34) for an IPv6 proxier: "
           "endpoint strings from net.JoinHostPort ('[addr]:port') in SEP hashes and DNAT, nodeports rule "
           "'-m addrtype --dst-type LOCAL ! -d ::1/128', no KUBE-FIREWALL localnet rule (IPv4 only); "
           "kube-proxy-facts.md s1.2, s1.4.",
)

# ---------------------------------------------------------------------------------------------
# large-cluster
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), random_fully=False, mark=MARK_REAL, large=True)
svcs = [
    dict(ns="ns1", name="svc1", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.41", port=80,
         eps=[("10.180.0.1", 80, False), ("10.180.0.2", 80, False)]),
    dict(ns="ns2", name="svc2", pname="p80", proto="tcp", type="NodePort", etp="Local", cip="172.30.0.42", port=80,
         np=3001, eps=[("10.180.0.3", 80, True), ("10.180.1.4", 80, False)]),
    dict(ns="ns3", name="svc3", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.43", port=80,
         affinity=10800, eps=[("10.180.0.5", 80, False), ("10.180.1.6", 80, False)]),
]
exp = [
    sp(nm("ns1", "svc1", "p80"), "tcp", V4, "172.30.0.41", 80,
       endpoints=[ep("10.180.0.1", 80), ep("10.180.0.2", 80)],
       clusterDispatch=disp("KUBE-SVC-XPGD46QRK7WJZT7O", [("10.180.0.1:80", 0.5), ("10.180.0.2:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "svc2", "p80"), "tcp", V4, "172.30.0.42", 80, etp="Local", nodePort=3001,
       endpoints=[ep("10.180.0.3", 80, True), ep("10.180.1.4", 80, False)],
       clusterDispatch=disp("KUBE-SVC-GNZBNJ2PO5MGZ6GT", [("10.180.0.3:80", 0.5), ("10.180.1.4:80", 1.0)]),
       localDispatch=disp("KUBE-SVL-GNZBNJ2PO5MGZ6GT", [("10.180.0.3:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "svc3", "p80"), "tcp", V4, "172.30.0.43", 80, sessionAffinitySeconds=10800,
       endpoints=[ep("10.180.0.5", 80), ep("10.180.1.6", 80)],
       clusterDispatch=disp("KUBE-SVC-X27LE4BHSL4DOUIK", [("10.180.0.5:80", 0.5), ("10.180.1.6:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
]
cases["large-cluster"] = dict(
    text=modern_file(cfg, svcs), family=V4, nfacct=[], exp=exp, node=node(CIDR8, npa=ALL_EXCL_LO),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go appendServiceCommentLocked + largeClusterMode "
           "(totalEndpoints > largeClusterEndpointsThreshold=1000): no comment on KUBE-SEP rules nor on "
           "SVC/SVL->SEP rules (incl. the affinity 'recent --rcheck' rules); KUBE-SERVICES, KUBE-NODEPORTS, "
           "EXT and the SVC masquerade rule keep theirs. Test: TestSyncProxyRulesLargeClusterMode; "
           "kube-proxy-facts.md s1.3. The fixture itself is small; it only has the large-cluster shape.",
)

# ---------------------------------------------------------------------------------------------
# detectors (masqueradeAll) and two local-detector variants
def det_case(cfg, detector_exp, masq_all, drops_invalid, what):
    svcs = [
        dict(ns="ns1", name="svc1", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.41", port=80,
             eps=[("10.180.0.1", 80, False)]),
        dict(ns="ns2", name="svc2", pname="p80", proto="tcp", type="NodePort", etp="Local", cip="172.30.0.42",
             port=80, np=3002, eps=[("10.180.0.2", 80, True)]),
    ]
    exp = [
        sp(nm("ns1", "svc1", "p80"), "tcp", V4, "172.30.0.41", 80,
           endpoints=[ep("10.180.0.1", 80)],
           clusterDispatch=disp("KUBE-SVC-XPGD46QRK7WJZT7O", [("10.180.0.1:80", 1.0)]),
           masqueradeClusterIp=True, hairpinMasquerade=True),
        sp(nm("ns2", "svc2", "p80"), "tcp", V4, "172.30.0.42", 80, etp="Local", nodePort=3002,
           endpoints=[ep("10.180.0.2", 80, True)],
           clusterDispatch=disp("KUBE-SVC-GNZBNJ2PO5MGZ6GT", [("10.180.0.2:80", 1.0)]),
           localDispatch=disp("KUBE-SVL-GNZBNJ2PO5MGZ6GT", [("10.180.0.2:80", 1.0)]),
           masqueradeClusterIp=True, hairpinMasquerade=True),
    ]
    return dict(text=modern_file(cfg, svcs), family=V4, nfacct=[], exp=exp,
                node=node(detector_exp, masq_all=masq_all, random_fully=True, npa=ALL_EXCL_LO,
                          drops_invalid=drops_invalid),
                source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules (v1.32-v1.34) internal "
                       "masquerade rule (masqueradeAll: no source match; otherwise localDetector.IfNotLocal()) and "
                       "EXT 'pod traffic' rule (localDetector.IfLocal()); pkg/proxy/util/localdetector.go "
                       "(ClusterCIDR/NodeCIDR '-s CIDR', InterfaceNamePrefix '-i PREFIX+', BridgeInterface "
                       "'-i BRIDGE'); tests TestMasqueradeRule / TestInternalExternalMasquerade; "
                       "kube-proxy-facts.md s1.4. " + what)


cases["detectors"] = det_case(
    dict(family=V4, detector=("cidr", "10.0.0.0/8"), masquerade_all=True, random_fully=True, mark=MARK_REAL),
    CIDR8, True, True,
    "masqueradeAll=true with detect-local-mode ClusterCIDR 10.0.0.0/8: the detector is visible only in the "
    "EXT chain's pod-traffic rule of ns2/svc2.")
cases["detector-iface"] = det_case(
    dict(family=V4, detector=("prefix", "cali"), random_fully=True, mark=MARK_REAL),
    {"mode": "interfaceNamePrefix", "prefix": "cali"}, False, True,
    "detect-local-mode InterfaceNamePrefix 'cali'.")
cases["detector-bridge"] = det_case(
    dict(family=V4, detector=("bridge", "cbr0"), random_fully=True, mark=MARK_REAL, drops_invalid=False),
    {"mode": "bridgeInterface", "interface": "cbr0"}, False, False,
    "detect-local-mode BridgeInterface 'cbr0'; conntrack tcp_be_liberal set, so no KUBE-FORWARD INVALID drop "
    "(proxier.go 'if !proxier.conntrackTCPLiberal').")

# ---------------------------------------------------------------------------------------------
# nodeport-addresses
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), random_fully=True, mark=MARK_REAL,
           localhost_nodeports=True, nfacct_localhost=True, nfacct_invalid=True,
           nodeport_addresses=["127.0.0.1", "192.168.0.2"])
svcs = [
    dict(ns="ns1", name="np", pname="http", proto="tcp", type="NodePort", cip="172.30.2.1", port=80, np=30100,
         eps=[("10.180.0.10", 8080, False)]),
    dict(ns="ns2", name="np-local", pname="http", proto="tcp", type="NodePort", etp="Local", cip="172.30.2.2",
         port=80, np=30101, eps=[("10.180.0.11", 8080, True)]),
]
exp = [
    sp(nm("ns1", "np", "http"), "tcp", V4, "172.30.2.1", 80, nodePort=30100, localhostNodePort=True,
       endpoints=[ep("10.180.0.10", 8080)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns1/np:http", "tcp"), [("10.180.0.10:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "np-local", "http"), "tcp", V4, "172.30.2.2", 80, etp="Local", nodePort=30101,
       localhostNodePort=True,
       endpoints=[ep("10.180.0.11", 8080, True)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns2/np-local:http", "tcp"), [("10.180.0.11:8080", 1.0)]),
       localDispatch=disp(C("KUBE-SVL-", "ns2/np-local:http", "tcp"), [("10.180.0.11:8080", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
]
cases["nodeport-addresses"] = dict(
    text=modern_file(cfg, svcs), family=V4, nfacct=["localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts"],
    exp=exp, node=node(CIDR8, random_fully=True, npa={"mode": "addresses", "addresses": ["127.0.0.1", "192.168.0.2"]}),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules (v1.32-v1.34): with "
           "--nodeport-addresses set (here 127.0.0.0/8 and 192.168.0.2/32, so localhost NodePorts stay enabled: "
           "NewProxier turns them off unless the addresses include IPv4 loopback), one "
           "'-d <nodeIP> -j KUBE-NODEPORTS' rule per node IP; localhost NodePort rule "
           "'-d 127.0.0.0/8 ... -m nfacct --nfacct-name localhost_nps_accepted_pkts'; KUBE-FIREWALL 'block "
           "incoming localnet connections'. Tests TestNodePorts / TestNodePortsLocalhost-style; "
           "kube-proxy-facts.md s1.1, s1.4.",
)

# ---------------------------------------------------------------------------------------------
# legacy-xlb (kube-proxy <= 1.23)
lcfg = dict(cidr="10.0.0.0/8", mark=MARK_REAL)
svcs = [
    dict(ns="ns1", name="svc1", pname="p80", proto="tcp", cip="172.30.0.41", port=80, eps=[("10.180.0.1", 80, False)]),
    dict(ns="ns2", name="lb-local", pname="http", proto="tcp", etp="Local", cip="172.30.0.42", port=80, np=30001,
         lb_ips=["1.2.3.4"], hc=30000,
         eps=[("10.180.0.2", 80, True), ("10.180.0.4", 80, True), ("10.180.1.3", 80, False)]),
    dict(ns="ns3", name="np-nolocal", pname="http", proto="tcp", etp="Local", cip="172.30.0.43", port=80, np=30003,
         eps=[("10.180.1.5", 80, False)]),
]
exp = [
    sp(nm("ns1", "svc1", "p80"), "tcp", V4, "172.30.0.41", 80,
       endpoints=[ep("10.180.0.1", 80)],
       clusterDispatch=disp("KUBE-SVC-XPGD46QRK7WJZT7O", [("10.180.0.1:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "lb-local", "http"), "tcp", V4, "172.30.0.42", 80, etp="Local", nodePort=30001,
       localhostNodePort=True, loadBalancerIps=["1.2.3.4"], healthCheckNodePort=30000,
       endpoints=[ep("10.180.0.2", 80, True), ep("10.180.0.4", 80, True), ep("10.180.1.3", 80, False)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns2/lb-local:http", "tcp"),
                            [("10.180.0.2:80", 0.3333333333), ("10.180.0.4:80", 0.5), ("10.180.1.3:80", 1.0)]),
       localDispatch=disp(C("KUBE-XLB-", "ns2/lb-local:http", "tcp"),
                          [("10.180.0.2:80", 0.5), ("10.180.0.4:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns3", "np-nolocal", "http"), "tcp", V4, "172.30.0.43", 80, etp="Local", nodePort=30003,
       localhostNodePort=True,
       endpoints=[ep("10.180.1.5", 80, False)],
       clusterDispatch=disp(C("KUBE-SVC-", "ns3/np-nolocal:http", "tcp"), [("10.180.1.5:80", 1.0)]),
       localDispatch=disp(C("KUBE-XLB-", "ns3/np-nolocal:http", "tcp"), []),
       externalNoEndpoints="Drop", masqueradeClusterIp=True, hairpinMasquerade=True),
]
cases["legacy-xlb"] = dict(
    text=render_legacy(lcfg, svcs), family=V4, nfacct=[], exp=exp, node=node(CIDR8, npa=ALL_LOCAL),
    source="kubernetes/kubernetes pkg/proxy/iptables/proxier.go ~v1.22-v1.23 (the version with "
           "localDetector.JumpIfLocal, KUBE-XLB- serviceLBChainName, iptablesEnsureChains KUBE-MARK-DROP, "
           "ProxyTerminatingEndpoints): SEP chains first, SVC masquerade rule then KUBE-SERVICES jump, LB IP -> "
           "KUBE-FW (-j KUBE-XLB, then -j KUBE-MARK-DROP), NodePort eTP=Local '-s 127.0.0.0/8 -j KUBE-MARK-MASQ' "
           "+ '-j KUBE-XLB', XLB chain 'Redirect pods trying to reach external loadbalancer VIP to clusterIP' "
           "(-s podCIDR -j SVC), 'masquerade LOCAL traffic for <svc> LB IP', 'route LOCAL traffic for <svc> LB IP "
           "to service chain', then local SEP jumps or '<svc> has no local endpoints' -j KUBE-MARK-DROP; "
           "SVC->SEP comments are the bare service port name. Kubelet-owned (<=1.24) KUBE-MARK-DROP "
           "'-j MARK --or-mark 0x8000' and KUBE-FIREWALL rules added. kube-proxy-facts.md s1.1 (legacy rows).",
)

# ---------------------------------------------------------------------------------------------
# warnings
cfg = dict(family=V4, detector=("cidr", "10.0.0.0/8"), random_fully=True, mark=MARK_REAL)
svcs = [
    dict(ns="ns1", name="svc1", pname="p80", proto="tcp", type="ClusterIP", cip="172.30.0.41", port=80,
         eps=[("10.180.0.1", 80, False)]),
    dict(ns="ns2", name="svc2", pname="p80", proto="tcp", type="NodePort", cip="172.30.0.42", port=80, np=3002,
         eps=[("10.180.0.2", 80, False), ("10.180.0.3", 80, False)]),
]
SVC1 = "KUBE-SVC-XPGD46QRK7WJZT7O"
STALE = S("ns1/svc1:p80", "tcp", "10.180.0.9:80")
LIMIT_RULE = (f'-A {SVC1} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 '
              f'--dport 80 -m limit --limit 5/s -j KUBE-MARK-MASQ')
STALE_RULES = [f"-A {STALE} -m comment --comment ns1/svc1:p80 -s 10.180.0.9 -j KUBE-MARK-MASQ",
               f"-A {STALE} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.9:80"]
FOREIGN_RULE = ('-A KUBE-ROUTER-INPUT -d 10.96.0.0/12 -m comment --comment '
                '"allow traffic to primary cluster IP range - TZZOAXOCHPHEHX7M" -j RETURN')


def warn_extra(s, o):
    if s["name"] != "svc1":
        return
    # (b) extra rule with an unknown option, between the masquerade rule and the SEP jump
    i = next(k for k, r in enumerate(o.nat_rules) if r.startswith(f"-A {SVC1} ") and "-> 10.180.0.1:80" in r)
    o.nat_rules.insert(i, LIMIT_RULE)
    # (a) stale endpoint chain left from an earlier sync (endpoint 10.180.0.9 is gone)
    o.nat_chains.append(STALE)
    o.nat_rules.extend(STALE_RULES)


from kp import render_modern, assemble, MODERN_FILTER_JUMPS  # noqa: E402
o = render_modern(cfg, svcs, warn_extra)
o.filter_rules.append(FOREIGN_RULE)  # (c) a chain kube-proxy does not own
wtext = assemble(V4, o.filter_chains, o.filter_rules, o.nat_chains, o.nat_rules, MODERN_FILTER_JUMPS,
                 extra_filter_chains=["KUBE-ROUTER-INPUT"])
lines = wtext.splitlines()


def ln(rule):
    return lines.index(rule) + 1


exp = [
    sp(nm("ns1", "svc1", "p80"), "tcp", V4, "172.30.0.41", 80,
       endpoints=[ep("10.180.0.1", 80)],
       clusterDispatch=disp(SVC1, [("10.180.0.1:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
    sp(nm("ns2", "svc2", "p80"), "tcp", V4, "172.30.0.42", 80, nodePort=3002,
       endpoints=[ep("10.180.0.2", 80), ep("10.180.0.3", 80)],
       clusterDispatch=disp("KUBE-SVC-GNZBNJ2PO5MGZ6GT", [("10.180.0.2:80", 0.5), ("10.180.0.3:80", 1.0)]),
       masqueradeClusterIp=True, hairpinMasquerade=True),
]
warnings = [
    {"code": "unplaced-rule", "table": "filter", "chain": "KUBE-ROUTER-INPUT",
     "line": ln(FOREIGN_RULE), "restoreLines": [ln(FOREIGN_RULE)]},
    {"code": "unplaced-rule", "table": "nat", "chain": SVC1,
     "line": ln(LIMIT_RULE), "restoreLines": [ln(LIMIT_RULE)]},
    {"code": "stale-chain", "table": "nat", "chain": STALE,
     "line": ln(STALE_RULES[0]), "restoreLines": [ln(r) for r in STALE_RULES]},
]
warnings.sort(key=lambda w: w["line"])
cases["warnings"] = dict(
    text=wtext, family=V4, nfacct=[], exp=exp, node=node(CIDR8, random_fully=True, npa=ALL_EXCL_LO),
    warnings=warnings,
    source="Clean rule set per kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules (v1.32-v1.34), "
           "plus three hand-made anomalies: (a) a stale KUBE-SEP chain for ns1/svc1:p80 10.180.0.9:80 that no "
           "SVC/SVL chain jumps to (kube-proxy leaves such chains until its next cleanup, and in large-cluster "
           "mode for up to a syncPeriod: proxier.go 'Delete chains no longer in use'); (b) an extra rule in "
           "KUBE-SVC-XPGD46QRK7WJZT7O with '-m limit --limit 5/s', an option kube-proxy never writes; (c) a "
           "foreign filter chain KUBE-ROUTER-INPUT (kube-router network policy) with one rule and no hook. "
           "Expected warning lines are 1-based lines of restore.txt.",
)

# ---------------------------------------------------------------------------------------------
for cname, c in cases.items():
    d = os.path.join(OUT, cname)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "restore.txt"), "w") as f:
        f.write(c["text"])
    sps = sorted(c["exp"], key=lambda s: (s["name"]["namespace"], s["name"]["name"], s["name"].get("port_name", ""),
                                          ["tcp", "udp", "sctp"].index(s["protocol"])))
    ORDER = ["name", "protocol", "family", "clusterIp", "port", "nodePort", "localhostNodePort", "externalIps",
             "loadBalancerIps", "externalOrLoadBalancerIps", "loadBalancerSourceRanges", "loadBalancerAllowsNode",
             "sessionAffinitySeconds", "internalTrafficPolicy", "externalTrafficPolicy", "healthCheckNodePort",
             "endpoints", "clusterDispatch", "localDispatch", "internalNoEndpoints", "externalNoEndpoints",
             "masqueradeClusterIp", "hairpinMasquerade", "hashMismatches"]
    assert all(set(x) <= set(ORDER) for x in sps)
    sps = [{k: x[k] for k in ORDER if k in x} for x in sps]
    doc = {"source": c["source"], "family": c["family"], "servicePorts": sps, "node": c["node"],
           "warnings": c.get("warnings", [])}
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
print("ok", list(cases))
