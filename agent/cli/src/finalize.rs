//! `finalize`: hand one node to kube-proxy's IPVS mode (DESIGN.md "finalize"; docs/finalize.md).
//! Writes the per-node switch as manifests (`plan::switch`), then refuses — changing nothing —
//! unless kube-proxy's `/proxyMode` says `ipvs` (`finalize/proxy_mode.rs`) and the node's IPVS
//! holds the full IPVS-mode plan of the same INPUTS (`plan::adoption`); only then, under the
//! journal's lock, removes the agent's admission, hands the rest over and removes kube-proxy's
//! iptables-mode leftovers (`ipvsmig_host::finalize`). When the `serve` daemon runs it holds
//! the journal's lock, so a real finalize is handed to it over its socket and runs there
//! ([`finalize`] with the daemon's journal and owned state; serve/agent.rs); a dry run only
//! reads and stays here. `--apply-switch` (`finalize/api_switch.rs`) applies the manifests through
//! the Kubernetes API instead of printing kubectl commands; it changes nothing on the node.

mod api_switch;
pub mod proxy_mode;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipvsmig_engine::inventory::{API_VERSION, IpFamily};
use ipvsmig_engine::plan::diff::State;
use ipvsmig_engine::plan::switch::{self, Manifests, SwitchOptions};
use ipvsmig_engine::plan::{adoption, kube_proxy_config};
use ipvsmig_host::apply::{self, Owned, Record};
use ipvsmig_host::finalize::{self as host, Survey};
use ipvsmig_host::journal::Journal;
use ipvsmig_host::restore::IptablesRestore;

use crate::cli::{BackendArg, Format, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::inputs;
use crate::migrate::{hand_to_daemon, read_owned};
use crate::node::{
    self, JournalLog, full_plan, host_root, iptables_for, ipvs_error, open_links, unavailable,
};
use crate::serve::socket::{self, Request};
use proxy_mode::ProxyMode;
use report::{FinalizeDoc, leftover_docs, render};

/// What `status` prints for a finalized node.
pub const STATUS_FINALIZED: &str = "Finalized: kube-proxy in IPVS mode runs this node. ipvs-migrate owns nothing here any more (its rules and sets are gone; the virtual servers, kube-ipvs0 with its addresses and the IPVS sysctls were handed over to kube-proxy).";

/// The error a state-changing command gets on a finalized node.
pub fn finalized_refusal(cmd: &str) -> CliError {
    CliError::new(
        ExitCode::Usage,
        format!(
            "{cmd}: this node was finalized — kube-proxy runs it in IPVS mode and ipvs-migrate owns nothing here. To go back to iptables mode, switch kube-proxy back (remove the node label) and run `kube-proxy --cleanup`; ipvs-migrate does not undo a finalize"
        ),
    )
}

/// `finalize`'s options beyond INPUTS.
#[derive(Debug, Clone)]
pub struct FinalizeArgs<'a> {
    /// Change nothing; print the manifests and what would be removed and handed over.
    pub dry_run: bool,
    /// kube-proxy's metrics endpoint.
    pub metrics_url: &'a str,
    /// Where to write the manifests.
    pub manifests: Option<&'a Path>,
    /// The node's name (default: NODE_NAME, else the host name).
    pub node_name: Option<&'a str>,
    /// The kube-proxy image for the second DaemonSet.
    pub kube_proxy_image: Option<&'a str>,
    /// Apply the switch through the Kubernetes API (`--apply-switch`).
    pub apply_switch: bool,
    /// Output format.
    pub output: Format,
}

fn node_name(a: &FinalizeArgs<'_>, i: &Inputs) -> String {
    crate::kube_api::node_name(i, a.node_name)
}

