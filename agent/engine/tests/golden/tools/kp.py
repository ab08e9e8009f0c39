"""Render kube-proxy (iptables mode) restore input from service intent.

Modern layout follows kubernetes/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules
(~v1.32-v1.34: KUBE-SVC/SVL/EXT/FW, nfacct, KUBE-PROXY-FIREWALL). Legacy layout follows the
~v1.22-v1.23 proxier.go (KUBE-XLB, KUBE-FW always for LB IPs, KUBE-MARK-DROP).
"""
import base64
import hashlib


def h16(s):
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]


assert h16("ns1/svc1:p80tcp") == "XPGD46QRK7WJZT7O"
assert h16("ns1/svc1:p80tcp10.180.0.1:80") == "SXIVWICOYRO3J4NJ"
assert h16("ns5/svc5:p80tcp") == "NUKIZ6OKUXPJNT4C"


def spn(s):
    base = f"{s['ns']}/{s['name']}"
    return base + (f":{s['pname']}" if s.get("pname") else "")


def epstr(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def chain(prefix, s):
    return prefix + h16(spn(s) + s["proto"])


def sep(s, ep):
    return "KUBE-SEP-" + h16(spn(s) + s["proto"] + epstr(ep[0], ep[1]))


def prob(n):
    return "%0.10f" % (1.0 / n)


def q(c):
    return f'"{c}"'


BUILTIN = {
    "mangle": ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    "filter": ["INPUT", "FORWARD", "OUTPUT"],
    "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
}

# Final order of the jumps kube-proxy ensures with EnsureRule(Prepend, ...): each prepend goes
# on top, so a built-in chain lists them in reverse order of iptablesJumpChains (+ the kubelet
# KUBE-FIREWALL jumps, iterated last, so first).
MODERN_FILTER_JUMPS = [
    "-A INPUT -j KUBE-FIREWALL",
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    "-A OUTPUT -j KUBE-FIREWALL",
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
]
NAT_JUMPS = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
]
# v1.23 iptablesJumpChains (no KUBE-PROXY-FIREWALL); kubelet's KUBE-FIREWALL jumps existed first.
LEGACY_FILTER_JUMPS = [
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    "-A INPUT -j KUBE-FIREWALL",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A OUTPUT -j KUBE-FIREWALL",
]


def detector_args(cfg, local):
    kind, val = cfg["detector"]
    flag = "-s" if kind == "cidr" else "-i"
    v = val + "+" if kind == "prefix" else val
    return f"{flag} {v}" if local else f"! {flag} {v}"


class Out:
    def __init__(self):
        self.filter_chains = []
        self.filter_rules = []
        self.nat_chains = []
        self.nat_rules = []


def ext_accessible(s):
    return s.get("type") in ("NodePort", "LoadBalancer") or bool(s.get("ext_ips"))


