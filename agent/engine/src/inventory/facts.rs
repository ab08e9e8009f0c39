//! Facts collected while a dump streams by: for every KUBE-* rule, the compact meaning it has
//! in kube-proxy's layout (shared/reference/kube-proxy-facts.md §1; pkg/proxy/iptables/proxier.go
//! `syncProxyRules`, `writeServiceToEndpointRules`), or a warning saying why it has none.
//!
//! Nothing here resolves the jump graph; that is [`super::resolve`]. Facts hold owned, small
//! values so the dump text itself need not stay in memory.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::{FxHashMap, FxHashSet};

use super::InventoryError;
use super::chains::ChainId;
use super::model::{IpFamily, LocalDetector, Protocol, Warning};
use super::quick::quick_rule;
use super::rule::{Neg, Rule, parse_rule};
use super::save::{Event, Token};
use super::scan::{self, Hot};

/// The 16-character hash shared by a service port's SVC/SVL/EXT/FW chains (and an endpoint's SEP).
pub type Hash = [u8; 16];

/// Kinds of per-service and per-endpoint chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HKind {
    /// `KUBE-SVC-` Cluster-policy dispatch.
    Svc,
    /// `KUBE-SVL-` Local-policy dispatch.
    Svl,
    /// `KUBE-EXT-` external destinations.
    Ext,
    /// `KUBE-FW-` load-balancer source ranges.
    Fw,
    /// `KUBE-SEP-` endpoint.
    Sep,
    /// `KUBE-XLB-` legacy (≤ 1.23) external-local chain.
    Xlb,
}

impl HKind {
    /// Every kind, in declaration order (`kind as usize` is its index).
    pub const ALL: [HKind; 6] = [
        HKind::Svc,
        HKind::Svl,
        HKind::Ext,
        HKind::Fw,
        HKind::Sep,
        HKind::Xlb,
    ];

    /// Chain prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            HKind::Svc => "KUBE-SVC-",
            HKind::Svl => "KUBE-SVL-",
            HKind::Ext => "KUBE-EXT-",
            HKind::Fw => "KUBE-FW-",
            HKind::Sep => "KUBE-SEP-",
            HKind::Xlb => "KUBE-XLB-",
        }
    }

    /// Full chain name for a hash.
    pub fn chain(self, h: &Hash) -> String {
        let mut s = String::with_capacity(26);
        s.push_str(self.prefix());
        s.extend(h.iter().map(|&b| b as char));
        s
    }
}

/// Fixed-name chains kube-proxy (iptables mode) and kubelet write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixed {
    /// KUBE-SERVICES
    Services,
    /// KUBE-NODEPORTS
    NodePorts,
    /// KUBE-POSTROUTING
    Postrouting,
    /// KUBE-MARK-MASQ
    MarkMasq,
    /// KUBE-MARK-DROP (legacy, kubelet ≤ 1.27)
    MarkDrop,
    /// KUBE-EXTERNAL-SERVICES
    ExternalServices,
    /// KUBE-FORWARD
    Forward,
    /// KUBE-PROXY-FIREWALL
    ProxyFirewall,
    /// KUBE-FIREWALL (kubelet)
    Firewall,
    /// KUBE-PROXY-CANARY, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT
    Marker,
}

/// What a chain name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainClass {
    /// Per-service or per-endpoint chain.
    Hashed(HKind, Hash),
    /// Known fixed name.
    Fixed(Fixed),
    /// A chain IPVS-mode kube-proxy writes.
    IpvsMode,
    /// Some other KUBE-* chain (another program's, or a layout this version does not know).
    OtherKube,
    /// Not a KUBE-* chain.
    Other,
}

/// Classifies a chain name.
pub fn classify(name: &str) -> ChainClass {
    let Some(rest) = name.strip_prefix("KUBE-") else {
        return ChainClass::Other;
    };
    // Fast path for the ~120k per-service / per-endpoint chains of a large dump.
    let b = rest.as_bytes();
    if b.len() == 20 && b[3] == b'-' {
        let kind = match &b[..3] {
            b"SEP" => Some(HKind::Sep),
            b"SVC" => Some(HKind::Svc),
            b"SVL" => Some(HKind::Svl),
            b"EXT" => Some(HKind::Ext),
            b"XLB" => Some(HKind::Xlb),
            _ => None,
        };
        if let Some(kind) = kind {
            return hashed_class(kind, &rest[4..]);
        }
    }
    let hashed = hashed_class;
    match rest {
        "SERVICES" => ChainClass::Fixed(Fixed::Services),
        "NODEPORTS" => ChainClass::Fixed(Fixed::NodePorts),
        "POSTROUTING" => ChainClass::Fixed(Fixed::Postrouting),
        "MARK-MASQ" => ChainClass::Fixed(Fixed::MarkMasq),
        "MARK-DROP" => ChainClass::Fixed(Fixed::MarkDrop),
        "EXTERNAL-SERVICES" => ChainClass::Fixed(Fixed::ExternalServices),
        "FORWARD" => ChainClass::Fixed(Fixed::Forward),
        "PROXY-FIREWALL" => ChainClass::Fixed(Fixed::ProxyFirewall),
        "FIREWALL" => ChainClass::Fixed(Fixed::Firewall),
        "PROXY-CANARY" | "KUBELET-CANARY" | "IPTABLES-HINT" => ChainClass::Fixed(Fixed::Marker),
        "NODE-PORT"
        | "LOAD-BALANCER"
        | "SOURCE-RANGES-FIREWALL"
        | "IPVS-FILTER"
        | "IPVS-OUT-FILTER"
        | "FIRE-WALL"
        | "LOAD-BALANCER-LOCAL"
        | "LOAD-BALANCER-FW"
        | "LOAD-BALANCER-MASQ" => ChainClass::IpvsMode,
        _ => {
            for kind in HKind::ALL {
                if let Some(h) = name.strip_prefix(kind.prefix()) {
                    return hashed(kind, h);
                }
            }
            ChainClass::OtherKube
        }
    }
}

