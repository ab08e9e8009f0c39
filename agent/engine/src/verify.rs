//! `plan --verify`: an equivalence check between kube-proxy's iptables rules and a plan, with
//! an oracle that does not share the translator's reading of the rules (issue 4; docs/verify.md).
//!
//! The iptables side re-reads the dump text ([`rules`]) and walks packets through it as
//! netfilter would ([`trace`]); it never uses the inventory's resolved model, which is what the
//! translator (`plan`) was built from. The inventory is used only to choose which packets to
//! send ([`cases`]: every entry point of every service port). The IPVS side is the plan:
//! - the **full** plan: a packet whose (protocol, address, port) is a planned virtual server
//!   reaches exactly its real servers, with persistence as affinity; kube-proxy IPVS mode's
//!   fixed source-range rule is applied from the plan's `KUBE-LOAD-BALANCER-*` sets.
//!   Masquerade is not compared: the full plan holds no IPVS-mode iptables rules to decide it.
//! - the **hybrid** plan: the same kube-proxy rules with the hybrid's chains hooked in first,
//!   its sets' members (admitted stage) and its bound VIPs local; where nat ends without DNAT
//!   and a hybrid virtual server matches, IPVS takes the packet (after filter INPUT, or after
//!   nat OUTPUT for the node's own traffic). Masquerade is compared.
//!
//! Outcomes are compared per case; known, documented differences are [`Tolerance`]s, anything
//! else a [`Mismatch`]. Pure: no I/O; bad input is an error value.

pub mod cases;
pub mod rules;
pub mod sets;
pub mod trace;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::inventory::{Inventory, InventoryError, IpFamily, Protocol, ServicePort, TrafficPolicy};
use crate::plan::hybrid::{HybridPlan, Stage};
use crate::plan::{FLAG_PERSISTENT, IpvsPlan, VirtualServer};
use cases::{Case, CaseKind, Sources};
use rules::Ruleset;
use sets::IpSet;
use trace::{Locals, Origin, TraceError, Tracer, Vs};

/// One family's dump text, as read from the node or a file.
#[derive(Debug, Clone, Copy)]
pub struct Dump<'a> {
    /// Name for messages (file name).
    pub name: &'a str,
    /// Family of the rules.
    pub family: IpFamily,
    /// The text (`iptables-save` output or restore input).
    pub text: &'a [u8],
}

/// Inputs the dumps do not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The node's addresses (local to `--dst-type LOCAL`; NodePort cases use them). The same
    /// list the plan was given.
    pub node_ips: Vec<IpAddr>,
}

/// Where one path of a packet ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Outcome {
    /// DNATed (iptables) or scheduled (IPVS) to an endpoint.
    Endpoint {
        /// Endpoint address.
        ip: IpAddr,
        /// Endpoint port.
        port: u16,
        /// The source is masqueraded (`None`: not compared).
        #[serde(skip_serializing_if = "Option::is_none")]
        masquerade: Option<bool>,
        /// Session affinity timeout (`recent --rcheck --seconds`, IPVS persistence).
        #[serde(skip_serializing_if = "Option::is_none")]
        affinity: Option<u32>,
    },
    /// Rejected (iptables REJECT; IPVS answers a virtual server without real servers the same
    /// way: ICMP port-unreachable, kube-proxy-facts.md §2.11).
    Reject,
    /// Dropped.
    Drop,
    /// Accepted with its destination unchanged: no service translation.
    NotTranslated,
    /// The path met something the interpreter does not model.
    Unknown {
        /// What and where.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Endpoint {
                ip,
                port,
                masquerade,
                affinity,
            } => {
                match ip {
                    IpAddr::V4(a) => write!(f, "{a}:{port}")?,
                    IpAddr::V6(a) => write!(f, "[{a}]:{port}")?,
                }
                if *masquerade == Some(true) {
                    write!(f, " masq")?;
                }
                if let Some(s) = affinity {
                    write!(f, " affinity {s}s")?;
                }
                Ok(())
            }
            Outcome::Reject => f.write_str("reject"),
            Outcome::Drop => f.write_str("drop"),
            Outcome::NotTranslated => f.write_str("not translated"),
            Outcome::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

/// What differs in a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MismatchKind {
    /// Different verdicts (endpoints vs drop vs reject vs untranslated).
    Verdict,
    /// Both reach endpoints, not the same ones.
    Endpoints,
    /// Same endpoints, different session affinity.
    Affinity,
    /// Same endpoints, different masquerade decisions.
    Masquerade,
    /// One side met a rule the interpreter does not model: equivalence is not shown.
    Unknown,
}

