//! Command implementations. Each returns the exit code for success paths (0, or 1 for "not
//! ready") or a [`CliError`].

use std::io::Write;

use ipvsmig_engine::inventory::{API_VERSION, Inventory};
use serde::Serialize;

use crate::cli::{Cli, Command, FamilyArg, FleetCommand, Format, PlanFormat};
use crate::exit::{CliError, ExitCode};
use crate::{inputs, table};

/// True if the command was asked for JSON (errors then go to stderr as JSON).
pub fn wants_json(cmd: &Command) -> bool {
    match cmd {
        Command::Audit { output, .. }
        | Command::Inventory { output, .. }
        | Command::Preflight { output, .. } => *output == Format::Json,
        Command::Status { output } | Command::Finalize { output, .. } => *output == Format::Json,
        Command::Plan { output, .. } => *output == PlanFormat::Json,
        Command::Fleet {
            command: FleetCommand::Status { output, .. },
        } => *output == Format::Json,
        _ => false,
    }
}

/// Runs the command.
pub fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Inventory { inputs: i, output } => {
            let inv = inputs::inventory(i, cli.common.iptables_backend)?;
            match output {
                Format::Json => print_json(&Document::inventory(&inv))?,
                Format::Table => write_out(&table::inventory(&inv))?,
                Format::Html => {
                    return Err(CliError::new(
                        ExitCode::Usage,
                        "inventory has no html output: use -o table or -o json",
                    ));
                }
            }
            Ok(ExitCode::Ok)
        }
        Command::Audit {
            demo,
            inputs: i,
            output,
        } => {
            let built = crate::audit::audit(*demo, i, cli.common.iptables_backend)?;
            let a = &built.audit;
            match output {
                Format::Json => print_json(&ipvsmig_engine::report::Document::audit(a))?,
                Format::Table => write_out(&table::audit(
                    &a.verdict,
                    &a.inventory,
                    &a.findings,
                    &built.facts,
                    &built.plan,
                    *demo,
                ))?,
                Format::Html => write_out(&crate::html::page(
                    &ipvsmig_engine::report::Document::audit(a),
                ))?,
            }
            Ok(if a.verdict.status == "not-ready" {
                ExitCode::NotReady
            } else {
                ExitCode::Ok
            })
        }
        Command::Preflight {
            inputs: i,
            probe,
            output,
        } => {
            let mut facts = inputs::node_facts(i)?;
            let kp = inputs::kube_proxy_config(i)?;
            if *probe {
                use ipvsmig_engine::preflight::ProbeResult;
                use ipvsmig_ipvs::IpvsError;
                let sched = kp.as_ref().map_or("rr", |k| k.scheduler());
                facts.ipvs_probe = Some(match ipvsmig_ipvs::probe(sched) {
                    Ok(detail) => ProbeResult::Ok { detail },
                    Err(e @ (IpvsError::NoIpvs | IpvsError::NotFound)) => {
                        ProbeResult::Unavailable {
                            detail: format!("{e} (scheduler {sched})"),
                        }
                    }
                    Err(e @ IpvsError::Permission) => ProbeResult::Denied {
                        detail: e.to_string(),
                    },
                    Err(e) => ProbeResult::Failed {
                        detail: e.to_string(),
                    },
                });
            }
            let mut findings = ipvsmig_engine::preflight::run(&facts, kp.as_ref());
            // Behaviour that changes comes from the plan (one source): with rules to read —
            // dump files, or the live node when no --host-root points elsewhere.
            if i.has_files() || !i.offline {
                match inputs::inventory(i, cli.common.iptables_backend) {
                    Ok(inv) => {
                        let plan = ipvsmig_engine::plan::full(
                            &inv,
                            &ipvsmig_engine::plan::PlanOptions {
                                scheduler: kp.as_ref().map(|k| k.scheduler().to_owned()).unwrap_or_default(),
                                node_ips: i.node_ips.clone(),
                            },
                        );
                        findings.extend(ipvsmig_engine::preflight::checks::behaviour(&plan.findings));
                        let lbs = bound_vips(&plan);
                        findings.extend(ipvsmig_engine::preflight::checks::lb_strict_arp(lbs, kp.as_ref()));
                        let reread = || inputs::inventory(i, cli.common.iptables_backend);
                        findings.extend(crate::kube_api::drift_finding(i, &inv, reread)?);
                    }
                    Err(e) => findings.push(ipvsmig_engine::preflight::Finding::new(
                        "behaviour-not-evaluated",
                        ipvsmig_engine::preflight::Severity::Info,
                        "kube-proxy's rules could not be read, so behaviour changes were not evaluated",
                        vec![e.message.clone()],
                        "Pass --iptables-save with a dump of the node's rules.",
                    )),
                }
                findings.sort_by(|a, b| (a.severity, &a.id).cmp(&(b.severity, &b.id)));
            }
            let blockers = findings
                .iter()
                .filter(|f| f.severity == ipvsmig_engine::preflight::Severity::Blocker)
                .count();
            match output {
                Format::Json => print_json(&serde_json::json!({
                    "apiVersion": API_VERSION,
                    "kind": "Preflight",
                    "ready": blockers == 0,
                    "findings": findings,
                    "facts": facts,
                }))?,
                Format::Table => write_out(&table::preflight(&findings, &facts))?,
                Format::Html => {
                    return Err(CliError::new(
                        ExitCode::Usage,
                        "preflight has no html output; use `audit -o html`",
                    ));
                }
            }
            Ok(if blockers > 0 {
                ExitCode::NotReady
            } else {
                ExitCode::Ok
            })
        }
        Command::Plan {
            inputs: i,
            namespaces,
            exclude,
            family,
            verify,
            output,
        } => {
            for e in exclude {
                if e.split_once('/')
                    .is_none_or(|(n, s)| n.is_empty() || s.is_empty() || s.contains('/'))
                {
                    return Err(CliError::new(
                        ExitCode::Usage,
                        format!("--exclude {e:?}: expected NAMESPACE/SERVICE"),
                    ));
                }
            }
            if *verify && !matches!(output, PlanFormat::Table | PlanFormat::Json) {
                return Err(CliError::new(
                    ExitCode::Usage,
                    "--verify reports with -o table or -o json",
                ));
            }
            // --verify reads the rules twice (inventory, and the check's own interpreter):
            // from the same bytes in memory.
            let texts = if *verify {
                Some(inputs::dump_texts(i)?)
            } else {
                None
            };
            let inv = match &texts {
                Some(t) => inputs::inventory_of(t)?,
                None => inputs::inventory(i, cli.common.iptables_backend)?,
            };
            let dumps: Vec<ipvsmig_engine::verify::Dump<'_>> = texts
                .iter()
                .flatten()
                .map(|t| ipvsmig_engine::verify::Dump {
                    name: &t.name,
                    family: t.family,
                    text: &t.text,
                })
                .collect();
            let vopts = ipvsmig_engine::verify::VerifyOptions {
                node_ips: i.node_ips.clone(),
            };
            let kp = inputs::kube_proxy_config(i)?;
            let opts = ipvsmig_engine::plan::PlanOptions {
                scheduler: kp
                    .as_ref()
                    .map(|k| k.scheduler().to_owned())
                    .unwrap_or_default(),
                node_ips: i.node_ips.clone(),
            };
            let mut plan = ipvsmig_engine::plan::full(&inv, &opts);
            let node_ips_unknown = ipvsmig_engine::plan::PlanFinding {
                id: "node-ips-unknown".into(),
                service: "*".into(),
                message: "no --node-ip given: NodePort virtual servers (one per node address) are not in this plan".into(),
            };
            if i.node_ips.is_empty() && inv.service_ports.iter().any(|s| s.node_port.is_some()) {
                plan.findings.push(node_ips_unknown.clone());
            }
            if !namespaces.is_empty() || matches!(output, PlanFormat::Iptables | PlanFormat::Ipset)
            {
                let namespaces = if namespaces.is_empty() {
                    inv.namespaces().into_iter().map(str::to_owned).collect()
                } else {
                    namespaces.clone()
                };
                let facts = inputs::node_facts(i).ok();
                let kernel = facts
                    .as_ref()
                    .and_then(|f| f.kernel_release.as_deref())
                    .and_then(ipvsmig_engine::preflight::kernel_version);
                let hopts = ipvsmig_engine::plan::hybrid::HybridOptions {
                    namespaces,
                    exclude: exclude.clone(),
                    kernel,
                    ..Default::default()
                };
                let mut h = ipvsmig_engine::plan::hybrid::hybrid(&inv, &plan, &opts, &hopts);
                if i.node_ips.is_empty() && inv.service_ports.iter().any(|s| s.node_port.is_some())
                {
                    h.left_on_iptables.push(ipvsmig_engine::plan::PlanFinding {
                        message: "no --node-ip given: NodePorts stay on iptables".into(),
                        ..node_ips_unknown
                    });
                }
                let fam = match family {
                    FamilyArg::Ipv4 => ipvsmig_engine::inventory::IpFamily::IPv4,
                    FamilyArg::Ipv6 => ipvsmig_engine::inventory::IpFamily::IPv6,
                };
                let verification = verify
                    .then(|| ipvsmig_engine::verify::hybrid(&inv, &dumps, &h, &vopts))
                    .transpose()
                    .map_err(verify_error)?;
                match output {
                    PlanFormat::Json => print_json(&PlanDocument {
                        api_version: API_VERSION,
                        kind: "HybridPlan",
                        plan: &h,
                        verification: verification.as_ref(),
                    })?,
                    PlanFormat::Table => {
                        let mut text = h.summary();
                        if let Some(v) = &verification {
                            text.push('\n');
                            text.push_str(&table::verification(v));
                        }
                        write_out(&text)?;
                    }
                    PlanFormat::Ipvsadm => write_out(&ipvsmig_engine::plan::render::ipvsadm(
                        &ipvsmig_engine::plan::IpvsPlan {
                            virtual_servers: h.virtual_servers.clone(),
                            ..plan
                        },
                    ))?,
                    PlanFormat::Iptables => {
                        if !h.rules.iter().any(|r| r.family == fam) {
                            return Err(CliError::new(
                                ExitCode::DataErr,
                                format!(
                                    "the inventory has no {} rules: nothing to render (see --family)",
                                    fam.as_str()
                                ),
                            ));
                        }
                        write_out(&h.render_iptables(fam, true))?;
                    }
                    PlanFormat::Ipset => write_out(&h.render_ipsets_family(
                        ipvsmig_engine::plan::hybrid::Stage::Admitted,
                        Some(fam),
                    ))?,
                    PlanFormat::KubeProxyConfig => {
                        return Err(CliError::new(
                            ExitCode::Usage,
                            "-o kube-proxy-config describes the whole node: drop --namespace",
                        ));
                    }
                }
                return Ok(verdict(verification.as_ref()));
            }
            let verification = verify
                .then(|| ipvsmig_engine::verify::full(&inv, &dumps, &plan, &vopts))
                .transpose()
                .map_err(verify_error)?;
            match output {
                PlanFormat::Json => print_json(&PlanDocument {
                    api_version: API_VERSION,
                    kind: "IpvsPlan",
                    plan: &plan,
                    verification: verification.as_ref(),
                })?,
                PlanFormat::Table => {
                    let mut text = ipvsmig_engine::plan::render::table(&plan);
                    if let Some(v) = &verification {
                        text.push('\n');
                        text.push_str(&table::verification(v));
                    }
                    write_out(&text)?;
                }
                PlanFormat::Ipvsadm => write_out(&ipvsmig_engine::plan::render::ipvsadm(&plan))?,
                // Rendered from the hybrid state above.
                PlanFormat::Iptables | PlanFormat::Ipset => {}
                PlanFormat::KubeProxyConfig => {
                    let Some(path) = &i.kube_proxy_config else {
                        return Err(CliError::new(
                            ExitCode::Usage,
                            "-o kube-proxy-config rewrites kube-proxy's current configuration: pass it with --kube-proxy-config",
                        ));
                    };
                    let original = std::fs::read_to_string(path).map_err(|e| {
                        CliError::new(ExitCode::NoInput, format!("{}: {e}", path.display()))
                    })?;
                    let facts = inputs::node_facts(i)?;
                    let foreign: Vec<String> = facts
                        .ipvs_services
                        .iter()
                        .flatten()
                        .filter(|s| s.protocol != "FWM")
                        .map(|s| {
                            if s.address.contains(':') {
                                format!("{}/128", s.address)
                            } else {
                                format!("{}/32", s.address)
                            }
                        })
                        .collect();
                    let version = facts.kube_proxy_image_version.as_deref().and_then(|v| {
                        ipvsmig_engine::preflight::kernel_version(v.trim_start_matches('v'))
                    });
                    if version.is_some_and(|v| v >= (1, 43)) {
                        return Err(CliError::new(
                            ExitCode::NotReady,
                            "Kubernetes 1.43 removed kube-proxy's IPVS mode: no IPVS configuration written; migrate to nftables mode",
                        ));
                    }
                    let out = ipvsmig_engine::plan::kube_proxy_config::ipvs_config(
                        &original, &foreign, version,
                    )
                    .map_err(|e| {
                        CliError::new(ExitCode::DataErr, format!("{}: {e}", path.display()))
                    })?;
                    let mut text = String::from(
                        "# KubeProxyConfiguration for IPVS mode, written by ipvs-migrate plan:\n",
                    );
                    for n in &out.notes {
                        text.push_str(&format!("#   {n}\n"));
                    }
                    text.push_str(&out.yaml);
                    write_out(&text)?;
                }
            }
            Ok(verdict(verification.as_ref()))
        }
        Command::Apply {
            inputs: i,
            namespaces,
            exclude,
            dry_run,
            no_watch,
        } => crate::migrate::apply_cmd(
            &cli.common.state_dir,
            i,
            cli.common.iptables_backend,
            namespaces,
            exclude,
            *dry_run,
            *no_watch,
            cli.common.verbose > 0,
        ),
        Command::Rollback {
            inputs: i,
            namespaces,
            all,
            drain,
            dry_run,
        } => {
            let drain = drain.as_deref().map(crate::migrate::duration).transpose()?;
            crate::migrate::rollback_cmd(
                &cli.common.state_dir,
                i,
                cli.common.iptables_backend,
                namespaces,
                *all,
                drain,
                *dry_run,
                cli.common.verbose > 0,
            )
        }
        Command::Status { output } => crate::migrate::status_cmd(&cli.common.state_dir, *output),
        Command::Serve { listen, config } => crate::serve::serve_cmd(
            &cli.common.state_dir,
            cli.common.iptables_backend,
            listen.as_deref(),
            config.as_deref(),
        ),
        Command::Cutover {
            namespaces,
            waves,
            soak,
            allow,
            dry_run,
        } => crate::waves::cutover_cmd(
            &cli.common.state_dir,
            namespaces,
            waves.as_deref(),
            soak.as_deref(),
            allow,
            *dry_run,
        ),
        Command::Finalize {
            inputs: i,
            dry_run,
            kube_proxy_metrics,
            manifests,
            node_name,
            kube_proxy_image,
            apply_switch,
            output,
        } => crate::finalize::finalize_cmd(
            &cli.common.state_dir,
            i,
            cli.common.iptables_backend,
            &crate::finalize::FinalizeArgs {
                dry_run: *dry_run,
                metrics_url: kube_proxy_metrics,
                manifests: manifests.as_deref(),
                node_name: node_name.as_deref(),
                kube_proxy_image: kube_proxy_image.as_deref(),
                apply_switch: *apply_switch,
                output: *output,
            },
        ),
        Command::Fleet {
            command: FleetCommand::Status { output, api },
        } => {
            if !api.enabled() {
                return Err(CliError::new(
                    ExitCode::Usage,
                    "fleet status reads the cluster through the Kubernetes API: pass --kubeconfig FILE or --kube-api",
                ));
            }
            crate::kube_api::fleet_status(api, *output)
        }
    }
}

