//! The interpreter's own reading of a dump: every rule of the nat and filter tables, with the
//! conditions and target the kernel would evaluate, in chain order.
//!
//! It re-reads the dump text (the format layer `inventory::save`: `read_dump`, `tokenize`,
//! `unescape`) and never looks at the inventory's resolved model, which is what the translator
//! used: that is what makes the check independent. It does not use `inventory::rule` either:
//! that reader keeps only the options kube-proxy writes (no `-o`, `--match-set`, `--dports`,
//! `physdev`), while an interpreter must see every option to know when it cannot decide. It knows iptables' match modules, not
//! kube-proxy's layout. An option it does not model becomes [`Cond::Unknown`], which the
//! walker reports when the rule is reached; it is never guessed true or false.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::inventory::InventoryError;
use crate::inventory::save::{Event, read_dump, tokenize, unescape};

/// A value with an optional `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neg<T> {
    /// `!` was given.
    pub negated: bool,
    /// The value.
    pub value: T,
}

/// One condition of a rule (all must hold).
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `-s` (address or CIDR).
    Src(Neg<IpNet>),
    /// `-d`.
    Dst(Neg<IpNet>),
    /// `-p` (lowercase name or number as written).
    Proto(Neg<String>),
    /// `-i` (a trailing `+` is a prefix match).
    InIface(Neg<String>),
    /// `-o`.
    OutIface(Neg<String>),
    /// `--dport` / `--dports` (inclusive ranges).
    Dport(Neg<Vec<(u16, u16)>>),
    /// `-m addrtype --src-type`.
    SrcType(Neg<String>),
    /// `-m addrtype --dst-type`.
    DstType(Neg<String>),
    /// `-m mark --mark value/mask`.
    Mark(Neg<(u32, u32)>),
    /// `-m conntrack --ctstate` / `-m state --state` (upper-case state names).
    CtState(Neg<Vec<String>>),
    /// `-m statistic --mode random --probability p`, `-m limit`: a matter of chance or rate,
    /// so both outcomes are possible.
    Random,
    /// `-m recent --rcheck [--seconds N]`: both outcomes are possible; records affinity.
    RecentCheck {
        /// `--seconds`, 0 when absent.
        seconds: u32,
    },
    /// `-m recent --set`: always true; records that the source is remembered.
    RecentSet,
    /// `-m set [!] --match-set NAME dir[,dir…]`.
    Set(Neg<(String, Vec<Dir>)>),
    /// `-m physdev`: the packet is never bridged, so this is a constant.
    Physdev(bool),
    /// Anything the interpreter does not model, verbatim.
    Unknown(String),
}

/// A direction flag of `--match-set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `src`
    Src,
    /// `dst`
    Dst,
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `-j`: counters only.
    None,
    /// `ACCEPT`
    Accept,
    /// `DROP`
    Drop,
    /// `REJECT`
    Reject,
    /// `RETURN`
    Return,
    /// `DNAT --to-destination ip[:port]`.
    Dnat(IpAddr, Option<u16>),
    /// `MARK`: `mark = (mark & !clear) ^ xor`.
    Mark {
        /// Bits cleared first.
        clear: u32,
        /// Bits toggled after.
        xor: u32,
    },
    /// `MASQUERADE` or `SNAT`: the source is rewritten.
    Masquerade,
    /// Non-terminating targets that change nothing the check compares (`LOG`, `NFLOG`…).
    Continue,
    /// `-j NAME`: a user chain, or an extension target the walker reports as unknown when no
    /// chain of that name exists (`CT`, `TPROXY`…).
    Jump(String),
    /// `-g CHAIN`
    Goto(String),
    /// A target the interpreter does not model.
    Unknown(String),
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub conds: Vec<Cond>,
    /// Target.
    pub target: Target,
    /// 1-based line in the dump (0 for rules the plan added).
    pub line: u32,
}

/// A chain: its rules, and the policy of a built-in chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chain {
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Policy of a built-in chain (`ACCEPT`, `DROP`); `None` for user chains.
    pub policy: Option<String>,
    /// Rules that can match any destination (no `-d` with a single address), by index.
    any_dst: Vec<usize>,
    /// Rules with `-d <one address>`, by that address.
    by_dst: HashMap<IpAddr, Vec<usize>>,
}

impl Chain {
    /// The first rule at or after `from` that can match a packet to `dst`. Rules whose `-d` is
    /// another single address cannot, and skipping them is exactly the kernel's linear scan
    /// without the comparisons (KUBE-SERVICES has one rule per VIP and port).
    pub fn next_candidate(&self, from: usize, dst: &IpAddr) -> usize {
        let after = |v: &[usize]| {
            let k = v.partition_point(|i| *i < from);
            v.get(k).copied().unwrap_or(usize::MAX)
        };
        let a = after(&self.any_dst);
        let b = self.by_dst.get(dst).map_or(usize::MAX, |v| after(v));
        a.min(b).min(self.rules.len())
    }