impl MismatchKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Verdict => "verdict",
            MismatchKind::Endpoints => "endpoints",
            MismatchKind::Affinity => "affinity",
            MismatchKind::Masquerade => "masquerade",
            MismatchKind::Unknown => "unknown",
        }
    }
}

/// One case whose outcomes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Service port (`ns/svc:port`).
    pub service: String,
    /// The packet.
    pub case: String,
    /// What differs.
    pub kind: MismatchKind,
    /// Every outcome through kube-proxy's iptables rules.
    pub iptables: Vec<Outcome>,
    /// Every outcome through the plan.
    pub ipvs: Vec<Outcome>,
}

/// A difference the check accepts: each is a documented behaviour of kube-proxy's IPVS mode.
/// The list is closed; anything else is a [`Mismatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tolerance {
    /// Full plan only: externalTrafficPolicy=Local with no local endpoint. iptables mode drops
    /// external traffic; IPVS mode falls back to all endpoints (kubernetes/kubernetes#97081,
    /// comment in the IPVS proxier's `syncEndpoint`; kube-proxy-facts.md §2.11). The hybrid
    /// plan keeps the drop, so there it is a mismatch.
    EtpLocalNoLocalEndpoints,
    /// internalTrafficPolicy=Local with no local endpoint. iptables mode drops ClusterIP
    /// traffic ("has no local endpoints"); IPVS mode keeps a virtual server with no real
    /// servers, which rejects (kube-proxy-facts.md §2.1 `syncEndpoint` and §2.11). The hybrid
    /// plan carries IPVS mode's behaviour over for what moves (docs/hybrid.md "Known
    /// differences that remain"), so this is tolerated for both plans.
    ItpLocalNoLocalEndpoints,
    /// externalTrafficPolicy=Local, traffic from a pod on the node or from the node itself to
    /// an external or LB IP: iptables mode sends it to the cluster-wide endpoints (the
    /// "pod traffic" / "route LOCAL traffic" short-circuit, kubernetes/kubernetes PR #77523);
    /// IPVS mode has one virtual server per address and sends it to the local endpoints only
    /// (kubernetes/kubernetes#93456, #115931). Tolerated when the plan reaches exactly the
    /// local endpoints; the hybrid carries IPVS mode's behaviour over (docs/hybrid.md).
    EtpLocalInClusterSource,
    /// The node's own traffic to an external or LB IP that iptables mode leaves untranslated
    /// (a service without endpoints: its REJECT is in KUBE-EXTERNAL-SERVICES, which only INPUT
    /// and FORWARD jump to, so the packet is routed out). IPVS mode binds the address on
    /// kube-ipvs0 and answers it on the node itself (kubernetes/kubernetes#79783, #66607;
    /// kube-proxy-facts.md §2.6; the plan's `lb-ip-bound-locally` finding).
    VipBoundLocally,
    /// Full plan only: NodePorts on 127.0.0.0/8 work in iptables mode and "will not work" in
    /// IPVS mode (kubernetes.io virtual-ips.md; kube-proxy-facts.md §2.11).
    LocalhostNodePort,
}

impl Tolerance {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tolerance::EtpLocalNoLocalEndpoints => "etp-local-no-local-endpoints",
            Tolerance::ItpLocalNoLocalEndpoints => "itp-local-no-local-endpoints",
            Tolerance::LocalhostNodePort => "localhost-nodeport",
            Tolerance::EtpLocalInClusterSource => "etp-local-in-cluster-source",
            Tolerance::VipBoundLocally => "vip-bound-locally",
        }
    }
}

/// A case whose difference is tolerated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tolerated {
    /// Service port.
    pub service: String,
    /// The packet.
    pub case: String,
    /// Which documented difference.
    pub tolerance: Tolerance,
}

/// The check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// `full` or `hybrid`.
    pub plan: String,
    /// Number of cases traced.
    pub cases: usize,
    /// Cases whose outcomes differ.
    pub mismatches: Vec<Mismatch>,
    /// Cases whose outcomes differ in a documented way.
    pub tolerated: Vec<Tolerated>,
    /// What was not compared, and why.
    pub notes: Vec<String>,
}