/// The manifests for this node, or notes saying why there are none.
fn build_manifests(
    a: &FinalizeArgs<'_>,
    i: &Inputs,
    node: &str,
    exclude: &[String],
    notes: &mut Vec<String>,
) -> Result<Option<Manifests>, CliError> {
    let Some((source, original)) = inputs::kube_proxy_config_text(i)? else {
        notes.push("no --kube-proxy-config: no manifests written (pass the kube-proxy ConfigMap or its config.conf, or --kubeconfig/--kube-api to read the ConfigMap, to get them)".into());
        return Ok(None);
    };
    let facts = inputs::node_facts(i)?;
    let version_text = facts.kube_proxy_image_version.clone();
    let version = version_text
        .as_deref()
        .and_then(|v| ipvsmig_engine::preflight::kernel_version(v.trim_start_matches('v')));
    if version.is_some_and(|v| v >= (1, 43)) {
        return Err(CliError::new(
            ExitCode::NotReady,
            "Kubernetes 1.43 removed kube-proxy's IPVS mode: no IPVS-mode kube-proxy can take this node; migrate to nftables mode",
        ));
    }
    let conf = kube_proxy_config::ipvs_config(&original, exclude, version)
        .map_err(|e| CliError::new(ExitCode::DataErr, format!("{source}: {e}")))?;
    notes.extend(conf.notes);
    let image = match (a.kube_proxy_image, version_text.as_deref()) {
        (Some(img), _) => img.to_owned(),
        (None, Some(v)) if v.trim_start_matches('v').split('.').count() == 3 => {
            format!("registry.k8s.io/kube-proxy:v{}", v.trim_start_matches('v'))
        }
        _ => {
            notes.push("kube-proxy image unknown: the DaemonSet says registry.k8s.io/kube-proxy:SET-ME; pass --kube-proxy-image (the image your kube-proxy DaemonSet runs)".into());
            "registry.k8s.io/kube-proxy:SET-ME".into()
        }
    };
    let opts = SwitchOptions {
        node: node.to_owned(),
        image,
        ..SwitchOptions::default()
    };
    let m = switch::manifests(&conf.yaml, &opts).map_err(|e| {
        CliError::new(
            ExitCode::Usage,
            format!("{e}; pass the node's name with --node-name"),
        )
    })?;
    notes.push(switch::LIMITATION.into());
    Ok(Some(m))
}

fn write_manifests(dir: &Path, m: &Manifests) -> Result<Vec<String>, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::new(ExitCode::OperationFailed, format!("{}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for (name, text) in switch::FILES
        .iter()
        .zip([&m.configmap, &m.daemonset, &m.patch])
    {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| {
            CliError::new(ExitCode::OperationFailed, format!("{}: {e}", p.display()))
        })?;
        files.push(p.display().to_string());
    }
    Ok(files)
}

/// The node's IPVS services (with real servers) and kube-ipvs0 addresses, all read afresh.
fn observe_node() -> Result<State, CliError> {
    let mut ipvs = ipvsmig_ipvs::Client::open().map_err(ipvs_error)?;
    let mut links = open_links()?;
    apply::observe(&mut ipvs, &mut links, &Owned::default(), true)
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))
}

/// Why finalize refuses, and what to do; `None` when it may go on.
fn refusal(mode: &ProxyMode, diffs: &[String], node: &str, url: &str) -> Option<String> {
    let label = format!(
        "kubectl label node {node} {}={}",
        switch::LABEL_KEY,
        switch::LABEL_VALUE
    );
    match mode {
        ProxyMode::Other(m) => Some(format!(
            "kube-proxy on this node runs in {m:?} mode, not IPVS (its /proxyMode at {url}). Nothing was changed. Switch this node's kube-proxy first: apply the manifests (`ipvs-migrate finalize --manifests DIR --kube-proxy-config FILE` writes them; compare the DaemonSet with yours), patch the original DaemonSet, then `{label}`; once the kube-proxy-ipvs pod runs on the node, run finalize again"
        )),
        ProxyMode::NoAnswer(why) => Some(format!(
            "kube-proxy's /proxyMode at {url} gave no answer ({why}). Nothing was changed. If kube-proxy is restarting after `{label}`, wait for the new pod to be ready and run finalize again; if its metrics listen elsewhere, pass --kube-proxy-metrics URL"
        )),
        ProxyMode::Ipvs if !diffs.is_empty() => Some(format!(
            "kube-proxy runs in IPVS mode, but this node's IPVS does not hold the full IPVS-mode plan: {} difference(s), first: {}. Nothing was changed. kube-proxy may not have finished its first sync (wait for ipvs.syncPeriod, 30 s by default) or these INPUTS are not what kube-proxy serves (give finalize the same INPUTS as apply)",
            diffs.len(),
            diffs.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        )),
        ProxyMode::Ipvs => None,
    }
}