    fn reindex(&mut self) {
        self.any_dst.clear();
        self.by_dst.clear();
        for (i, r) in self.rules.iter().enumerate() {
            let host = r.conds.iter().find_map(|c| match c {
                Cond::Dst(n) if !n.negated && n.value.prefix_len() == n.value.max_prefix_len() => {
                    Some(n.value.addr())
                }
                _ => None,
            });
            match host {
                Some(ip) => self.by_dst.entry(ip).or_default().push(i),
                None => self.any_dst.push(i),
            }
        }
    }
}

/// The nat and filter tables of one family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    /// table → chain name → chain (nested so lookups by `&str` do not allocate).
    pub chains: HashMap<String, HashMap<String, Chain>>,
}

/// Tables the interpreter walks.
const TABLES: [&str; 2] = ["nat", "filter"];

impl Ruleset {
    /// Reads a dump (restore input or `iptables-save` output).
    pub fn parse(name: &str, text: &[u8]) -> Result<Ruleset, InventoryError> {
        let mut rs = Ruleset::default();
        let mut table = String::new();
        read_dump(name, text, &TABLES, |ev, line| {
            match ev {
                Event::Table { name } => table = name.to_owned(),
                Event::Chain { name, builtin } => {
                    let c = rs.chain_mut(&table, name);
                    if builtin {
                        c.policy = Some("ACCEPT".into());
                    }
                }
                Event::Rule { chain, rest } => {
                    let rule = parse_rule(rest, line);
                    rs.chain_mut(&table, chain).rules.push(rule);
                }
                Event::Delete { chain } => {
                    if let Some(t) = rs.chains.get_mut(&table) {
                        t.remove(chain);
                    }
                }
                Event::Commit => {}
            }
            Ok(())
        })?;
        // `read_dump` reports that a chain is built in, not its policy: read the policies of
        // the declarations (`:INPUT DROP [0:0]`) here.
        let mut table = "";
        for line in text.split(|b| *b == b'\n') {
            let line = std::str::from_utf8(line).unwrap_or("").trim_end();
            if let Some(t) = line.strip_prefix('*') {
                table = t;
            } else if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                if let (Some(chain), Some(policy)) = (parts.next(), parts.next())
                    && policy != "-"
                    && let Some(c) = rs.chains.get_mut(table).and_then(|t| t.get_mut(chain))
                {
                    c.policy = Some(policy.to_owned());
                }
            }
        }
        for c in rs.chains.values_mut().flat_map(|t| t.values_mut()) {
            c.reindex();
        }
        Ok(rs)
    }

    /// Adds (or replaces) a chain from rule texts as `iptables-restore` takes them after
    /// `-A NAME`.
    pub fn set_chain(&mut self, table: &str, chain: &str, rules: &[String]) {
        let c = self.chain_mut(table, chain);
        c.rules = rules.iter().map(|r| parse_rule(r.as_bytes(), 0)).collect();
        c.reindex();
    }

    /// Inserts a rule at position 1 of a chain (`-I CHAIN 1 …`).
    pub fn insert_first(&mut self, table: &str, chain: &str, rule: &str) {
        let c = self.chain_mut(table, chain);
        if c.policy.is_none() && is_builtin(chain) {
            c.policy = Some("ACCEPT".into());
        }
        c.rules.insert(0, parse_rule(rule.as_bytes(), 0));
        c.reindex();
    }

    /// A chain, created if missing.
    fn chain_mut(&mut self, table: &str, chain: &str) -> &mut Chain {
        self.chains
            .entry(table.to_owned())
            .or_default()
            .entry(chain.to_owned())
            .or_default()
    }

    /// A chain, if declared.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.chains.get(table).and_then(|t| t.get(chain))
    }
}

fn is_builtin(chain: &str) -> bool {
    matches!(
        chain,
        "PREROUTING" | "INPUT" | "FORWARD" | "OUTPUT" | "POSTROUTING"
    )
}

/// Parses an address or CIDR as iptables does (`1.2.3.4`, `1.2.3.4/32`, `::1/128`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `value[/mask]`; a missing mask is all ones.
fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

fn parse_ports(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|p| match p.split_once(':') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let v = p.parse().ok()?;
                Some((v, v))
            }
        })
        .collect()
}

