//! `audit`'s computation: inventory + preflight + plan + (with the rules as text) the
//! equivalence check, into the engine's report value (`ipvsmig_engine::report::Audit`).
//! `audit -o table|json|html` and the daemon's `/` and `/api/v1/report` all start here, so
//! they show the same verdict. It renders nothing and never touches the kernel beyond reading
//! (iptables-save, /proc, /sys below the host root).

use ipvsmig_engine::inventory::IpFamily;
use ipvsmig_engine::plan::IpvsPlan;
use ipvsmig_engine::preflight::NodeFacts;
use ipvsmig_engine::report::Audit;

use crate::cli::{BackendArg, Inputs};
use crate::commands::bound_vips;
use crate::exit::{CliError, ExitCode};
use crate::inputs;

/// The audit and what the table rendering needs besides it.
pub struct Built {
    /// The report value.
    pub audit: Audit,
    /// The node facts the preflight read.
    pub facts: NodeFacts,
    /// The full plan.
    pub plan: IpvsPlan,
}

/// Audits the bundled snapshot (`demo`), the dump files in `i`, or the live node.
pub fn audit(demo: bool, i: &Inputs, backend: BackendArg) -> Result<Built, CliError> {
    // The equivalence check re-reads the rules' text: the demo's, or the files'. On the live
    // node the rules are streamed once and the check is left out (said so).
    let texts: Option<Vec<inputs::DumpText>> = if demo {
        Some(vec![
            inputs::DumpText {
                name: "demo iptables-save".into(),
                family: IpFamily::IPv4,
                text: inputs::DEMO_IPV4.to_vec(),
            },
            inputs::DumpText {
                name: "demo ip6tables-save".into(),
                family: IpFamily::IPv6,
                text: inputs::DEMO_IPV6.to_vec(),
            },
        ])
    } else if i.has_files() {
        Some(inputs::dump_texts(i)?)
    } else {
        None
    };
    let (inv, facts) = if demo {
        if i.has_files() || i.host_root.is_some() {
            return Err(CliError::new(
                ExitCode::Usage,
                "--demo reads the bundled snapshot; drop --iptables-save/--ip6tables-save/--host-root",
            ));
        }
        let mut facts = inputs::demo_node_facts();
        if let Some(v) = &i.kubernetes_version {
            facts.kube_proxy_image_version = Some(inputs::kubernetes_version(v)?);
        }
        (inputs::demo_inventory()?, facts)
    } else {
        let inv = match &texts {
            Some(t) => inputs::inventory_of(t)?,
            None => inputs::inventory(i, backend)?,
        };
        (inv, inputs::node_facts(i)?)
    };
    let kp = inputs::kube_proxy_config(i)?;
    let mut findings = ipvsmig_engine::preflight::run(&facts, kp.as_ref());
    let nft_ready = facts
        .kernel_release
        .as_deref()
        .and_then(ipvsmig_engine::preflight::kernel_version)
        .is_some_and(|v| v >= ipvsmig_engine::preflight::tables::NFTABLES_MIN);
    let rules = inv.families.iter().map(|f| f.kube_rules).sum();
    let plan = ipvsmig_engine::plan::full(
        &inv,
        &ipvsmig_engine::plan::PlanOptions {
            scheduler: kp
                .as_ref()
                .map(|k| k.scheduler().to_owned())
                .unwrap_or_default(),
            node_ips: i.node_ips.clone(),
        },
    );
    let read_ms = inv
        .families
        .iter()
        .filter_map(|f| f.read_millis)
        .reduce(|a, b| a + b);
    findings.push(ipvsmig_engine::preflight::checks::scale(
        inv.service_ports.len(),
        rules,
        nft_ready,
        read_ms,
    ));
    findings.extend(ipvsmig_engine::preflight::checks::lb_strict_arp(
        bound_vips(&plan),
        kp.as_ref(),
    ));
    findings.extend(ipvsmig_engine::preflight::checks::behaviour(&plan.findings));
    let verification = match &texts {
        Some(t) => {
            let dumps: Vec<ipvsmig_engine::verify::Dump<'_>> = t
                .iter()
                .map(|d| ipvsmig_engine::verify::Dump {
                    name: &d.name,
                    family: d.family,
                    text: &d.text,
                })
                .collect();
            Some(
                ipvsmig_engine::verify::full(
                    &inv,
                    &dumps,
                    &plan,
                    &ipvsmig_engine::verify::VerifyOptions {
                        node_ips: i.node_ips.clone(),
                    },
                )
                .map_err(crate::commands::verify_error)?,
            )
        }
        None => None,
    };
    Ok(Built {
        audit: Audit::new(inv, findings, &plan, verification, demo),
        facts,
        plan,
    })
}
