//! The readiness report as one serializable value (docs/report.md, schema in
//! docs/schemas/report.md): the audit (verdict, findings, plan summary, equivalence result,
//! inventory summary, the inventory) and, from the daemon, the migration section (phase per
//! namespace, probe counts, rejection history, rollbacks). `audit -o json`, `audit -o html`
//! and the daemon's `/` and `/api/v1/report` are all renderings of it, so they cannot disagree.
//!
//! Pure: it never reads the clock, the journal or the kernel; callers pass `now` and the
//! journal's state in. It decides nothing about the migration, it only describes it.

pub mod history;
pub mod migration;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::inventory::{API_VERSION, Inventory, ServicePort};
use crate::plan::{IpvsPlan, PlanFinding};
use crate::preflight::{Finding, Severity};
use crate::verify::Verification;

pub use history::{History, Sample};
pub use migration::Migration;

/// The audit: everything `audit -o json` says, without `apiVersion`/`kind` (see [`Document`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// The snapshot bundled with ipvs-migrate was audited, not this node.
    pub demo: bool,
    /// The verdict.
    pub verdict: Verdict,
    /// Preflight findings, blockers first (then by id).
    pub findings: Vec<Finding>,
    /// Plan summary and its behaviour differences.
    pub plan: PlanSummary,
    /// The equivalence check of the full plan against the rules (absent on a live node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Inventory summary.
    pub summary: Summary,
    /// The full inventory.
    pub inventory: Inventory,
}

/// The audit verdict.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `ready`, `not-ready`, or `not-evaluated` when the equivalence check could not run.
    pub status: &'static str,
    /// Why: blockers first, then the equivalence result, then warnings about the rules.
    pub reasons: Vec<String>,
}

/// What the IPVS plan would program, in numbers, and what behaves differently.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Virtual servers.
    pub virtual_servers: usize,
    /// Real servers.
    pub real_servers: usize,
    /// Addresses bound on kube-ipvs0.
    pub addresses: usize,
    /// Behaviour differences per service.
    pub findings: Vec<PlanFinding>,
}

/// Counts for the summary line and the audit document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Service ports (all families).
    pub service_ports: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// Endpoints (sum over service ports).
    pub endpoints: usize,
    /// Service ports with no endpoints (REJECT).
    pub without_endpoints: usize,
    /// KUBE-* rules (counted in the dump).
    pub kube_rules: usize,
    /// Warnings.
    pub warnings: usize,
    /// Counts per namespace.
    pub per_namespace: BTreeMap<String, NamespaceCount>,
}

/// Per-namespace counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCount {
    /// Service ports.
    pub service_ports: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// The iptables rules that place this namespace's service ports, counted from the model
    /// (a lower bound: see [`placing_rules`]).
    pub iptables_rules: usize,
}

impl Summary {
    /// Summarizes an inventory.
    pub fn of(inv: &Inventory) -> Summary {
        let mut per_namespace: BTreeMap<String, NamespaceCount> = BTreeMap::new();
        for sp in &inv.service_ports {
            let c = per_namespace.entry(sp.name.namespace.clone()).or_default();
            c.service_ports += 1;
            c.endpoints += sp.endpoints.len();
            c.iptables_rules += placing_rules(sp);
        }
        Summary {
            service_ports: inv.service_ports.len(),
            namespaces: per_namespace.len(),
            endpoints: inv.service_ports.iter().map(|s| s.endpoints.len()).sum(),
            without_endpoints: inv
                .service_ports
                .iter()
                .filter(|s| s.has_no_endpoints())
                .count(),
            kube_rules: inv.families.iter().map(|f| f.kube_rules).sum(),
            warnings: inv.warnings.len(),
            per_namespace,
        }
    }
}

/// The rules kube-proxy's iptables proxier writes for one service port, as the model shows
/// them (pkg/proxy/iptables/proxier.go, syncProxyRules): one KUBE-SERVICES entry per ClusterIP,
/// external IP and load-balancer IP, one KUBE-NODEPORTS entry, the dispatch chains' masquerade
/// rule and one jump per endpoint (KUBE-SVC and KUBE-SVL), and two rules per endpoint chain
/// (KUBE-SEP: hairpin masquerade, DNAT). Firewall and external chains' extra rules are not
/// counted, so this is a lower bound; the dump's exact total is [`Summary::kube_rules`].
pub fn placing_rules(sp: &ServicePort) -> usize {
    let entries = 1
        + sp.external_ips.len()
        + sp.load_balancer_ips.len()
        + sp.external_or_load_balancer_ips.len()
        + usize::from(sp.node_port.is_some());
    let dispatch = [&sp.cluster_dispatch, &sp.local_dispatch]
        .into_iter()
        .flatten()
        .map(|d| d.endpoints.len())
        .sum::<usize>()
        + usize::from(sp.masquerade_cluster_ip);
    entries + dispatch + 2 * sp.endpoints.len()
}