/// `ip`, `ip:port`, `[v6]:port` or a bare v6 address.
fn parse_to_destination(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host.parse().ok()?, Some(port.parse().ok()?)));
    }
    let (host, port) = s.rsplit_once(':')?;
    Some((host.parse().ok()?, Some(port.parse().ok()?)))
}

/// Parses the text after `-A CHAIN`. Never fails: what cannot be read becomes an unknown
/// condition, reported if a packet reaches the rule.
pub fn parse_rule(rest: &[u8], line: u32) -> Rule {
    let mut toks = Vec::new();
    let mut rule = Rule {
        conds: Vec::new(),
        target: Target::None,
        line,
    };
    if let Err(e) = tokenize(rest, &mut toks) {
        rule.conds
            .push(Cond::Unknown(format!("unreadable rule: {e}")));
        return rule;
    }
    let words: Vec<String> = toks
        .iter()
        .map(|t| {
            let b = if t.escaped {
                unescape(t.raw)
            } else {
                t.raw.to_vec()
            };
            String::from_utf8_lossy(&b).into_owned()
        })
        .collect();
    let mut p = Parser {
        words: &words,
        i: 0,
        rule: &mut rule,
        target_name: String::new(),
        target_opts: Vec::new(),
    };
    p.run();
    let (name, opts) = (p.target_name.clone(), p.target_opts.clone());
    rule.target = target(&name, &opts, &mut rule.conds);
    rule
}

struct Parser<'w, 'r> {
    words: &'w [String],
    i: usize,
    rule: &'r mut Rule,
    target_name: String,
    target_opts: Vec<(String, Vec<String>)>,
}

impl Parser<'_, '_> {
    fn value(&mut self) -> Option<String> {
        let v = self.words.get(self.i).cloned();
        if v.is_some() {
            self.i += 1;
        }
        v
    }

    fn unknown(&mut self, what: String) {
        self.rule.conds.push(Cond::Unknown(what));
    }

