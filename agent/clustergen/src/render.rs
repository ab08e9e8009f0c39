//! Renders a [`Cluster`] as kube-proxy's iptables-restore input, and derives the expected
//! inventory from the same cluster.
//!
//! The rule text follows pkg/proxy/iptables/proxier.go (`syncProxyRules`,
//! `writeServiceToEndpointRules`, `iptablesJumpChains`): option order, comments, probabilities
//! formatted `%0.10f`, per-endpoint comments dropped in large-cluster mode.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipvsmig_engine::inventory::hash::chain_name;
use ipvsmig_engine::inventory::{
    Dispatch, Endpoint, IpFamily, NoEndpointVerdict, ServicePort, ServicePortName, TrafficPolicy,
    WeightedEndpoint, format_endpoint, normalize_probability,
};

use crate::{Cluster, Detector, EndpointSpec, Node, ServicePortSpec};

/// How kube-proxy's `CategorizeEndpoints` splits one service port's endpoints.
struct Categorized<'a> {
    cluster: Vec<&'a EndpointSpec>,
    local: Vec<&'a EndpointSpec>,
    reachable: Vec<&'a EndpointSpec>,
    has_endpoints: bool,
    uses_cluster: bool,
    uses_local: bool,
}

fn categorize(sp: &ServicePortSpec) -> Categorized<'_> {
    // UsesClusterEndpoints / UsesLocalEndpoints (pkg/proxy/serviceport.go).
    let ext = sp.externally_accessible();
    let etp_local = sp.etp_local && ext;
    let uses_cluster = !sp.itp_local || ext;
    let uses_local = sp.itp_local || etp_local;
    let cluster: Vec<&EndpointSpec> = if uses_cluster {
        sp.endpoints.iter().collect()
    } else {
        Vec::new()
    };
    let local: Vec<&EndpointSpec> = if uses_local {
        sp.endpoints.iter().filter(|e| e.local).collect()
    } else {
        Vec::new()
    };
    // With a Local policy in use, any ready endpoint anywhere counts as "has endpoints".
    let has_endpoints = !cluster.is_empty() || (uses_local && !sp.endpoints.is_empty());
    let mut reachable = cluster.clone();
    if uses_local {
        if uses_cluster {
            for e in &local {
                if !reachable.contains(e) {
                    reachable.push(e);
                }
            }
        } else {
            reachable = local.clone();
        }
    }
    Categorized {
        cluster,
        local,
        reachable,
        has_endpoints,
        uses_cluster,
        uses_local,
    }
}

struct Decisions {
    has_internal: bool,
    has_external: bool,
    uses_ext_chain: bool,
    uses_fw: bool,
    uses_cluster_chain: bool,
    uses_local_chain: bool,
    allow_from_node: bool,
}

fn decide(node: &Node, sp: &ServicePortSpec, c: &Categorized<'_>) -> Decisions {
    let ext = sp.externally_accessible();
    let etp_local = sp.etp_local && ext;
    Decisions {
        has_internal: c.has_endpoints && !(sp.itp_local && c.local.is_empty()),
        has_external: c.has_endpoints && !(etp_local && c.local.is_empty()),
        uses_ext_chain: c.has_endpoints && ext,
        uses_fw: c.has_endpoints && !sp.lb_ips.is_empty() && !sp.source_ranges.is_empty(),
        uses_cluster_chain: !c.cluster.is_empty() && c.uses_cluster,
        uses_local_chain: !c.local.is_empty() && c.uses_local,
        allow_from_node: sp.source_ranges.iter().any(|r| r.contains(&node.node_ip)),
    }
}

struct Out {
    filter_chains: String,
    filter_rules: String,
    nat_chains: String,
    nat_rules: String,
}

fn mark(node: &Node) -> String {
    format!("0x{:08x}", 1u32 << node.mark_bit)
}

fn if_not_local(d: &Detector) -> Option<String> {
    match d {
        Detector::None => None,
        Detector::Cidr(c) => Some(format!("! -s {c}")),
        Detector::InterfacePrefix(p) => Some(format!("! -i {p}+")),
        Detector::Bridge(b) => Some(format!("! -i {b}")),
    }
}

