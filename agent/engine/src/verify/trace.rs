//! The packet walker: one new connection's first packet through nat PREROUTING (or OUTPUT for
//! the node's own traffic), the routing decision, filter INPUT / FORWARD / OUTPUT and nat
//! POSTROUTING, as netfilter orders them (iptables-extensions(8); the hook priorities in
//! include/uapi/linux/netfilter_ipv4.h: nat OUTPUT -100, IPVS LOCAL_OUT after it, filter 0).
//!
//! Rules are evaluated one by one, jumps and RETURN followed. Conditions whose outcome is a
//! matter of chance or history (`statistic`, `recent --rcheck`) are taken both ways, so a trace
//! yields every reachable outcome. A condition the interpreter does not model ends that path
//! as `Unknown`: it is never assumed true or false. Walks are bounded (depth and steps) and
//! exceeding a bound is an error value.
//!
//! Planned IPVS virtual servers (the hybrid's) are looked up where IPVS hooks in: after filter
//! INPUT for traffic that arrived (LOCAL_IN), right after nat OUTPUT for the node's own.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::Outcome;
use super::rules::{Cond, Neg, Ruleset, Target};
use super::sets::{IpSet, SetQuery};
use crate::inventory::Protocol;

/// Deepest chain nesting followed.
pub const MAX_DEPTH: usize = 32;
/// Most rule evaluations in one trace.
pub const MAX_STEPS: usize = 2_000_000;

/// The first packet of a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (rewritten by DNAT).
    pub dst: IpAddr,
    /// Protocol.
    pub proto: Protocol,
    /// Destination port (rewritten by DNAT).
    pub dport: u16,
    /// Incoming interface; empty for the node's own packets.
    pub in_iface: Arc<str>,
    /// nfmark.
    pub mark: u32,
    /// The destination was rewritten (conntrack's DNAT status).
    pub dnat: bool,
    /// Longest `recent --rcheck --seconds` seen on the path.
    pub rcheck: Option<u32>,
    /// `recent --set` seen on the path.
    pub recent_set: bool,
    /// MASQUERADE / SNAT reached.
    pub masq: bool,
}

/// Where the packet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Arrives on an interface: nat PREROUTING.
    Arriving,
    /// The node's own: nat OUTPUT.
    Node,
}

/// A planned virtual server, as the walker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vs {
    /// Real servers.
    pub real_servers: Vec<(IpAddr, u16)>,
    /// Persistence timeout, if persistent.
    pub affinity: Option<u32>,
    /// Set when the plan has several virtual servers for one key: the outcome is unknown.
    pub conflict: Option<String>,
}

/// The node's local addresses: single addresses hashed (a hybrid binds one per VIP), networks
/// (loopback) scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locals {
    hosts: HashSet<IpAddr>,
    nets: Vec<IpNet>,
}

impl Locals {
    /// From addresses and networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Locals {
        let mut l = Locals::default();
        for n in nets {
            if n.prefix_len() == n.max_prefix_len() {
                l.hosts.insert(n.addr());
            } else {
                l.nets.push(n);
            }
        }
        l
    }

    /// True if `ip` is local.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.hosts.contains(ip) || self.nets.iter().any(|n| n.contains(ip))
    }
}

/// Why a trace could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Chains nested deeper than [`MAX_DEPTH`] (a loop in the rules?).
    #[error("chains nested deeper than {MAX_DEPTH} at {table}/{chain}")]
    TooDeep {
        /// Table.
        table: String,
        /// Chain entered.
        chain: String,
    },
    /// More than [`MAX_STEPS`] rule evaluations.
    #[error("more than {MAX_STEPS} rule evaluations")]
    TooManySteps,
}

/// Everything a trace reads.
pub struct Tracer<'a> {
    /// The rules (kube-proxy's, plus the hybrid's when tracing the hybrid).
    pub rules: &'a Ruleset,
    /// ipsets by name.
    pub sets: &'a HashMap<String, IpSet>,
    /// Local addresses (`--dst-type LOCAL`, routing to INPUT).
    pub locals: &'a Locals,
    /// Virtual servers by (protocol, address, port); empty when tracing kube-proxy alone.
    pub ipvs: &'a HashMap<(Protocol, IpAddr, u16), Vs>,
}

enum Exit {
    Return,
    Accept,
    Drop,
    Reject,
    Unknown(String),
}

/// Outcome of one rule's conditions on one packet.
enum Eval {
    No,
    Yes(Packet),
    Both(Packet),
    Unknown(String),
}