    fn run(&mut self) {
        let mut neg = false;
        let mut jumped = false;
        while self.i < self.words.len() {
            let w = self.words[self.i].clone();
            self.i += 1;
            if w == "!" {
                neg = true;
                continue;
            }
            let negated = std::mem::take(&mut neg);
            match w.as_str() {
                "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                    let v = self.value().unwrap_or_default();
                    match parse_net(&v) {
                        Some(net) if w.starts_with("-s") || w == "--source" || w == "--src" => {
                            self.rule.conds.push(Cond::Src(Neg {
                                negated,
                                value: net,
                            }))
                        }
                        Some(net) => self.rule.conds.push(Cond::Dst(Neg {
                            negated,
                            value: net,
                        })),
                        None => self.unknown(format!("{w} {v}")),
                    }
                }
                "-p" | "--protocol" => {
                    let v = self.value().unwrap_or_default().to_ascii_lowercase();
                    self.rule.conds.push(Cond::Proto(Neg { negated, value: v }));
                }
                "-i" | "--in-interface" => {
                    let v = self.value().unwrap_or_default();
                    self.rule
                        .conds
                        .push(Cond::InIface(Neg { negated, value: v }));
                }
                "-o" | "--out-interface" => {
                    let v = self.value().unwrap_or_default();
                    self.rule
                        .conds
                        .push(Cond::OutIface(Neg { negated, value: v }));
                }
                "-m" | "--match" => {
                    // Module names only select option parsers; the options below are unique
                    // across the modules the interpreter knows.
                    let m = self.value().unwrap_or_default();
                    if !matches!(
                        m.as_str(),
                        "tcp"
                            | "udp"
                            | "sctp"
                            | "multiport"
                            | "addrtype"
                            | "mark"
                            | "conntrack"
                            | "state"
                            | "statistic"
                            | "recent"
                            | "set"
                            | "physdev"
                            | "comment"
                            | "nfacct"
                            | "limit"
                    ) {
                        self.unknown(format!("-m {m}"));
                    }
                }
                "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                    let v = self.value().unwrap_or_default();
                    match parse_ports(&v) {
                        Some(r) => self.rule.conds.push(Cond::Dport(Neg { negated, value: r })),
                        None => self.unknown(format!("{w} {v}")),
                    }
                }
                "--src-type" | "--dst-type" => {
                    let v = self.value().unwrap_or_default();
                    if w == "--src-type" {
                        self.rule
                            .conds
                            .push(Cond::SrcType(Neg { negated, value: v }));
                    } else {
                        self.rule
                            .conds
                            .push(Cond::DstType(Neg { negated, value: v }));
                    }
                }
                "--mark" => {
                    let v = self.value().unwrap_or_default();
                    match parse_mark(&v) {
                        Some(m) => self.rule.conds.push(Cond::Mark(Neg { negated, value: m })),
                        None => self.unknown(format!("--mark {v}")),
                    }
                }
                "--ctstate" | "--state" => {
                    let v = self.value().unwrap_or_default();
                    let states = v.split(',').map(|s| s.to_ascii_uppercase()).collect();
                    self.rule.conds.push(Cond::CtState(Neg {
                        negated,
                        value: states,
                    }));
                }
                "--mode" => {
                    let v = self.value().unwrap_or_default();
                    if v != "random" {
                        self.unknown(format!("--mode {v}"));
                    }
                }
                "--limit" | "--limit-burst" => {
                    self.value();
                    if w == "--limit" {
                        self.rule.conds.push(Cond::Random);
                    }
                }
                "--probability" => {
                    self.value();
                    if negated {
                        self.unknown("! --probability".into());
                    } else {
                        self.rule.conds.push(Cond::Random);
                    }
                }
                "--rcheck" => {
                    if negated {
                        self.unknown("! --rcheck".into());
                    } else {
                        self.rule.conds.push(Cond::RecentCheck { seconds: 0 });
                    }
                }
                "--seconds" => {
                    let v = self.value().unwrap_or_default();
                    let secs = v.parse().ok();
                    let last = self
                        .rule
                        .conds
                        .iter_mut()
                        .rev()
                        .find(|c| matches!(c, Cond::RecentCheck { .. }));
                    match (last, secs) {
                        (Some(Cond::RecentCheck { seconds }), Some(s)) => *seconds = s,
                        // `--seconds` printed before `--rcheck` (live form order).
                        (None, Some(s)) => self.rule.conds.push(Cond::RecentCheck { seconds: s }),
                        _ => self.unknown(format!("--seconds {v}")),
                    }
                }
                "--set" => {
                    // recent's --set (ipset's is --match-set).
                    self.rule.conds.push(Cond::RecentSet);
                }
                // recent defaults (iptables-save prints them back), comment, nfacct: no effect.
                "--reap" | "--rsource" => {}
                "--name" | "--comment" | "--nfacct-name" => {
                    self.value();
                }
                "--mask" => {
                    let v = self.value().unwrap_or_default();
                    if v != "255.255.255.255" && v != "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" {
                        self.unknown(format!("--mask {v}"));
                    }
                }
                "--match-set" => {
                    let name = self.value().unwrap_or_default();
                    let dirs_s = self.value().unwrap_or_default();
                    let dirs: Option<Vec<Dir>> = dirs_s
                        .split(',')
                        .map(|d| match d {
                            "src" => Some(Dir::Src),
                            "dst" => Some(Dir::Dst),
                            _ => None,
                        })
                        .collect();
                    match dirs {
                        Some(d) if !name.is_empty() => {
                            self.rule.conds.push(Cond::Set(Neg {
                                negated,
                                value: (name, d),
                            }));
                        }
                        _ => self.unknown(format!("--match-set {name} {dirs_s}")),
                    }
                }
                "--physdev-is-in" | "--physdev-is-out" | "--physdev-is-bridged" => {
                    // Not bridged: the flag is false, its negation true.
                    self.rule.conds.push(Cond::Physdev(negated));
                }
                "--physdev-in" | "--physdev-out" => {
                    self.value();
                    self.rule.conds.push(Cond::Physdev(negated));
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    let t = self.value().unwrap_or_default();
                    self.target_name = if w == "-g" || w == "--goto" {
                        format!("goto:{t}")
                    } else {
                        t
                    };
                    jumped = true;
                }
                _ if jumped && w.starts_with("--") => {
                    // A target option: collect its values (words up to the next option).
                    let mut vals = Vec::new();
                    while let Some(v) = self.words.get(self.i) {
                        if v.starts_with("--") || v == "!" {
                            break;
                        }
                        vals.push(v.clone());
                        self.i += 1;
                    }
                    self.target_opts.push((w, vals));
                }
                _ => {
                    let mut text = w.clone();
                    while let Some(v) = self.words.get(self.i) {
                        if v.starts_with('-') || v == "!" {
                            break;
                        }
                        text.push(' ');
                        text.push_str(v);
                        self.i += 1;
                    }
                    self.unknown(text);
                }
            }
        }
        if neg {
            self.unknown("dangling !".into());
        }
    }
}

