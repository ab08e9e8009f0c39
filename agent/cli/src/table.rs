//! Human-readable output: the inventory table and the audit report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipvsmig_engine::inventory::{
    FamilyFacts, Inventory, LocalDetector, NoEndpointVerdict, NodePortAddresses, ServicePort,
    SourceKind, TrafficPolicy,
};

use ipvsmig_engine::report::Verdict;

mod fleet;
pub use fleet::fleet;

pub use ipvsmig_engine::report::Summary;

fn family_line(out: &mut String, f: &FamilyFacts) {
    let src = match &f.source {
        SourceKind::File { path } => format!("file {path}"),
        SourceKind::Live { backend } => format!(
            "live node, iptables-{}",
            match backend {
                ipvsmig_engine::inventory::Backend::Legacy => "legacy",
                ipvsmig_engine::inventory::Backend::Nft => "nft",
            }
        ),
    };
    let _ = writeln!(
        out,
        "{:?}: {} KUBE-* rules in {} chains ({src})",
        f.family, f.kube_rules, f.kube_chains
    );
    match &f.masquerade {
        Some(m) => {
            let det = match &m.local_detector {
                None => "none seen".to_owned(),
                Some(LocalDetector::None) => "none".to_owned(),
                Some(LocalDetector::Cidr { cidr }) => format!("cluster/node CIDR {cidr}"),
                Some(LocalDetector::InterfaceNamePrefix { prefix }) => {
                    format!("interface prefix {prefix}+")
                }
                Some(LocalDetector::BridgeInterface { interface }) => format!("bridge {interface}"),
            };
            let _ = writeln!(
                out,
                "  masquerade: mark {:#x}{}, local-traffic detector {det}, masqueradeAll {}, random-fully {}",
                m.mark,
                m.bit.map(|b| format!(" (bit {b})")).unwrap_or_default(),
                m.masquerade_all,
                m.random_fully
            );
        }
        None => {
            let _ = writeln!(out, "  masquerade: KUBE-MARK-MASQ not found");
        }
    }
    if let Some(np) = &f.node_port_addresses {
        let s = match np {
            NodePortAddresses::AllLocal { excluded } if excluded.is_empty() => {
                "all local addresses (localhost too)".to_owned()
            }
            NodePortAddresses::AllLocal { excluded } => format!(
                "all local addresses except {}",
                excluded
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            NodePortAddresses::Addresses { addresses } => addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(out, "  NodePorts accepted on: {s}");
    }
    if !f.legacy_chains.is_empty() {
        let _ = writeln!(out, "  legacy chains: {}", f.legacy_chains.join(", "));
    }
    if !f.ipvs_mode_chains.is_empty() {
        let _ = writeln!(
            out,
            "  IPVS-mode kube-proxy chains present: {}",
            f.ipvs_mode_chains.join(", ")
        );
    }
}

fn notes(sp: &ServicePort) -> String {
    let mut n: Vec<String> = Vec::new();
    if let Some(t) = sp.session_affinity_seconds {
        n.push(format!("affinity {t}s"));
    }
    if sp.internal_traffic_policy == TrafficPolicy::Local {
        n.push("iTP=Local".into());
    }
    if sp.external_traffic_policy == TrafficPolicy::Local {
        n.push("eTP=Local".into());
    }
    if let Some(hc) = sp.health_check_node_port {
        n.push(format!("hc {hc}"));
    }
    if !sp.load_balancer_source_ranges.is_empty() {
        n.push(format!(
            "{} source ranges",
            sp.load_balancer_source_ranges.len()
        ));
    }
    match sp.internal_no_endpoints {
        Some(NoEndpointVerdict::Reject) => n.push("no endpoints (REJECT)".into()),
        Some(NoEndpointVerdict::Drop) => n.push("no local endpoints (DROP)".into()),
        None => {}
    }
    if sp.external_no_endpoints == Some(NoEndpointVerdict::Drop) {
        n.push("external: no local endpoints (DROP)".into());
    }
    if !sp.hash_mismatches.is_empty() {
        n.push("HASH MISMATCH".into());
    }
    n.join(", ")
}

fn pad(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let mut w = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The inventory as a table.
pub fn inventory(inv: &Inventory) -> String {
    let mut out = String::new();
    for f in &inv.families {
        family_line(&mut out, f);
    }
    let s = Summary::of(inv);
    let _ = writeln!(
        out,
        "\n{} service ports in {} namespaces, {} endpoints, {} without endpoints\n",
        s.service_ports, s.namespaces, s.endpoints, s.without_endpoints
    );
    let mut rows = vec![
        [
            "NAMESPACE",
            "SERVICE",
            "PORT",
            "PROTO",
            "CLUSTER-IP",
            "NODEPORT",
            "EXTERNAL/LB",
            "ENDPOINTS",
            "NOTES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for sp in &inv.service_ports {
        let port = if sp.name.port_name.is_empty() {
            sp.port.to_string()
        } else {
            format!("{}({})", sp.port, sp.name.port_name)
        };
        let mut ext: Vec<String> = sp.external_ips.iter().map(|i| i.to_string()).collect();
        ext.extend(sp.load_balancer_ips.iter().map(|i| format!("lb:{i}")));
        ext.extend(
            sp.external_or_load_balancer_ips
                .iter()
                .map(|i| format!("{i}?")),
        );
        let local = sp
            .endpoints
            .iter()
            .filter(|e| e.local == Some(true))
            .count();
        let eps = if sp.endpoints.iter().any(|e| e.local.is_some()) {
            format!("{} ({} local)", sp.endpoints.len(), local)
        } else {
            sp.endpoints.len().to_string()
        };
        rows.push(vec![
            sp.name.namespace.clone(),
            sp.name.name.clone(),
            port,
            sp.protocol.as_str().to_owned(),
            sp.cluster_ip.to_string(),
            sp.node_port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            if ext.is_empty() {
                "-".into()
            } else {
                ext.join(",")
            },
            eps,
            notes(sp),
        ]);
    }
    out.push_str(&pad(&rows));
    warnings(&mut out, inv);
    out
}

fn warnings(out: &mut String, inv: &Inventory) {
    if inv.warnings.is_empty() {
        let _ = writeln!(out, "\nEvery KUBE-* rule was placed.");
        return;
    }
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &inv.warnings {
        *by_code.entry(&w.code).or_default() += 1;
    }
    let counts: Vec<String> = by_code.iter().map(|(c, n)| format!("{n} {c}")).collect();
    let _ = writeln!(
        out,
        "\n{} warnings ({}):",
        inv.warnings.len(),
        counts.join(", ")
    );
    for w in inv.warnings.iter().take(20) {
        let _ = writeln!(
            out,
            "  {:?} line {} [{}/{}] {}: {}",
            w.family, w.line, w.table, w.chain, w.code, w.message
        );
    }
    if inv.warnings.len() > 20 {
        let _ = writeln!(
            out,
            "  … {} more (all of them with -o json)",
            inv.warnings.len() - 20
        );
    }
}

/// The audit report as text.
pub fn audit(
    verdict: &Verdict,
    inv: &Inventory,
    findings: &[ipvsmig_engine::preflight::Finding],
    facts: &ipvsmig_engine::preflight::NodeFacts,
    plan: &ipvsmig_engine::plan::IpvsPlan,
    demo: bool,
) -> String {
    let mut out = String::new();
    if demo {
        let _ = writeln!(
            out,
            "ipvs-migrate audit — DEMO: the node snapshot bundled with ipvs-migrate, not this node\n"
        );
    } else {
        let _ = writeln!(out, "ipvs-migrate audit\n");
    }
    let _ = writeln!(out, "VERDICT: {}", verdict.status.to_uppercase());
    for r in &verdict.reasons {
        let _ = writeln!(out, "  - {r}");
    }
    let _ = writeln!(out, "\nPREFLIGHT");
    out.push_str(&preflight(findings, facts));
    let s = Summary::of(inv);
    let _ = writeln!(out, "\nPLAN (what kube-proxy's IPVS mode would program)");
    let rs: usize = plan
        .virtual_servers
        .iter()
        .map(|v| v.real_servers.len())
        .sum();
    let _ = writeln!(
        out,
        "{} virtual servers, {} real servers, {} addresses on kube-ipvs0{}",
        plan.virtual_servers.len(),
        rs,
        plan.addresses.len(),
        if plan
            .virtual_servers
            .iter()
            .any(|v| v.kind == ipvsmig_engine::plan::VsKind::NodePort)
        {
            ""
        } else {
            " (NodePort virtual servers need --node-ip)"
        }
    );
    if plan.findings.is_empty() {
        let _ = writeln!(out, "no behaviour differences found");
    } else {
        let _ = writeln!(
            out,
            "{} behaviour differences (listed under PREFLIGHT as behaviour-change; all of them: `ipvs-migrate plan`)",
            plan.findings.len()
        );
    }
    let _ = writeln!(out, "\nINVENTORY");
    for f in &inv.families {
        family_line(&mut out, f);
    }
    let _ = writeln!(
        out,
        "{} service ports in {} namespaces, {} endpoints, {} without endpoints\n",
        s.service_ports, s.namespaces, s.endpoints, s.without_endpoints
    );
    let mut rows = vec![vec![
        "NAMESPACE".to_owned(),
        "SERVICE PORTS".to_owned(),
        "ENDPOINTS".to_owned(),
    ]];
    for (ns, c) in &s.per_namespace {
        rows.push(vec![
            ns.clone(),
            c.service_ports.to_string(),
            c.endpoints.to_string(),
        ]);
    }
    out.push_str(&pad(&rows));
    warnings(&mut out, inv);
    let _ = writeln!(
        out,
        "\nNext: every service port with `ipvs-migrate inventory`, the IPVS plan with `ipvs-migrate plan`{src}; machine-readable: add -o json",
        src = if demo {
            " (the demo's rules, in a checkout: --iptables-save demo/node-snapshot/iptables-save.txt --ip6tables-save demo/node-snapshot/ip6tables-save.txt)"
        } else {
            ", with the same inputs"
        }
    );
    out
}

/// Preflight findings as text, blockers first.
pub fn preflight(
    findings: &[ipvsmig_engine::preflight::Finding],
    facts: &ipvsmig_engine::preflight::NodeFacts,
) -> String {
    use ipvsmig_engine::preflight::Severity;
    let mut out = String::new();
    let blockers = findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let _ = writeln!(out, "host root: {}", facts.host_root);
    let _ = writeln!(
        out,
        "Preflight: {} ({blockers} blockers, {warnings} warnings)\n",
        if blockers == 0 {
            "no blocker"
        } else {
            "NOT READY"
        }
    );
    for f in findings {
        let sev = match f.severity {
            Severity::Blocker => "BLOCKER",
            Severity::Warning => "WARNING",
            Severity::Info => "info",
        };
        let _ = writeln!(out, "{sev:<8} {}: {}", f.id, f.title);
        for e in &f.evidence {
            let _ = writeln!(out, "         · {e}");
        }
        if f.severity != Severity::Info {
            let _ = writeln!(out, "         → {}", f.remediation);
            let _ = writeln!(out, "         runbook: {}", f.runbook);
        }
    }
    out
}

/// The equivalence check's result (`plan --verify`): counts, mismatches, tolerated
/// differences, and what was not compared.
pub fn verification(v: &ipvsmig_engine::verify::Verification) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Verification ({} plan): {} cases traced, {} mismatches, {} tolerated differences — {}",
        v.plan,
        v.cases,
        v.mismatches.len(),
        v.tolerated.len(),
        if v.mismatches.is_empty() {
            "EQUIVALENT"
        } else {
            "MISMATCH"
        }
    );
    let join = |o: &[ipvsmig_engine::verify::Outcome]| {
        o.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !v.mismatches.is_empty() {
        let mut rows = vec![vec![
            "SERVICE".to_owned(),
            "KIND".to_owned(),
            "CASE".to_owned(),
            "IPTABLES".to_owned(),
            "PLAN".to_owned(),
        ]];
        for m in &v.mismatches {
            rows.push(vec![
                m.service.clone(),
                m.kind.as_str().to_owned(),
                m.case.clone(),
                join(&m.iptables),
                join(&m.ipvs),
            ]);
        }
        out.push('\n');
        out.push_str(&pad(&rows));
    }
    if !v.tolerated.is_empty() {
        let _ = writeln!(
            out,
            "\nTolerated (documented IPVS-mode behaviour, docs/verify.md):"
        );
        for t in &v.tolerated {
            let _ = writeln!(
                out,
                "  {:<30} {:<30} {}",
                t.tolerance.as_str(),
                t.service,
                t.case
            );
        }
    }
    for n in &v.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