def render_modern_service(cfg, s, o):
    name = spn(s)
    p = s["proto"]
    svc, svl, ext, fw = (chain(x, s) for x in ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-"))
    eps = s.get("eps", [])  # (ip, port, local)
    acc = ext_accessible(s)
    itp_local = s.get("itp") == "Local"
    etp_local = acc and s.get("etp") == "Local"
    uses_cluster = (not itp_local) or acc
    uses_local = itp_local or etp_local
    cluster_eps = list(eps) if uses_cluster else []
    local_eps = [e for e in eps if e[2]] if uses_local else []
    has_eps = len(eps) > 0
    internal_chain = svl if itp_local else svc
    has_int = has_eps and (not itp_local or bool(local_eps))
    ext_policy = svl if etp_local else svc
    has_ext = has_eps and (not etp_local or bool(local_eps))
    uses_ext_chain = has_eps and acc
    lb_ips = s.get("lb_ips", [])
    ranges = s.get("ranges", [])
    uses_fw = has_eps and bool(lb_ips) and bool(ranges)
    lb_chain = fw if uses_fw else ext
    if not has_eps:
        int_t, int_c = "REJECT", q(f"{name} has no endpoints")
        ext_t, ext_c = int_t, int_c
    else:
        int_t = ext_t = int_c = ext_c = None
        if not has_int:
            int_t, int_c = "DROP", q(f"{name} has no local endpoints")
        if not has_ext:
            ext_t, ext_c = "DROP", q(f"{name} has no local endpoints")
    cip, port = s["cip"], s["port"]
    pm = f"-m {p} -p {p}"
    large = cfg.get("large")

    def cmt(c):
        return "" if large else f"-m comment --comment {c} "

    fr, nc, nr = o.filter_rules, o.nat_chains, o.nat_rules
    if has_int:
        nr.append(f"-A KUBE-SERVICES -m comment --comment {q(name + ' cluster IP')} {pm} -d {cip} --dport {port} -j {internal_chain}")
    else:
        fr.append(f"-A KUBE-SERVICES -m comment --comment {int_c} {pm} -d {cip} --dport {port} -j {int_t}")
    for eip in s.get("ext_ips", []):
        if has_eps:
            nr.append(f"-A KUBE-SERVICES -m comment --comment {q(name + ' external IP')} {pm} -d {eip} --dport {port} -j {ext}")
        if not has_ext:
            fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_c} {pm} -d {eip} --dport {port} -j {ext_t}")
    for lb in lb_ips:
        if has_eps:
            nr.append(f"-A KUBE-SERVICES -m comment --comment {q(name + ' loadbalancer IP')} {pm} -d {lb} --dport {port} -j {lb_chain}")
        if uses_fw:
            fr.append(f"-A KUBE-PROXY-FIREWALL -m comment --comment {q(name + ' traffic not accepted by ' + fw)} {pm} -d {lb} --dport {port} -j DROP")
    if not has_ext:
        for lb in lb_ips:
            fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_c} {pm} -d {lb} --dport {port} -j {ext_t}")
    np = s.get("np")
    if np:
        if has_eps:
            if cfg.get("localhost_nodeports") and cfg["family"] == "IPv4" and cfg.get("nfacct_localhost"):
                nr.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {pm} -d 127.0.0.0/8 --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}")
            nr.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {pm} --dport {np} -j {ext}")
        if not has_ext:
            fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_c} -m addrtype --dst-type LOCAL {pm} --dport {np} -j {ext_t}")
    if s.get("hc"):
        fr.append(f"-A KUBE-NODEPORTS -m comment --comment {q(name + ' health check node port')} -m tcp -p tcp --dport {s['hc']} -j ACCEPT")
    if has_int:
        base = f"-A {internal_chain} -m comment --comment {q(name + ' cluster IP')} {pm} -d {cip} --dport {port}"
        if cfg.get("masquerade_all"):
            nr.append(f"{base} -j KUBE-MARK-MASQ")
        elif cfg.get("detector"):
            nr.append(f"{base} {detector_args(cfg, False)} -j KUBE-MARK-MASQ")
    if uses_ext_chain:
        nc.append(ext)
        if not etp_local:
            nr.append(f"-A {ext} -m comment --comment {q('masquerade traffic for ' + name + ' external destinations')} -j KUBE-MARK-MASQ")
        else:
            if cfg.get("detector"):
                nr.append(f"-A {ext} -m comment --comment {q('pod traffic for ' + name + ' external destinations')} {detector_args(cfg, True)} -j {svc}")
            nr.append(f"-A {ext} -m comment --comment {q('masquerade LOCAL traffic for ' + name + ' external destinations')} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
            nr.append(f"-A {ext} -m comment --comment {q('route LOCAL traffic for ' + name + ' external destinations')} -m addrtype --src-type LOCAL -j {svc}")
        if has_ext:
            nr.append(f"-A {ext} -j {ext_policy}")
    if uses_fw:
        nc.append(fw)
        a = f"-A {fw} -m comment --comment {q(name + ' loadbalancer IP')}"
        for r in ranges:
            nr.append(f"{a} -s {r} -j {ext}")
        if s.get("allow_node"):
            for lb in lb_ips:
                nr.append(f"{a} -s {lb} -j {ext}")
        nr.append(f"-A {fw} -m comment --comment {q('other traffic to ' + name + ' will be dropped by KUBE-PROXY-FIREWALL')}")

    def to_eps(ch, lst):
        aff = s.get("affinity")
        if aff:
            for e in lst:
                sp = sep(s, e)
                nr.append(f"-A {ch} {cmt(q(name + ' -> ' + epstr(e[0], e[1])))}-m recent --name {sp} --rcheck --seconds {aff} --reap -j {sp}")
        n = len(lst)
        for i, e in enumerate(lst):
            sp = sep(s, e)
            st = f"-m statistic --mode random --probability {prob(n - i)} " if i < n - 1 else ""
            nr.append(f"-A {ch} {cmt(q(name + ' -> ' + epstr(e[0], e[1])))}{st}-j {sp}")

    if cluster_eps:
        nc.append(svc)
        to_eps(svc, cluster_eps)
    if local_eps:
        nc.append(svl)
        to_eps(svl, local_eps)
    if not uses_local:
        reach = cluster_eps
    elif not uses_cluster:
        reach = local_eps
    else:
        reach = cluster_eps + [e for e in local_eps if e not in cluster_eps]
    for e in reach:
        sp = sep(s, e)
        nc.append(sp)
        nr.append(f"-A {sp} {cmt(name)}-s {e[0]} -j KUBE-MARK-MASQ")
        aff = f"-m recent --name {sp} --set " if s.get("affinity") else ""
        nr.append(f"-A {sp} {cmt(name)}{aff}{pm} -j DNAT --to-destination {epstr(e[0], e[1])}")


def render_modern(cfg, services, extra=None):
    """Return kube-proxy's own restore input (filter + nat) as an Out."""
    o = Out()
    mark = cfg.get("mark", "0x4000")
    o.filter_chains = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"]
    o.nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    o.nat_rules += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {mark}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if cfg.get("random_fully") else ""),
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {mark}",
    ]
    if cfg["family"] == "IPv4" and cfg.get("localhost_nodeports"):
        o.filter_chains.append("KUBE-FIREWALL")
        o.filter_rules.append('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP')
    for s in services:
        render_modern_service(cfg, s, o)
        if extra:
            extra(s, o)
    npa = cfg.get("nodeport_addresses")
    last = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
    if not npa:
        d = "-m addrtype --dst-type LOCAL"
        if cfg["family"] == "IPv6":
            d += " ! -d ::1/128"
        elif not cfg.get("localhost_nodeports"):
            d += " ! -d 127.0.0.0/8"
        o.nat_rules.append(f"{last} {d} -j KUBE-NODEPORTS")
    else:
        for ip in npa:
            o.nat_rules.append(f"{last} -d {ip} -j KUBE-NODEPORTS")
    if cfg.get("drops_invalid", True):
        nf = " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts" if cfg.get("nfacct_invalid") else ""
        o.filter_rules.append(f"-A KUBE-FORWARD -m conntrack --ctstate INVALID{nf} -j DROP")
    o.filter_rules.append(f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT')
    o.filter_rules.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    return o


def sort_like_test(chains, rules):
    """Order chains/rules the way proxier_test.go's sortIPTablesRules does: KUBE-NODEPORTS,
    KUBE-SERVICES first, then the other chains alphabetically; rules grouped by chain, keeping
    their order within a chain."""
    first = [c for c in ("KUBE-NODEPORTS", "KUBE-SERVICES") if c in chains]
    rest = sorted(c for c in chains if c not in first)
    order = first + rest
    by = {c: [] for c in order}
    for r in rules:
        by[r.split()[1]].append(r)
    return order, [r for c in order for r in by[c]]


def assemble(family, filter_chains, filter_rules, nat_chains, nat_rules,
             filter_jumps, extra_filter_chains=(), extra_nat_chains=()):
    """A full file loadable by iptables-restore into an empty netns."""
    L = ["*mangle"]
    L += [f":{c} ACCEPT [0:0]" for c in BUILTIN["mangle"]]
    L += [":KUBE-IPTABLES-HINT - [0:0]", ":KUBE-KUBELET-CANARY - [0:0]", ":KUBE-PROXY-CANARY - [0:0]", "COMMIT"]
    L += ["*filter"]
    L += [f":{c} ACCEPT [0:0]" for c in BUILTIN["filter"]]
    L += [":KUBE-KUBELET-CANARY - [0:0]", ":KUBE-PROXY-CANARY - [0:0]"]
    if "KUBE-FIREWALL" not in filter_chains:
        L += [":KUBE-FIREWALL - [0:0]"]
    L += [f":{c} - [0:0]" for c in list(extra_filter_chains) + list(filter_chains)]
    L += filter_jumps
    L += filter_rules
    L += ["COMMIT", "*nat"]
    L += [f":{c} ACCEPT [0:0]" for c in BUILTIN["nat"]]
    L += [":KUBE-KUBELET-CANARY - [0:0]", ":KUBE-PROXY-CANARY - [0:0]"]
    L += [f":{c} - [0:0]" for c in list(extra_nat_chains) + list(nat_chains)]
    L += NAT_JUMPS
    L += nat_rules
    L += ["COMMIT"]
    return "\n".join(L) + "\n"


def modern_file(cfg, services, sort=False, extra=None):
    o = render_modern(cfg, services, extra)
    fc, fr, nc, nr = o.filter_chains, o.filter_rules, o.nat_chains, o.nat_rules
    if sort:
        fc, fr = sort_like_test(fc, fr)
        nc, nr = sort_like_test(nc, nr)
    return assemble(cfg["family"], fc, fr, nc, nr, MODERN_FILTER_JUMPS)
