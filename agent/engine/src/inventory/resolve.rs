//! Resolves collected facts into service ports by following the jump graph:
//! KUBE-SERVICES / KUBE-NODEPORTS entries → KUBE-FW → KUBE-EXT → KUBE-SVC / KUBE-SVL (or legacy
//! KUBE-XLB) → KUBE-SEP → DNAT. Service identity comes from the entry comments; every per-service
//! and per-endpoint chain name is checked against kube-proxy's hash of that identity.
//!
//! Whatever does not fit becomes a warning naming its line; chains nothing reaches are
//! reported as stale.

use std::net::IpAddr;

use std::hash::{Hash as _, Hasher};

use rustc_hash::{FxHashMap, FxHasher};

use super::InventoryError;
use super::chains::{ChainId, RuleStore};
use super::facts::{
    Collector, Cond, EntryKind, EntryTarget, Fact, FilterFact, FilterWhere, HKind, Hash,
    format_endpoint, probability_of_quantum,
};
use super::hash::port_proto_hash;
use super::model::*;

#[derive(Default)]
struct Builder {
    name: Option<ServicePortName>,
    spn: String,
    proto: Option<Protocol>,
    hash: Option<Hash>,
    cluster_ip: Option<IpAddr>,
    port: Option<u16>,
    node_port: Option<u16>,
    localhost_node_port: bool,
    external_ips: Vec<IpAddr>,
    lb_ips: Vec<IpAddr>,
    ext_or_lb: Vec<IpAddr>,
    internal_target: Option<HKind>,
    legacy_masq: bool,
    /// Chains the service's entries jump to, with the entry's line.
    roots: Roots,
    internal_verdict: Option<NoEndpointVerdict>,
    external_verdict: Option<NoEndpointVerdict>,
    hc_port: Option<u16>,
    fw_drop_ips: Vec<IpAddr>,
    first_line: u32,
    nat_node_port: bool,
    /// The previous builder whose key has the same hash (see [`Builders`]).
    same_hash: Option<usize>,
}

/// The chains a service's entries jump to, with each entry's line, in that order. Nearly
/// every service has one or two entries (ClusterIP, NodePort), kept inline: a vector per
/// service was 20,000 allocations at 20k services.
#[derive(Default)]
struct Roots {
    inline: [(ChainId, u32); 2],
    len: usize,
    more: Vec<(ChainId, u32)>,
}

impl Roots {
    fn push(&mut self, root: (ChainId, u32)) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = root;
                self.len += 1;
            }
            None => self.more.push(root),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (ChainId, u32)> + '_ {
        self.inline.iter().take(self.len).chain(&self.more).copied()
    }
}

struct Ctx<'c> {
    c: &'c mut Collector,
    /// First jump (line, chain) to a chain the dump never declared.
    undeclared: Option<(u32, String)>,
    detector: Option<LocalDetector>,
    masquerade_all: bool,
    /// The walk's work list and visited chains, reused from service to service.
    stack: Vec<(ChainId, u32)>,
    seen: Vec<ChainId>,
}

