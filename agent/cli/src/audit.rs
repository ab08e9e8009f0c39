//! `audit`'s computation: inventory + preflight + plan + (with the rules as text) the
//! equivalence check, into the engine's report value (`ipvsmig_engine::report::Audit`).
//! `audit -o table|json|html` and the daemon's `/` and `/api/v1/report` all start here, so
//! they show the same verdict. It renders nothing and never touches the kernel beyond reading
//! (iptables-save, /proc, /sys below the host root).

use ipvsmig_engine::inventory::IpFamily;
use ipvsmig_engine::plan::IpvsPlan;
use ipvsmig_engine::plan::diff::VsKey;
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

/// What the journal says ipvs-migrate itself put on the node (the daemon's report): the
/// preflight must not call the migration's own objects foreign or leftovers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ours {
    /// Virtual servers the journal owns.
    pub services: Vec<VsKey>,
    /// ipvs-migrate created kube-ipvs0.
    pub link: bool,
}

/// Audits the bundled snapshot (`demo`), the dump files in `i`, or the live node.
pub fn audit(demo: bool, i: &Inputs, backend: BackendArg) -> Result<Built, CliError> {
    audit_with(demo, i, backend, &Ours::default())
}

/// [`audit`] of a node part of which ipvs-migrate already moved: the virtual servers and the
/// kube-ipvs0 of `ours` are left out of the preflight's facts.
pub fn audit_with(
    demo: bool,
    i: &Inputs,
    backend: BackendArg,
    ours: &Ours,
) -> Result<Built, CliError> {
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
        // A live cluster's ConfigMap or Services compared with the bundled snapshot would
        // mean nothing.
        if i.api.enabled() {
            return Err(CliError::new(
                ExitCode::Usage,
                "--demo reads the bundled snapshot; drop --kubeconfig/--kube-api",
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
    let mut facts = facts;
    if let Some(list) = facts.ipvs_services.as_mut() {
        list.retain(|s| {
            !ours.services.iter().any(|(p, ip, port)| {
                s.protocol.eq_ignore_ascii_case(p.as_str())
                    && s.address.parse::<std::net::IpAddr>().ok() == Some(*ip)
                    && s.port == *port
            })
        });
    }
    if ours.link {
        facts.kube_ipvs0 = false;
    }
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
    // The API's Services and EndpointSlices against the node's rules, when an API is given
    // (`--kubeconfig`/`--kube-api`; docs/kubernetes.md): a second read filters sync lag.
    if !demo {
        let reread = || match &texts {
            Some(t) => inputs::inventory_of(t),
            None => inputs::inventory(i, backend),
        };
        findings.extend(crate::kube_api::drift_finding(i, &inv, reread)?);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ipvsmig_engine::inventory::Protocol;

    #[test]
    fn the_daemons_own_virtual_servers_and_link_are_not_called_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("proc/net")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/net/kube-ipvs0")).unwrap();
        // /proc/net/ip_vs as ip_vs_info_seq_show prints it: 10.96.0.1:443 and 10.96.0.10:53.
        std::fs::write(
            root.join("proc/net/ip_vs"),
            "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  0A600001:01BB rr\nUDP  0A60000A:0035 rr\n",
        )
        .unwrap();
        let rules = dir.path().join("rules.txt");
        std::fs::write(&rules, inputs::DEMO_IPV4).unwrap();
        let i = Inputs {
            iptables_save: Some(rules),
            host_root: Some(root),
            offline: true,
            ..Inputs::default()
        };
        let ids =
            |b: &Built| -> Vec<String> { b.audit.findings.iter().map(|f| f.id.clone()).collect() };
        let plain = audit(false, &i, BackendArg::Auto).unwrap();
        let foreign = |b: &Built| {
            b.audit
                .findings
                .iter()
                .find(|f| f.id == "ipvs-foreign-virtual-servers")
                .map(|f| f.evidence.clone())
        };
        assert_eq!(
            foreign(&plain),
            Some(vec![
                "TCP 10.96.0.1:443 rr".into(),
                "UDP 10.96.0.10:53 rr".into()
            ])
        );
        assert!(ids(&plain).contains(&"kube-ipvs0-present".to_owned()));
        let ours = Ours {
            services: vec![(Protocol::Tcp, "10.96.0.1".parse().unwrap(), 443)],
            link: true,
        };
        let daemon = audit_with(false, &i, BackendArg::Auto, &ours).unwrap();
        assert_eq!(foreign(&daemon), Some(vec!["UDP 10.96.0.10:53 rr".into()]));
        assert!(!ids(&daemon).contains(&"kube-ipvs0-present".to_owned()));
    }
}