impl Tracer<'_> {
    fn is_local(&self, ip: &IpAddr) -> bool {
        self.locals.contains(ip)
    }

    /// Every reachable outcome for `pkt`.
    pub fn trace(&self, pkt: Packet, origin: Origin) -> Result<BTreeSet<Outcome>, TraceError> {
        let mut steps = 0usize;
        let mut out = BTreeSet::new();
        let nat_chain = match origin {
            Origin::Arriving => "PREROUTING",
            Origin::Node => "OUTPUT",
        };
        for (exit, p) in self.builtin("nat", nat_chain, pkt, &mut steps)? {
            match exit {
                Exit::Accept => self.after_nat(p, origin, &mut steps, &mut out)?,
                other => {
                    out.insert(terminal(other));
                }
            }
        }
        Ok(out)
    }

    fn vs_for(&self, p: &Packet) -> Option<&Vs> {
        if p.dnat {
            return None;
        }
        self.ipvs.get(&(p.proto, p.dst, p.dport))
    }

    fn after_nat(
        &self,
        p: Packet,
        origin: Origin,
        steps: &mut usize,
        out: &mut BTreeSet<Outcome>,
    ) -> Result<(), TraceError> {
        match origin {
            Origin::Node => {
                // IPVS's LOCAL_OUT hook runs after nat OUTPUT and before filter OUTPUT, which
                // therefore sees the real server.
                if let Some(vs) = self.vs_for(&p) {
                    if let Some(c) = &vs.conflict {
                        out.insert(Outcome::Unknown { reason: c.clone() });
                        return Ok(());
                    }
                    if vs.real_servers.is_empty() {
                        out.insert(Outcome::Reject);
                    }
                    for q in scheduled(&p, vs) {
                        for (exit, q) in self.builtin("filter", "OUTPUT", q, steps)? {
                            match exit {
                                Exit::Accept => self.postrouting(q, vs.affinity, steps, out)?,
                                other => {
                                    out.insert(terminal(other));
                                }
                            }
                        }
                    }
                    return Ok(());
                }
                for (exit, q) in self.builtin("filter", "OUTPUT", p, steps)? {
                    match exit {
                        Exit::Accept => self.delivered_or_routed(q, steps, out)?,
                        other => {
                            out.insert(terminal(other));
                        }
                    }
                }
            }
            Origin::Arriving => {
                let chain = if self.is_local(&p.dst) {
                    "INPUT"
                } else {
                    "FORWARD"
                };
                for (exit, q) in self.builtin("filter", chain, p, steps)? {
                    match exit {
                        Exit::Accept => {
                            if chain == "INPUT"
                                && let Some(vs) = self.vs_for(&q)
                            {
                                // IPVS at LOCAL_IN, after filter INPUT.
                                if let Some(c) = &vs.conflict {
                                    out.insert(Outcome::Unknown { reason: c.clone() });
                                    continue;
                                }
                                if vs.real_servers.is_empty() {
                                    out.insert(Outcome::Reject);
                                }
                                for r in scheduled(&q, vs) {
                                    self.postrouting(r, vs.affinity, steps, out)?;
                                }
                            } else {
                                self.delivered_or_routed(q, steps, out)?;
                            }
                        }
                        other => {
                            out.insert(terminal(other));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// After the filter accepted a packet that IPVS did not take.
    fn delivered_or_routed(
        &self,
        p: Packet,
        steps: &mut usize,
        out: &mut BTreeSet<Outcome>,
    ) -> Result<(), TraceError> {
        if p.dnat {
            let affinity = p.rcheck.or(p.recent_set.then_some(0));
            self.postrouting(p, affinity, steps, out)
        } else {
            out.insert(Outcome::NotTranslated);
            Ok(())
        }
    }

    fn postrouting(
        &self,
        p: Packet,
        affinity: Option<u32>,
        steps: &mut usize,
        out: &mut BTreeSet<Outcome>,
    ) -> Result<(), TraceError> {
        for (exit, q) in self.builtin("nat", "POSTROUTING", p, steps)? {
            match exit {
                Exit::Accept => {
                    out.insert(Outcome::Endpoint {
                        ip: q.dst,
                        port: q.dport,
                        masquerade: Some(q.masq),
                        affinity,
                    });
                }
                other => {
                    out.insert(terminal(other));
                }
            }
        }
        Ok(())
    }

    /// Walks a built-in chain; falling off its end applies its policy.
    fn builtin(
        &self,
        table: &str,
        chain: &str,
        p: Packet,
        steps: &mut usize,
    ) -> Result<Vec<(Exit, Packet)>, TraceError> {
        let policy_drop = self
            .rules
            .chain(table, chain)
            .and_then(|c| c.policy.as_deref())
            == Some("DROP");
        let res = self.walk(table, chain, p, 0, steps)?;
        Ok(res
            .into_iter()
            .map(|(e, p)| match e {
                Exit::Return if policy_drop => (Exit::Drop, p),
                Exit::Return => (Exit::Accept, p),
                other => (other, p),
            })
            .collect())
    }

    fn walk(
        &self,
        table: &str,
        chain: &str,
        p: Packet,
        depth: usize,
        steps: &mut usize,
    ) -> Result<Vec<(Exit, Packet)>, TraceError> {
        if depth > MAX_DEPTH {
            return Err(TraceError::TooDeep {
                table: table.into(),
                chain: chain.into(),
            });
        }
        let mut out = Vec::new();
        let Some(c) = self.rules.chain(table, chain) else {
            out.push((Exit::Return, p));
            return Ok(out);
        };
        // Work list of (next rule index, packet).
        let mut work = vec![(0usize, p)];
        while let Some((i, p)) = work.pop() {
            *steps += 1;
            if *steps > MAX_STEPS {
                return Err(TraceError::TooManySteps);
            }
            let i = c.next_candidate(i, &p.dst);
            let Some(rule) = c.rules.get(i) else {
                out.push((Exit::Return, p));
                continue;
            };
            let matched = match self.eval(table, &rule.conds, &p) {
                Eval::No => {
                    work.push((i + 1, p));
                    continue;
                }
                Eval::Unknown(why) => {
                    out.push((
                        Exit::Unknown(format!("{table}/{chain} line {}: {why}", rule.line)),
                        placeholder(),
                    ));
                    continue;
                }
                Eval::Yes(p) => p,
                Eval::Both(p) => {
                    work.push((i + 1, p.clone()));
                    p
                }
            };
            let mut p = matched;
            match &rule.target {
                Target::None | Target::Continue => work.push((i + 1, p)),
                Target::Accept => out.push((Exit::Accept, p)),
                Target::Drop => out.push((Exit::Drop, p)),
                Target::Reject => out.push((Exit::Reject, p)),
                Target::Return => out.push((Exit::Return, p)),
                Target::Dnat(ip, port) => {
                    p.dst = *ip;
                    if let Some(port) = port {
                        p.dport = *port;
                    }
                    p.dnat = true;
                    out.push((Exit::Accept, p));
                }
                Target::Masquerade => {
                    p.masq = true;
                    out.push((Exit::Accept, p));
                }
                Target::Mark { clear, xor } => {
                    p.mark = (p.mark & !clear) ^ xor;
                    work.push((i + 1, p));
                }
                Target::Unknown(t) => out.push((
                    Exit::Unknown(format!("{table}/{chain} line {}: target {t}", rule.line)),
                    p,
                )),
                Target::Jump(next) | Target::Goto(next) => {
                    if self.rules.chain(table, next).is_none() {
                        out.push((
                            Exit::Unknown(format!(
                                "{table}/{chain} line {}: target {next} (not a chain of this table)",
                                rule.line
                            )),
                            p,
                        ));
                        continue;
                    }
                    let goto = matches!(rule.target, Target::Goto(_));
                    for (e, q) in self.walk(table, next, p, depth + 1, steps)? {
                        match e {
                            Exit::Return if goto => out.push((Exit::Return, q)),
                            Exit::Return => work.push((i + 1, q)),
                            other => out.push((other, q)),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn eval(&self, table: &str, conds: &[Cond], p: &Packet) -> Eval {
        // The packet is cloned only when the rule matches: most rules of a large
        // KUBE-SERVICES fail on their destination.
        let mut unknown: Option<String> = None;
        let mut branch = false;
        let mut rcheck: Option<u32> = None;
        let mut recent_set = false;
        for c in conds {
            let r: Result<bool, String> = match c {
                Cond::Src(n) => Ok(neg(n, n.value.contains(&p.src))),
                Cond::Dst(n) => Ok(neg(n, n.value.contains(&p.dst))),
                Cond::Proto(n) => Ok(neg(n, proto_matches(&n.value, p.proto))),
                Cond::InIface(n) => Ok(neg(n, iface_matches(&n.value, &p.in_iface))),
                Cond::OutIface(_) => Err("-o (the outgoing interface is not modelled)".into()),
                Cond::Dport(n) => Ok(neg(
                    n,
                    n.value.iter().any(|(a, b)| (*a..=*b).contains(&p.dport)),
                )),
                Cond::SrcType(n) | Cond::DstType(n) => {
                    if n.value != "LOCAL" {
                        Err(format!("addrtype {} (only LOCAL is modelled)", n.value))
                    } else {
                        let ip = if matches!(c, Cond::SrcType(_)) {
                            p.src
                        } else {
                            p.dst
                        };
                        Ok(neg(n, self.is_local(&ip)))
                    }
                }
                Cond::Mark(n) => Ok(neg(n, p.mark & n.value.1 == n.value.0)),
                Cond::CtState(n) => {
                    // A new connection's first packet; DNAT once its destination was
                    // rewritten (visible in filter, not yet in nat).
                    let states: &[&str] = if p.dnat && table == "filter" {
                        &["NEW", "DNAT"]
                    } else {
                        &["NEW"]
                    };
                    Ok(neg(n, n.value.iter().any(|s| states.contains(&s.as_str()))))
                }
                Cond::Random => {
                    branch = true;
                    Ok(true)
                }
                Cond::RecentCheck { seconds } => {
                    branch = true;
                    rcheck = Some(rcheck.unwrap_or(0).max(*seconds));
                    Ok(true)
                }
                Cond::RecentSet => {
                    recent_set = true;
                    Ok(true)
                }
                Cond::Set(n) => match self.sets.get(&n.value.0) {
                    None => Err(format!("ipset {} (no members known)", n.value.0)),
                    Some(s) => s
                        .contains(
                            &n.value.1,
                            &SetQuery {
                                src: p.src,
                                dst: p.dst,
                                proto: p.proto.as_str(),
                                dport: p.dport,
                            },
                        )
                        .map(|b| neg(n, b))
                        .map_err(|e| format!("ipset {}: {e}", n.value.0)),
                },
                Cond::Physdev(v) => Ok(*v),
                Cond::Unknown(what) => Err(what.clone()),
            };
            match r {
                Ok(true) => {}
                Ok(false) => return Eval::No,
                Err(e) => {
                    unknown.get_or_insert(e);
                }
            }
        }
        if let Some(u) = unknown {
            return Eval::Unknown(u);
        }
        let mut p = p.clone();
        if let Some(s) = rcheck {
            p.rcheck = Some(p.rcheck.unwrap_or(0).max(s));
        }
        p.recent_set |= recent_set;
        if branch { Eval::Both(p) } else { Eval::Yes(p) }
    }
}

/// The packet IPVS sends on to each real server (NAT forwarding: the destination is rewritten,
/// conntrack records it as DNAT with `net.ipv4.vs.conntrack=1`).
fn scheduled(p: &Packet, vs: &Vs) -> Vec<Packet> {
    vs.real_servers
        .iter()
        .map(|(ip, port)| Packet {
            dst: *ip,
            dport: *port,
            dnat: true,
            ..p.clone()
        })
        .collect()
}

fn neg<T>(n: &Neg<T>, b: bool) -> bool {
    b != n.negated
}

fn proto_matches(want: &str, p: Protocol) -> bool {
    want == "all" || want == "0" || Protocol::parse(want) == Some(p)
}

/// `-i` semantics: a trailing `+` matches any name with that prefix.
fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => !name.is_empty() && name.starts_with(prefix),
        None => pattern == name,
    }
}

fn terminal(e: Exit) -> Outcome {
    match e {
        Exit::Drop => Outcome::Drop,
        Exit::Reject => Outcome::Reject,
        Exit::Unknown(why) => Outcome::Unknown { reason: why },
        // Accept and Return are handled by the callers; reaching here means a nat chain
        // returned something unexpected, which is reported rather than guessed.
        Exit::Accept | Exit::Return => Outcome::Unknown {
            reason: "unexpected chain exit".into(),
        },
    }
}

fn placeholder() -> Packet {
    Packet {
        src: IpAddr::from([0, 0, 0, 0]),
        dst: IpAddr::from([0, 0, 0, 0]),
        proto: Protocol::Tcp,
        dport: 0,
        in_iface: Arc::from(""),
        mark: 0,
        dnat: false,
        rcheck: None,
        recent_set: false,
        masq: false,
    }
}
