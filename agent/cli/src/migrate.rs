//! `apply`, `rollback` and `status`: the hybrid plan made real through the op interpreter
//! (ipvsmig_host::apply) under the state journal's lock (node.rs). When the `serve` daemon
//! runs on the node, apply and rollback are handed to it over its local socket (serve/socket.rs);
//! without one, they run here, and apply needs `--no-watch` (DESIGN.md "Who runs it").

use std::path::Path;
use std::time::Duration;

use ipvsmig_engine::inventory::{API_VERSION, IpFamily};
use ipvsmig_engine::plan::hybrid::HybridPlan;
use ipvsmig_host::apply::Record;
use ipvsmig_host::apply::{self, Options, Owned, Report, RollbackEntry};
use ipvsmig_host::journal::{Journal, boot_id};
use serde::Serialize;

use crate::cli::{BackendArg, Format, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::inputs;
use crate::node::{self, NodeEnv, host_root, journal_err, plan_for, replay};
use crate::serve::socket::{self, Request};

/// Default `--drain`.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(120);

/// Parses `90s`, `5m`, `1h`, `0`.
pub fn duration(s: &str) -> Result<Duration, CliError> {
    parse_duration(s).ok_or_else(|| {
        CliError::new(
            ExitCode::Usage,
            format!("{s:?}: expected a duration like 30s, 5m or 1h"),
        )
    })
}

/// `90s`, `5m`, `1h`, `0` (bare numbers are seconds); `None` for anything else.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Hands `req` to the daemon of `state_dir` when one runs (`None`: none does). The daemon plans
/// from its own configuration and the node's live rules, so input options are refused then.
pub fn hand_to_daemon(
    state_dir: &Path,
    i: &Inputs,
    req: &Request,
) -> Result<Option<socket::Response>, CliError> {
    if !socket::daemon_listening(state_dir) {
        return Ok(None);
    }
    if i.has_files()
        || !i.node_ips.is_empty()
        || i.kube_proxy_config.is_some()
        || i.host_root.is_some()
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "the ipvs-migrate daemon runs on this node ({}) and plans from the node's live rules and its own configuration (nodeIPs, kubeProxyConfig): drop --iptables-save/--ip6tables-save/--node-ip/--kube-proxy-config/--host-root, or set them in the daemon's configuration",
                socket::path(state_dir).display()
            ),
        ));
    }
    eprintln!(
        "ipvs-migrate: handing the request to the daemon ({})",
        socket::path(state_dir).display()
    );
    socket::call(state_dir, req)
}

/// The admission entries' timeout of an in-process run: none for `--no-watch`.
fn switch_timeout(no_watch: bool) -> u32 {
    if no_watch {
        0
    } else {
        ipvsmig_engine::plan::hybrid::DEFAULT_SWITCH_TIMEOUT
    }
}

/// Converges the node to `plan` in this process, under the journal's lock.
fn run(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    plan: Option<&HybridPlan>,
    no_watch: Option<bool>,
    rollback: Option<RollbackEntry>,
    env: &mut NodeEnv,
) -> Result<(Report, Owned), CliError> {
    let mut o = node::open_journal(state_dir, host_root(i))?;
    if let Some(nw) = no_watch {
        o.owned.no_watch = nw;
    }
    if let Some(r) = rollback {
        o.owned.record_rollback(r);
    }
    let opts = Options {
        reread: o.interrupted || o.boot_changed,
        ..Options::default()
    };
    let r = node::converge(
        &mut o.journal,
        &mut o.owned,
        state_dir,
        backend,
        plan,
        env,
        opts,
    )?;
    Ok((r, o.owned))
}

/// How long ago `t` (unix seconds) was, as `3m12s`.
pub fn ago(t: u64) -> String {
    human(unix_now().saturating_sub(t))
}

/// How long until `t` (unix seconds), as `3m12s` (`0s` when past).
pub fn ago_rev(t: u64) -> String {
    human(t.saturating_sub(unix_now()))
}