fn hashed_class(kind: HKind, h: &str) -> ChainClass {
    let b = h.as_bytes();
    // Every byte checked without an early exit: the loop becomes a few vector instructions.
    if b.len() == 16
        && b.iter().fold(true, |ok, c| {
            ok & (c.is_ascii_uppercase() | (b'2'..=b'7').contains(c))
        })
    {
        let mut out = [0u8; 16];
        out.copy_from_slice(b);
        ChainClass::Hashed(kind, out)
    } else {
        ChainClass::OtherKube
    }
}

/// Built-in chain names (they may be used without a declaration in restore input).
pub fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING"
    )
}

/// Condition on a `-j KUBE-MARK-MASQ` or a jump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// None beyond destination/port matches.
    Always,
    /// Traffic the local detector says is *not* local (`! -s CIDR`, `! -i PREFIX+`).
    NotLocal(Box<LocalDetector>),
    /// Traffic the local detector says *is* local (`-s CIDR`, `-i PREFIX+`).
    Local(Box<LocalDetector>),
    /// `-m addrtype --src-type LOCAL` (node-originated).
    SrcTypeLocal,
}

/// What one rule of a per-service or per-endpoint chain means.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// `-j KUBE-MARK-MASQ`.
    MarkMasq { cond: Cond },
    /// `-j KUBE-{SVC,SVL,EXT,FW,XLB,SEP}-…`, optionally with `--probability`.
    Jump {
        kind: HKind,
        to: ChainId,
        probability: Option<u32>,
        cond: Cond,
    },
    /// `-m recent --name SEP --rcheck --seconds N --reap -j SEP`.
    Affinity { to: Hash, seconds: u32 },
    /// `-j DNAT --to-destination ip:port`.
    Dnat {
        ip: IpAddr,
        port: u16,
        proto: Option<Protocol>,
        recent_set: bool,
    },
    /// `-s <endpoint ip> -j KUBE-MARK-MASQ` in an endpoint chain.
    Hairpin { ip: IpAddr },
    /// `-s CIDR -j KUBE-EXT-…` in a firewall chain.
    FwSource {
        src: IpNet,
        kind: HKind,
        to: ChainId,
    },
    /// A rule without a target (the end of a firewall chain).
    FallThrough,
    /// `-j KUBE-MARK-DROP` (legacy).
    MarkDrop,
}

/// One placed rule of a per-service / per-endpoint chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedFact {
    /// The meaning.
    pub fact: Fact,
    /// Line.
    pub line: u32,
}

/// A per-service or per-endpoint chain and its rules.
#[derive(Debug, Default)]
pub struct ChainFacts {
    /// Line of the declaration.
    pub decl_line: u32,
    /// Declared in the dump (a chain can be referenced before or without a declaration).
    pub declared: bool,
    /// Rules: 1 + the index of their list in the chain table (0: none). Most chains are
    /// endpoint chains, which keep their rules inline below, so the list is kept apart and
    /// the 120,000 slots of a large dump stay small (fewer fresh pages to fault in).
    pub rules: u32,
    /// Reached from a KUBE-SERVICES / KUBE-NODEPORTS entry (set by the resolver).
    pub referenced: bool,
    /// Endpoint chains keep their two rules inline instead of in a list: the DNAT target…
    pub dnat: Option<(IpAddr, u16)>,
    /// …its line…
    pub dnat_line: u32,
    /// …and the line of the hairpin `-s <ip> -j KUBE-MARK-MASQ` rule (0: none).
    pub hairpin_line: u32,
}

/// Kind of ClusterIP/external entry in nat KUBE-SERVICES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after kube-proxy's comments
pub enum EntryKind {
    /// `"<svc> cluster IP"`
    ClusterIp,
    /// `"<svc> external IP"`
    ExternalIp,
    /// `"<svc> loadbalancer IP"`
    LoadBalancerIp,
}

/// Where a KUBE-SERVICES / KUBE-NODEPORTS rule sends traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryTarget {
    /// A per-service chain, by name and id in the chain table.
    Chain(HKind, Hash, ChainId),
    /// `-j KUBE-MARK-MASQ` (legacy layouts mark in KUBE-SERVICES itself).
    MarkMasq,
}

/// A nat KUBE-SERVICES rule for one VIP of one service port.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the VIP is.
    pub kind: EntryKind,
    /// `ns/name[:port]` from the comment.
    pub spn: String,
    /// Protocol.
    pub proto: Protocol,
    /// VIP.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
    /// Target.
    pub target: EntryTarget,
    /// Extra condition (legacy masquerade rules).
    pub cond: Cond,
    /// Line.
    pub line: u32,
}

/// A nat KUBE-NODEPORTS rule.
#[derive(Debug, Clone)]
pub struct NodePortEntry {
    /// `ns/name[:port]` from the comment, if present.
    pub spn: Option<String>,
    /// Protocol.
    pub proto: Protocol,
    /// NodePort.
    pub port: u16,
    /// Target.
    pub target: EntryTarget,
    /// The `-d 127.0.0.0/8 … -m nfacct` localhost rule.
    pub localhost: bool,
    /// Line.
    pub line: u32,
}

/// Which filter chain a no-endpoint verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterWhere {
    /// filter KUBE-SERVICES (ClusterIP).
    Services,
    /// filter KUBE-EXTERNAL-SERVICES with `-d IP` (external or LB IP).
    ExternalIp,
    /// filter KUBE-EXTERNAL-SERVICES with `--dst-type LOCAL` (NodePort).
    NodePort,
}

