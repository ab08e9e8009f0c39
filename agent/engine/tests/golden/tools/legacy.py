"""kube-proxy ~v1.22-v1.23 (KUBE-XLB) layout, after that version's syncProxyRules."""
from kp import spn, chain, sep, epstr, prob, q, assemble, LEGACY_FILTER_JUMPS


def render_legacy(cfg, services):
    mark = cfg.get("mark", "0x4000")
    cidr = cfg["cidr"]
    fc = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS"]
    nc = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    fr, nr = [], []
    nr += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {mark}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {mark}",
    ]
    for s in services:
        name, p = spn(s), s["proto"]
        pm = f"-m {p} -p {p}"
        svc, xlb, fw = chain("KUBE-SVC-", s), chain("KUBE-XLB-", s), chain("KUBE-FW-", s)
        eps = s.get("eps", [])
        local = s.get("etp") == "Local"
        has = bool(eps)
        local_eps = [e for e in eps if e[2]] if local else []
        # per-endpoint chains first
        for e in eps:
            sp = sep(s, e)
            nc.append(sp)
            nr.append(f"-A {sp} -m comment --comment {name} -s {e[0]} -j KUBE-MARK-MASQ")
            aff = f"-m recent --name {sp} --set " if s.get("affinity") else ""
            nr.append(f"-A {sp} -m comment --comment {name} {aff}{pm} -j DNAT --to-destination {epstr(e[0], e[1])}")
        if has:
            nc.append(svc)
        if local:
            nc.append(xlb)
        cargs = f"-m comment --comment {q(name + ' cluster IP')} {pm} -d {s['cip']} --dport {s['port']}"
        if has:
            nr.append(f"-A {svc} {cargs} ! -s {cidr} -j KUBE-MARK-MASQ")
            nr.append(f"-A KUBE-SERVICES {cargs} -j {svc}")
        else:
            fr.append(f"-A KUBE-SERVICES -m comment --comment {q(name + ' has no endpoints')} {pm} -d {s['cip']} --dport {s['port']} -j REJECT")
        for eip in s.get("ext_ips", []):
            a = f"-m comment --comment {q(name + ' external IP')} {pm} -d {eip} --dport {s['port']}"
            if has:
                dest = xlb
                if not local:
                    dest = svc
                    nr.append(f"-A {svc} {a} ! -s {cidr} -j KUBE-MARK-MASQ")
                nr.append(f"-A KUBE-SERVICES {a} -j {dest}")
            else:
                fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {q(name + ' has no endpoints')} {pm} -d {eip} --dport {s['port']} -j REJECT")
        for lb in s.get("lb_ips", []):
            if has:
                nc.append(fw)
                nr.append(f"-A KUBE-SERVICES -m comment --comment {q(name + ' loadbalancer IP')} {pm} -d {lb} --dport {s['port']} -j {fw}")
                a = f"-A {fw} -m comment --comment {q(name + ' loadbalancer IP')}"
                chosen = xlb
                if not local:
                    nr.append(f"{a} -j KUBE-MARK-MASQ")
                    chosen = svc
                if not s.get("ranges"):
                    nr.append(f"{a} -j {chosen}")
                else:
                    for r in s["ranges"]:
                        nr.append(f"{a} -s {r} -j {chosen}")
                nr.append(f"{a} -j KUBE-MARK-DROP")
            else:
                fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {q(name + ' has no endpoints')} {pm} -d {lb} --dport {s['port']} -j REJECT")
        if s.get("np"):
            a = f"-m comment --comment {name} {pm} --dport {s['np']}"
            if has:
                if not local:
                    nr.append(f"-A {svc} {a} -j KUBE-MARK-MASQ")
                    nr.append(f"-A KUBE-NODEPORTS {a} -j {svc}")
                else:
                    nr.append(f"-A KUBE-NODEPORTS {a} -s 127.0.0.0/8 -j KUBE-MARK-MASQ")
                    nr.append(f"-A KUBE-NODEPORTS {a} -j {xlb}")
            else:
                fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {q(name + ' has no endpoints')} -m addrtype --dst-type LOCAL {pm} --dport {s['np']} -j REJECT")
        if s.get("hc"):
            fr.append(f"-A KUBE-NODEPORTS -m comment --comment {q(name + ' health check node port')} -m tcp -p tcp --dport {s['hc']} -j ACCEPT")
        if not has:
            continue

        def to_eps(ch, lst):
            if s.get("affinity"):
                for e in lst:
                    sp = sep(s, e)
                    nr.append(f"-A {ch} -m comment --comment {name} -m recent --name {sp} --rcheck --seconds {s['affinity']} --reap -j {sp}")
            n = len(lst)
            for i, e in enumerate(lst):
                st = f"-m statistic --mode random --probability {prob(n - i)} " if i < n - 1 else ""
                nr.append(f"-A {ch} -m comment --comment {name} {st}-j {sep(s, e)}")

        to_eps(svc, eps)
        if not local:
            continue
        nr.append(f'-A {xlb} -m comment --comment "Redirect pods trying to reach external loadbalancer VIP to clusterIP" -s {cidr} -j {svc}')
        nr.append(f"-A {xlb} -m comment --comment {q('masquerade LOCAL traffic for ' + name + ' LB IP')} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
        nr.append(f"-A {xlb} -m comment --comment {q('route LOCAL traffic for ' + name + ' LB IP to service chain')} -m addrtype --src-type LOCAL -j {svc}")
        if not local_eps:
            nr.append(f"-A {xlb} -m comment --comment {q(name + ' has no local endpoints')} -j KUBE-MARK-DROP")
        else:
            to_eps(xlb, local_eps)
    nr.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    fr.append("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
    fr.append(f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT')
    fr.append('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT')
    # kubelet (<= 1.24) owned KUBE-FIREWALL (filter) and KUBE-MARK-DROP (nat).
    kubelet_filter = [
        '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP',
        '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    ]
    kubelet_nat = ["-A KUBE-MARK-DROP -j MARK --or-mark 0x8000"]
    return assemble("IPv4", fc, kubelet_filter + fr, nc, kubelet_nat + nr,
                    LEGACY_FILTER_JUMPS, extra_nat_chains=["KUBE-MARK-DROP"])