/// Where this node's iptables-mode rules are kept for the finalize that runs after the switch
/// (`<state-dir>/finalize-iptables-save.{v4,v6}`).
fn snapshot_path(state_dir: &Path, fam: IpFamily) -> PathBuf {
    state_dir.join(format!(
        "finalize-iptables-save.{}",
        match fam {
            IpFamily::IPv4 => "v4",
            IpFamily::IPv6 => "v6",
        }
    ))
}

/// The INPUTS to plan from. Once kube-proxy runs in IPVS mode its KUBE-SERVICES holds IPVS
/// mode's rules and the live iptables no longer describe the services, so: while kube-proxy is
/// still in iptables mode, a finalize reading the live node keeps a copy of its rules in the
/// state directory; after the switch, a finalize without file inputs plans from that copy.
fn plan_inputs(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    owned: &Owned,
    mode: &ProxyMode,
    dry_run: bool,
    notes: &mut Vec<String>,
) -> Result<Inputs, CliError> {
    if i.has_files() {
        return Ok(i.clone());
    }
    if *mode != ProxyMode::Ipvs {
        if !dry_run {
            let mut ipt = iptables_for(owned, backend)?;
            std::fs::create_dir_all(state_dir).map_err(|e| {
                CliError::new(
                    ExitCode::OperationFailed,
                    format!("{}: {e}", state_dir.display()),
                )
            })?;
            for fam in [IpFamily::IPv4, IpFamily::IPv6] {
                let mut dump = String::new();
                for table in ["mangle", "filter", "nat"] {
                    if let Ok(t) = ipt.save_table(fam, table) {
                        dump.push_str(&t);
                    }
                }
                let p = snapshot_path(state_dir, fam);
                if !dump.is_empty() {
                    std::fs::write(&p, dump).map_err(|e| {
                        CliError::new(ExitCode::OperationFailed, format!("{}: {e}", p.display()))
                    })?;
                }
            }
            notes.push(format!(
                "kept this node's iptables-mode rules in {} for the finalize after the switch",
                snapshot_path(state_dir, IpFamily::IPv4).display()
            ));
        }
        return Ok(i.clone());
    }
    let v4 = snapshot_path(state_dir, IpFamily::IPv4);
    if !v4.exists() {
        return Err(CliError::new(
            ExitCode::NotReady,
            format!(
                "kube-proxy already runs in IPVS mode, so this node's live rules no longer describe its services, and no copy of its iptables-mode rules was kept ({} is missing; a finalize run before the switch keeps one). Nothing was changed: pass --iptables-save FILE (and --ip6tables-save) with the rules saved before the switch",
                v4.display()
            ),
        ));
    }
    let v6 = snapshot_path(state_dir, IpFamily::IPv6);
    notes.push(format!(
        "planned from {}, kept before the switch",
        v4.display()
    ));
    Ok(Inputs {
        iptables_save: Some(v4),
        ip6tables_save: v6.exists().then_some(v6),
        ..i.clone()
    })
}

/// What a finalize run prints and how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The report (text or JSON) for stdout.
    pub stdout: String,
    /// The exit code when it did not refuse (a dry run that would refuse: 1).
    pub code: ExitCode,
    /// Why it refused (exit 1, nothing changed), for stderr.
    pub refusal: Option<String>,
    /// A dry run while kube-proxy is not in IPVS mode yet: the node and its switch (what
    /// `--apply-switch` sends).
    pub switch: Option<(String, Manifests)>,
}

