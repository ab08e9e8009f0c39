//! The hybrid state: a subset of namespaces served by IPVS while kube-proxy stays in iptables
//! mode (DESIGN.md "The hybrid data plane"; docs/hybrid.md explains every rule).
//!
//! For the migrated namespaces it holds the same virtual servers and kube-ipvs0 addresses as
//! the full plan, plus the agent's own ipsets and rules:
//! - nat `IPVSMIG-SERVICES` (first in PREROUTING and OUTPUT): admitted (VIP, proto, port) keys,
//!   or probe-marked packets to probing keys, go to `IPVSMIG-ADMIT`, which marks for
//!   masquerade as kube-proxy's IPVS mode would (its local-traffic detector, masqueradeAll,
//!   external and NodePort traffic unless eTP=Local) and ACCEPTs: nat ends, no DNAT, IPVS
//!   takes the packet at LOCAL_IN / LOCAL_OUT. A bound VIP on a port that is no service port
//!   ends nat too, so kube-proxy's `--dst-type LOCAL` NodePort jump never DNATs VIP:NodePort.
//! - nat `IPVSMIG-POSTROUTING` (first in POSTROUTING): hairpin masquerade (KUBE-LOOP-BACK's
//!   job in IPVS mode; the KUBE-SEP hairpin rules no longer see these packets).
//! - filter `IPVSMIG-FILTER` (first in INPUT): eTP=Local drops for external traffic when no
//!   endpoint is local (iptables mode's behaviour, kept), loadBalancerSourceRanges (allowed
//!   sources ACCEPTed before kube-proxy's KUBE-PROXY-FIREWALL, which would drop every undNATed
//!   packet to the LB IP; others dropped), and the access filter (REJECT new connections to a
//!   bound VIP on a non-service port, like KUBE-IPVS-FILTER).
//! - The node's own connections to an LB whose source ranges exclude the node are not
//!   admitted: they stay on kube-proxy's rules, which drop them (iptables mode's behaviour;
//!   IPVS mode needs `-m ipvs` for it, KUBE-IPVS-OUT-FILTER).
//!
//! Admission sets carry member timeouts (the dead man's switch): when the daemon stops
//! refreshing them, traffic falls back to kube-proxy's iptables path by itself. The other sets
//! describe what is bound and classify it; they have no timeouts, so an expired admission
//! never leaves a service port captured.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ipsets::Member;
use super::{IpvsPlan, PlanFinding, PlanOptions, VirtualServer, VsKind};
use crate::inventory::{
    Inventory, IpFamily, LocalDetector, Masquerade, Protocol, ServicePort, TrafficPolicy,
};

/// The mark the agent's own probe packets carry (SO_MARK); bit 20, clear of kube-proxy's
/// masquerade (bit 14) and drop (bit 15) marks and of Calico's default 0xffff0000 mask users
/// move it to in the config.
pub const DEFAULT_PROBE_MARK: u32 = 0x0010_0000;

/// Default member timeout of the admission sets, seconds (the daemon refreshes every 10 s).
pub const DEFAULT_SWITCH_TIMEOUT: u32 = 60;

/// What to migrate and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridOptions {
    /// Namespaces to move to IPVS.
    pub namespaces: Vec<String>,
    /// `NS/SVC` services kept on iptables.
    pub exclude: Vec<String>,
    /// Member timeout of the admission sets in seconds; 0 = no timeout (`--no-watch`).
    pub switch_timeout: u32,
    /// Mark of the agent's probe packets.
    pub probe_mark: u32,
    /// Kernel (major, minor), for conn_reuse_mode.
    pub kernel: Option<(u32, u32)>,
}

impl Default for HybridOptions {
    fn default() -> Self {
        HybridOptions {
            namespaces: Vec::new(),
            exclude: Vec::new(),
            switch_timeout: DEFAULT_SWITCH_TIMEOUT,
            probe_mark: DEFAULT_PROBE_MARK,
            kernel: None,
        }
    }
}