impl Verification {
    fn new(plan: &str, opts: &VerifyOptions) -> Verification {
        let mut notes = Vec::new();
        if opts.node_ips.is_empty() {
            notes.push("no node addresses given: NodePort cases were not traced".into());
        }
        Verification {
            plan: plan.into(),
            cases: 0,
            mismatches: Vec::new(),
            tolerated: Vec::new(),
            notes,
        }
    }
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The dump text is not well-formed.
    #[error(transparent)]
    Dump(#[from] InventoryError),
    /// Service ports of a family whose dump was not given.
    #[error("no {} dump was given, but the inventory has {} service ports", .0.as_str(), .1)]
    MissingDump(IpFamily, usize),
    /// A planned ipset could not be read.
    #[error("ipset {set}: {message}")]
    Set {
        /// Set name.
        set: String,
        /// What is wrong.
        message: String,
    },
    /// A trace exceeded its bounds.
    #[error("{service}, {case}: {error}")]
    Trace {
        /// Service port.
        service: String,
        /// The packet.
        case: String,
        /// The bound exceeded.
        error: TraceError,
    },
}

type VsMap = HashMap<(Protocol, IpAddr, u16), Vs>;

fn vs_map<'a>(vss: impl IntoIterator<Item = &'a VirtualServer>) -> VsMap {
    let mut by_key: HashMap<(Protocol, IpAddr, u16), Vec<(String, Vs)>> = HashMap::new();
    for v in vss {
        let vs = Vs {
            real_servers: v.real_servers.iter().map(|r| (r.address, r.port)).collect(),
            affinity: (v.flags & FLAG_PERSISTENT != 0).then_some(v.timeout),
            conflict: None,
        };
        by_key
            .entry((v.protocol, v.address, v.port))
            .or_default()
            .push((v.service.to_string(), vs));
    }
    by_key
        .into_iter()
        .filter_map(|(k, mut all)| {
            let differ = all.windows(2).any(|w| w[0].1 != w[1].1);
            let names: Vec<String> = all.iter().map(|(n, _)| n.clone()).collect();
            let (_, mut vs) = all.pop()?;
            if differ {
                // The kernel holds one virtual server per key: whose real servers it ends up
                // with depends on the order of writes, so the outcome is unknown.
                vs.conflict = Some(format!(
                    "the plan has {} different virtual servers for this key ({}); the kernel keeps one",
                    names.len(),
                    names.join(", ")
                ));
            }
            Some((k, vs))
        })
        .collect()
}

fn locals(node_ips: &[IpAddr], node: IpAddr, extra: &[IpAddr]) -> Locals {
    Locals::new(
        node_ips
            .iter()
            .chain(std::iter::once(&node))
            .chain(extra)
            .map(|ip| IpNet::from(*ip))
            .chain(rules::parse_net("127.0.0.0/8"))
            .chain(rules::parse_net("::1/128")),
    )
}

struct Family<'a> {
    family: IpFamily,
    rules: Ruleset,
    sources: Sources,
    ports: Vec<(usize, &'a ServicePort)>,
}

fn families<'a>(
    inv: &'a Inventory,
    dumps: &[Dump<'_>],
    opts: &VerifyOptions,
) -> Result<Vec<Family<'a>>, VerifyError> {
    let mut out = Vec::new();
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        let ports: Vec<(usize, &ServicePort)> = inv
            .service_ports
            .iter()
            .enumerate()
            .filter(|(_, sp)| sp.family == fam)
            .collect();
        let Some(d) = dumps.iter().find(|d| d.family == fam) else {
            if ports.is_empty() {
                continue;
            }
            return Err(VerifyError::MissingDump(fam, ports.len()));
        };
        let facts = inv.families.iter().find(|f| f.family == fam);
        out.push(Family {
            family: fam,
            rules: Ruleset::parse(d.name, d.text)?,
            sources: Sources::new(fam, &opts.node_ips, facts),
            ports,
        });
    }
    Ok(out)
}

fn run(
    tracer: &Tracer<'_>,
    case: &Case,
    sp: &ServicePort,
) -> Result<BTreeSet<Outcome>, VerifyError> {
    tracer
        .trace(case.packet.clone(), case.origin)
        .map_err(|error| VerifyError::Trace {
            service: sp.name.to_string(),
            case: case.label.clone(),
            error,
        })
}

