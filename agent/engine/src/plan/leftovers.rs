//! kube-proxy's iptables-mode leftovers on a node whose kube-proxy now runs in IPVS mode, and
//! the `iptables-restore --noflush` input that removes them without touching what IPVS mode
//! uses (`finalize`, DESIGN.md "finalize"; docs/finalize.md).
//!
//! Switching kube-proxy from iptables to IPVS mode does not clean the old mode's rules
//! (kube-proxy-facts.md §0.3: `platformCleanup` runs only for nftables switches); the stale
//! filter REJECTs are the documented failure (kubernetes/kubernetes#102314). Which chains are
//! leftovers is read from kube-proxy's sources, not from our own output:
//! - pkg/proxy/iptables/proxier.go `CleanupLeftovers` flushes and deletes nat KUBE-SERVICES,
//!   KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-PROXY-CANARY and every chain
//!   `isServiceChainName` accepts (KUBE-SVC-, KUBE-SVL-, KUBE-SEP-, KUBE-FW-, KUBE-EXT-, and the
//!   pre-1.26 KUBE-XLB-); filter KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD,
//!   KUBE-NODEPORTS, KUBE-PROXY-FIREWALL, KUBE-PROXY-CANARY; mangle KUBE-PROXY-CANARY.
//! - pkg/proxy/ipvs/proxier.go (`iptablesChains`, kube-proxy-facts.md §2.5; our model in
//!   `ipvs_rules.rs`) writes nat KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ and filter
//!   KUBE-FORWARD, KUBE-PROXY-FIREWALL itself: those are shared and stay. So do kubelet's
//!   KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT and the legacy KUBE-MARK-DROP, which
//!   kube-proxy's cleanup never deletes either.
//!
//! Order (as `CleanupLeftovers` and `#109286` teach): every rule outside the leftovers that jumps
//! into one, and iptables mode's own jumps into a shared chain ([`is_iptables_mode_jump`]), are
//! deleted first — the filter INPUT/FORWARD/OUTPUT hooks to KUBE-SERVICES,
//! KUBE-EXTERNAL-SERVICES and KUBE-NODEPORTS with their frozen REJECTs among them — then every
//! leftover chain is flushed, then deleted; one table per input, so each is all or nothing.
//! Pure: reads the saved text it is given, never the kernel.

use super::super::inventory::save::tokenize;

/// The per-service and per-endpoint chain prefixes of iptables mode (`isServiceChainName`,
/// with `deprecatedServiceLBChainNamePrefix` KUBE-XLB- of kube-proxy < 1.26).
pub const SERVICE_CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
    "KUBE-XLB-",
];

/// The tables leftovers live in.
pub const TABLES: &[&str] = &["nat", "filter", "mangle"];

/// Whether `chain` in `table` belongs to kube-proxy's iptables mode only (deleted by its
/// `CleanupLeftovers`, not written by IPVS mode).
pub fn is_leftover(table: &str, chain: &str) -> bool {
    match table {
        "nat" => {
            matches!(chain, "KUBE-NODEPORTS" | "KUBE-PROXY-CANARY")
                || SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
        }
        "filter" => matches!(
            chain,
            "KUBE-SERVICES" | "KUBE-EXTERNAL-SERVICES" | "KUBE-NODEPORTS" | "KUBE-PROXY-CANARY"
        ),
        "mangle" => chain == "KUBE-PROXY-CANARY",
        _ => false,
    }
}

/// Whether a rule is one of iptables mode's own jumps into a chain IPVS mode shares: kube-proxy's
/// `CleanupLeftovers` deletes every rule of `iptablesJumpChains` by its exact comment, and of
/// those only the filter INPUT/FORWARD/OUTPUT jumps to KUBE-PROXY-FIREWALL ("kubernetes load
/// balancer firewall", ctstate NEW) differ from IPVS mode's own jumps into the same chain
/// ("kube-proxy firewall rules", INPUT and FORWARD only; kube-proxy-facts.md §1.1, §2.5). Left
/// in place, the OUTPUT one would run IPVS mode's source-range firewall on the node's own
/// traffic, which IPVS mode leaves to KUBE-IPVS-OUT-FILTER. The other shared jumps (nat
/// KUBE-SERVICES, KUBE-POSTROUTING, filter KUBE-FORWARD) are the same rule in both modes and stay.
pub fn is_iptables_mode_jump(table: &str, chain: &str, rule: &str) -> bool {
    table == "filter"
        && matches!(chain, "INPUT" | "FORWARD" | "OUTPUT")
        && target(rule).as_deref() == Some("KUBE-PROXY-FIREWALL")
        && rule.contains("--comment \"kubernetes load balancer firewall\"")
}

/// What to remove from one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableCleanup {
    /// The table.
    pub table: String,
    /// Rules outside the leftovers that jump into one: (chain, rule text after `-A CHAIN`).
    pub unhook: Vec<(String, String)>,
    /// The leftover chains, in the order the save declared them.
    pub chains: Vec<String>,
}

impl TableCleanup {
    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.unhook.is_empty() && self.chains.is_empty()
    }

    /// `iptables-restore --noflush` input: the jumps deleted, then every leftover flushed,
    /// then deleted (a chain still referenced cannot be deleted, so flushing all first also
    /// removes the jumps between leftovers). `None` when there is nothing to remove.
    pub fn render(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut out = format!("*{}\n", self.table);
        for (chain, rule) in &self.unhook {
            out.push_str(&format!("-D {chain} {rule}\n"));
        }
        for c in &self.chains {
            out.push_str(&format!("-F {c}\n"));
        }
        for c in &self.chains {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
        Some(out)
    }
}

/// The target of a rule (`-j`/`--jump`/`-g`/`--goto`), read with the dump's quote-aware
/// tokenizer so a comment mentioning `-j X` is not taken for a jump.
pub fn target(rule: &str) -> Option<String> {
    let mut toks = Vec::new();
    tokenize(rule.as_bytes(), &mut toks).ok()?;
    let i = toks
        .iter()
        .position(|t| matches!(t.raw, b"-j" | b"--jump" | b"-g" | b"--goto"))?;
    let t = toks.get(i + 1)?;
    std::str::from_utf8(t.raw).ok().map(str::to_owned)
}

/// The leftovers of one table from its `iptables-save -t TABLE` text.
pub fn select(table: &str, saved: &str) -> TableCleanup {
    let mut out = TableCleanup {
        table: table.to_owned(),
        ..TableCleanup::default()
    };
    for line in saved.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split(' ').next().unwrap_or_default();
            if is_leftover(table, name) && !out.chains.iter().any(|c| c == name) {
                out.chains.push(name.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            if is_leftover(table, chain) {
                continue; // goes with its chain
            }
            if target(rule).is_some_and(|t| is_leftover(table, &t))
                || is_iptables_mode_jump(table, chain, rule)
            {
                out.unhook.push((chain.to_owned(), rule.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