/// One of the agent's ipsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridSet {
    /// ipset type.
    pub set_type: String,
    /// IP family.
    pub family: IpFamily,
    /// Members carry a timeout (admission sets: the dead man's switch).
    pub timeout: bool,
    /// Members (serialized as `ipset add` takes them).
    pub members: BTreeSet<Member>,
}

impl HybridSet {
    /// The `ipset restore` line creating the set: admission sets with timeout support
    /// (`timeout 0`: members are permanent unless added with their own timeout).
    pub fn create_line(&self, name: &str) -> String {
        let family = match self.family {
            IpFamily::IPv4 => "inet",
            IpFamily::IPv6 => "inet6",
        };
        let timeout = if self.timeout { " timeout 0" } else { "" };
        format!("create {name} {} family {family}{timeout}\n", self.set_type)
    }
}

/// One of the agent's chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HybridChain {
    /// `nat` or `filter`.
    pub table: String,
    /// Chain name (`IPVSMIG-…`).
    pub name: String,
    /// Rules, each the arguments after `-A NAME`.
    pub rules: Vec<String>,
}

/// A jump from a built-in chain to one of ours, inserted first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HybridHook {
    /// Table.
    pub table: String,
    /// Built-in chain.
    pub chain: String,
    /// Our chain.
    pub target: String,
    /// Rule arguments (comment and jump) as the agent inserts and checks them.
    pub rule: String,
}

/// One family's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRules {
    /// Family.
    pub family: IpFamily,
    /// Chains, in dependency order (targets before the chains that jump to them).
    pub chains: Vec<HybridChain>,
    /// Hooks from built-in chains.
    pub hooks: Vec<HybridHook>,
}

/// The hybrid state for a namespace subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridPlan {
    /// Migrated namespaces.
    pub namespaces: Vec<String>,
    /// Services kept on iptables by `--exclude`.
    pub excluded: Vec<String>,
    /// Virtual servers of the migrated service ports.
    pub virtual_servers: Vec<VirtualServer>,
    /// Addresses bound on kube-ipvs0.
    pub addresses: Vec<IpAddr>,
    /// The agent's ipsets, final (all-traffic) stage.
    pub ipsets: BTreeMap<String, HybridSet>,
    /// The agent's iptables rules per family.
    pub rules: Vec<FamilyRules>,
    /// sysctls the hybrid needs (`key`, `value`).
    pub sysctls: Vec<(String, String)>,
    /// Member timeout of the admission sets (0: none).
    pub switch_timeout: u32,
    /// Probe mark.
    pub probe_mark: u32,
    /// What stays on iptables, and why.
    pub left_on_iptables: Vec<PlanFinding>,
    /// Behaviour differences of what moves.
    pub findings: Vec<PlanFinding>,
}

/// Admission stage of the agent's sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Only probe-marked packets reach IPVS.
    Probe,
    /// All traffic reaches IPVS.
    Admitted,
}

/// The tables the agent's chains live in, in the order they are loaded.
pub const TABLES: [&str; 3] = ["mangle", "nat", "filter"];

/// The sets' base names (the family prefix is `IPVSMIG-` or `IPVSMIG6-`).
pub mod set {
    /// hash:ip,port — keys admitted for all traffic (timeouts).
    pub const ADMITTED: &str = "ADMITTED";
    /// hash:ip,port — keys admitted for probe-marked packets only (timeouts).
    pub const PROBING: &str = "PROBING";
    /// hash:ip,port — every virtual server key of the plan.
    pub const VS: &str = "VS";
    /// hash:ip — every address bound on kube-ipvs0.
    pub const BOUND: &str = "BOUND";
    /// hash:ip,port — ClusterIP keys (masquerade by the local-traffic detector).
    pub const CLUSTER_IP: &str = "CLUSTER-IP";
    /// hash:ip,port — external, LB and NodePort keys masqueraded (eTP=Cluster).
    pub const EXT_MASQ: &str = "EXT-MASQ";
    /// hash:ip,port,ip — endpoint, port, endpoint: hairpin masquerade.
    pub const LOOP_BACK: &str = "LOOP-BACK";
    /// hash:ip,port — external keys of eTP=Local services with no local endpoint.
    pub const NO_LOCAL: &str = "NO-LOCAL";
    /// hash:ip,port — LB keys with loadBalancerSourceRanges.
    pub const LB_FW: &str = "LB-FW";
    /// hash:ip,port,net — LB key and an allowed source range.
    pub const LB_SRC: &str = "LB-SRC";
    /// hash:ip,port — LB keys whose source ranges exclude the node (node traffic stays on
    /// iptables).
    pub const NODE_DENIED: &str = "NODE-DENIED";
}