fn if_local(d: &Detector) -> Option<String> {
    match d {
        Detector::None => None,
        Detector::Cidr(c) => Some(format!("-s {c}")),
        Detector::InterfacePrefix(p) => Some(format!("-i {p}+")),
        Detector::Bridge(b) => Some(format!("-i {b}")),
    }
}

/// kube-proxy's `computeProbability`: `fmt.Sprintf("%0.10f", 1.0/float64(n))`.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The full restore input for one family: mangle, filter and nat tables with built-in chains,
/// kube-proxy's and kubelet's jump rules and chains, and every service.
pub fn render(cluster: &Cluster) -> String {
    let node = &cluster.node;
    let mut o = Out {
        filter_chains: String::new(),
        filter_rules: String::new(),
        nat_chains: String::new(),
        nat_rules: String::new(),
    };
    let m = mark(node);
    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ] {
        let _ = writeln!(o.filter_chains, ":{c} - [0:0]");
    }
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(o.nat_chains, ":{c} - [0:0]");
    }
    let _ = writeln!(
        o.nat_rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN"
    );
    let _ = writeln!(o.nat_rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {m}");
    let _ = writeln!(
        o.nat_rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(o.nat_rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {m}");
    let v4 = node.family == IpFamily::IPv4;
    let localhost = v4 && node.localhost_node_ports;
    if localhost {
        let _ = writeln!(o.filter_chains, ":KUBE-FIREWALL - [0:0]");
        let _ = writeln!(
            o.filter_rules,
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        );
    }
    for sp in &cluster.ports {
        render_port(node, sp, &mut o);
    }
    match &node.node_port_addresses {
        None => {
            let excl = if v4 {
                if localhost {
                    String::new()
                } else {
                    " ! -d 127.0.0.0/8".to_owned()
                }
            } else {
                " ! -d ::1/128".to_owned()
            };
            let _ = writeln!(
                o.nat_rules,
                "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL{excl} -j KUBE-NODEPORTS"
            );
        }
        Some(addrs) => {
            for a in addrs {
                let _ = writeln!(
                    o.nat_rules,
                    "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d {a} -j KUBE-NODEPORTS"
                );
            }
        }
    }
    let _ = writeln!(
        o.filter_rules,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    );
    let _ = writeln!(
        o.filter_rules,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT"
    );
    let _ = writeln!(
        o.filter_rules,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );

    let mut s =
        String::with_capacity(o.nat_rules.len() + o.nat_chains.len() + o.filter_rules.len() + 4096);
    s.push_str("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n");
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n");
    s.push_str(&o.filter_chains);
    // Jumps are prepended one by one (EnsureRule(Prepend)), so each built-in chain holds them
    // in the reverse of iptablesJumpChains' order.
    s.push_str("-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
    s.push_str("-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n");
    s.push_str("-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
    s.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
    s.push_str("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n");
    s.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    s.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n");
    s.push_str("-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n");
    s.push_str("-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    if localhost {
        s.push_str("-A INPUT -j KUBE-FIREWALL\n-A OUTPUT -j KUBE-FIREWALL\n");
    }
    s.push_str(&o.filter_rules);
    s.push_str("COMMIT\n");
    s.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n");
    s.push_str(&o.nat_chains);
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    s.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    s.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    s.push_str(&o.nat_rules);
    s.push_str("COMMIT\n");
    s
}

fn render_port(node: &Node, sp: &ServicePortSpec, o: &mut Out) {
    let spn = sp.spn();
    let proto = sp.protocol.as_str();
    let c = categorize(sp);
    let d = decide(node, sp, &c);
    let svc = chain_name("KUBE-SVC-", &spn, proto, "");
    let svl = chain_name("KUBE-SVL-", &spn, proto, "");
    let ext = chain_name("KUBE-EXT-", &spn, proto, "");
    let fw = chain_name("KUBE-FW-", &spn, proto, "");
    let ext_local = sp.etp_local && sp.externally_accessible();
    let internal_chain = if sp.itp_local { &svl } else { &svc };
    let external_policy_chain = if ext_local { &svl } else { &svc };
    let lb_chain = if d.uses_fw { &fw } else { &ext };
    let (int_target, int_comment, ext_target, ext_comment) = if !c.has_endpoints {
        let cm = format!("\"{spn} has no endpoints\"");
        ("REJECT", cm.clone(), "REJECT", cm)
    } else {
        let cm = format!("\"{spn} has no local endpoints\"");
        ("DROP", cm.clone(), "DROP", cm)
    };
    let (cip, port) = (sp.cluster_ip, sp.port);
    let pp = format!("-m {proto} -p {proto}");

    if d.has_internal {
        let _ = writeln!(
            o.nat_rules,
            "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" {pp} -d {cip} --dport {port} -j {internal_chain}"
        );
    } else {
        let _ = writeln!(
            o.filter_rules,
            "-A KUBE-SERVICES -m comment --comment {int_comment} {pp} -d {cip} --dport {port} -j {int_target}"
        );
    }
    for ip in &sp.external_ips {
        if c.has_endpoints {
            let _ = writeln!(
                o.nat_rules,
                "-A KUBE-SERVICES -m comment --comment \"{spn} external IP\" {pp} -d {ip} --dport {port} -j {ext}"
            );
        }
        if !d.has_external {
            let _ = writeln!(
                o.filter_rules,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {pp} -d {ip} --dport {port} -j {ext_target}"
            );
        }
    }
    for ip in &sp.lb_ips {
        if c.has_endpoints {
            let _ = writeln!(
                o.nat_rules,
                "-A KUBE-SERVICES -m comment --comment \"{spn} loadbalancer IP\" {pp} -d {ip} --dport {port} -j {lb_chain}"
            );
        }
        if d.uses_fw {
            let _ = writeln!(
                o.filter_rules,
                "-A KUBE-PROXY-FIREWALL -m comment --comment \"{spn} traffic not accepted by {fw}\" {pp} -d {ip} --dport {port} -j DROP"
            );
        }
    }
    if !d.has_external {
        for ip in &sp.lb_ips {
            let _ = writeln!(
                o.filter_rules,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {pp} -d {ip} --dport {port} -j {ext_target}"
            );
        }
    }
    if let Some(np) = sp.node_port {
        if c.has_endpoints {
            if node.localhost_node_ports && node.family == IpFamily::IPv4 {
                let _ = writeln!(
                    o.nat_rules,
                    "-A KUBE-NODEPORTS -m comment --comment {spn} {pp} -d 127.0.0.0/8 --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}"
                );
            }
            let _ = writeln!(
                o.nat_rules,
                "-A KUBE-NODEPORTS -m comment --comment {spn} {pp} --dport {np} -j {ext}"
            );
        }
        if !d.has_external {
            let _ = writeln!(
                o.filter_rules,
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL {pp} --dport {np} -j {ext_target}"
            );
        }
    }
    if let Some(hc) = sp.hc_node_port {
        let _ = writeln!(
            o.filter_rules,
            "-A KUBE-NODEPORTS -m comment --comment \"{spn} health check node port\" -m tcp -p tcp --dport {hc} -j ACCEPT"
        );
    }

    if d.has_internal {
        let args =
            format!("-m comment --comment \"{spn} cluster IP\" {pp} -d {cip} --dport {port}");
        if node.masquerade_all {
            let _ = writeln!(o.nat_rules, "-A {internal_chain} {args} -j KUBE-MARK-MASQ");
        } else if let Some(nl) = if_not_local(&node.detector) {
            let _ = writeln!(
                o.nat_rules,
                "-A {internal_chain} {args} {nl} -j KUBE-MARK-MASQ"
            );
        }
    }
    if d.uses_ext_chain {
        let _ = writeln!(o.nat_chains, ":{ext} - [0:0]");
        if !ext_local {
            let _ = writeln!(
                o.nat_rules,
                "-A {ext} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ"
            );
        } else {
            if let Some(l) = if_local(&node.detector) {
                let _ = writeln!(
                    o.nat_rules,
                    "-A {ext} -m comment --comment \"pod traffic for {spn} external destinations\" {l} -j {svc}"
                );
            }
            let _ = writeln!(
                o.nat_rules,
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                o.nat_rules,
                "-A {ext} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            );
        }
        if d.has_external {
            let _ = writeln!(o.nat_rules, "-A {ext} -j {external_policy_chain}");
        }
    }
    if d.uses_fw {
        let _ = writeln!(o.nat_chains, ":{fw} - [0:0]");
        for src in &sp.source_ranges {
            let _ = writeln!(
                o.nat_rules,
                "-A {fw} -m comment --comment \"{spn} loadbalancer IP\" -s {src} -j {ext}"
            );
        }
        if d.allow_from_node {
            for ip in &sp.lb_ips {
                let _ = writeln!(
                    o.nat_rules,
                    "-A {fw} -m comment --comment \"{spn} loadbalancer IP\" -s {ip} -j {ext}"
                );
            }
        }
        let _ = writeln!(
            o.nat_rules,
            "-A {fw} -m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""
        );
    }
    if d.uses_cluster_chain {
        let _ = writeln!(o.nat_chains, ":{svc} - [0:0]");
        dispatch_rules(node, sp, &spn, &svc, &c.cluster, o);
    }
    if d.uses_local_chain {
        let _ = writeln!(o.nat_chains, ":{svl} - [0:0]");
        dispatch_rules(node, sp, &spn, &svl, &c.local, o);
    }
    for e in &c.reachable {
        let epstr = format_endpoint(&e.ip, e.port);
        let sep = chain_name("KUBE-SEP-", &spn, proto, &epstr);
        let _ = writeln!(o.nat_chains, ":{sep} - [0:0]");
        let cm = if node.large_cluster {
            String::new()
        } else {
            format!("-m comment --comment {spn} ")
        };
        let _ = writeln!(o.nat_rules, "-A {sep} {cm}-s {} -j KUBE-MARK-MASQ", e.ip);
        let recent = if sp.affinity.is_some() {
            format!("-m recent --name {sep} --set ")
        } else {
            String::new()
        };
        let _ = writeln!(
            o.nat_rules,
            "-A {sep} {cm}{recent}{pp} -j DNAT --to-destination {epstr}"
        );
    }
}

fn dispatch_rules(
    node: &Node,
    sp: &ServicePortSpec,
    spn: &str,
    chain: &str,
    eps: &[&EndpointSpec],
    o: &mut Out,
) {
    let proto = sp.protocol.as_str();
    let comment = |e: &EndpointSpec| -> String {
        if node.large_cluster {
            String::new()
        } else {
            format!(
                "-m comment --comment \"{spn} -> {}\" ",
                format_endpoint(&e.ip, e.port)
            )
        }
    };
    if let Some(t) = sp.affinity {
        for e in eps {
            let sep = chain_name("KUBE-SEP-", spn, proto, &format_endpoint(&e.ip, e.port));
            let _ = writeln!(
                o.nat_rules,
                "-A {chain} {}-m recent --name {sep} --rcheck --seconds {t} --reap -j {sep}",
                comment(e)
            );
        }
    }
    let n = eps.len();
    for (i, e) in eps.iter().enumerate() {
        let sep = chain_name("KUBE-SEP-", spn, proto, &format_endpoint(&e.ip, e.port));
        if i < n - 1 {
            let _ = writeln!(
                o.nat_rules,
                "-A {chain} {}-m statistic --mode random --probability {} -j {sep}",
                comment(e),
                probability(n - i)
            );
        } else {
            let _ = writeln!(o.nat_rules, "-A {chain} {}-j {sep}", comment(e));
        }
    }
}

/// The inventory the rendered rules describe, derived from the cluster (not from the text).
pub fn expected(cluster: &Cluster) -> Vec<ServicePort> {
    let node = &cluster.node;
    let mut out = Vec::new();
    for sp in &cluster.ports {
        let spn = sp.spn();
        let proto = sp.protocol.as_str();
        let c = categorize(sp);
        let d = decide(node, sp, &c);
        let ext = sp.externally_accessible();
        let etp_local = sp.etp_local && ext && c.has_endpoints;
        let itp_local = sp.itp_local && c.has_endpoints;
        let dispatch = |chain: String, eps: &[&EndpointSpec]| Dispatch {
            chain,
            endpoints: eps
                .iter()
                .enumerate()
                .map(|(i, e)| WeightedEndpoint {
                    ip: e.ip,
                    port: e.port,
                    probability: if i + 1 < eps.len() {
                        normalize_probability(probability(eps.len() - i).parse().unwrap_or(0.0))
                    } else {
                        1.0
                    },
                })
                .collect(),
        };
        let cluster_dispatch = d
            .uses_cluster_chain
            .then(|| dispatch(chain_name("KUBE-SVC-", &spn, proto, ""), &c.cluster));
        let local_dispatch = d
            .uses_local_chain
            .then(|| dispatch(chain_name("KUBE-SVL-", &spn, proto, ""), &c.local));
        let any_local_policy = itp_local || etp_local;
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let ordered: Vec<&EndpointSpec> = if d.uses_cluster_chain {
            let mut v = c.cluster.clone();
            if d.uses_local_chain {
                for e in &c.local {
                    if !v.contains(e) {
                        v.push(e);
                    }
                }
            }
            v
        } else if d.uses_local_chain {
            c.local.clone()
        } else {
            Vec::new()
        };
        for e in ordered {
            let local = if d.uses_local_chain {
                Some(c.local.contains(&e))
            } else if any_local_policy {
                Some(false)
            } else {
                None
            };
            endpoints.push(Endpoint {
                ip: e.ip,
                port: e.port,
                local,
            });
        }
        let (external_ips, lb_ips, ext_or_lb) = if c.has_endpoints {
            (sp.external_ips.clone(), sp.lb_ips.clone(), Vec::new())
        } else {
            let mut v = sp.external_ips.clone();
            v.extend(sp.lb_ips.iter().copied());
            (Vec::new(), Vec::new(), v)
        };
        let internal_no_endpoints = if !c.has_endpoints {
            Some(NoEndpointVerdict::Reject)
        } else if !d.has_internal {
            Some(NoEndpointVerdict::Drop)
        } else {
            None
        };
        let external_no_endpoints = if !ext {
            None
        } else if !c.has_endpoints {
            Some(NoEndpointVerdict::Reject)
        } else if !d.has_external {
            Some(NoEndpointVerdict::Drop)
        } else {
            None
        };
        out.push(ServicePort {
            name: ServicePortName {
                namespace: sp.namespace.clone(),
                name: sp.name.clone(),
                port_name: sp.port_name.clone(),
            },
            protocol: sp.protocol,
            family: node.family,
            cluster_ip: sp.cluster_ip,
            port: sp.port,
            node_port: sp.node_port,
            localhost_node_port: sp.node_port.is_some()
                && c.has_endpoints
                && node.localhost_node_ports
                && node.family == IpFamily::IPv4,
            external_ips,
            load_balancer_ips: lb_ips,
            external_or_load_balancer_ips: ext_or_lb,
            load_balancer_source_ranges: if d.uses_fw {
                sp.source_ranges.clone()
            } else {
                Vec::new()
            },
            load_balancer_allows_node: d.uses_fw && d.allow_from_node,
            session_affinity_seconds: if d.uses_cluster_chain || d.uses_local_chain {
                sp.affinity
            } else {
                None
            },
            internal_traffic_policy: if itp_local {
                TrafficPolicy::Local
            } else {
                TrafficPolicy::Cluster
            },
            external_traffic_policy: if etp_local {
                TrafficPolicy::Local
            } else {
                TrafficPolicy::Cluster
            },
            health_check_node_port: sp.hc_node_port,
            endpoints,
            cluster_dispatch,
            local_dispatch,
            internal_no_endpoints,
            external_no_endpoints,
            masquerade_cluster_ip: d.has_internal
                && (node.masquerade_all || !matches!(node.detector, Detector::None)),
            hairpin_masquerade: !c.reachable.is_empty(),
            hash_mismatches: Vec::new(),
        });
    }
    out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    out
}

/// True if `ip` is IPv4.
pub fn is_v4(ip: &IpAddr) -> bool {
    ip.is_ipv4()
}
