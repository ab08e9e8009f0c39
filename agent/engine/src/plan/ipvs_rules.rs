//! The iptables rules kube-proxy's IPVS mode installs beside its virtual servers
//! (pkg/proxy/ipvs/proxier.go: `iptablesJumpChain`, `iptablesChains`, `ipsetWithIptablesChain`,
//! `writeIptablesRules`, `acceptIPVSTraffic`; kube-proxy-facts.md §2.5). Written from that
//! documented behaviour: the loopback RETURN; the set-driven jumps, emitted only for non-empty
//! sets and in kube-proxy's order (the -LOCAL RETURNs before the masquerade marks); ClusterIP
//! masquerade by masqueradeAll / the local-traffic detector / VIP-sourced packets; external IP
//! marking and ACCEPTs; the NodePort jump for local destinations; the source-range firewall;
//! the IPVS access filter; KUBE-POSTROUTING and KUBE-MARK-MASQ. This is the state kube-proxy
//! writes once it runs in IPVS mode (finalize), not something the agent loads during the hybrid.

use std::collections::BTreeMap;

use super::hybrid::{FamilyRules, HybridChain, HybridHook};
use super::ipsets::{IpSetPlan, set_name};
use crate::inventory::{IpFamily, LocalDetector, Masquerade};

fn nonempty(sets: &BTreeMap<String, IpSetPlan>, base: &str, fam: IpFamily) -> Option<String> {
    let n = set_name(base, fam);
    sets.get(&n)
        .is_some_and(|s| !s.members.is_empty())
        .then_some(n)
}