const SET_TYPES: &[(&str, &str, bool)] = &[
    (set::ADMITTED, "hash:ip,port", true),
    (set::PROBING, "hash:ip,port", true),
    (set::VS, "hash:ip,port", false),
    (set::BOUND, "hash:ip", false),
    (set::CLUSTER_IP, "hash:ip,port", false),
    (set::EXT_MASQ, "hash:ip,port", false),
    (set::LOOP_BACK, "hash:ip,port,ip", false),
    (set::NO_LOCAL, "hash:ip,port", false),
    (set::LB_FW, "hash:ip,port", false),
    (set::LB_SRC, "hash:ip,port,net", false),
    (set::NODE_DENIED, "hash:ip,port", false),
];

/// The agent's set name for a base name and family.
pub fn set_name(base: &str, family: IpFamily) -> String {
    match family {
        IpFamily::IPv4 => format!("IPVSMIG-{base}"),
        IpFamily::IPv6 => format!("IPVSMIG6-{base}"),
    }
}

/// Chain names.
pub mod chain {
    /// mangle: first in OUTPUT; drops the node's own new connections to LBs whose source
    /// ranges exclude it (before IPVS's LOCAL_OUT hook could take them).
    pub const OUTPUT: &str = "IPVSMIG-OUTPUT";
    /// nat: admission, first in PREROUTING and OUTPUT.
    pub const SERVICES: &str = "IPVSMIG-SERVICES";
    /// nat: masquerade marking + ACCEPT.
    pub const ADMIT: &str = "IPVSMIG-ADMIT";
    /// nat: hairpin masquerade, first in POSTROUTING.
    pub const POSTROUTING: &str = "IPVSMIG-POSTROUTING";
    /// filter: first in INPUT.
    pub const FILTER: &str = "IPVSMIG-FILTER";
    /// filter: loadBalancerSourceRanges.
    pub const SOURCE_RANGES: &str = "IPVSMIG-SOURCE-RANGES";
}

fn key(ip: &IpAddr, p: Protocol, port: u16) -> Member {
    Member::IpPort(*ip, p, port)
}

fn sp_label(sp: &ServicePort) -> String {
    sp.name.to_string()
}

fn excluded(sp: &ServicePort, exclude: &[String]) -> bool {
    exclude
        .iter()
        .any(|e| e.split_once('/') == Some((sp.name.namespace.as_str(), sp.name.name.as_str())))
}

/// Every address a service port's virtual servers use, except NodePorts.
fn vips(sp: &ServicePort) -> impl Iterator<Item = &IpAddr> {
    std::iter::once(&sp.cluster_ip)
        .chain(&sp.external_ips)
        .chain(&sp.load_balancer_ips)
        .chain(&sp.external_or_load_balancer_ips)
}