/// `finalize`: handed to the daemon when one runs (a real run needs the journal's lock, which
/// the daemon holds), else run here under the lock; a dry run reads without the lock, here.
pub fn finalize_cmd(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    a: &FinalizeArgs<'_>,
) -> Result<ExitCode, CliError> {
    proxy_mode::parse_url(a.metrics_url).map_err(|e| CliError::new(ExitCode::Usage, e))?;
    if a.apply_switch {
        return api_switch::run(state_dir, i, backend, a);
    }
    if !a.dry_run {
        // The daemon plans from the node's live rules and its own configuration; the rules
        // saved before the switch are the one input it takes from the request (a path, read
        // by the daemon: absolute, as its working directory is not ours).
        let abs = |p: &Option<PathBuf>| -> Result<Option<PathBuf>, CliError> {
            p.as_deref()
                .map(|p| {
                    std::path::absolute(p).map_err(|e| {
                        CliError::new(ExitCode::NoInput, format!("{}: {e}", p.display()))
                    })
                })
                .transpose()
        };
        let req = Request::Finalize {
            kube_proxy_metrics: a.metrics_url.to_owned(),
            manifests: abs(&a.manifests.map(Path::to_path_buf))?,
            node_name: a.node_name.map(str::to_owned),
            kube_proxy_image: a.kube_proxy_image.map(str::to_owned),
            iptables_save: abs(&i.iptables_save)?,
            ip6tables_save: abs(&i.ip6tables_save)?,
            json: a.output == Format::Json,
            kubernetes_version: i.kubernetes_version.clone(),
        };
        let without_dumps = Inputs {
            iptables_save: None,
            ip6tables_save: None,
            ..i.clone()
        };
        if let Some(resp) = hand_to_daemon(state_dir, &without_dumps, &req)? {
            return socket::finish(resp);
        }
    }
    let f = if a.dry_run {
        let (mut owned, _, fail) = read_owned(state_dir, i)?;
        finalize(state_dir, i, backend, a, None, &mut owned, fail.is_some())?
    } else {
        // Held from before the checks until the hand-over is journaled, so no apply or
        // rollback can change the node in between.
        let mut o = node::open_journal(state_dir, host_root(i))?;
        finalize(
            state_dir,
            i,
            backend,
            a,
            Some(&mut o.journal),
            &mut o.owned,
            o.interrupted,
        )?
    };
    crate::commands::write_out(&f.stdout)?;
    match f.refusal {
        Some(why) => Err(CliError::new(ExitCode::NotReady, why)),
        None => Ok(f.code),
    }
}