/// Resolves one family's facts.
pub fn resolve(
    mut c: Collector,
    source: SourceKind,
) -> Result<(FamilyFacts, Vec<ServicePort>, Vec<Warning>), InventoryError> {
    if let Some((line, ip)) = c.family_mismatch {
        let (flag, other) = match c.family {
            IpFamily::IPv4 => ("--iptables-save", "--ip6tables-save"),
            IpFamily::IPv6 => ("--ip6tables-save", "--iptables-save"),
        };
        return Err(InventoryError::Malformed {
            input: c.source.clone(),
            line,
            message: format!(
                "service address {ip} is not of this dump's family ({:?}): pass this dump with {other}, not {flag}",
                c.family
            ),
        });
    }
    c.chains.flush();
    // Sized for one service port per entry (the usual count): growing these by doubling
    // copies megabytes of builders and faults in fresh pages at every step.
    let entries = std::mem::take(&mut c.entries);
    let mut builders = Builders::with_capacity(entries.len());
    let mut by_hash: FxHashMap<Hash, usize> =
        FxHashMap::with_capacity_and_hasher(entries.len(), Default::default());

    for e in entries {
        let bi = builders.index_owned(e.spn, e.proto, e.line);
        let b = &mut builders.list[bi];
        let target_hash = match e.target {
            EntryTarget::Chain(k, h, id) => Some((k, h, id)),
            EntryTarget::MarkMasq => None,
        };
        if let Some((k, h, id)) = target_hash {
            if let Some(prev) = b.hash.filter(|p| *p != h) {
                let msg = format!(
                    "{} jumps to {} but an earlier rule of the same service jumps to a chain with hash {}",
                    b.spn,
                    k.chain(&h),
                    String::from_utf8_lossy(&prev)
                );
                c.warn_in("unplaced-rule", "nat", e.line, "KUBE-SERVICES", msg);
                continue;
            }
            b.hash = Some(h);
            b.roots.push((id, e.line));
            by_hash.insert(h, bi);
        }
        match e.kind {
            EntryKind::ClusterIp => {
                if b.cluster_ip.is_some_and(|ip| ip != e.ip) {
                    c.warn_in(
                        "unplaced-rule",
                        "nat",
                        e.line,
                        "KUBE-SERVICES",
                        format!("second ClusterIP {} for {}", e.ip, b.spn),
                    );
                    continue;
                }
                b.cluster_ip = Some(e.ip);
                b.port = Some(e.port);
                match target_hash {
                    Some((k, _, _)) => b.internal_target = Some(k),
                    None => {
                        b.legacy_masq = true;
                        if let Cond::NotLocal(d) = e.cond {
                            c.node_detector_hint(*d);
                        } else if e.cond == Cond::Always {
                            c.node_masquerade_all_hint();
                        }
                    }
                }
            }
            EntryKind::ExternalIp => {
                b.port.get_or_insert(e.port);
                if !b.external_ips.contains(&e.ip) {
                    b.external_ips.push(e.ip);
                }
            }
            EntryKind::LoadBalancerIp => {
                b.port.get_or_insert(e.port);
                if !b.lb_ips.contains(&e.ip) {
                    b.lb_ips.push(e.ip);
                }
            }
        }
    }

    let nodeports = std::mem::take(&mut c.nodeports);
    for np in nodeports {
        let key = match np.target {
            EntryTarget::Chain(_, h, _) => by_hash.get(&h).copied(),
            EntryTarget::MarkMasq => None,
        }
        .or_else(|| builders.find(np.spn.as_deref()?, np.proto));
        let Some(key) = key else {
            let msg = if matches!(np.target, EntryTarget::MarkMasq) {
                "legacy NodePort masquerade rule".to_owned()
            } else {
                "NodePort rule whose target no KUBE-SERVICES rule reaches".to_owned()
            };
            c.warn_in("unplaced-rule", "nat", np.line, "KUBE-NODEPORTS", msg);
            continue;
        };
        let Some(b) = builders.list.get_mut(key) else {
            continue;
        };
        if b.node_port.is_some_and(|p| p != np.port) {
            c.warn_in(
                "unplaced-rule",
                "nat",
                np.line,
                "KUBE-NODEPORTS",
                format!("second NodePort {} for {}", np.port, b.spn),
            );
            continue;
        }
        b.node_port = Some(np.port);
        b.localhost_node_port |= np.localhost;
        b.nat_node_port = true;
        if let EntryTarget::Chain(_, _, id) = np.target {
            b.roots.push((id, np.line));
        }
    }

    let filters = std::mem::take(&mut c.filters);
    for f in filters {
        match f {
            FilterFact::NoEndpoints {
                spn,
                proto,
                at,
                ip,
                port,
                drop,
                line,
            } => {
                let bi = builders.index(&spn, proto, line);
                let b = &mut builders.list[bi];
                let verdict = if drop {
                    NoEndpointVerdict::Drop
                } else {
                    NoEndpointVerdict::Reject
                };
                match at {
                    FilterWhere::Services => {
                        if let Some(ip) = ip {
                            if b.cluster_ip.is_some_and(|c| c != ip) {
                                c.warn_in(
                                    "unplaced-rule",
                                    "filter",
                                    line,
                                    "KUBE-SERVICES",
                                    format!("verdict for {ip}, not the ClusterIP of {spn}"),
                                );
                                continue;
                            }
                            b.cluster_ip = Some(ip);
                        }
                        b.port.get_or_insert(port);
                        b.internal_verdict = Some(verdict);
                    }
                    FilterWhere::ExternalIp => {
                        if let Some(ip) = ip {
                            let known = b.external_ips.contains(&ip) || b.lb_ips.contains(&ip);
                            if !known && !b.ext_or_lb.contains(&ip) {
                                b.ext_or_lb.push(ip);
                            }
                        }
                        b.port.get_or_insert(port);
                        b.external_verdict = Some(verdict);
                    }
                    FilterWhere::NodePort => {
                        b.node_port = Some(port);
                        b.external_verdict = Some(verdict);
                    }
                }
            }
            FilterFact::HealthCheck { spn, port, line } => {
                match builders.list.iter_mut().find(|b| b.spn == spn) {
                    Some(b) => b.hc_port = Some(port),
                    None => c.warn_in(
                        "unplaced-rule",
                        "filter",
                        line,
                        "KUBE-NODEPORTS",
                        format!("health check node port for unknown service {spn}"),
                    ),
                }
            }
            FilterFact::FirewallDrop {
                spn,
                proto,
                ip,
                port,
                line,
            } => match builders.find(&spn, proto).map(|i| &mut builders.list[i]) {
                Some(b) if b.port.is_some_and(|p| p != port) => {
                    c.warn_in(
                        "unplaced-rule",
                        "filter",
                        line,
                        "KUBE-PROXY-FIREWALL",
                        format!("firewall rule for port {port}, not the port of {spn}"),
                    );
                }
                Some(b) => b.fw_drop_ips.push(ip),
                None => c.warn_in(
                    "unplaced-rule",
                    "filter",
                    line,
                    "KUBE-PROXY-FIREWALL",
                    format!("firewall rule for unknown service {spn}"),
                ),
            },
        }
    }

    // NodePorts reach localhost when the KUBE-SERVICES nodeports rule does not exclude
    // 127.0.0.0/8 (localhost NodePorts on, or kube-proxy ≤ 1.25 which always allowed them with
    // route_localnet) or nodePortAddresses lists a loopback address. IPv4 only.
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let localhost_open = c.family == IpFamily::IPv4
        && (c
            .node
            .nodeport_all_local
            .as_ref()
            .is_some_and(|ex| !ex.iter().any(|n| n.contains(&loopback)))
            || c.node.nodeport_addresses.iter().any(|a| a.is_loopback()));
    if localhost_open {
        for b in &mut builders.list {
            if b.nat_node_port {
                b.localhost_node_port = true;
            }
        }
    }
    let mut ctx = Ctx {
        c: &mut c,
        undeclared: None,
        detector: None,
        masquerade_all: false,
        stack: Vec::new(),
        seen: Vec::new(),
    };
    // The chains' rules are only read from here on, while their slots change.
    let rules = ctx.c.chains.take_rules();
    let mut ports = Vec::with_capacity(builders.list.len());
    for b in builders.list {
        if let Some(sp) = build_port(&mut ctx, &rules, b) {
            ports.push(sp);
        }
    }
    ctx.c.chains.put_rules(rules);
    // Jumps are checked against declarations here, where they are followed, rather than
    // looked up once more while streaming (a random access per jump at 100k endpoints).
    if let Some((line, chain)) = ctx.undeclared.take() {
        return Err(InventoryError::Malformed {
            input: ctx.c.source.clone(),
            line,
            message: format!(
                "rule jumps to chain {chain}, which is not declared in table nat (iptables-restore would reject this dump)"
            ),
        });
    }
    let (detector, masquerade_all) = (ctx.detector.take(), ctx.masquerade_all);
    stale_chains(&mut c);
    if c.kube_chains == 0 {
        c.warn_in(
            "no-kube-proxy-rules",
            "",
            0,
            "",
            "no KUBE-* chains at all: kube-proxy (iptables mode) has not written rules in this dump, or they live in the other iptables backend or another network namespace".to_owned(),
        );
    }
    let facts = family_facts(&mut c, source, detector, masquerade_all);
    let warnings = std::mem::take(&mut c.warnings);
    Ok((facts, ports, warnings))
}