/// kube-proxy's IPVS-mode rules for one family.
pub fn ipvs_mode_rules(
    fam: IpFamily,
    sets: &BTreeMap<String, IpSetPlan>,
    masq: Option<&Masquerade>,
    lb_no_node_access: &[(std::net::IpAddr, &str, u16)],
) -> FamilyRules {
    let mark = masq.map_or(0x4000, |m| m.mark);
    let mark_s = format!("{mark:#x}");
    let lo = match fam {
        IpFamily::IPv4 => "127.0.0.0/8",
        IpFamily::IPv6 => "::1/128",
    };
    let mut nat: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut filter: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-NODE-PORT",
        "KUBE-LOAD-BALANCER",
        "KUBE-MARK-MASQ",
    ] {
        nat.insert(c, Vec::new());
    }
    for c in [
        "KUBE-FORWARD",
        "KUBE-NODE-PORT",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "KUBE-IPVS-FILTER",
        "KUBE-IPVS-OUT-FILTER",
    ] {
        filter.insert(c, Vec::new());
    }
    let mut push = |table: &str, chain: &'static str, rule: String| {
        let t = if table == "nat" {
            &mut nat
        } else {
            &mut filter
        };
        t.entry(chain).or_default().push(rule);
    };
    push("nat", "KUBE-SERVICES", format!("-s {lo} -j RETURN"));
    // ipsetWithIptablesChain, in kube-proxy's order.
    let table: &[(&str, &str, &'static str, &str, &str, &str)] = &[
        (
            "LOOP-BACK",
            "nat",
            "KUBE-POSTROUTING",
            "MASQUERADE",
            "dst,dst,src",
            "",
        ),
        (
            "LOAD-BALANCER",
            "nat",
            "KUBE-SERVICES",
            "KUBE-LOAD-BALANCER",
            "dst,dst",
            "",
        ),
        (
            "LOAD-BALANCER-LOCAL",
            "nat",
            "KUBE-LOAD-BALANCER",
            "RETURN",
            "dst,dst",
            "",
        ),
        (
            "NODE-PORT-LOCAL-TCP",
            "nat",
            "KUBE-NODE-PORT",
            "RETURN",
            "dst",
            "tcp",
        ),
        (
            "NODE-PORT-TCP",
            "nat",
            "KUBE-NODE-PORT",
            "KUBE-MARK-MASQ",
            "dst",
            "tcp",
        ),
        (
            "NODE-PORT-LOCAL-UDP",
            "nat",
            "KUBE-NODE-PORT",
            "RETURN",
            "dst",
            "udp",
        ),
        (
            "NODE-PORT-UDP",
            "nat",
            "KUBE-NODE-PORT",
            "KUBE-MARK-MASQ",
            "dst",
            "udp",
        ),
        (
            "NODE-PORT-LOCAL-SCTP-HASH",
            "nat",
            "KUBE-NODE-PORT",
            "RETURN",
            "dst,dst",
            "sctp",
        ),
        (
            "NODE-PORT-SCTP-HASH",
            "nat",
            "KUBE-NODE-PORT",
            "KUBE-MARK-MASQ",
            "dst,dst",
            "sctp",
        ),
        (
            "LOAD-BALANCER-FW",
            "filter",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "dst,dst",
            "",
        ),
        (
            "LOAD-BALANCER-SOURCE-CIDR",
            "filter",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "RETURN",
            "dst,dst,src",
            "",
        ),
        (
            "LOAD-BALANCER-SOURCE-IP",
            "filter",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "RETURN",
            "dst,dst,src",
            "",
        ),
    ];
    for (base, t, from, to, dir, proto) in table {
        if let Some(n) = nonempty(sets, base, fam) {
            let p = if proto.is_empty() {
                String::new()
            } else {
                format!("-p {proto} ")
            };
            push(t, from, format!("{p}-m set --match-set {n} {dir} -j {to}"));
        }
    }
    if let Some(n) = nonempty(sets, "CLUSTER-IP", fam) {
        let base = format!("-m set --match-set {n}");
        let rule = if masq.is_some_and(|m| m.masquerade_all) {
            format!("{base} dst,dst -j KUBE-MARK-MASQ")
        } else {
            match masq.and_then(|m| m.local_detector.as_ref()) {
                Some(LocalDetector::Cidr { cidr }) => {
                    format!("{base} dst,dst ! -s {cidr} -j KUBE-MARK-MASQ")
                }
                Some(LocalDetector::InterfaceNamePrefix { prefix }) => {
                    format!("{base} dst,dst ! -i {prefix}+ -j KUBE-MARK-MASQ")
                }
                Some(LocalDetector::BridgeInterface { interface }) => {
                    format!("{base} dst,dst ! -i {interface} -j KUBE-MARK-MASQ")
                }
                Some(LocalDetector::None) | None => format!("{base} src,dst -j KUBE-MARK-MASQ"),
            }
        };
        push("nat", "KUBE-SERVICES", rule);
    }
    let external = |n: &str| {
        let a = format!("-m set --match-set {n} dst,dst");
        vec![
            format!("{a} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"),
            format!("{a} -m addrtype --dst-type LOCAL -j ACCEPT"),
        ]
    };
    if let Some(n) = nonempty(sets, "EXTERNAL-IP", fam) {
        push(
            "nat",
            "KUBE-SERVICES",
            format!("-m set --match-set {n} dst,dst -j KUBE-MARK-MASQ"),
        );
        for r in external(&n) {
            push("nat", "KUBE-SERVICES", r);
        }
    }
    if let Some(n) = nonempty(sets, "EXTERNAL-IP-LOCAL", fam) {
        for r in external(&n) {
            push("nat", "KUBE-SERVICES", r);
        }
    }
    push(
        "nat",
        "KUBE-SERVICES",
        "-m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into(),
    );
    push("nat", "KUBE-LOAD-BALANCER", "-j KUBE-MARK-MASQ".into());
    push("filter", "KUBE-SOURCE-RANGES-FIREWALL", "-j DROP".into());
    for (ip, proto, port) in lb_no_node_access {
        push(
            "filter",
            "KUBE-IPVS-OUT-FILTER",
            format!("-s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP"),
        );
    }
    for base in ["CLUSTER-IP", "LOAD-BALANCER"] {
        if let Some(n) = nonempty(sets, base, fam) {
            push(
                "nat",
                "KUBE-SERVICES",
                format!("-m set --match-set {n} dst,dst -j ACCEPT"),
            );
        }
    }
    push(
        "filter",
        "KUBE-FORWARD",
        format!(
            "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark_s}/{mark_s} -j ACCEPT"
        ),
    );
    push(
        "filter",
        "KUBE-FORWARD",
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    );
    let hc = set_name("HEALTH-CHECK-NODE-PORT", fam);
    push(
        "filter",
        "KUBE-NODE-PORT",
        format!("-m set --match-set {hc} dst -j ACCEPT"),
    );
    for (base, dir) in [
        ("LOAD-BALANCER", "dst,dst"),
        ("CLUSTER-IP", "dst,dst"),
        ("EXTERNAL-IP", "dst,dst"),
        ("EXTERNAL-IP-LOCAL", "dst,dst"),
        ("HEALTH-CHECK-NODE-PORT", "dst"),
    ] {
        push(
            "filter",
            "KUBE-IPVS-FILTER",
            format!("-m set --match-set {} {dir} -j RETURN", set_name(base, fam)),
        );
    }
    push(
        "filter",
        "KUBE-IPVS-FILTER",
        format!(
            "-m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
            set_name("IPVS-IPS", fam)
        ),
    );
    push(
        "nat",
        "KUBE-POSTROUTING",
        format!("-m mark ! --mark {mark_s}/{mark_s} -j RETURN"),
    );
    push(
        "nat",
        "KUBE-POSTROUTING",
        format!("-j MARK --xor-mark {mark_s}"),
    );
    push(
        "nat",
        "KUBE-POSTROUTING",
        format!(
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
            if masq.is_some_and(|m| m.random_fully) {
                " --random-fully"
            } else {
                ""
            }
        ),
    );
    push(
        "nat",
        "KUBE-MARK-MASQ",
        format!("-j MARK --or-mark {mark_s}"),
    );

    let mut chains = Vec::new();
    for (t, m) in [("nat", nat), ("filter", filter)] {
        for (name, rules) in m {
            chains.push(HybridChain {
                table: t.into(),
                name: name.into(),
                rules,
            });
        }
    }
    let hook = |table: &str, chain: &str, target: &str, comment: &str| HybridHook {
        table: table.into(),
        chain: chain.into(),
        target: target.into(),
        rule: format!("-m comment --comment \"{comment}\" -j {target}"),
    };
    FamilyRules {
        family: fam,
        chains,
        hooks: vec![
            hook(
                "nat",
                "OUTPUT",
                "KUBE-SERVICES",
                "kubernetes service portals",
            ),
            hook(
                "nat",
                "PREROUTING",
                "KUBE-SERVICES",
                "kubernetes service portals",
            ),
            hook(
                "nat",
                "POSTROUTING",
                "KUBE-POSTROUTING",
                "kubernetes postrouting rules",
            ),
            hook(
                "filter",
                "FORWARD",
                "KUBE-FORWARD",
                "kubernetes forwarding rules",
            ),
            hook(
                "filter",
                "INPUT",
                "KUBE-NODE-PORT",
                "kubernetes health check rules",
            ),
            hook(
                "filter",
                "INPUT",
                "KUBE-PROXY-FIREWALL",
                "kube-proxy firewall rules",
            ),
            hook(
                "filter",
                "FORWARD",
                "KUBE-PROXY-FIREWALL",
                "kube-proxy firewall rules",
            ),
            hook(
                "filter",
                "INPUT",
                "KUBE-IPVS-FILTER",
                "kubernetes ipvs access filter",
            ),
            hook(
                "filter",
                "OUTPUT",
                "KUBE-IPVS-OUT-FILTER",
                "kubernetes ipvs access filter",
            ),
        ],
    }
}