/// Finalize with `journal` (held by the caller; `None`: a dry run, which changes nothing) and
/// the `owned` state it replays to, `interrupted` when the last run did not end. In the CLI
/// and in the daemon (serve/agent.rs), which passes its own journal and owned state.
pub fn finalize(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    a: &FinalizeArgs<'_>,
    journal: Option<&mut Journal<Record>>,
    owned: &mut Owned,
    interrupted: bool,
) -> Result<Finished, CliError> {
    let metrics =
        proxy_mode::parse_url(a.metrics_url).map_err(|e| CliError::new(ExitCode::Usage, e))?;
    // Finalized and complete: nothing to do. A finalize that stopped after the hand-over (a
    // leftover table's restore failed, say) is finished by running it again.
    if owned.finalized && !interrupted {
        return Ok(Finished {
            stdout: format!("{STATUS_FINALIZED}\n"),
            code: ExitCode::Ok,
            refusal: None,
            switch: None,
        });
    }
    let node = node_name(a, i);
    let mode = proxy_mode::query(metrics, Duration::from_secs(3));
    let mut notes = Vec::new();
    let i = &plan_inputs(state_dir, i, backend, owned, &mode, a.dry_run, &mut notes)?;
    let (inv, _, plan) = full_plan(i, backend)?;
    if plan.virtual_servers.is_empty() {
        return Err(CliError::new(
            ExitCode::NotReady,
            "finalize found no kube-proxy service ports to check IPVS against (nothing was changed): give it this node's iptables-mode rules with --iptables-save FILE (saved before kube-proxy switched)",
        ));
    }
    let observed = observe_node()?;
    let desired = State::from_plan(&plan);
    // Foreign: neither planned nor ours nor a NodePort. A virtual server the journal owns but
    // the plan lacks (NodePorts when --node-ip differs from apply's), or one on a service's
    // NodePort (IPVS-mode kube-proxy opens them on every local address), is kube-proxy's to
    // manage, never excluded.
    let node_ports: std::collections::BTreeSet<_> = inv
        .service_ports
        .iter()
        .filter_map(|sp| sp.node_port.map(|np| (sp.protocol, np)))
        .collect();
    let foreign: Vec<_> = adoption::foreign(&observed, &desired)
        .into_iter()
        .filter(|k| !owned.services.iter().any(|(o, _)| o == k))
        .filter(|k| !node_ports.contains(&(k.0, k.2)))
        .collect();
    let exclude = adoption::exclude_cidrs(&foreign);
    if i.node_ips.is_empty() && inv.service_ports.iter().any(|sp| sp.node_port.is_some()) {
        notes.push("no --node-ip: the plan has no NodePort virtual servers on the node's addresses; give finalize the --node-ip values apply got".into());
    }
    let mut doc = FinalizeDoc {
        api_version: API_VERSION,
        kind: "FinalizeReport",
        node: node.clone(),
        dry_run: a.dry_run,
        outcome: "refused",
        proxy_mode: String::new(),
        state_differences: adoption::differences(&observed, &desired),
        exclude_cidrs: exclude.clone(),
        manifest_files: Vec::new(),
        commands: Vec::new(),
        notes: Vec::new(),
        our_tables: Vec::new(),
        sets: Vec::new(),
        leftovers: Vec::new(),
        handed_over_virtual_servers: owned.services.len(),
        handed_over_addresses: owned.addresses.len(),
    };
    let manifests = build_manifests(a, i, &node, &exclude, &mut notes)?;
    doc.notes.extend(notes);
    let mut text = String::new();
    if let Some(m) = &manifests {
        doc.commands = m.commands.clone();
        match (a.manifests, a.dry_run) {
            (Some(dir), false) => doc.manifest_files = write_manifests(dir, m)?,
            (_, true) => {
                for (name, y) in switch::FILES
                    .iter()
                    .zip([&m.configmap, &m.daemonset, &m.patch])
                {
                    text.push_str(&format!("--- # {name}\n{y}"));
                }
            }
            (None, false) => doc.notes.push(
                "pass --manifests DIR to write the manifests (or --dry-run to print them)".into(),
            ),
        }
    }
    doc.proxy_mode = match &mode {
        ProxyMode::Ipvs => "ipvs".into(),
        ProxyMode::Other(m) => m.clone(),
        ProxyMode::NoAnswer(why) => format!("no answer: {why}"),
    };
    let refused = refusal(&mode, &doc.state_differences, &node, a.metrics_url);
    let Some(journal) = journal else {
        // The dry run: what would be removed, read from the kernel.
        let mut ipt = iptables_for(owned, backend)?;
        let mut sets =
            ipvsmig_host::ipset::IpsetCli::discover().map_err(|e| unavailable(e.to_string()))?;
        let s: Survey = host::survey(&mut ipt, &mut sets);
        doc.our_tables = s
            .ours
            .iter()
            .map(|(f, t, _)| format!("{} {t}", f.as_str()))
            .collect();
        doc.sets = s.sets;
        doc.leftovers = leftover_docs(&s.leftovers);
        doc.outcome = "dry-run";
        return Ok(Finished {
            stdout: render(&doc, a.output, &text, refused.as_deref())?,
            code: if refused.is_some() {
                ExitCode::NotReady
            } else {
                ExitCode::Ok
            },
            refusal: None,
            switch: match (&mode, manifests) {
                (ProxyMode::Ipvs, _) | (_, None) => None,
                (_, Some(m)) => Some((node, m)),
            },
        });
    };
    if let Some(why) = refused {
        return Ok(Finished {
            stdout: render(&doc, a.output, &text, None)?,
            code: ExitCode::NotReady,
            refusal: Some(why),
            switch: None,
        });
    }

    // The switch happened and IPVS holds the plan: hand over, under the journal's lock.
    let mut ipt = iptables_for(owned, backend)?;
    let mut sets =
        ipvsmig_host::ipset::IpsetCli::discover().map_err(|e| unavailable(e.to_string()))?;
    let res = host::hand_over(&mut ipt, &mut sets, owned, &mut JournalLog(journal));
    let done = res.map_err(|e| {
        CliError::new(
            ExitCode::OperationFailed,
            format!("{e}. The journal in {} records what was done (`ipvs-migrate status`); running finalize again continues from there", state_dir.display()),
        )
    })?;
    let _ = journal.compact(&Record::State {
        step: "compacted".into(),
        owned: owned.clone(),
    });
    doc.outcome = "finalized";
    doc.our_tables = done
        .our_tables
        .iter()
        .map(|(f, t)| format!("{} {t}", f.as_str()))
        .collect();
    doc.sets = done.sets;
    doc.leftovers = leftover_docs(&done.leftovers);
    doc.handed_over_virtual_servers = done.handed_over.0;
    doc.handed_over_addresses = done.handed_over.1;
    Ok(Finished {
        stdout: render(&doc, a.output, &text, None)?,
        code: ExitCode::Ok,
        refusal: None,
        switch: None,
    })
}