impl Audit {
    /// The audit of an inventory: `findings` are the preflight findings (sorted here, blockers
    /// first), `verification` the equivalence check when the rules' text was available.
    pub fn new(
        inventory: Inventory,
        mut findings: Vec<Finding>,
        plan: &IpvsPlan,
        verification: Option<Verification>,
        demo: bool,
    ) -> Audit {
        findings.sort_by(|a, b| (a.severity, &a.id).cmp(&(b.severity, &b.id)));
        let mut reasons: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .map(|f| format!("blocker {}: {}", f.id, f.title))
            .collect();
        let mismatches = verification.as_ref().map(|v| v.mismatches.len());
        let status = match (reasons.is_empty(), mismatches) {
            (false, _) | (true, Some(1..)) => "not-ready",
            (true, Some(0)) => "ready",
            (true, None) => "not-evaluated",
        };
        match &verification {
            Some(v) if !v.mismatches.is_empty() => reasons.push(format!(
                "the equivalence check found {} mismatch(es) between kube-proxy's rules and the IPVS plan (`plan --verify` lists them)",
                v.mismatches.len()
            )),
            Some(v) => reasons.push(format!(
                "the IPVS plan is equivalent to kube-proxy's rules: {} traced case(s), {} documented IPVS-mode difference(s)",
                v.cases,
                v.tolerated.len()
            )),
            None => reasons.push(
                "the plan's equivalence check needs the rules as text: audit the node with `--iptables-save FILE` (`iptables-save > FILE`) for a full verdict".to_owned(),
            ),
        }
        // Without node addresses the plan has no NodePort virtual servers and the check traced
        // none (verify.rs notes it): say so next to the verdict, not only in the notes.
        let node_ports = inventory
            .service_ports
            .iter()
            .filter(|sp| sp.node_port.is_some())
            .count();
        let untraced = verification
            .as_ref()
            .is_some_and(|v| v.notes.iter().any(|n| n.starts_with("no node addresses")));
        if node_ports > 0 && untraced {
            reasons.push(format!(
                "{node_ports} service port(s) have a NodePort, but no node address was given (`--node-ip`): their NodePort virtual servers were neither planned nor traced"
            ));
        }
        if !inventory.warnings.is_empty() {
            reasons.push(format!(
                "{} KUBE-* rules or chains were not understood (see warnings)",
                inventory.warnings.len()
            ));
        }
        Audit {
            demo,
            verdict: Verdict { status, reasons },
            findings,
            verification,
            plan: PlanSummary {
                virtual_servers: plan.virtual_servers.len(),
                real_servers: plan
                    .virtual_servers
                    .iter()
                    .map(|v| v.real_servers.len())
                    .sum(),
                addresses: plan.addresses.len(),
                findings: plan.findings.clone(),
            },
            summary: Summary::of(&inventory),
            inventory,
        }
    }

    /// The deprecation verdict: the `deprecation-timeline` finding (KEP-5495), when the
    /// preflight produced it.
    pub fn deprecation(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.id == "deprecation-timeline")
    }
}

/// The JSON document: `kind: Audit` (`audit -o json`) or `kind: Report` (the daemon's
/// `/api/v1/report`: the same audit plus the migration section).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    /// `ipvs-migrate/v1`.
    pub api_version: &'static str,
    /// `Audit` or `Report`.
    pub kind: &'static str,
    /// The audit.
    #[serde(flatten)]
    pub audit: &'a Audit,
    /// The migration section (the daemon's view of its journal and probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<&'a Migration>,
}

impl<'a> Document<'a> {
    /// `kind: Audit`.
    pub fn audit(audit: &'a Audit) -> Document<'a> {
        Document {
            api_version: API_VERSION,
            kind: "Audit",
            audit,
            migration: None,
        }
    }

    /// `kind: Report`: the audit and the migration section.
    pub fn report(audit: &'a Audit, migration: &'a Migration) -> Document<'a> {
        Document {
            api_version: API_VERSION,
            kind: "Report",
            audit,
            migration: Some(migration),
        }
    }
}

#[cfg(test)]
mod tests;