/// Service-port builders in the order their service ports were first seen, found by
/// (service port name, protocol) without a key of their own: the index maps a hash of the
/// pair to the newest builder with that hash, and builders with the same hash are chained.
#[derive(Default)]
struct Builders {
    list: Vec<Builder>,
    index: FxHashMap<u64, usize>,
}

fn key_hash(spn: &str, proto: Protocol) -> u64 {
    let mut h = FxHasher::default();
    spn.hash(&mut h);
    proto.hash(&mut h);
    h.finish()
}

impl Builders {
    fn with_capacity(n: usize) -> Builders {
        Builders {
            list: Vec::with_capacity(n),
            index: FxHashMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    fn find(&self, spn: &str, proto: Protocol) -> Option<usize> {
        let mut i = *self.index.get(&key_hash(spn, proto))?;
        loop {
            let b = self.list.get(i)?;
            if b.spn == spn && b.proto == Some(proto) {
                return Some(i);
            }
            i = b.same_hash?;
        }
    }

    /// The builder of a service port, created if new.
    fn index(&mut self, spn: &str, proto: Protocol, line: u32) -> usize {
        match self.find(spn, proto) {
            Some(i) => i,
            None => self.push(spn.to_owned(), proto, line),
        }
    }

    /// As [`Builders::index`], keeping `spn` for a new builder instead of copying it.
    fn index_owned(&mut self, spn: String, proto: Protocol, line: u32) -> usize {
        match self.find(&spn, proto) {
            Some(i) => i,
            None => self.push(spn, proto, line),
        }
    }

    fn push(&mut self, spn: String, proto: Protocol, line: u32) -> usize {
        let i = self.list.len();
        let same_hash = self.index.insert(key_hash(&spn, proto), i);
        self.list.push(Builder {
            name: ServicePortName::parse(&spn),
            spn,
            proto: Some(proto),
            first_line: line,
            same_hash,
            ..Builder::default()
        });
        i
    }
}

impl Ctx<'_> {
    fn note_undeclared(&mut self, line: u32, id: ChainId) {
        if self.undeclared.as_ref().is_none_or(|u| line < u.0)
            && let Some((k, h)) = self.c.chains.name(id)
        {
            self.undeclared = Some((line, k.chain(&h)));
        }
    }
}

impl Collector {
    /// Legacy layouts put the masquerade rule in KUBE-SERVICES; remember its detector.
    fn node_detector_hint(&mut self, d: LocalDetector) {
        self.node_hint_detector.get_or_insert(d);
    }
    fn node_masquerade_all_hint(&mut self) {
        self.node_hint_masq_all = true;
    }
}

#[derive(Default)]
struct Walk {
    cluster: Option<Dispatch>,
    local: Option<Dispatch>,
    affinity: Option<u32>,
    masq_cluster: bool,
    ext_local_markers: bool,
    ext_policy: Option<HKind>,
    source_ranges: Vec<ipnet::IpNet>,
    fw_sources_hosts: Vec<IpAddr>,
    legacy_no_local: bool,
    hairpin_all: bool,
    endpoint_count: usize,
    mismatches: Vec<String>,
}

fn build_port(ctx: &mut Ctx<'_>, rules: &RuleStore, mut b: Builder) -> Option<ServicePort> {
    let proto = b.proto?;
    let Some(name) = b.name.take() else {
        ctx.c.warn_in(
            "unplaced-rule",
            "nat",
            b.first_line,
            "KUBE-SERVICES",
            format!("{:?} is not a namespace/name[:port] service name", b.spn),
        );
        return None;
    };
    let Some(cluster_ip) = b.cluster_ip else {
        ctx.c.warn_in(
            "unplaced-rule",
            "nat",
            b.first_line,
            "KUBE-SERVICES",
            format!("{} has external rules but no ClusterIP rule", b.spn),
        );
        return None;
    };
    let port = b.port.unwrap_or(0);
    let mut w = Walk {
        hairpin_all: true,
        ..Walk::default()
    };
    let mut mismatches = Vec::new();
    if let Some(h) = b.hash {
        let expect = port_proto_hash(&b.spn, proto.as_str(), "");
        if expect != h {
            let msg = format!(
                "chains of {} use hash {} but kube-proxy's hash of \"{}{}\" is {}",
                b.spn,
                String::from_utf8_lossy(&h),
                b.spn,
                proto.as_str(),
                String::from_utf8_lossy(&expect)
            );
            ctx.c
                .warn_in("hash-mismatch", "nat", b.first_line, "KUBE-SERVICES", msg);
            mismatches.push(HKind::Svc.chain(&h));
        }
        // Walk every per-service chain this service's entries reach.
        let mut stack = std::mem::take(&mut ctx.stack);
        let mut seen = std::mem::take(&mut ctx.seen);
        stack.clear();
        stack.extend(b.roots.iter());
        seen.clear();
        while let Some((id, from_line)) = stack.pop() {
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            let Some((k, hh)) = ctx.c.chains.name(id) else {
                continue;
            };
            if hh != h {
                let chain = k.chain(&hh);
                ctx.c.warn_in(
                    "unplaced-rule",
                    "nat",
                    b.first_line,
                    &chain,
                    format!("{} reaches {chain}, a chain of another service", b.spn),
                );
                continue;
            }
            let Some(chain) = ctx.c.chains.get_mut(id).filter(|c| c.declared) else {
                ctx.note_undeclared(from_line, id);
                continue;
            };
            chain.referenced = true;
            let facts = rules.of(chain);
            walk_chain(ctx, &b, k, &hh, facts, &mut w, &mut stack);
        }
        (ctx.stack, ctx.seen) = (stack, seen);
    }
    mismatches.append(&mut w.mismatches);
    if b.legacy_masq {
        w.masq_cluster = true;
    }
    // Endpoints: the Cluster chain's, then local-only ones.
    let local_set: Option<Vec<(IpAddr, u16)>> = w
        .local
        .as_ref()
        .map(|d| d.endpoints.iter().map(|e| (e.ip, e.port)).collect());
    let policy_local_any = b.internal_target == Some(HKind::Svl)
        || matches!(b.internal_verdict, Some(NoEndpointVerdict::Drop))
        || w.ext_local_markers
        || matches!(b.external_verdict, Some(NoEndpointVerdict::Drop));
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(
        w.cluster.as_ref().map_or(0, |d| d.endpoints.len())
            + local_set.as_ref().map_or(0, Vec::len),
    );
    let push = |endpoints: &mut Vec<Endpoint>, ip: IpAddr, port: u16, local: Option<bool>| {
        if !endpoints.iter().any(|e| e.ip == ip && e.port == port) {
            endpoints.push(Endpoint { ip, port, local });
        }
    };
    if let Some(d) = &w.cluster {
        for e in &d.endpoints {
            let local = match &local_set {
                Some(set) => Some(set.contains(&(e.ip, e.port))),
                None if policy_local_any => Some(false),
                None => None,
            };
            push(&mut endpoints, e.ip, e.port, local);
        }
    }
    if let Some(set) = &local_set {
        for (ip, p) in set {
            push(&mut endpoints, *ip, *p, Some(true));
        }
    }
    let internal_traffic_policy = if b.internal_target == Some(HKind::Svl)
        || b.internal_verdict == Some(NoEndpointVerdict::Drop)
    {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    let external_traffic_policy = if w.ext_local_markers
        || w.ext_policy == Some(HKind::Svl)
        || b.external_verdict == Some(NoEndpointVerdict::Drop)
    {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    let load_balancer_allows_node = w.fw_sources_hosts.iter().any(|h| b.lb_ips.contains(h));
    let mut ranges = w.source_ranges;
    for h in &w.fw_sources_hosts {
        if !b.lb_ips.contains(h) {
            ranges.push(ipnet::IpNet::from(*h));
        }
    }
    for ip in &b.fw_drop_ips {
        if !b.lb_ips.contains(ip) {
            ctx.c.warn_in(
                "unplaced-rule",
                "filter",
                b.first_line,
                "KUBE-PROXY-FIREWALL",
                format!(
                    "firewall drop for {ip}, not a load-balancer IP of {}",
                    b.spn
                ),
            );
        }
    }
    let internal_no_endpoints = b.internal_verdict;
    let external_no_endpoints = b.external_verdict.or(if w.legacy_no_local {
        Some(NoEndpointVerdict::Drop)
    } else {
        None
    });
    Some(ServicePort {
        name,
        protocol: proto,
        family: ctx.c.family,
        cluster_ip,
        port,
        node_port: b.node_port,
        localhost_node_port: b.localhost_node_port,
        external_ips: b.external_ips,
        load_balancer_ips: b.lb_ips,
        external_or_load_balancer_ips: b.ext_or_lb,
        load_balancer_source_ranges: ranges,
        load_balancer_allows_node,
        session_affinity_seconds: w.affinity,
        internal_traffic_policy,
        external_traffic_policy,
        health_check_node_port: b.hc_port,
        endpoints,
        cluster_dispatch: w.cluster,
        local_dispatch: w.local,
        internal_no_endpoints,
        external_no_endpoints,
        masquerade_cluster_ip: w.masq_cluster,
        hairpin_masquerade: w.hairpin_all && w.endpoint_count > 0,
        hash_mismatches: mismatches,
    })
}

fn walk_chain(
    ctx: &mut Ctx<'_>,
    b: &Builder,
    k: HKind,
    h: &Hash,
    facts: &[super::facts::PlacedFact],
    w: &mut Walk,
    stack: &mut Vec<(ChainId, u32)>,
) {
    let unplaced = |ctx: &mut Ctx<'_>, line: u32, why: &str| {
        let chain = k.chain(h);
        ctx.c.warn_in(
            "unplaced-rule",
            "nat",
            line,
            &chain,
            format!("{why} (service {})", b.spn),
        );
    };
    match k {
        HKind::Svc | HKind::Svl | HKind::Xlb => {
            let mut d = Dispatch {
                chain: k.chain(h),
                endpoints: Vec::with_capacity(facts.len()),
            };
            for f in facts {
                match &f.fact {
                    Fact::MarkMasq { cond: Cond::Always } if k != HKind::Xlb => {
                        w.masq_cluster = true;
                        ctx.masquerade_all = true;
                    }
                    Fact::MarkMasq {
                        cond: Cond::NotLocal(det),
                    } if k != HKind::Xlb => {
                        w.masq_cluster = true;
                        if ctx.detector.is_none() {
                            ctx.detector = Some((**det).clone());
                        }
                    }
                    Fact::MarkMasq {
                        cond: Cond::SrcTypeLocal,
                    } if k == HKind::Xlb => w.ext_local_markers = true,
                    Fact::Jump {
                        kind: HKind::Svc,
                        cond: cond @ (Cond::Local(_) | Cond::SrcTypeLocal),
                        probability: None,
                        ..
                    } if k == HKind::Xlb => {
                        if let Cond::Local(det) = cond {
                            ctx.detector.get_or_insert_with(|| (**det).clone());
                        }
                        w.ext_local_markers = true;
                        stack.push((ctx.c.chains.id(HKind::Svc, h), f.line));
                    }
                    Fact::MarkDrop if k == HKind::Xlb => w.legacy_no_local = true,
                    Fact::Affinity { seconds, .. } => {
                        if w.affinity.is_some_and(|s| s != *seconds) {
                            unplaced(
                                ctx,
                                f.line,
                                "affinity timeout differs from the service's other affinity rules",
                            );
                        }
                        w.affinity = Some(*seconds);
                    }
                    Fact::Jump {
                        kind: HKind::Sep,
                        to,
                        probability,
                        cond: Cond::Always,
                    } => match endpoint_of(ctx, b, *to, w, f.line) {
                        Some((ip, port)) => d.endpoints.push(WeightedEndpoint {
                            ip,
                            port,
                            probability: probability.map_or(1.0, probability_of_quantum),
                        }),
                        None => {
                            unplaced(ctx, f.line, "jump to an endpoint chain without a DNAT rule")
                        }
                    },
                    _ => unplaced(ctx, f.line, "rule that does not belong in a dispatch chain"),
                }
            }
            match k {
                HKind::Svc => w.cluster = Some(d),
                _ => {
                    // A legacy XLB chain is the local dispatch even when it only drops.
                    if k == HKind::Xlb {
                        w.ext_local_markers = true;
                    }
                    w.local = Some(d);
                }
            }
        }
        HKind::Ext => {
            for f in facts {
                match &f.fact {
                    Fact::MarkMasq { cond: Cond::Always } => {}
                    Fact::MarkMasq {
                        cond: Cond::SrcTypeLocal,
                    } => w.ext_local_markers = true,
                    Fact::Jump {
                        kind: HKind::Svc,
                        cond: cond @ (Cond::Local(_) | Cond::SrcTypeLocal),
                        probability: None,
                        to,
                    } => {
                        // The pod short-circuit (`-s podCIDR -j KUBE-SVC`) shows the detector even
                        // where masqueradeAll hides it from the dispatch chains.
                        if let Cond::Local(det) = cond {
                            ctx.detector.get_or_insert_with(|| (**det).clone());
                        }
                        w.ext_local_markers = true;
                        stack.push((*to, f.line));
                    }
                    Fact::Jump {
                        kind: kk @ (HKind::Svc | HKind::Svl),
                        cond: Cond::Always,
                        probability: None,
                        to,
                    } => {
                        w.ext_policy = Some(*kk);
                        stack.push((*to, f.line));
                    }
                    _ => unplaced(
                        ctx,
                        f.line,
                        "rule that does not belong in an external-destinations chain",
                    ),
                }
            }
        }
        HKind::Fw => {
            for f in facts {
                match &f.fact {
                    Fact::FwSource { src, to, .. } => {
                        if src.prefix_len() == src.max_prefix_len()
                            && b.lb_ips.contains(&src.addr())
                        {
                            w.fw_sources_hosts.push(src.addr());
                        } else {
                            w.source_ranges.push(*src);
                        }
                        stack.push((*to, f.line));
                    }
                    Fact::FallThrough | Fact::MarkDrop => {}
                    Fact::MarkMasq { cond: Cond::Always } => {}
                    Fact::Jump {
                        kind: HKind::Svc | HKind::Xlb | HKind::Ext,
                        cond: Cond::Always,
                        probability: None,
                        to,
                    } => {
                        stack.push((*to, f.line));
                    }
                    _ => unplaced(ctx, f.line, "rule that does not belong in a firewall chain"),
                }
            }
        }
        HKind::Sep => {}
    }
}

/// Resolves an endpoint chain to its DNAT target, checking its hash and marking it referenced.
fn endpoint_of(
    ctx: &mut Ctx<'_>,
    b: &Builder,
    id: ChainId,
    w: &mut Walk,
    line: u32,
) -> Option<(IpAddr, u16)> {
    let Some(chain) = ctx.c.chains.get_mut(id).filter(|c| c.declared) else {
        ctx.note_undeclared(line, id);
        return None;
    };
    let first_visit = !chain.referenced;
    chain.referenced = true;
    let (ip, port) = chain.dnat?;
    let hairpin = chain.hairpin_line != 0;
    if first_visit && let Some((_, to)) = ctx.c.chains.name(id) {
        let to = &to;
        let mut buf = EndpointText::default();
        let ep = buf.format(&ip, port);
        w.endpoint_count += 1;
        if !hairpin {
            w.hairpin_all = false;
        }
        if let Some(proto) = b.proto {
            let expect = port_proto_hash(&b.spn, proto.as_str(), ep);
            if &expect != to {
                let sep_name = HKind::Sep.chain(to);
                ctx.c.warn_in(
                    "hash-mismatch",
                    "nat",
                    0,
                    &sep_name,
                    format!("{sep_name} DNATs to {ep}, but kube-proxy's chain for that endpoint of {} is {}", b.spn, HKind::Sep.chain(&expect)),
                );
                w.mismatches.push(sep_name);
            }
        }
    }
    Some((ip, port))
}

fn stale_chains(c: &mut Collector) {
    let mut stale: Vec<(u32, String, Vec<u32>)> = Vec::new();
    for (k, h, chain, facts) in c.chains.filtered(|c| !c.referenced) {
        let mut lines: Vec<u32> = facts.iter().map(|f| f.line).collect();
        lines.extend(
            [chain.dnat_line, chain.hairpin_line]
                .into_iter()
                .filter(|l| *l != 0),
        );
        lines.sort_unstable();
        stale.push((chain.decl_line, k.chain(&h), lines));
    }
    stale.sort();
    for (decl, name, lines) in stale {
        let why = format!(
            "{name} is not reachable from KUBE-SERVICES or KUBE-NODEPORTS (a stale chain: kube-proxy deletes unused chains at most once per sync period in large clusters)"
        );
        if lines.is_empty() {
            c.warn_in("stale-chain", "nat", decl, &name, why.clone());
        }
        for line in lines {
            c.warn_in("stale-chain", "nat", line, &name, why.clone());
        }
    }
}

fn family_facts(
    c: &mut Collector,
    source: SourceKind,
    detector: Option<LocalDetector>,
    masquerade_all: bool,
) -> FamilyFacts {
    let detector = detector.or_else(|| c.node_hint_detector.take());
    let masquerade = c.node.masq_mark.map(|mark| Masquerade {
        mark,
        bit: if mark.is_power_of_two() {
            Some(mark.trailing_zeros() as u8)
        } else {
            None
        },
        masquerade_all: masquerade_all || c.node_hint_masq_all,
        local_detector: detector,
        random_fully: c.node.random_fully,
    });
    let node_port_addresses = match (
        &c.node.nodeport_all_local,
        c.node.nodeport_addresses.is_empty(),
    ) {
        (Some(ex), _) => Some(NodePortAddresses::AllLocal {
            excluded: ex.clone(),
        }),
        (None, false) => Some(NodePortAddresses::Addresses {
            addresses: c.node.nodeport_addresses.clone(),
        }),
        (None, true) => None,
    };
    FamilyFacts {
        family: c.family,
        source,
        tables: c.tables.clone(),
        kube_rules: c.kube_rules,
        kube_chains: c.kube_chains,
        masquerade,
        node_port_addresses,
        drops_invalid: c.node.drops_invalid,
        marker_chains: c.node.markers.clone(),
        legacy_chains: c.node.legacy.clone(),
        ipvs_mode_chains: c.node.ipvs_mode.clone(),
        hooks: std::mem::take(&mut c.hooks),
        read_millis: None,
    }
}

/// `ip:port` as kube-proxy formats it, written without the `fmt` machinery: the resolver
/// formats every endpoint of a large dump (100k at 20k services) to recompute its chain hash.
#[derive(Default)]
struct EndpointText {
    buf: [u8; 32],
    len: usize,
    owned: String,
}

impl EndpointText {
    fn push_num(&mut self, mut n: u32) {
        let mut tmp = [0u8; 10];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Byte by byte: at most 10 digits, and a copy_from_slice here is a call to memcpy.
        for &d in &tmp[i..] {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = d;
                self.len += 1;
            }
        }
    }

    fn format(&mut self, ip: &IpAddr, port: u16) -> &str {
        match ip {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        self.buf[self.len] = b'.';
                        self.len += 1;
                    }
                    self.push_num(u32::from(*o));
                }
                self.buf[self.len] = b':';
                self.len += 1;
                self.push_num(u32::from(port));
                std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
            }
            IpAddr::V6(_) => {
                self.owned = format_endpoint(ip, port);
                &self.owned
            }
        }
    }
}