/// A filter rule for a service port.
#[derive(Debug, Clone)]
pub enum FilterFact {
    /// REJECT/DROP for traffic with no (local) endpoint.
    NoEndpoints {
        /// Service.
        spn: String,
        /// Protocol.
        proto: Protocol,
        /// Where.
        at: FilterWhere,
        /// Destination (absent for NodePorts).
        ip: Option<IpAddr>,
        /// Port or NodePort.
        port: u16,
        /// True for DROP ("has no local endpoints"), false for REJECT.
        drop: bool,
        /// Line.
        line: u32,
    },
    /// filter KUBE-NODEPORTS `"<svc> health check node port"` ACCEPT.
    HealthCheck {
        /// Service.
        spn: String,
        /// Port.
        port: u16,
        /// Line.
        line: u32,
    },
    /// filter KUBE-PROXY-FIREWALL `"<svc> traffic not accepted by KUBE-FW-…"` DROP.
    FirewallDrop {
        /// Service.
        spn: String,
        /// Protocol.
        proto: Protocol,
        /// LB IP.
        ip: IpAddr,
        /// Port.
        port: u16,
        /// Line.
        line: u32,
    },
}

/// Node-level settings seen while streaming.
#[derive(Debug, Default)]
pub struct NodeFacts {
    /// KUBE-MARK-MASQ's mark.
    pub masq_mark: Option<u32>,
    /// KUBE-POSTROUTING has MASQUERADE --random-fully.
    pub random_fully: bool,
    /// nodeport rule: `(excluded, addresses, all_local)`.
    pub nodeport_all_local: Option<Vec<IpNet>>,
    /// `-d nodeIP -j KUBE-NODEPORTS` rules.
    pub nodeport_addresses: Vec<IpAddr>,
    /// filter KUBE-FORWARD INVALID drop.
    pub drops_invalid: bool,
    /// Marker chains.
    pub markers: Vec<String>,
    /// Legacy chains.
    pub legacy: Vec<String>,
    /// IPVS-mode chains.
    pub ipvs_mode: Vec<String>,
}

/// A chain name (at most 32 bytes; hashed chain names are 25 or 26) and what it is.
struct LastChain {
    name: [u8; 32],
    len: u8,
    kind: HKind,
    id: ChainId,
}

impl LastChain {
    /// `name` is this chain. Hashed chain names are 25 or 26 bytes: two overlapping 16-byte
    /// comparisons instead of a call to memcmp, once for nearly every rule of a large dump.
    fn is(&self, name: &[u8]) -> bool {
        let n = usize::from(self.len);
        if name.len() != n {
            return false;
        }
        let (Some(a), Some(b)) = (self.name.get(..n), name.get(..n)) else {
            return false;
        };
        match (
            a.first_chunk::<16>().zip(a.last_chunk::<16>()),
            b.first_chunk::<16>().zip(b.last_chunk::<16>()),
        ) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        }
    }
}

/// Streams events into facts.
pub struct Collector {
    pub(crate) source: String,
    pub(crate) family: IpFamily,
    table: &'static str,
    pub(crate) tables: Vec<String>,
    /// Per-service and per-endpoint chains of the nat table.
    pub(crate) chains: super::chains::ChainTable,
    pub(crate) entries: Vec<Entry>,
    pub(crate) nodeports: Vec<NodePortEntry>,
    pub(crate) filters: Vec<FilterFact>,
    pub(crate) node: NodeFacts,
    pub(crate) hooks: Vec<super::model::Hook>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) kube_rules: usize,
    pub(crate) kube_chains: usize,
    /// Chains declared in the current table (names of non-hashed chains; hashed ones are in `chains`).
    declared: FxHashSet<String>,
    /// The chain of the previous rule, if a declared per-service or endpoint chain of nat.
    last_chain: Option<LastChain>,
    /// `KUBE-MARK-MASQ` is in `pending_targets` (saves hashing its name for every hairpin rule).
    masq_pending: bool,
    /// Hashed chains declared in the current non-nat table (rare).
    other_hashed: FxHashSet<(HKind, Hash)>,
    /// KUBE-* jump targets of the current table, checked at COMMIT.
    pending_targets: FxHashMap<String, u32>,
    builtin_positions: FxHashMap<String, usize>,
    scratch: Vec<Token<'static>>,
    pub(crate) node_hint_detector: Option<LocalDetector>,
    pub(crate) node_hint_masq_all: bool,
    /// First service address of the other IP family (an ip6tables dump read as IPv4, or the
    /// reverse): the whole dump is then rejected.
    pub(crate) family_mismatch: Option<(u32, std::net::IpAddr)>,
}

impl Collector {
    /// A collector for one family's dump.
    pub fn new(source: &str, family: IpFamily) -> Collector {
        Collector {
            source: source.to_owned(),
            family,
            table: "",
            tables: Vec::new(),
            chains: super::chains::ChainTable::default(),
            entries: Vec::new(),
            nodeports: Vec::new(),
            filters: Vec::new(),
            node: NodeFacts::default(),
            hooks: Vec::new(),
            warnings: Vec::new(),
            kube_rules: 0,
            kube_chains: 0,
            declared: FxHashSet::default(),
            masq_pending: false,
            last_chain: None,
            other_hashed: FxHashSet::default(),
            pending_targets: FxHashMap::default(),
            builtin_positions: FxHashMap::default(),
            scratch: Vec::new(),
            node_hint_detector: None,
            node_hint_masq_all: false,
            family_mismatch: None,
        }
    }