/// Seconds as `1h2m3s`, `4m5s`, `6s`.
pub fn human(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The text apply and rollback print: migrated namespaces, what this run did, what is owned.
pub fn summary(what: &str, r: &Report, owned: &Owned) -> String {
    let mut out = format!("{what}\n");
    out.push_str(&format!(
        "  migrated namespaces: {}\n",
        if owned.namespaces.is_empty() {
            "(none)".to_owned()
        } else {
            owned.namespaces.join(", ")
        }
    ));
    out.push_str(&format!(
        "  this run: {} IPVS request(s), {} address(es) bound, {} unbound, {} ipset line(s), {} key(s) admitted after probing, {} withdrawn\n",
        r.ipvs_requests, r.addresses_added, r.addresses_removed, r.ipset_lines, r.admitted, r.withdrawn
    ));
    out.push_str(&format!(
        "  now owned: {} virtual server(s), {} address(es) on kube-ipvs0, {} ipset(s), rules for {}\n",
        owned.services.len(),
        owned.addresses.len(),
        owned.sets.len(),
        if owned.rules.is_empty() {
            "no family".to_owned()
        } else {
            owned.rules.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
        }
    ));
    if owned.no_watch && !owned.namespaces.is_empty() {
        out.push_str(
            "  UNWATCHED (--no-watch): admission has no timeout, nothing rolls back by itself, and real servers stay as of this apply: run apply again after endpoint or service changes\n",
        );
    }
    out
}

/// What the preflight gate found: blocker findings (id, title) and whether this is a Calico
/// node (admission must wait for calico-node to restart after kube-ipvs0 exists).
pub struct Gate {
    /// Blockers.
    pub blockers: Vec<(String, String)>,
    /// Calico is the CNI.
    pub calico: bool,
}

/// Runs the preflight checks on the node's inputs.
pub fn gate(i: &Inputs) -> Result<Gate, CliError> {
    let facts = inputs::node_facts(i)?;
    let kp = inputs::kube_proxy_config(i)?;
    let blockers = ipvsmig_engine::preflight::run(&facts, kp.as_ref())
        .into_iter()
        .filter(|f| f.severity == ipvsmig_engine::preflight::Severity::Blocker)
        .map(|f| (f.id.to_string(), f.title.to_string()))
        .collect();
    let calico = facts
        .cni
        .iter()
        .any(|c| c.types.iter().any(|t| t == "calico"));
    Ok(Gate { blockers, calico })
}

/// `apply`.
#[allow(clippy::too_many_arguments)]
pub fn apply_cmd(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    namespaces: &[String],
    exclude: &[String],
    dry_run: bool,
    no_watch: bool,
    verbose: bool,
) -> Result<ExitCode, CliError> {
    if !dry_run
        && let Some(resp) = hand_to_daemon(
            state_dir,
            i,
            &Request::Apply {
                namespaces: namespaces.to_vec(),
                exclude: exclude.to_vec(),
            },
        )?
    {
        if no_watch {
            eprintln!(
                "ipvs-migrate: note: the daemon runs on this node, so it watches these namespaces (--no-watch has no effect)"
            );
        }
        return socket::finish(resp);
    }
    if !no_watch && !dry_run {
        return Err(CliError::new(
            ExitCode::Usage,
            "no ipvs-migrate daemon runs on this node (`ipvs-migrate serve`) to refresh the dead man's switch and follow kube-proxy: start it, or pass --no-watch to apply without a timeout on the admission entries — then nothing rolls back by itself, and `status` says \"unwatched\"",
        ));
    }
    // Namespaces already migrated stay migrated.
    let (owned, _, _) = read_owned(state_dir, i)?;
    if owned.finalized {
        return Err(crate::finalize::finalized_refusal("apply"));
    }
    let mut all: Vec<String> = owned.namespaces.clone();
    all.extend(namespaces.iter().cloned());
    all.sort();
    all.dedup();
    let mut ex = owned.exclude.clone();
    ex.extend(exclude.iter().cloned());
    ex.sort();
    ex.dedup();
    let plan = plan_for(i, backend, &all, &ex, switch_timeout(no_watch))?;
    // The preflight gate: a blocker stops apply before anything changes (cutover adds
    // `--allow CHECK_ID`; apply has no override). On Calico nodes admission must wait for
    // calico-node to restart after kube-ipvs0 exists (DESIGN.md): only cutover does that.
    let g = gate(i)?;
    let blockers: Vec<String> = g
        .blockers
        .iter()
        .map(|(id, title)| format!("{id} ({title})"))
        .collect();
    if !blockers.is_empty() && !dry_run {
        return Err(CliError::new(
            ExitCode::NotReady,
            format!(
                "preflight blockers, nothing was changed: {} (`ipvs-migrate preflight` explains each)",
                blockers.join("; ")
            ),
        ));
    }
    if g.calico && !dry_run {
        return Err(CliError::new(
            ExitCode::NotReady,
            "this is a Calico node: Calico handles IPVS only if kube-ipvs0 existed when calico-node started, so admission must wait for a calico-node restart — `apply` cannot wait for it; use `cutover`, which the daemon runs and which waits for it. Nothing was changed",
        ));
    }
    if dry_run {
        let mut text = String::from("Dry run: nothing was changed. The node would hold:\n");
        text.push_str(&plan.summary());
        text.push_str(&dry_run_changes(&owned, &plan));
        if g.calico {
            text.push_str("Calico node: apply would refuse (admission must wait for calico-node's restart: use cutover).\n");
        }
        if !blockers.is_empty() {
            text.push_str(&format!(
                "Preflight blockers: apply would refuse and change nothing: {} (`ipvs-migrate preflight` explains each).\n",
                blockers.join("; ")
            ));
        }
        print!("{text}");
        // The dry run answers "would apply succeed": not with a blocker.
        return Ok(if blockers.is_empty() && !g.calico {
            ExitCode::Ok
        } else {
            ExitCode::NotReady
        });
    }
    if plan.virtual_servers.is_empty() {
        return Err(CliError::new(
            ExitCode::NotReady,
            format!(
                "nothing to migrate for {}: {}",
                namespaces.join(","),
                plan.left_on_iptables
                    .first()
                    .or(plan.findings.first())
                    .map_or("no service ports".to_owned(), |f| format!(
                        "{} ({})",
                        f.message, f.service
                    ))
            ),
        ));
    }
    let mut env = NodeEnv {
        drain: Duration::ZERO,
        probe_mark: plan.probe_mark,
        verbose,
        refresh: String::new(),
    };
    let (r, owned) = run(
        state_dir,
        i,
        backend,
        Some(&plan),
        Some(no_watch),
        None,
        &mut env,
    )?;
    print!("{}", summary("Applied.", &r, &owned));
    for f in &plan.left_on_iptables {
        println!(
            "  stays on iptables: {} [{}] {}",
            f.service, f.id, f.message
        );
    }
    Ok(ExitCode::Ok)
}

/// `rollback`.
#[allow(clippy::too_many_arguments)]
pub fn rollback_cmd(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    namespaces: &[String],
    all: bool,
    drain: Option<Duration>,
    dry_run: bool,
    verbose: bool,
) -> Result<ExitCode, CliError> {
    if namespaces.is_empty() && !all {
        return Err(CliError::new(
            ExitCode::Usage,
            "say which namespaces to roll back (--namespace NS) or --all",
        ));
    }
    if !dry_run
        && let Some(resp) = hand_to_daemon(
            state_dir,
            i,
            &Request::Rollback {
                namespaces: namespaces.to_vec(),
                all,
                drain_secs: drain.map(|d| d.as_secs()),
            },
        )?
    {
        return socket::finish(resp);
    }
    let drain = drain.unwrap_or(DEFAULT_DRAIN);
    let (owned, _, _) = read_owned(state_dir, i)?;
    for ns in namespaces {
        if !owned.namespaces.contains(ns) {
            return Err(CliError::new(
                ExitCode::Usage,
                format!(
                    "namespace {ns} is not migrated on this node (migrated: {})",
                    if owned.namespaces.is_empty() {
                        "none".to_owned()
                    } else {
                        owned.namespaces.join(", ")
                    }
                ),
            ));
        }
    }
    let remaining: Vec<String> = if all {
        Vec::new()
    } else {
        owned
            .namespaces
            .iter()
            .filter(|n| !namespaces.contains(n))
            .cloned()
            .collect()
    };
    let plan = if remaining.is_empty() {
        None
    } else {
        Some(plan_for(
            i,
            backend,
            &remaining,
            &owned.exclude,
            switch_timeout(owned.no_watch),
        )?)
    };
    if dry_run {
        println!(
            "Dry run: nothing was changed. Would return {} to kube-proxy's iptables rules ({} virtual server(s) of ours now){}",
            if all {
                "every namespace".to_owned()
            } else {
                namespaces.join(", ")
            },
            owned.services.len(),
            if remaining.is_empty() {
                ", and remove every object ipvs-migrate created".to_owned()
            } else {
                format!("; {} stay(s) on IPVS", remaining.join(", "))
            }
        );
        return Ok(ExitCode::Ok);
    }
    let mut env = NodeEnv {
        drain,
        probe_mark: ipvsmig_engine::plan::hybrid::DEFAULT_PROBE_MARK,
        verbose,
        refresh: String::new(),
    };
    let entry = RollbackEntry {
        at: unix_now(),
        namespaces: if all {
            owned.namespaces.clone()
        } else {
            namespaces.to_vec()
        },
        reason: "requested with `ipvs-migrate rollback`".into(),
        source: "operator".into(),
    };
    let (r, owned) = run(
        state_dir,
        i,
        backend,
        plan.as_ref(),
        None,
        Some(entry),
        &mut env,
    )?;
    print!("{}", summary("Rolled back.", &r, &owned));
    Ok(ExitCode::Ok)
}

/// What apply would change in IPVS and on kube-ipvs0, read from the kernel (read-only), or
/// why that could not be read.
fn dry_run_changes(owned: &Owned, plan: &HybridPlan) -> String {
    let mut ipvs = match ipvsmig_ipvs::Client::open() {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "\nChanges: cannot read IPVS here ({e}); the counts above are the whole plan.\n"
            );
        }
    };
    let mut links = match ipvsmig_host::link::RtnlLinks::open() {
        Ok(l) => l,
        Err(e) => return format!("\nChanges: cannot read kube-ipvs0 ({e}).\n"),
    };
    let observed = match apply::observe(&mut ipvs, &mut links, owned, false) {
        Ok(o) => o,
        Err(e) => return format!("\nChanges: {e}\n"),
    };
    let desired =
        ipvsmig_engine::plan::diff::State::desired(&plan.virtual_servers, &plan.addresses);
    let (ops, conflicts) = ipvsmig_engine::plan::diff::diff(&observed, &desired);
    let count =
        |f: &dyn Fn(&ipvsmig_engine::plan::diff::Op) -> bool| ops.iter().filter(|o| f(o)).count();
    use ipvsmig_engine::plan::diff::Op;
    let mut out = format!(
        "\nChanges against this node: {} virtual server(s) to add, {} to change, {} to delete; {} real server(s) to add or change, {} to delete; {} address(es) to bind, {} to unbind.\n",
        count(&|o| matches!(o, Op::AddService { .. })),
        count(&|o| matches!(o, Op::EditService { .. })),
        count(&|o| matches!(o, Op::DelService { .. })),
        count(&|o| matches!(o, Op::AddDest { .. } | Op::EditDest { .. })),
        count(&|o| matches!(o, Op::DelDest { .. })),
        count(&|o| matches!(o, Op::AddAddress { .. })),
        count(&|o| matches!(o, Op::DelAddress { .. })),
    );
    if !conflicts.is_empty() {
        out.push_str(&format!(
            "CONFLICT: {} object(s) the plan needs are held by another program; apply would refuse and change nothing: {:?}\n",
            conflicts.len(),
            conflicts.iter().take(5).collect::<Vec<_>>()
        ));
    }
    out
}