/// Builds the hybrid state for `hopts.namespaces` from the full plan of the same inventory.
pub fn hybrid(
    inv: &Inventory,
    full: &IpvsPlan,
    opts: &PlanOptions,
    hopts: &HybridOptions,
) -> HybridPlan {
    let wanted: BTreeSet<&str> = hopts.namespaces.iter().map(String::as_str).collect();
    let mut left = Vec::new();
    let mut findings = Vec::new();
    let masq: BTreeMap<IpFamily, Option<&Masquerade>> = inv
        .families
        .iter()
        .map(|f| (f.family, f.masquerade.as_ref()))
        .collect();

    // Addresses used by service ports that stay on iptables: a migrated service sharing one
    // (a shared LB or external IP) cannot bind it without capturing the other's traffic.
    let mut staying_addrs: BTreeSet<IpAddr> = BTreeSet::new();
    for sp in &inv.service_ports {
        if !wanted.contains(sp.name.namespace.as_str()) || excluded(sp, &hopts.exclude) {
            staying_addrs.extend(vips(sp).copied());
        }
    }
    let mut moving: BTreeSet<(String, IpFamily, Protocol)> = BTreeSet::new();
    let mut moving_sps: Vec<&ServicePort> = Vec::new();
    let mut excluded_names = BTreeSet::new();
    for sp in &inv.service_ports {
        if !wanted.contains(sp.name.namespace.as_str()) {
            continue;
        }
        if excluded(sp, &hopts.exclude) {
            excluded_names.insert(format!("{}/{}", sp.name.namespace, sp.name.name));
            left.push(PlanFinding {
                id: "excluded".into(),
                service: sp_label(sp),
                message: "kept on iptables by --exclude".into(),
            });
            continue;
        }
        if let Some(ip) = vips(sp).find(|ip| staying_addrs.contains(ip)) {
            left.push(PlanFinding {
                id: "shared-address".into(),
                service: sp_label(sp),
                message: format!("{ip} is also used by a service that stays on iptables; binding it on kube-ipvs0 would capture that service's traffic, so this service port stays on iptables until both move"),
            });
            continue;
        }
        if masq.get(&sp.family).copied().flatten().is_none() {
            left.push(PlanFinding {
                id: "no-masquerade-facts".into(),
                service: sp_label(sp),
                message: format!("the {} rules show no KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade setup, so the masquerade decisions IPVS mode needs cannot be re-expressed; stays on iptables", sp.family.as_str()),
            });
            continue;
        }
        moving.insert((sp.name.to_string(), sp.family, sp.protocol));
        moving_sps.push(sp);
    }
    for e in &hopts.exclude {
        let matched = inv
            .service_ports
            .iter()
            .any(|sp| excluded(sp, std::slice::from_ref(e)));
        if !matched {
            findings.push(PlanFinding {
                id: "exclude-unmatched".into(),
                service: e.clone(),
                message: format!("--exclude {e}: no such service in the inventory"),
            });
        }
    }
    for ns in &hopts.namespaces {
        if !inv.service_ports.iter().any(|sp| &sp.name.namespace == ns) {
            findings.push(PlanFinding {
                id: "empty-namespace".into(),
                service: format!("{ns}/*"),
                message: format!(
                    "namespace {ns} has no service ports in the inventory; nothing moves"
                ),
            });
        }
    }

    let vss: Vec<VirtualServer> = full
        .virtual_servers
        .iter()
        .filter(|vs| {
            moving.contains(&(
                vs.service.to_string(),
                IpFamily::of(&vs.address),
                vs.protocol,
            ))
        })
        .cloned()
        .collect();
    let mut addresses: Vec<IpAddr> = moving_sps.iter().flat_map(|sp| vips(sp).copied()).collect();
    addresses.sort();
    addresses.dedup();

    let mut families: Vec<IpFamily> = inv.families.iter().map(|f| f.family).collect();
    families.sort();
    families.dedup();
    let mut sets: BTreeMap<String, HybridSet> = BTreeMap::new();
    for fam in &families {
        for (base, t, timeout) in SET_TYPES {
            sets.insert(
                set_name(base, *fam),
                HybridSet {
                    set_type: (*t).to_owned(),
                    family: *fam,
                    timeout: *timeout,
                    members: BTreeSet::new(),
                },
            );
        }
    }
    let mut add = |base: &str, fam: IpFamily, m: Member| {
        if let Some(s) = sets.get_mut(&set_name(base, fam)) {
            s.members.insert(m);
        }
    };
    for vs in &vss {
        let fam = IpFamily::of(&vs.address);
        let k = key(&vs.address, vs.protocol, vs.port);
        add(set::VS, fam, k.clone());
        add(set::ADMITTED, fam, k);
    }
    for a in &addresses {
        add(set::BOUND, IpFamily::of(a), Member::Ip(*a));
    }
    for sp in &moving_sps {
        let fam = sp.family;
        let p = sp.protocol;
        let etp_local = sp.external_traffic_policy == TrafficPolicy::Local;
        let no_local = etp_local
            && !sp.endpoints.is_empty()
            && !sp.endpoints.iter().any(|e| e.local == Some(true));
        add(set::CLUSTER_IP, fam, key(&sp.cluster_ip, p, sp.port));
        let mut external_keys: Vec<Member> = sp
            .external_ips
            .iter()
            .chain(&sp.load_balancer_ips)
            .chain(&sp.external_or_load_balancer_ips)
            .map(|ip| key(ip, p, sp.port))
            .collect();
        if let Some(np) = sp.node_port {
            external_keys.extend(
                opts.node_ips
                    .iter()
                    .filter(|ip| IpFamily::of(ip) == fam && !ip.is_loopback())
                    .map(|ip| key(ip, p, np)),
            );
        }
        for k in &external_keys {
            if !etp_local {
                add(set::EXT_MASQ, fam, k.clone());
            }
            if no_local {
                add(set::NO_LOCAL, fam, k.clone());
            }
        }
        if !sp.load_balancer_source_ranges.is_empty() {
            for ip in sp
                .load_balancer_ips
                .iter()
                .chain(&sp.external_or_load_balancer_ips)
            {
                let k = key(ip, p, sp.port);
                add(set::LB_FW, fam, k.clone());
                for net in &sp.load_balancer_source_ranges {
                    add(set::LB_SRC, fam, Member::IpPortNet(*ip, p, sp.port, *net));
                }
                if !sp.load_balancer_allows_node {
                    add(set::NODE_DENIED, fam, k.clone());
                }
            }
        }
        for e in &sp.endpoints {
            if e.local != Some(false) {
                add(set::LOOP_BACK, fam, Member::IpPortIp(e.ip, p, e.port, e.ip));
            }
        }
        if sp.localhost_node_port {
            left.push(PlanFinding {
                id: "localhost-nodeport".into(),
                service: sp_label(sp),
                message: "NodePort connections to 127.0.0.0/8 stay on kube-proxy's iptables rules (IPVS has no localhost NodePorts)".into(),
            });
        }
    }
    let rules = families
        .iter()
        .map(|fam| family_rules(*fam, masq.get(fam).copied().flatten(), hopts.probe_mark))
        .collect();

    let mut sysctls: Vec<(String, String)> = vec![
        ("net.ipv4.vs.conntrack".into(), "1".into()),
        ("net.ipv4.vs.expire_nodest_conn".into(), "1".into()),
        ("net.ipv4.vs.expire_quiescent_template".into(), "1".into()),
    ];
    if let Some((maj, min)) = hopts.kernel
        && (maj, min) >= (4, 1)
        && (maj, min) < (5, 9)
    {
        sysctls.push(("net.ipv4.vs.conn_reuse_mode".into(), "0".into()));
    }
    sysctls.push(("net.ipv4.ip_forward".into(), "1".into()));
    let binds_external = vss.iter().any(|vs| {
        matches!(
            vs.kind,
            VsKind::ExternalIp | VsKind::LoadBalancer | VsKind::ExternalOrLoadBalancer
        )
    });
    if binds_external {
        // Before an LB or external IP is bound: without these the node answers ARP for it
        // (kube-proxy's strictARP; MetalLB L2 breaks otherwise).
        sysctls.push(("net.ipv4.conf.all.arp_ignore".into(), "1".into()));
        sysctls.push(("net.ipv4.conf.all.arp_announce".into(), "2".into()));
    }
    let mut namespaces = hopts.namespaces.clone();
    namespaces.sort();
    namespaces.dedup();
    HybridPlan {
        namespaces,
        excluded: excluded_names.into_iter().collect(),
        virtual_servers: vss,
        addresses,
        ipsets: sets,
        rules,
        sysctls,
        switch_timeout: hopts.switch_timeout,
        probe_mark: hopts.probe_mark,
        left_on_iptables: left,
        findings,
    }
}