/// `plan` as JSON: the plan, and the equivalence check's result under `--verify`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanDocument<'a, P: Serialize> {
    api_version: &'static str,
    kind: &'static str,
    plan: &'a P,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<&'a ipvsmig_engine::verify::Verification>,
}

/// Exit 1 when the equivalence check found a mismatch.
fn verdict(v: Option<&ipvsmig_engine::verify::Verification>) -> ExitCode {
    if v.is_some_and(|v| !v.mismatches.is_empty()) {
        ExitCode::NotReady
    } else {
        ExitCode::Ok
    }
}

pub(crate) fn verify_error(e: ipvsmig_engine::verify::VerifyError) -> CliError {
    use ipvsmig_engine::verify::VerifyError;
    match e {
        VerifyError::Dump(e) => CliError::from(e),
        VerifyError::MissingDump(..) => CliError::new(ExitCode::Usage, e.to_string()),
        other => CliError::new(
            ExitCode::DataErr,
            format!("the equivalence check could not run: {other}"),
        ),
    }
}

pub(crate) fn write_out(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            ExitCode::OperationFailed,
            format!("writing output: {e}"),
        )),
    }
}

/// Streams JSON to stdout (a 20k-service inventory is tens of MB; it is never held as a string).
pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let res = serde_json::to_writer_pretty(&mut out, v)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            ExitCode::OperationFailed,
            format!("writing output: {e}"),
        )),
    }
}

/// `kind: Inventory` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    inventory: &'a Inventory,
}

impl<'a> Document<'a> {
    fn inventory(inv: &'a Inventory) -> Document<'a> {
        Document {
            api_version: API_VERSION,
            kind: "Inventory",
            inventory: inv,
        }
    }
}

/// LoadBalancer and external IPs the plan binds on kube-ipvs0 (distinct addresses).
pub(crate) fn bound_vips(plan: &ipvsmig_engine::plan::IpvsPlan) -> usize {
    use ipvsmig_engine::plan::VsKind;
    let mut ips: Vec<std::net::IpAddr> = plan
        .virtual_servers
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                VsKind::LoadBalancer | VsKind::ExternalOrLoadBalancer | VsKind::ExternalIp
            )
        })
        .map(|v| v.address)
        .collect();
    ips.sort();
    ips.dedup();
    ips.len()
}