    /// Handles one event; `text` is a rule's text when the reader has it (see
    /// [`super::save::read_dump_text`]).
    pub fn event(
        &mut self,
        event: Event<'_>,
        text: Option<&str>,
        line: u32,
    ) -> Result<(), InventoryError> {
        if !matches!(event, Event::Rule { .. }) {
            // A table, declaration, deletion or COMMIT may change what a name means.
            self.last_chain = None;
        }
        match event {
            Event::Table { name } => {
                self.table = match name {
                    "nat" => "nat",
                    "filter" => "filter",
                    "mangle" => "mangle",
                    _ => "other",
                };
                self.tables.push(name.to_owned());
                self.declared.clear();
                self.other_hashed.clear();
                self.builtin_positions.clear();
                Ok(())
            }
            Event::Chain { name, builtin } => {
                self.declare(name, builtin, line);
                Ok(())
            }
            Event::Delete { chain } => {
                if let ChainClass::Hashed(k, h) = classify(chain) {
                    if self.table == "nat" {
                        self.chains.remove(k, &h);
                    } else {
                        self.other_hashed.remove(&(k, h));
                    }
                } else {
                    self.declared.remove(chain);
                }
                Ok(())
            }
            Event::Rule { chain, rest } => self.rule(chain, rest, text, line),
            Event::Commit => self.commit(),
        }
    }

    fn declare(&mut self, name: &str, builtin: bool, line: u32) {
        let class = classify(name);
        if !matches!(class, ChainClass::Other) {
            self.kube_chains += 1;
        }
        match class {
            ChainClass::Hashed(k, h) if self.table == "nat" => {
                self.chains.declare(k, &h, line);
                if k == HKind::Xlb && !self.node.legacy.iter().any(|l| l == "KUBE-XLB-*") {
                    self.node.legacy.push("KUBE-XLB-*".to_owned());
                }
            }
            ChainClass::Hashed(k, h) => {
                self.other_hashed.insert((k, h));
                self.warn(
                    "unplaced-chain",
                    line,
                    name,
                    format!(
                        "per-service chain {name} in table {}, where kube-proxy never writes one",
                        self.table
                    ),
                );
            }
            ChainClass::Fixed(f) => {
                let tagged = format!("{}/{name}", self.table);
                match f {
                    Fixed::Marker if !self.node.markers.contains(&tagged) => {
                        self.node.markers.push(tagged)
                    }
                    Fixed::MarkDrop if !self.node.legacy.iter().any(|l| l == name) => {
                        self.node.legacy.push(name.to_owned())
                    }
                    _ => {}
                }
                self.declared.insert(name.to_owned());
            }
            ChainClass::IpvsMode => {
                let tagged = format!("{}/{name}", self.table);
                if !self.node.ipvs_mode.contains(&tagged) {
                    self.node.ipvs_mode.push(tagged);
                }
                self.declared.insert(name.to_owned());
            }
            ChainClass::OtherKube | ChainClass::Other => {
                let _ = builtin;
                self.declared.insert(name.to_owned());
            }
        }
    }

    fn is_declared(&mut self, name: &str, class: ChainClass) -> bool {
        match class {
            ChainClass::Hashed(k, h) if self.table == "nat" => self
                .chains
                .find_id(k, &h)
                .and_then(|id| self.chains.get(id))
                .is_some_and(|c| c.declared),
            ChainClass::Hashed(k, h) => self.other_hashed.contains(&(k, h)),
            _ => self.declared.contains(name) || is_builtin(name),
        }
    }