fn set_map<'a, M: std::fmt::Display + 'a>(
    sets: impl IntoIterator<Item = (&'a String, &'a str, Vec<&'a M>)>,
) -> Result<HashMap<String, IpSet>, VerifyError> {
    sets.into_iter()
        .map(|(name, t, members)| {
            // The oracle parses members from their `ipset add` text, as the kernel would.
            let text: BTreeSet<String> = members.iter().map(ToString::to_string).collect();
            IpSet::new(t, &text)
                .map(|s| (name.clone(), s))
                .map_err(|message| VerifyError::Set {
                    set: name.clone(),
                    message,
                })
        })
        .collect()
}

/// Checks the full IPVS-mode plan against the dumps.
pub fn full(
    inv: &Inventory,
    dumps: &[Dump<'_>],
    plan: &IpvsPlan,
    opts: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let vss = vs_map(&plan.virtual_servers);
    let sets = set_map(
        plan.ipsets
            .iter()
            .map(|(n, s)| (n, s.set_type.as_str(), s.members.iter().collect())),
    )?;
    let no_vs = VsMap::new();
    let no_sets = HashMap::new();
    let mut v = Verification::new("full", opts);
    v.notes.push("masquerade is not compared for the full plan: it holds no IPVS-mode iptables rules (KUBE-POSTROUTING, KUBE-LOOP-BACK) to decide it".into());
    for fam in families(inv, dumps, opts)? {
        let loc = locals(&opts.node_ips, fam.sources.node, &[]);
        let ipt = Tracer {
            rules: &fam.rules,
            sets: &no_sets,
            locals: &loc,
            ipvs: &no_vs,
        };
        let fw = FwSets::new(&sets, fam.family);
        for (idx, sp) in &fam.ports {
            let mut traced = Vec::new();
            for case in cases::for_port(*idx, sp, &fam.sources, &opts.node_ips) {
                let left = strip_masquerade(run(&ipt, &case, sp)?);
                let right = ipvs_outcome(&vss, &fw, &case);
                traced.push((case, left, right));
            }
            judge_port(&mut v, sp, traced, true);
        }
    }
    Ok(v)
}

/// kube-proxy IPVS mode's source-range rule (KUBE-PROXY-FIREWALL → KUBE-SOURCE-RANGES-FIREWALL,
/// kube-proxy-facts.md §2.5): a packet to a KUBE-LOAD-BALANCER-FW key is dropped unless its
/// source is in KUBE-LOAD-BALANCER-SOURCE-CIDR or -SOURCE-IP for that key.
struct FwSets<'a> {
    fw: Option<&'a IpSet>,
    cidr: Option<&'a IpSet>,
    ip: Option<&'a IpSet>,
}

impl<'a> FwSets<'a> {
    fn new(sets: &'a HashMap<String, IpSet>, fam: IpFamily) -> FwSets<'a> {
        let get = |b: &str| sets.get(&crate::plan::ipsets::set_name(b, fam));
        FwSets {
            fw: get("LOAD-BALANCER-FW"),
            cidr: get("LOAD-BALANCER-SOURCE-CIDR"),
            ip: get("LOAD-BALANCER-SOURCE-IP"),
        }
    }

    fn drops(&self, case: &Case) -> bool {
        use rules::Dir::{Dst, Src};
        let p = &case.packet;
        let q = sets::SetQuery {
            src: p.src,
            dst: p.dst,
            proto: p.proto.as_str(),
            dport: p.dport,
        };
        let has = |s: Option<&IpSet>, d: &[rules::Dir]| {
            s.is_some_and(|s| s.contains(d, &q).unwrap_or(false))
        };
        has(self.fw, &[Dst, Dst])
            && !has(self.cidr, &[Dst, Dst, Src])
            && !has(self.ip, &[Dst, Dst, Src])
    }
}

fn ipvs_outcome(vss: &VsMap, fw: &FwSets<'_>, case: &Case) -> BTreeSet<Outcome> {
    let p = &case.packet;
    let Some(vs) = vss.get(&(p.proto, p.dst, p.dport)) else {
        return BTreeSet::from([Outcome::NotTranslated]);
    };
    if let Some(reason) = &vs.conflict {
        return BTreeSet::from([Outcome::Unknown {
            reason: reason.clone(),
        }]);
    }
    if case.origin == Origin::Arriving && fw.drops(case) {
        return BTreeSet::from([Outcome::Drop]);
    }
    if vs.real_servers.is_empty() {
        return BTreeSet::from([Outcome::Reject]);
    }
    vs.real_servers
        .iter()
        .map(|(ip, port)| Outcome::Endpoint {
            ip: *ip,
            port: *port,
            masquerade: None,
            affinity: vs.affinity,
        })
        .collect()
}

fn strip_masquerade(s: BTreeSet<Outcome>) -> BTreeSet<Outcome> {
    s.into_iter()
        .map(|o| match o {
            Outcome::Endpoint {
                ip, port, affinity, ..
            } => Outcome::Endpoint {
                ip,
                port,
                masquerade: None,
                affinity,
            },
            other => other,
        })
        .collect()
}

/// Checks a hybrid plan: kube-proxy's rules alone against kube-proxy's rules with the hybrid's
/// chains, sets (admitted stage), bound VIPs and virtual servers.
pub fn hybrid(
    inv: &Inventory,
    dumps: &[Dump<'_>],
    plan: &HybridPlan,
    opts: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let vss = vs_map(&plan.virtual_servers);
    let staged = plan.sets_at(Stage::Admitted);
    let sets = set_map(
        staged
            .iter()
            .map(|(n, s)| (n, s.set_type.as_str(), s.members.iter().collect())),
    )?;
    let no_vs = VsMap::new();
    let no_sets = HashMap::new();
    let mut v = Verification::new("hybrid", opts);
    for fam in families(inv, dumps, opts)? {
        let loc = locals(&opts.node_ips, fam.sources.node, &[]);
        let bound: Vec<IpAddr> = plan
            .addresses
            .iter()
            .copied()
            .filter(|a| IpFamily::of(a) == fam.family)
            .collect();
        let hloc = locals(&opts.node_ips, fam.sources.node, &bound);
        let mut hrules = fam.rules.clone();
        if let Some(fr) = plan.rules.iter().find(|r| r.family == fam.family) {
            for c in &fr.chains {
                hrules.set_chain(&c.table, &c.name, &c.rules);
            }
            for h in &fr.hooks {
                hrules.insert_first(&h.table, &h.chain, &h.rule);
            }
        }
        let ipt = Tracer {
            rules: &fam.rules,
            sets: &no_sets,
            locals: &loc,
            ipvs: &no_vs,
        };
        let hyb = Tracer {
            rules: &hrules,
            sets: &sets,
            locals: &hloc,
            ipvs: &vss,
        };
        for (idx, sp) in &fam.ports {
            let mut traced = Vec::new();
            for case in cases::for_port(*idx, sp, &fam.sources, &opts.node_ips) {
                let left = run(&ipt, &case, sp)?;
                let right = run(&hyb, &case, sp)?;
                traced.push((case, left, right));
            }
            judge_port(&mut v, sp, traced, false);
        }
    }
    Ok(v)
}

fn kind_of(o: &Outcome) -> u8 {
    match o {
        Outcome::Endpoint { .. } => 0,
        Outcome::Reject => 1,
        Outcome::Drop => 2,
        Outcome::NotTranslated => 3,
        Outcome::Unknown { .. } => 4,
    }
}

/// Classifies a difference between two outcome sets (`None` when equal).
pub fn compare(a: &BTreeSet<Outcome>, b: &BTreeSet<Outcome>) -> Option<MismatchKind> {
    if a == b {
        return None;
    }
    let unknown = |s: &BTreeSet<Outcome>| s.iter().any(|o| matches!(o, Outcome::Unknown { .. }));
    if unknown(a) || unknown(b) {
        return Some(MismatchKind::Unknown);
    }
    let kinds = |s: &BTreeSet<Outcome>| s.iter().map(kind_of).collect::<BTreeSet<_>>();
    if kinds(a) != kinds(b) {
        return Some(MismatchKind::Verdict);
    }
    if reached(a) != reached(b) {
        return Some(MismatchKind::Endpoints);
    }
    let aff = |s: &BTreeSet<Outcome>| {
        s.iter()
            .filter_map(|o| match o {
                Outcome::Endpoint {
                    ip, port, affinity, ..
                } => Some((*ip, *port, *affinity)),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
    };
    if aff(a) != aff(b) {
        return Some(MismatchKind::Affinity);
    }
    Some(MismatchKind::Masquerade)
}

/// What kube-proxy's rules themselves show for one service port, across its cases: the
/// tolerances are judged against this, not against the inventory's model (which is the
/// translator's input).
struct Seen {
    /// Every endpoint any case reaches through iptables.
    endpoints: BTreeSet<(IpAddr, u16)>,
    /// Endpoints a remote client reaches, per destination (address, port).
    remote: HashMap<(IpAddr, u16), BTreeSet<(IpAddr, u16)>>,
}

/// The endpoints among the outcomes.
fn reached(s: &BTreeSet<Outcome>) -> BTreeSet<(IpAddr, u16)> {
    s.iter()
        .filter_map(|o| match o {
            Outcome::Endpoint { ip, port, .. } => Some((*ip, *port)),
            _ => None,
        })
        .collect()
}

/// The endpoints, if every outcome is one.
fn endpoint_set(s: &BTreeSet<Outcome>) -> Option<BTreeSet<(IpAddr, u16)>> {
    s.iter()
        .map(|o| match o {
            Outcome::Endpoint { ip, port, .. } => Some((*ip, *port)),
            _ => None,
        })
        .collect()
}

/// The documented difference that explains `iptables` vs `ipvs` for this case, if any. The
/// service's policies (from the inventory) only narrow where a tolerance may apply; whether it
/// does is decided on traced outcomes.
fn tolerance(
    full: bool,
    sp: &ServicePort,
    seen: &Seen,
    case: &Case,
    iptables: &BTreeSet<Outcome>,
    ipvs: &BTreeSet<Outcome>,
) -> Option<Tolerance> {
    let only = |s: &BTreeSet<Outcome>, o: Outcome| s.len() == 1 && s.contains(&o);
    let ipvs_eps = endpoint_set(ipvs).filter(|e| !e.is_empty());
    if matches!(
        case.kind,
        CaseKind::ClusterIpRemote | CaseKind::ClusterIpPod | CaseKind::ClusterIpNode
    ) && sp.internal_traffic_policy == TrafficPolicy::Local
        && only(iptables, Outcome::Drop)
        && only(ipvs, Outcome::Reject)
    {
        return Some(Tolerance::ItpLocalNoLocalEndpoints);
    }
    if case.kind == CaseKind::ExternalInCluster
        && case.origin == Origin::Node
        && only(iptables, Outcome::NotTranslated)
        && only(ipvs, Outcome::Reject)
    {
        return Some(Tolerance::VipBoundLocally);
    }
    if case.kind == CaseKind::ExternalInCluster
        && sp.external_traffic_policy == TrafficPolicy::Local
        && let (Some(local), Some(all), Some(got)) = (
            seen.remote.get(&(case.packet.dst, case.packet.dport)),
            endpoint_set(iptables),
            ipvs_eps.as_ref(),
        )
        && !local.is_empty()
        && got == local
        && all.is_superset(local)
        && all != *local
    {
        // What a remote client reaches (the local endpoints) is what the plan gives pods and
        // the node; iptables gives them more (the short-circuit).
        return Some(Tolerance::EtpLocalInClusterSource);
    }
    if !full {
        return None;
    }
    if case.kind == CaseKind::LocalhostNodePort && only(ipvs, Outcome::NotTranslated) {
        return Some(Tolerance::LocalhostNodePort);
    }
    // Pods count as external sources when kube-proxy has no local-traffic detector.
    if (case.kind.is_external() || case.kind == CaseKind::ExternalInCluster)
        && sp.external_traffic_policy == TrafficPolicy::Local
        && only(iptables, Outcome::Drop)
        && ipvs_eps.is_some_and(|e| e.is_subset(&seen.endpoints))
    {
        return Some(Tolerance::EtpLocalNoLocalEndpoints);
    }
    None
}

fn judge_port(
    v: &mut Verification,
    sp: &ServicePort,
    traced: Vec<(Case, BTreeSet<Outcome>, BTreeSet<Outcome>)>,
    full: bool,
) {
    let mut seen = Seen {
        endpoints: BTreeSet::new(),
        remote: HashMap::new(),
    };
    for (case, left, _) in &traced {
        let eps = endpoint_set(left);
        seen.endpoints.extend(reached(left));
        if case.kind.is_external()
            && let Some(e) = eps
        {
            seen.remote.insert((case.packet.dst, case.packet.dport), e);
        }
    }
    for (case, iptables, ipvs) in traced {
        v.cases += 1;
        let Some(kind) = compare(&iptables, &ipvs) else {
            continue;
        };
        if let Some(t) = tolerance(full, sp, &seen, &case, &iptables, &ipvs) {
            v.tolerated.push(Tolerated {
                service: sp.name.to_string(),
                case: case.label.clone(),
                tolerance: t,
            });
            continue;
        }
        v.mismatches.push(Mismatch {
            service: sp.name.to_string(),
            case: case.label.clone(),
            kind,
            iptables: iptables.into_iter().collect(),
            ipvs: ipvs.into_iter().collect(),
        });
    }
}

#[cfg(test)]
mod tests;