fn opt<'a>(opts: &'a [(String, Vec<String>)], name: &str) -> Option<&'a str> {
    opts.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn target(name: &str, opts: &[(String, Vec<String>)], conds: &mut Vec<Cond>) -> Target {
    // Target options the interpreter reads; any other one makes the target unknown.
    let known: &[&str] = match name {
        "DNAT" => &["--to-destination"],
        "MARK" => &[
            "--set-xmark",
            "--set-mark",
            "--or-mark",
            "--xor-mark",
            "--and-mark",
        ],
        "MASQUERADE" | "SNAT" => &["--random-fully", "--random", "--to-source"],
        "REJECT" => &["--reject-with"],
        "LOG" => &["--log-prefix", "--log-level"],
        _ => &[],
    };
    if let Some((o, _)) = opts.iter().find(|(o, _)| !known.contains(&o.as_str())) {
        conds.push(Cond::Unknown(format!("-j {name} {o}")));
    }
    match name {
        "" => Target::None,
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "REJECT" => Target::Reject,
        "RETURN" => Target::Return,
        "MASQUERADE" | "SNAT" => Target::Masquerade,
        "LOG" | "NFLOG" => Target::Continue,
        "DNAT" => match opt(opts, "--to-destination").and_then(parse_to_destination) {
            Some((ip, port)) => Target::Dnat(ip, port),
            None => Target::Unknown("DNAT without a readable --to-destination".into()),
        },
        "MARK" => {
            let m = |o: &str| opt(opts, o).and_then(parse_mark);
            if let Some((v, mask)) = m("--set-xmark") {
                Target::Mark {
                    clear: mask,
                    xor: v,
                }
            } else if let Some((v, mask)) = m("--set-mark") {
                // "Zeroes out the bits given by mask and ORs value into the mark"
                // (iptables-extensions(8)): clear mask and value's bits, then set value's.
                Target::Mark {
                    clear: mask | v,
                    xor: v,
                }
            } else if let Some((v, _)) = m("--or-mark") {
                Target::Mark { clear: v, xor: v }
            } else if let Some((v, _)) = m("--xor-mark") {
                Target::Mark { clear: 0, xor: v }
            } else if let Some((v, _)) = m("--and-mark") {
                Target::Mark { clear: !v, xor: 0 }
            } else {
                Target::Unknown("MARK without a readable value".into())
            }
        }
        _ if name.starts_with("goto:") => Target::Goto(name[5..].to_owned()),
        _ => Target::Jump(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        parse_rule(s.as_bytes(), 1)
    }

    #[test]
    fn restore_and_live_forms_give_the_same_conditions() {
        let a = r(
            r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-X"#,
        );
        let b = r(
            r#"-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-X"#,
        );
        let mut ac = a.conds.clone();
        let mut bc = b.conds.clone();
        let key = |c: &Cond| format!("{c:?}");
        ac.sort_by_key(key);
        bc.sort_by_key(key);
        assert_eq!(ac, bc);
        assert_eq!(a.target, Target::Jump("KUBE-SVC-X".into()));
    }

    #[test]
    fn mark_targets_reduce_to_clear_and_xor() {
        assert_eq!(
            r("-j MARK --or-mark 0x4000").target,
            Target::Mark {
                clear: 0x4000,
                xor: 0x4000
            }
        );
        assert_eq!(
            r("-j MARK --set-mark 0x10/0xff").target,
            Target::Mark {
                clear: 0xff,
                xor: 0x10
            }
        );
        assert_eq!(
            r("-j MARK --set-xmark 0x4000/0x0").target,
            Target::Mark {
                clear: 0,
                xor: 0x4000
            }
        );
    }

    #[test]
    fn match_set_takes_a_name_and_directions() {
        let x = r("-m set ! --match-set S dst,dst -j ACCEPT");
        assert_eq!(
            x.conds,
            [Cond::Set(Neg {
                negated: true,
                value: ("S".into(), vec![Dir::Dst, Dir::Dst])
            })]
        );
    }

    #[test]
    fn unknown_matches_and_target_options_are_kept_not_guessed() {
        let x = r("-m hashlimit --hashlimit-upto 5/sec -j LOG --log-prefix x");
        assert!(x.conds.iter().any(|c| matches!(c, Cond::Unknown(_))));
        let y = r("-j CT --notrack");
        assert!(y.conds.iter().any(|c| matches!(c, Cond::Unknown(_))));
    }

    #[test]
    fn dnat_destinations_of_both_families_are_read() {
        assert_eq!(
            r("-p tcp -j DNAT --to-destination [fd00:10::1]:8080").target,
            Target::Dnat("fd00:10::1".parse().unwrap(), Some(8080))
        );
        assert_eq!(
            r("-p tcp -j DNAT --to-destination 10.0.0.1:80").target,
            Target::Dnat("10.0.0.1".parse().unwrap(), Some(80))
        );
    }
}