fn not_local(det: Option<&LocalDetector>) -> Option<String> {
    match det? {
        LocalDetector::None => None,
        LocalDetector::Cidr { cidr } => Some(format!("! -s {cidr}")),
        LocalDetector::InterfaceNamePrefix { prefix } => Some(format!("! -i {prefix}+")),
        LocalDetector::BridgeInterface { interface } => Some(format!("! -i {interface}")),
    }
}

fn family_rules(fam: IpFamily, masq: Option<&Masquerade>, probe_mark: u32) -> FamilyRules {
    let s = |base: &str| set_name(base, fam);
    let lo = match fam {
        IpFamily::IPv4 => "127.0.0.0/8",
        IpFamily::IPv6 => "::1/128",
    };
    let mark = masq.map_or(0x4000, |m| m.mark);
    let detector = masq.and_then(|m| not_local(m.local_detector.as_ref()));
    let masq_all = masq.is_some_and(|m| m.masquerade_all);
    let random_fully = masq.is_some_and(|m| m.random_fully);

    let services = vec![
        format!("-s {lo} -m comment --comment \"localhost stays on iptables\" -j RETURN"),
        format!(
            "-m set --match-set {} dst,dst -j {}",
            s(set::ADMITTED),
            chain::ADMIT
        ),
        format!(
            "-m mark --mark {probe_mark:#x}/{probe_mark:#x} -m set --match-set {} dst,dst -j {}",
            s(set::PROBING),
            chain::ADMIT
        ),
        format!(
            "-m comment --comment \"a bound VIP on a non-service port: no NodePort DNAT\" -m set --match-set {} dst -m set ! --match-set {} dst,dst -j ACCEPT",
            s(set::BOUND),
            s(set::VS)
        ),
    ];
    let mut admit = Vec::new();
    let cluster = format!("-m set --match-set {}", s(set::CLUSTER_IP));
    if masq_all {
        admit.push(format!("{cluster} dst,dst -j MARK --or-mark {mark:#x}"));
    } else if let Some(d) = detector {
        admit.push(format!("{cluster} dst,dst {d} -j MARK --or-mark {mark:#x}"));
    } else {
        admit.push(format!("{cluster} src,dst -j MARK --or-mark {mark:#x}"));
    }
    admit.push(format!(
        "-m set --match-set {} dst,dst -j MARK --or-mark {mark:#x}",
        s(set::EXT_MASQ)
    ));
    // iptables mode masquerades the node's own traffic to every external destination, eTP=Local
    // ones too ("masquerade LOCAL traffic for … external destinations" in KUBE-EXT): without
    // it the connection's source would be the VIP itself, bound on kube-ipvs0.
    admit.push(format!(
        "-m addrtype --src-type LOCAL -m set --match-set {} dst,dst -m set ! --match-set {} dst,dst -m comment --comment \"the node's own traffic to external destinations\" -j MARK --or-mark {mark:#x}",
        s(set::VS),
        s(set::CLUSTER_IP)
    ));
    admit.push("-j ACCEPT".into());
    let post = vec![format!(
        "-m comment --comment \"hairpin\" -m set --match-set {} dst,dst,src -j MASQUERADE{}",
        s(set::LOOP_BACK),
        if random_fully { " --random-fully" } else { "" }
    )];
    let not_local_src = masq
        .and_then(|m| not_local(m.local_detector.as_ref()))
        .map(|d| format!("{d} "))
        .unwrap_or_default();
    let filter = vec![
        format!(
            "-m conntrack --ctstate NEW -m set --match-set {} dst,dst {not_local_src}-m addrtype ! --src-type LOCAL -m comment --comment \"externalTrafficPolicy=Local, no local endpoint\" -j DROP",
            s(set::NO_LOCAL)
        ),
        format!(
            "-m conntrack --ctstate NEW -m set --match-set {} dst,dst -j {}",
            s(set::LB_FW),
            chain::SOURCE_RANGES
        ),
        // Pods and the node keep reaching an eTP=Local service without a local endpoint, as
        // iptables mode's short-circuit lets them; ACCEPT, because kube-proxy's
        // KUBE-EXTERNAL-SERVICES drops every undNATed packet to it ("has no local endpoints").
        format!(
            "-m conntrack --ctstate NEW -m set --match-set {} dst,dst -m comment --comment \"externalTrafficPolicy=Local: pods and the node\" -j ACCEPT",
            s(set::NO_LOCAL)
        ),
        format!(
            "-m conntrack --ctstate NEW -m set --match-set {} dst -m set ! --match-set {} dst,dst -m comment --comment \"ipvs access filter\" -j REJECT",
            s(set::BOUND),
            s(set::VS)
        ),
    ];
    let ranges = vec![
        format!(
            "-m set --match-set {} dst,dst,src -j ACCEPT",
            s(set::LB_SRC)
        ),
        "-m comment --comment \"loadBalancerSourceRanges\" -j DROP".into(),
    ];
    let ch = |table: &str, name: &str, rules: Vec<String>| HybridChain {
        table: table.into(),
        name: name.into(),
        rules,
    };
    let hook = |table: &str, chain_: &str, target: &str| HybridHook {
        table: table.into(),
        chain: chain_.into(),
        target: target.into(),
        rule: format!("-m comment --comment \"ipvs-migrate hybrid data plane\" -j {target}"),
    };
    FamilyRules {
        family: fam,
        chains: vec![
            ch("nat", chain::ADMIT, admit),
            ch("nat", chain::SERVICES, services),
            ch("nat", chain::POSTROUTING, post),
            ch("filter", chain::SOURCE_RANGES, ranges),
            ch("filter", chain::FILTER, filter),
            ch(
                "mangle",
                chain::OUTPUT,
                vec![format!(
                    "-m conntrack --ctstate NEW -m set --match-set {} dst,dst -m comment --comment \"loadBalancerSourceRanges exclude this node\" -j DROP",
                    s(set::NODE_DENIED)
                )],
            ),
        ],
        hooks: vec![
            hook("mangle", "OUTPUT", chain::OUTPUT),
            hook("nat", "PREROUTING", chain::SERVICES),
            hook("nat", "OUTPUT", chain::SERVICES),
            hook("nat", "POSTROUTING", chain::POSTROUTING),
            hook("filter", "INPUT", chain::FILTER),
        ],
    }
}