/// The journal's owned state, whether the node rebooted since, and the last failure (read
/// without the lock).
pub(crate) fn read_owned(
    state_dir: &Path,
    i: &Inputs,
) -> Result<(Owned, bool, Option<String>), CliError> {
    read_journal(state_dir, i).map(|(o, b, f, _)| (o, b, f))
}

/// The journal's owned state, whether the node rebooted since, the last failure, and whether
/// the last run was interrupted.
fn read_journal(
    state_dir: &Path,
    i: &Inputs,
) -> Result<(Owned, bool, Option<String>, bool), CliError> {
    let boot = boot_id(host_root(i))
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))?;
    match Journal::<Record>::read_only(state_dir, &boot) {
        Ok(Some(o)) => {
            let changed = o.boot_changed;
            let (owned, interrupted, fail) = replay(o.snapshot, o.records);
            Ok((owned, changed, fail, interrupted))
        }
        Ok(None) => Ok((Owned::default(), false, None, false)),
        Err(e) => Err(journal_err(e)),
    }
}

/// `status -o json` (and the daemon's `/api/v1/status`): what the journal says, read without
/// taking the lock.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    api_version: &'static str,
    kind: &'static str,
    state_dir: String,
    watched: bool,
    boot_changed: bool,
    /// The last run stopped between a step's intent and its result (or failed): the next
    /// apply or rollback re-reads the kernel before changing anything.
    interrupted: bool,
    pub(crate) last_failure: Option<String>,
    pub(crate) owned: Owned,
}