    fn commit(&mut self) -> Result<(), InventoryError> {
        self.masq_pending = false;
        self.chains.flush();
        let mut pending: Vec<(String, u32)> = std::mem::take(&mut self.pending_targets)
            .into_iter()
            .collect();
        pending.sort_by_key(|p| p.1);
        for (target, line) in pending {
            let class = classify(&target);
            if !self.is_declared(&target, class) {
                return Err(InventoryError::malformed(
                    &self.source,
                    line,
                    format!(
                        "rule jumps to chain {target}, which is not declared in table {} (iptables-restore would reject this dump)",
                        self.table
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn warn(&mut self, code: &str, line: u32, chain: &str, message: String) {
        let table = self.table;
        self.warn_in(code, table, line, chain, message);
    }

    pub(crate) fn warn_in(
        &mut self,
        code: &str,
        table: &str,
        line: u32,
        chain: &str,
        message: String,
    ) {
        self.warnings.push(Warning {
            code: code.to_owned(),
            family: self.family,
            line,
            table: table.to_owned(),
            chain: chain.to_owned(),
            message,
        });
    }

    fn rule(
        &mut self,
        chain: &str,
        rest: &[u8],
        rest_text: Option<&str>,
        line: u32,
    ) -> Result<(), InventoryError> {
        // The hot shapes of per-service and endpoint chains skip the general parser.
        if let Some((k, id)) = self.declared_nat_chain(chain)
            && let Some(hot) = rest_text.and_then(|t| scan::scan(k, t))
            && let Some(fact) = self.hot_fact(hot, line)
        {
            self.kube_rules += 1;
            if let Err(why) = self.place_hashed_fact(k, id, fact, line) {
                self.unplaced(chain, rest, line, &why);
            }
            return Ok(());
        }
        let class = classify(chain);
        if !self.is_declared(chain, class) {
            return Err(InventoryError::malformed(
                &self.source,
                line,
                format!(
                    "rule appended to chain {chain}, which is not declared in table {}",
                    self.table
                ),
            ));
        }
        let builtin_pos = if matches!(class, ChainClass::Other) {
            let p = self.builtin_positions.entry(chain.to_owned()).or_insert(0);
            *p += 1;
            let pos = *p;
            // Non-KUBE chains matter only where they jump into KUBE-* chains.
            if memchr::memmem::find(rest, b"KUBE-").is_none() {
                return Ok(());
            }
            Some(pos)
        } else {
            None
        };
        // The tokenizer's scratch buffer outlives single rules; re-borrow it for this one.
        let mut scratch: Vec<Token<'_>> = std::mem::take(&mut self.scratch)
            .into_iter()
            .map(|_| unreachable_token())
            .collect();
        let mut r = Rule::default();
        // The commented service rules (and any other rule of the same few options) are read
        // without the token vector; anything else by the general parser, from scratch.
        let parsed = if rest_text.is_some_and(|t| quick_rule(t, &mut r)) {
            Ok(())
        } else {
            r = Rule::default();
            parse_rule(rest, &mut scratch, &mut r)
        };
        let result = match parsed {
            Err(e) => {
                if builtin_pos.is_some() {
                    // Not ours; a rule we cannot read in another chain is not an error here.
                    Ok(())
                } else {
                    Err(InventoryError::malformed(
                        &self.source,
                        line,
                        format!("chain {chain}: {}", e.0),
                    ))
                }
            }
            Ok(()) => {
                self.kube_rules += 1;
                if let Some(t) = r.target {
                    self.note_target(t, line);
                }
                self.place(chain, class, &r, rest, line, builtin_pos);
                Ok(())
            }
        };
        scratch.clear();
        self.scratch = scratch.into_iter().map(|_| unreachable_token()).collect();
        result
    }

    fn place(
        &mut self,
        chain: &str,
        class: ChainClass,
        r: &Rule<'_>,
        rest: &[u8],
        line: u32,
        builtin_pos: Option<usize>,
    ) {
        let table = self.table;
        let placed: Result<(), String> = match (table, class) {
            (_, ChainClass::Other) => {
                let target = r.target();
                if target.starts_with("KUBE-") {
                    self.hooks.push(super::model::Hook {
                        table: table.to_owned(),
                        chain: chain.to_owned(),
                        target: target.to_owned(),
                        position: builtin_pos.unwrap_or(0),
                        line,
                    });
                    Ok(())
                } else {
                    // Mentions KUBE- elsewhere (a comment, an ipset name): not a kube-proxy jump.
                    Ok(())
                }
            }
            ("nat", ChainClass::Hashed(k, h)) => self.place_hashed(k, h, r, line),
            ("nat", ChainClass::Fixed(Fixed::Services)) => self.place_nat_services(r, line),
            ("nat", ChainClass::Fixed(Fixed::NodePorts)) => self.place_nat_nodeports(r, line),
            ("nat", ChainClass::Fixed(Fixed::Postrouting)) => place_postrouting(&mut self.node, r),
            ("nat", ChainClass::Fixed(Fixed::MarkMasq)) => match parse_mark(r) {
                Some(m) => {
                    self.node.masq_mark = Some(m);
                    Ok(())
                }
                None => Err("KUBE-MARK-MASQ rule that does not set a mark".into()),
            },
            ("nat", ChainClass::Fixed(Fixed::MarkDrop)) => match parse_mark(r) {
                Some(_) => Ok(()),
                None => Err("KUBE-MARK-DROP rule that does not set a mark".into()),
            },
            ("filter", ChainClass::Fixed(Fixed::Services)) => {
                self.place_filter_verdict(r, line, FilterWhere::Services)
            }
            ("filter", ChainClass::Fixed(Fixed::ExternalServices)) => {
                let at = if r.dst.is_some() {
                    FilterWhere::ExternalIp
                } else {
                    FilterWhere::NodePort
                };
                self.place_filter_verdict(r, line, at)
            }
            ("filter", ChainClass::Fixed(Fixed::NodePorts)) => self.place_health_check(r, line),
            ("filter", ChainClass::Fixed(Fixed::ProxyFirewall)) => {
                self.place_firewall_drop(r, line)
            }
            ("filter", ChainClass::Fixed(Fixed::Forward)) => place_forward(&mut self.node, r),
            ("filter", ChainClass::Fixed(Fixed::Firewall)) => place_kubelet_firewall(r),
            (_, ChainClass::IpvsMode) => Err("rule of an IPVS-mode kube-proxy chain".into()),
            (_, ChainClass::OtherKube) => Err(format!(
                "{chain} is not a chain kube-proxy's iptables mode writes"
            )),
            _ => Err(format!(
                "kube-proxy writes no rules to {chain} in table {table}"
            )),
        };
        if let Err(why) = placed {
            self.unplaced(chain, rest, line, &why);
        }
    }

    /// The kind and id of a declared per-service or endpoint chain of nat. Consecutive rules
    /// mostly share their chain, so the last answer is kept (by name) until the next event
    /// that is not a rule.
    fn declared_nat_chain(&mut self, chain: &str) -> Option<(HKind, ChainId)> {
        if let Some(last) = &self.last_chain
            && last.is(chain.as_bytes())
        {
            return Some((last.kind, last.id));
        }
        if self.table != "nat" {
            return None;
        }
        let ChainClass::Hashed(k, h) = classify(chain) else {
            return None;
        };
        let id = self.chains.find_id(k, &h)?;
        if !self.chains.get(id).is_some_and(|c| c.declared) {
            return None;
        }
        let mut name = [0u8; 32];
        if let Some(dst) = name.get_mut(..chain.len()) {
            dst.copy_from_slice(chain.as_bytes());
            self.last_chain = Some(LastChain {
                name,
                len: chain.len() as u8,
                kind: k,
                id,
            });
        }
        Some((k, id))
    }

    fn unplaced(&mut self, chain: &str, rest: &[u8], line: u32, why: &str) {
        let shown = String::from_utf8_lossy(&rest[..rest.len().min(240)]).into_owned();
        self.warn(
            "unplaced-rule",
            line,
            chain,
            format!("{why}: -A {chain} {shown}"),
        );
    }

    /// Remembers a `-j KUBE-…` target to check at COMMIT that it was declared. Jumps to
    /// per-service chains of nat are checked by the resolver when it follows them.
    fn note_target(&mut self, t: &str, line: u32) {
        if !t.starts_with("KUBE-") {
            return;
        }
        match classify(t) {
            ChainClass::Hashed(_, _) if self.table == "nat" => {}
            _ => {
                if !self.pending_targets.contains_key(t) {
                    self.pending_targets.insert(t.to_owned(), line);
                }
                self.masq_pending |= t == "KUBE-MARK-MASQ";
            }
        }
    }

    /// The fact of a rule the scanner recognised, exactly as `hashed_fact` would give it for
    /// the parsed rule; `None` (nothing changed) sends the rule to the general parser.
    fn hot_fact(&mut self, hot: Hot<'_>, line: u32) -> Option<Fact> {
        let fact = scan::fact(hot, &mut self.chains)?;
        if matches!(fact, Fact::Hairpin { .. }) && !self.masq_pending {
            self.note_target("KUBE-MARK-MASQ", line);
        }
        Some(fact)
    }

    fn place_hashed(&mut self, k: HKind, h: Hash, r: &Rule<'_>, line: u32) -> Result<(), String> {
        // Jump targets were recorded by `rule` (every `-j KUBE-…` in nat is).
        let fact = hashed_fact(k, r, &mut self.chains)?;
        let id = self.chains.id(k, &h);
        self.place_hashed_fact(k, id, fact, line)
    }

    /// Files one rule's meaning under its (declared) chain.
    fn place_hashed_fact(
        &mut self,
        k: HKind,
        id: ChainId,
        fact: Fact,
        line: u32,
    ) -> Result<(), String> {
        let Some(c) = self.chains.get_mut(id) else {
            return Err("rule of a chain that is not in the chain table".into());
        };
        if k == HKind::Sep {
            match fact {
                Fact::Dnat { ip, port, .. } if c.dnat.is_none() => {
                    c.dnat = Some((ip, port));
                    c.dnat_line = line;
                }
                Fact::Hairpin { .. } if c.hairpin_line == 0 => c.hairpin_line = line,
                Fact::Dnat { .. } | Fact::Hairpin { .. } => {
                    return Err("second rule of the same kind in an endpoint chain".into());
                }
                _ => return Err("rule that does not belong in an endpoint chain".into()),
            }
            return Ok(());
        }
        self.chains.push_fact(id, PlacedFact { fact, line });
        Ok(())
    }

    fn place_nat_services(&mut self, r: &Rule<'_>, line: u32) -> Result<(), String> {
        let comment = r.comment();
        if comment.starts_with("kubernetes service nodeports") || (r.target() == "KUBE-NODEPORTS") {
            if r.target() != "KUBE-NODEPORTS" {
                return Err("nodeports rule that does not jump to KUBE-NODEPORTS".into());
            }
            if let Some(d) = r.dst.filter(|d| !d.negated) {
                let ip = parse_host(d.value).ok_or("bad -d address")?;
                self.node.nodeport_addresses.push(ip);
                return Ok(());
            }
            if r.dst_type.is_some_and(|t| !t.negated && t.value == "LOCAL") {
                let mut excluded = Vec::new();
                if let Some(d) = r.dst.filter(|d| d.negated) {
                    excluded.push(parse_net(d.value).ok_or("bad ! -d network")?);
                }
                self.node.nodeport_all_local = Some(excluded);
                return Ok(());
            }
            return Err("nodeports rule with neither -d nor --dst-type LOCAL".into());
        }
        if !r.is_plain() {
            return Err(format!(
                "options kube-proxy does not write here ({})",
                r.unknown.join(" ")
            ));
        }
        let (spn, suffix) = comment
            .split_once(' ')
            .ok_or("no service comment (cannot identify the service)")?;
        let kind = match suffix {
            "cluster IP" => EntryKind::ClusterIp,
            "external IP" => EntryKind::ExternalIp,
            "loadbalancer IP" => EntryKind::LoadBalancerIp,
            _ => {
                return Err(format!(
                    "comment {comment:?} is not one kube-proxy writes in KUBE-SERVICES"
                ));
            }
        };
        let proto = r.proto.and_then(Protocol::parse).ok_or("no protocol")?;
        let dst = r.dst.filter(|d| !d.negated).ok_or("no destination")?;
        let ip = parse_host(dst.value).ok_or("destination is not a host address")?;
        if super::model::IpFamily::of(&ip) != self.family && self.family_mismatch.is_none() {
            self.family_mismatch = Some((line, ip));
        }
        let port = r
            .dport
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no single --dport")?;
        let target = match r.target() {
            "KUBE-MARK-MASQ" => EntryTarget::MarkMasq,
            t => match classify(t) {
                ChainClass::Hashed(k, h) if k != HKind::Sep => {
                    EntryTarget::Chain(k, h, self.chains.id(k, &h))
                }
                _ => return Err(format!("unexpected target {t}")),
            },
        };
        let cond = cond_of(r)?;
        self.entries.push(Entry {
            kind,
            spn: spn.to_owned(),
            proto,
            ip,
            port,
            target,
            cond,
            line,
        });
        Ok(())
    }

    fn place_nat_nodeports(&mut self, r: &Rule<'_>, line: u32) -> Result<(), String> {
        let proto = r.proto.and_then(Protocol::parse).ok_or("no protocol")?;
        let port = r
            .dport
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no single --dport")?;
        let target = match r.target() {
            "KUBE-MARK-MASQ" => EntryTarget::MarkMasq,
            t => match classify(t) {
                ChainClass::Hashed(k, h) if k != HKind::Sep => {
                    EntryTarget::Chain(k, h, self.chains.id(k, &h))
                }
                _ => return Err(format!("unexpected target {t}")),
            },
        };
        let localhost = match r.dst {
            None => false,
            Some(Neg {
                negated: false,
                value,
            }) if parse_net(value).is_some_and(|n| n.addr().is_loopback()) => true,
            Some(_) => return Err("unexpected -d in a NodePort rule".into()),
        };
        if !r.is_plain() {
            return Err(format!(
                "options kube-proxy does not write here ({})",
                r.unknown.join(" ")
            ));
        }
        let spn = r
            .comment
            .as_deref()
            .map(|c| c.trim_end_matches(':').to_owned());
        self.nodeports.push(NodePortEntry {
            spn,
            proto,
            port,
            target,
            localhost,
            line,
        });
        Ok(())
    }

    fn place_filter_verdict(
        &mut self,
        r: &Rule<'_>,
        line: u32,
        at: FilterWhere,
    ) -> Result<(), String> {
        let comment = r.comment();
        let (spn, drop) = if let Some(s) = comment.strip_suffix(" has no local endpoints") {
            (s, true)
        } else if let Some(s) = comment.strip_suffix(" has no endpoints") {
            (s, false)
        } else {
            return Err(format!(
                "comment {comment:?} is not one kube-proxy writes in this chain"
            ));
        };
        match (r.target(), drop) {
            ("REJECT", false) | ("DROP", true) => {}
            (t, _) => return Err(format!("target {t} does not match the comment")),
        }
        if !r.is_plain() {
            return Err(format!(
                "options kube-proxy does not write here ({})",
                r.unknown.join(" ")
            ));
        }
        let proto = r.proto.and_then(Protocol::parse).ok_or("no protocol")?;
        let port = r
            .dport
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no single --dport")?;
        let ip = match at {
            FilterWhere::NodePort => {
                if !r.dst_type.is_some_and(|t| !t.negated && t.value == "LOCAL") {
                    return Err("NodePort verdict without --dst-type LOCAL".into());
                }
                None
            }
            _ => Some(
                r.dst
                    .filter(|d| !d.negated)
                    .and_then(|d| parse_host(d.value))
                    .ok_or("no destination")?,
            ),
        };
        self.filters.push(FilterFact::NoEndpoints {
            spn: spn.to_owned(),
            proto,
            at,
            ip,
            port,
            drop,
            line,
        });
        Ok(())
    }

    fn place_health_check(&mut self, r: &Rule<'_>, line: u32) -> Result<(), String> {
        let spn = r
            .comment()
            .strip_suffix(" health check node port")
            .ok_or("not a health check node port rule")?;
        if r.target() != "ACCEPT" {
            return Err("health check node port rule that does not ACCEPT".into());
        }
        let port = r
            .dport
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no single --dport")?;
        self.filters.push(FilterFact::HealthCheck {
            spn: spn.to_owned(),
            port,
            line,
        });
        Ok(())
    }

    fn place_firewall_drop(&mut self, r: &Rule<'_>, line: u32) -> Result<(), String> {
        let comment = r.comment();
        let (spn, _) = comment
            .split_once(" traffic not accepted by ")
            .ok_or("not a load-balancer firewall rule")?;
        if r.target() != "DROP" {
            return Err("firewall rule that does not DROP".into());
        }
        let proto = r.proto.and_then(Protocol::parse).ok_or("no protocol")?;
        let port = r
            .dport
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or("no single --dport")?;
        let ip = r
            .dst
            .filter(|d| !d.negated)
            .and_then(|d| parse_host(d.value))
            .ok_or("no destination")?;
        self.filters.push(FilterFact::FirewallDrop {
            spn: spn.to_owned(),
            proto,
            ip,
            port,
            line,
        });
        Ok(())
    }
}

// `Token` borrows the dump; the collector keeps only the allocation between rules. This
// placeholder is never read: the vector is cleared before it is reused.
fn unreachable_token<'a>() -> Token<'a> {
    Token {
        raw: &[],
        escaped: false,
    }
}

pub(super) fn hashed_fact(
    k: HKind,
    r: &Rule<'_>,
    chains: &mut super::chains::ChainTable,
) -> Result<Fact, String> {
    if !r.is_plain() {
        return Err(format!(
            "options kube-proxy does not write here ({})",
            r.unknown.join(" ")
        ));
    }
    let target = r.target();
    if target.is_empty() {
        return if matches!(k, HKind::Fw) {
            Ok(Fact::FallThrough)
        } else {
            Err("rule without a target".into())
        };
    }
    if target == "KUBE-MARK-MASQ" {
        if k == HKind::Sep {
            let src = r
                .src
                .filter(|s| !s.negated)
                .ok_or("endpoint-chain masquerade rule without -s")?;
            let ip = parse_host(src.value).ok_or("endpoint-chain masquerade -s is not a host")?;
            return Ok(Fact::Hairpin { ip });
        }
        return Ok(Fact::MarkMasq { cond: cond_of(r)? });
    }
    if target == "KUBE-MARK-DROP" {
        return Ok(Fact::MarkDrop);
    }
    if target == "DNAT" {
        if k != HKind::Sep {
            return Err("DNAT outside an endpoint chain".into());
        }
        let to = r.to_destination.ok_or("DNAT without --to-destination")?;
        let (ip, port) =
            parse_endpoint(to).ok_or_else(|| format!("--to-destination {to} is not ip:port"))?;
        return Ok(Fact::Dnat {
            ip,
            port,
            proto: r.proto.and_then(Protocol::parse),
            recent_set: r.recent_set,
        });
    }
    let ChainClass::Hashed(tk, th) = classify(target) else {
        return Err(format!("unexpected target {target}"));
    };
    if r.recent_rcheck {
        let name = r.recent_name.ok_or("recent --rcheck without --name")?;
        if name != target || tk != HKind::Sep {
            return Err("affinity rule whose recent list is not its target endpoint chain".into());
        }
        let seconds = r
            .recent_seconds
            .and_then(|s| s.parse().ok())
            .ok_or("recent --rcheck without --seconds")?;
        return Ok(Fact::Affinity { to: th, seconds });
    }
    if k == HKind::Fw
        && let Some(src) = r.src.filter(|s| !s.negated)
    {
        let net = parse_net(src.value).ok_or("bad -s network")?;
        return Ok(Fact::FwSource {
            src: net,
            kind: tk,
            to: chains.id(tk, &th),
        });
    }

    let probability = match r.probability {
        Some(p) => Some(quantize_probability(
            super::num::probability(p)
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or("bad --probability")?,
        )),
        None => None,
    };
    Ok(Fact::Jump {
        kind: tk,
        to: chains.id(tk, &th),
        probability,
        cond: cond_of(r)?,
    })
}

/// Condition of a rule from its source / interface / addrtype matches.
fn cond_of(r: &Rule<'_>) -> Result<Cond, String> {
    if let Some(t) = r.src_type {
        if t.negated || t.value != "LOCAL" || r.src.is_some() || r.in_iface.is_some() {
            return Err("unexpected --src-type match".into());
        }
        return Ok(Cond::SrcTypeLocal);
    }
    let det = match (r.src, r.in_iface) {
        (None, None) => return Ok(Cond::Always),
        (Some(s), None) => (
            s.negated,
            LocalDetector::Cidr {
                cidr: parse_net(s.value).ok_or("bad -s network")?,
            },
        ),
        (None, Some(i)) => {
            let d = match i.value.strip_suffix('+') {
                Some(p) => LocalDetector::InterfaceNamePrefix {
                    prefix: p.to_owned(),
                },
                None => LocalDetector::BridgeInterface {
                    interface: i.value.to_owned(),
                },
            };
            (i.negated, d)
        }
        (Some(_), Some(_)) => return Err("both -s and -i".into()),
    };
    Ok(if det.0 {
        Cond::NotLocal(Box::new(det.1))
    } else {
        Cond::Local(Box::new(det.1))
    })
}

fn place_postrouting(node: &mut NodeFacts, r: &Rule<'_>) -> Result<(), String> {
    match r.target() {
        "RETURN" if r.mark.is_some_and(|m| m.negated) => Ok(()),
        "MARK" if r.xor_mark.is_some() || r.set_xmark.is_some() => Ok(()),
        "MASQUERADE" => {
            node.random_fully |= r.random_fully;
            Ok(())
        }
        t => Err(format!("unexpected target {t} in KUBE-POSTROUTING")),
    }
}

fn place_forward(node: &mut NodeFacts, r: &Rule<'_>) -> Result<(), String> {
    match (r.target(), r.ctstate, r.mark) {
        ("DROP", Some(s), _) if s.value == "INVALID" && !s.negated => {
            node.drops_invalid = true;
            Ok(())
        }
        ("ACCEPT", None, Some(_)) => Ok(()),
        ("ACCEPT", Some(s), None) if s.value == "RELATED,ESTABLISHED" => Ok(()),
        // Older versions (≤ 1.22) accepted pod-CIDR forwarding with a comment.
        ("ACCEPT", Some(_), None) if r.comment().starts_with("kubernetes forwarding") => Ok(()),
        _ => Err("not one of KUBE-FORWARD's rules".into()),
    }
}

fn place_kubelet_firewall(r: &Rule<'_>) -> Result<(), String> {
    match r.target() {
        "DROP" if r.comment() == "block incoming localnet connections" => Ok(()),
        "DROP" if r.mark.is_some() => Ok(()),
        _ => Err("not one of KUBE-FIREWALL's rules".into()),
    }
}

/// The mark a MARK rule sets: `--or-mark M` or `--set-xmark M/M` (how iptables-save prints it).
fn parse_mark(r: &Rule<'_>) -> Option<u32> {
    if r.target() != "MARK" {
        return None;
    }
    let num = |s: &str| -> Option<u32> {
        match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    };
    if let Some(m) = r.or_mark {
        return num(m);
    }
    let (v, m) = r.set_xmark?.split_once('/')?;
    let (v, m) = (num(v)?, num(m)?);
    (v == m).then_some(v)
}

/// `10.0.0.1`, `10.0.0.1/32`, `fd00::1/128` → the address; a wider mask is not a host.
pub fn parse_host(s: &str) -> Option<IpAddr> {
    let fast = match s.as_bytes() {
        [a @ .., b'/', b'3', b'2'] => super::num::ipv4(a),
        a => super::num::ipv4(a),
    };
    if let Some(ip) = fast {
        return Some(IpAddr::V4(ip));
    }
    match s.split_once('/') {
        None => s.parse().ok(),
        Some((a, m)) => {
            let ip: IpAddr = a.parse().ok()?;
            let full = if ip.is_ipv4() { "32" } else { "128" };
            (m == full).then_some(ip)
        }
    }
}

/// `10.0.0.0/8`, or a bare address as a host network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// `10.1.2.3:80` or `[fd00::1]:80`.
pub fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    if let (Some(ip), Some(port)) = (
        super::num::ipv4(host.as_bytes()),
        super::num::port(port.as_bytes()),
    ) {
        return Some((IpAddr::V4(ip), port));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.parse().ok()?, port.parse().ok()?))
}

/// Formats an endpoint as kube-proxy does (`net.JoinHostPort`).
pub fn format_endpoint(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A `statistic --probability` value as the kernel keeps it: xt_statistic stores
/// `lround(p * 2^31)` and iptables-save prints it back with 11 decimals, so kube-proxy's
/// `0.3333333333` comes back as `0.33333333349`. Both map to the same quantum here, rounded to
/// kube-proxy's 10 decimals for display.
pub fn normalize_probability(p: f64) -> f64 {
    probability_of_quantum(quantize_probability(p))
}

/// `lround(p * 2^31)`, as xt_statistic stores it.
pub fn quantize_probability(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 2_147_483_648.0).round() as u32
}

/// The probability of a quantum, rounded to kube-proxy's 10 decimals.
pub fn probability_of_quantum(q: u32) -> f64 {
    let v = f64::from(q) / 2_147_483_648.0;
    (v * 1e10).round() / 1e10
}