impl HybridPlan {
    /// The sets at an admission stage: at `Probe` the admitted keys sit in the probing set.
    pub fn sets_at(&self, stage: Stage) -> BTreeMap<String, HybridSet> {
        let mut sets = self.ipsets.clone();
        if stage == Stage::Probe {
            for fam in [IpFamily::IPv4, IpFamily::IPv6] {
                let members = sets
                    .get_mut(&set_name(set::ADMITTED, fam))
                    .map(|s| std::mem::take(&mut s.members));
                if let (Some(m), Some(p)) = (members, sets.get_mut(&set_name(set::PROBING, fam))) {
                    p.members = m;
                }
            }
        }
        sets
    }

    /// `iptables-restore --noflush` input for one family: declares (and so flushes) only the
    /// agent's `IPVSMIG-` chains; with `hooks`, inserts the jumps at position 1 of the built-in
    /// chains (the agent checks for them with `-C` first; loading this twice by hand would
    /// duplicate them). Never names a kube-proxy chain.
    pub fn render_iptables(&self, fam: IpFamily, hooks: bool) -> String {
        let mut out = String::new();
        let Some(fr) = self.rules.iter().find(|r| r.family == fam) else {
            return out;
        };
        out.push_str(&format!(
            "# ipvs-migrate hybrid rules ({}), for `{} --noflush`; load the ipsets first\n",
            fam.as_str(),
            match fam {
                IpFamily::IPv4 => "iptables-restore",
                IpFamily::IPv6 => "ip6tables-restore",
            }
        ));
        for table in TABLES {
            out.push_str(&format!("*{table}\n"));
            for c in fr.chains.iter().filter(|c| c.table == table) {
                out.push_str(&format!(":{} - [0:0]\n", c.name));
            }
            for c in fr.chains.iter().filter(|c| c.table == table) {
                for r in &c.rules {
                    out.push_str(&format!("-A {} {r}\n", c.name));
                }
            }
            if hooks {
                for h in fr.hooks.iter().filter(|h| h.table == table) {
                    out.push_str(&format!("-I {} 1 {}\n", h.chain, h.rule));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// `ipset restore -exist` input creating the agent's sets and adding their members at a
    /// stage. Admission members get `timeout N` (the dead man's switch) unless it is 0.
    pub fn render_ipsets(&self, stage: Stage) -> String {
        self.render_ipsets_family(stage, None)
    }

    /// [`render_ipsets`](Self::render_ipsets) for one family only (`None`: both).
    pub fn render_ipsets_family(&self, stage: Stage, family: Option<IpFamily>) -> String {
        let mut out = String::new();
        for (name, s) in &self.sets_at(stage) {
            if family.is_some_and(|f| f != s.family) {
                continue;
            }
            out.push_str(&s.create_line(name));
            for m in &s.members {
                if s.timeout && self.switch_timeout > 0 {
                    out.push_str(&format!("add {name} {m} timeout {}\n", self.switch_timeout));
                } else {
                    out.push_str(&format!("add {name} {m}\n"));
                }
            }
        }
        out
    }
}

impl HybridPlan {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let rs: usize = self
            .virtual_servers
            .iter()
            .map(|v| v.real_servers.len())
            .sum();
        out.push_str(&format!(
            "Hybrid plan for namespace(s) {}\n",
            if self.namespaces.is_empty() {
                "(none)".to_owned()
            } else {
                self.namespaces.join(", ")
            }
        ));
        out.push_str(&format!(
            "  {} virtual servers, {} real servers, {} addresses on kube-ipvs0\n",
            self.virtual_servers.len(),
            rs,
            self.addresses.len()
        ));
        let members: usize = self.ipsets.values().map(|s| s.members.len()).sum();
        out.push_str(&format!(
            "  {} ipsets ({} members); admission entries time out after {}\n",
            self.ipsets.len(),
            members,
            if self.switch_timeout == 0 {
                "never (--no-watch)".to_owned()
            } else {
                format!(
                    "{} s unless refreshed (dead man's switch)",
                    self.switch_timeout
                )
            }
        ));
        let rules: usize = self
            .rules
            .iter()
            .flat_map(|f| &f.chains)
            .map(|c| c.rules.len())
            .sum();
        let hooks: usize = self.rules.iter().map(|f| f.hooks.len()).sum();
        out.push_str(&format!(
            "  {rules} rules in IPVSMIG- chains, {hooks} jumps from built-in chains\n"
        ));
        out.push_str("  sysctls: ");
        out.push_str(
            &self
                .sysctls
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        out.push('\n');
        if !self.left_on_iptables.is_empty() {
            out.push_str(&format!(
                "\nStays on iptables ({}):\n",
                self.left_on_iptables.len()
            ));
            for f in &self.left_on_iptables {
                out.push_str(&format!("  {:<22} {:<40} {}\n", f.id, f.service, f.message));
            }
        }
        if !self.findings.is_empty() {
            out.push_str(&format!("\nFindings ({}):\n", self.findings.len()));
            for f in &self.findings {
                out.push_str(&format!("  {:<22} {:<40} {}\n", f.id, f.service, f.message));
            }
        }
        out
    }
}