/// Reads the journal in `state_dir` read-only (the boot id from below `host_root`).
pub fn status(state_dir: &Path, host_root: &Path) -> Result<StatusDoc, CliError> {
    let i = Inputs {
        host_root: Some(host_root.to_owned()),
        ..Inputs::default()
    };
    let (owned, boot_changed, last_failure, interrupted) = read_journal(state_dir, &i)?;
    Ok(StatusDoc {
        api_version: API_VERSION,
        kind: "MigrationStatus",
        state_dir: state_dir.display().to_string(),
        // Watched: a daemon refreshes the admission entries. Nothing migrated: nothing to watch.
        watched: !owned.no_watch && !owned.namespaces.is_empty(),
        boot_changed,
        interrupted,
        last_failure,
        owned,
    })
}

/// `status`.
pub fn status_cmd(state_dir: &Path, output: Format) -> Result<ExitCode, CliError> {
    if output == Format::Html {
        return Err(CliError::new(
            ExitCode::Usage,
            "status has no html output: use -o table or -o json (the report with the migration is serve's `/`)",
        ));
    }
    let doc = status(state_dir, Path::new("/"))?;
    // Written at once at the end: a closed pipe (`| head`) is not a panic.
    let mut out = String::new();
    macro_rules! outln {
        ($o:ident, $($arg:tt)*) => {{
            use std::fmt::Write as _;
            let _ = writeln!($o, $($arg)*);
        }};
    }
    let (owned, boot_changed) = (&doc.owned, doc.boot_changed);
    match output {
        Format::Json => crate::commands::print_json(&doc)?,
        _ if owned.finalized => {
            outln!(out, "{}", crate::finalize::STATUS_FINALIZED);
            if let Some(f) = &doc.last_failure {
                outln!(
                    out,
                    "The last finalize stopped ({f}): run `ipvs-migrate finalize` again to finish removing kube-proxy's iptables-mode leftovers."
                );
            }
        }
        _ => {
            if owned.is_empty() && owned.namespaces.is_empty() {
                outln!(
                    out,
                    "Nothing migrated on this node (state: {}).",
                    state_dir.display()
                );
            } else {
                let (adm, probing) = owned.admission();
                outln!(out, "State directory: {}", state_dir.display());
                outln!(out, "Migrated namespaces: {}", owned.namespaces.join(", "));
                if !owned.exclude.is_empty() {
                    outln!(out, "Excluded services: {}", owned.exclude.join(", "));
                }
                outln!(
                    out,
                    "Admission: {} key(s) admitted for all traffic, {} probing; {}",
                    adm.len(),
                    probing.len(),
                    if owned.no_watch {
                        "UNWATCHED (--no-watch: no timeout, no automatic rollback)"
                    } else {
                        "watched (entries expire unless refreshed)"
                    }
                );
                outln!(
                    out,
                    "Owned: {} virtual server(s), {} address(es) on kube-ipvs0{}, {} ipset(s), rules for {}",
                    owned.services.len(),
                    owned.addresses.len(),
                    if owned.created_link {
                        " (link created by ipvs-migrate)"
                    } else {
                        ""
                    },
                    owned.sets.len(),
                    owned
                        .rules
                        .iter()
                        .map(|f: &IpFamily| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if boot_changed {
                    outln!(
                        out,
                        "The node rebooted since: the kernel objects above are gone; the next apply or rollback reconciles."
                    );
                }
            }
            if let Some(c) = &owned.cutover {
                outln!(
                    out,
                    "Cutover: wave {} of {} ({}), phase {} for {}{}",
                    c.wave + 1,
                    c.waves.len(),
                    c.namespaces().join(","),
                    c.phase.name(),
                    ago(c.since),
                    match &c.phase {
                        ipvsmig_engine::cutover::Phase::Soak { until } =>
                            format!(", soak ends in {}", ago_rev(*until)),
                        ipvsmig_engine::cutover::Phase::RolledBack { reason } =>
                            format!(": {reason}"),
                        ipvsmig_engine::cutover::Phase::Failed { error } => format!(": {error}"),
                        _ => String::new(),
                    }
                );
                if !c.allowed.is_empty() {
                    outln!(
                        out,
                        "  blockers allowed with --allow: {}",
                        c.allowed.join(", ")
                    );
                }
            }
            for r in owned.rollbacks.iter().rev().take(5) {
                outln!(
                    out,
                    "Rollback {} ago: {} — {} [{}]",
                    ago(r.at),
                    r.namespaces.join(","),
                    r.reason,
                    r.source
                );
            }
            if doc.interrupted {
                outln!(
                    out,
                    "The last run was interrupted or failed: the next apply or rollback re-reads the kernel first."
                );
            }
            if let Some(f) = &doc.last_failure {
                outln!(out, "Last failure: {f}");
            }
        }
    }
    crate::commands::write_out(&out)?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (61, "1m1s"),
            (3600, "1h0m0s"),
            (3723, "1h2m3s"),
        ] {
            assert_eq!(human(secs), want, "{secs}");
        }
    }
}
