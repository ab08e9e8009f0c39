//! `apply`, `rollback` and `status`: the hybrid plan made real through the op interpreter
//! (ipvsmig_host::apply) under the state journal's lock. With no daemon in this build, apply
//! needs `--no-watch` (DESIGN.md "Who runs it").

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipvsmig_engine::inventory::Inventory;
use ipvsmig_engine::inventory::{API_VERSION, IpFamily, Protocol};
use ipvsmig_engine::plan::diff::VsKey;
use ipvsmig_engine::plan::hybrid::{HybridOptions, HybridPlan, hybrid};
use ipvsmig_engine::plan::{IpvsPlan, PlanOptions, full};
use ipvsmig_host::apply::{self, ApplyError, Env, Kernel, Log, Options, Owned, Record, Report};
use ipvsmig_host::journal::{Journal, JournalError, boot_id};
use serde::Serialize;

use crate::cli::{BackendArg, Format, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::inputs;

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

/// The journal as the interpreter's [`Log`].
pub(crate) struct JournalLog<'a>(pub(crate) &'a mut Journal<Record>);

impl Log for JournalLog<'_> {
    fn record(&mut self, r: &Record) -> Result<(), String> {
        self.0.append(r).map(|_| ()).map_err(|e| e.to_string())
    }
}

struct NodeEnv {
    drain: Duration,
    probe_mark: u32,
    verbose: bool,
}

impl Env for NodeEnv {
    fn drain(&mut self) {
        if !self.drain.is_zero() {
            eprintln!(
                "ipvs-migrate: admission is off; letting established IPVS connections drain for {} s",
                self.drain.as_secs()
            );
            std::thread::sleep(self.drain);
        }
    }
    fn probe(&mut self, keys: &[(VsKey, apply::Expect)]) -> Vec<(VsKey, String)> {
        let mut failed = Vec::new();
        for (key, expect) in keys {
            if key.0 != Protocol::Tcp {
                continue; // UDP and SCTP have no generic request/response to check
            }
            let out = ipvsmig_host::probe::tcp(
                SocketAddr::new(key.1, key.2),
                self.probe_mark,
                Duration::from_secs(3),
            );
            use apply::Expect;
            use ipvsmig_host::probe::Outcome;
            let ok = matches!(
                (&out, expect),
                (Outcome::Connected, Expect::Answer)
                    | (Outcome::Refused, Expect::Refused)
                    | (Outcome::TimedOut, Expect::Dropped)
            );
            if self.verbose {
                eprintln!("probe {}:{} -> {out:?} (expected {expect:?})", key.1, key.2);
            }
            if !ok {
                let want = match expect {
                    Expect::Answer => "a connection to a real server",
                    Expect::Refused => "refused (no real servers)",
                    Expect::Dropped => "no answer (the LB's source ranges exclude this node)",
                };
                failed.push((*key, format!("{out:?}, expected {want}")));
            }
        }
        failed
    }
    fn flush_udp(&mut self, vips: &[(std::net::IpAddr, u16)]) -> Result<(), String> {
        let Some(tool) = [
            "/usr/sbin/conntrack",
            "/sbin/conntrack",
            "/usr/bin/conntrack",
        ]
        .iter()
        .find(|p| Path::new(p).exists()) else {
            eprintln!(
                "ipvs-migrate: warning: no conntrack tool; UDP flows to the removed VIPs keep their IPVS-era conntrack entries until they time out"
            );
            return Ok(());
        };
        for (ip, port) in vips {
            let fam = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
            let out = std::process::Command::new(tool)
                .args(["-D", "-f", fam, "-p", "udp", "--orig-dst"])
                .arg(ip.to_string())
                .args(["--orig-port-dst", &port.to_string()])
                .output()
                .map_err(|e| format!("{tool}: {e}"))?;
            // conntrack exits 1 when nothing matched: not an error here.
            if !out.status.success() && out.status.code() != Some(1) {
                return Err(format!(
                    "{tool} -D {ip}:{port}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }
    fn progress(&mut self, step: &str, done: usize, total: usize) {
        if total >= 5000 {
            eprintln!("ipvs-migrate: {step}: {done}/{total}");
        }
    }
}

pub(crate) fn journal_err(e: JournalError) -> CliError {
    match e {
        JournalError::Locked { .. } => CliError::new(
            ExitCode::OperationFailed,
            format!("{e}: another ipvs-migrate holds the state directory; nothing was changed"),
        ),
        e => CliError::new(ExitCode::OperationFailed, e.to_string()),
    }
}

/// The owned state the journal ends with, whether the last run was interrupted, and the
/// last failure.
pub(crate) fn replay(
    snapshot: Option<Record>,
    records: Vec<Record>,
) -> (Owned, bool, Option<String>) {
    let r = apply::replay(snapshot.into_iter().chain(records));
    (r.owned, r.interrupted, r.last_failure)
}

pub(crate) fn host_root(i: &Inputs) -> &Path {
    i.host_root.as_deref().unwrap_or(Path::new("/"))
}

pub(crate) fn unavailable(what: String) -> CliError {
    CliError::new(ExitCode::Unavailable, what)
}

fn plan_for(
    i: &Inputs,
    backend: BackendArg,
    namespaces: &[String],
    exclude: &[String],
    no_watch: bool,
) -> Result<HybridPlan, CliError> {
    if i.has_files() {
        // A saved dump may be stale or from another node: its endpoints and eTP locality are
        // programmed as they are. Said, not refused (tests and offline rehearsals use files).
        eprintln!(
            "ipvs-migrate: warning: planning from --iptables-save/--ip6tables-save files, not from this node's live rules: make sure they are this node's current rules"
        );
    }
    let (inv, opts, f) = full_plan(i, backend)?;
    let kernel = inputs::node_facts(i)
        .ok()
        .and_then(|f| f.kernel_release)
        .as_deref()
        .and_then(ipvsmig_engine::preflight::kernel_version);
    Ok(hybrid(
        &inv,
        &f,
        &opts,
        &HybridOptions {
            namespaces: namespaces.to_vec(),
            exclude: exclude.to_vec(),
            kernel,
            switch_timeout: if no_watch {
                0
            } else {
                ipvsmig_engine::plan::hybrid::DEFAULT_SWITCH_TIMEOUT
            },
            ..Default::default()
        },
    ))
}

/// The inventory of the INPUTS, the plan options (kube-proxy's scheduler, the node IPs) and the
/// full IPVS-mode plan: what apply's hybrid is cut from and what finalize checks against.
pub(crate) fn full_plan(
    i: &Inputs,
    backend: BackendArg,
) -> Result<(Inventory, PlanOptions, IpvsPlan), CliError> {
    let inv = inputs::inventory(i, backend)?;
    let kp = inputs::kube_proxy_config(i)?;
    let opts = PlanOptions {
        scheduler: kp
            .as_ref()
            .map(|k| k.scheduler().to_owned())
            .unwrap_or_default(),
        node_ips: i.node_ips.clone(),
    };
    let f = full(&inv, &opts);
    Ok((inv, opts, f))
}

/// The iptables tools to write with: where our rules already are (the journal's backend) wins
/// over detection (kubelet's marker chains can change), unless the user forced one.
pub(crate) fn iptables_for(
    owned: &Owned,
    backend: BackendArg,
) -> Result<ipvsmig_host::restore::IptablesCli, CliError> {
    let forced = match backend {
        BackendArg::Auto => owned.backend,
        BackendArg::Legacy => Some(ipvsmig_engine::inventory::Backend::Legacy),
        BackendArg::Nft => Some(ipvsmig_engine::inventory::Backend::Nft),
    };
    if let (Some(was), Some(now)) = (owned.backend, forced)
        && was != now
        && !owned.rules.is_empty()
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "ipvs-migrate's rules are in the {was:?} backend; --iptables-backend {now:?} would miss them. Roll back with the same backend first"
            ),
        ));
    }
    ipvsmig_host::restore::IptablesCli::detect(forced).map_err(|e| unavailable(e.to_string()))
}

/// An IPVS client error as the CLI reports it: no IPVS in the kernel is exit 69.
pub(crate) fn ipvs_error(e: ipvsmig_ipvs::IpvsError) -> CliError {
    match e {
        e @ ipvsmig_ipvs::IpvsError::NoIpvs => unavailable(e.to_string()),
        e => CliError::new(ExitCode::OperationFailed, format!("IPVS: {e}")),
    }
}

/// rtnetlink for kube-ipvs0.
pub(crate) fn open_links() -> Result<ipvsmig_host::link::RtnlLinks, CliError> {
    ipvsmig_host::link::RtnlLinks::open()
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))
}

/// Converges the node to `plan` (None: nothing of ours) under the journal's lock.
fn run(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    plan: Option<&HybridPlan>,
    no_watch: Option<bool>,
    env: &mut NodeEnv,
) -> Result<(Report, Owned), CliError> {
    let boot = boot_id(host_root(i))
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))?;
    let (mut journal, opened) = Journal::<Record>::open(state_dir, &boot).map_err(journal_err)?;
    let (mut owned, interrupted, _) = replay(opened.snapshot, opened.records);
    if opened.boot_changed {
        eprintln!(
            "ipvs-migrate: the node rebooted since the journal was written: reconciling with what the kernel holds"
        );
        // IPVS, addresses, sets and rules did not survive the reboot; sysctls' prior values
        // may be wrong now, so keep what was recorded (the first value seen before us).
        let keep = owned.sysctl_prior.clone();
        owned = Owned {
            sysctl_prior: keep,
            no_watch: owned.no_watch,
            ..Owned::default()
        };
    }
    if let Some(nw) = no_watch {
        owned.no_watch = nw;
    }
    // A rollback that owns no virtual server does not need IPVS (ip_vs not loaded after a
    // reboot, say): it still removes the rules, sets, link and sysctls.
    let mut no_ipvs = apply::ipvs::NoIpvs;
    let mut client;
    let ipvs: &mut dyn apply::ipvs::IpvsOps = match ipvsmig_ipvs::Client::open() {
        Ok(c) => {
            client = c;
            &mut client
        }
        Err(ipvsmig_ipvs::IpvsError::NoIpvs) if plan.is_none() && owned.services.is_empty() => {
            &mut no_ipvs
        }
        Err(e) => return Err(ipvs_error(e)),
    };
    let mut links = open_links()?;
    let mut ipsets =
        ipvsmig_host::ipset::IpsetCli::discover().map_err(|e| unavailable(e.to_string()))?;
    let mut iptables = iptables_for(&owned, backend)?;
    if plan.is_some() {
        owned.backend = iptables
            .v4
            .as_ref()
            .or(iptables.v6.as_ref())
            .map(|t| t.backend);
    }
    let mut sysctls = ipvsmig_host::sysctl::ProcSysctls::new(host_root(i));
    let mut k = Kernel {
        ipvs,
        links: &mut links,
        ipsets: &mut ipsets,
        iptables: &mut iptables,
        sysctls: &mut sysctls,
    };
    let opts = Options {
        reread: interrupted || opened.boot_changed,
        skip_probe: false,
    };
    let res = apply::converge(
        &mut k,
        &mut owned,
        plan,
        env,
        &mut JournalLog(&mut journal),
        opts,
    );
    // Every State record holds the whole owned state: compact after every successful run so
    // the journal stays one snapshot long.
    if res.is_ok() && journal.records_since_snapshot() > 1 {
        let _ = journal.compact(&Record::State {
            step: "compacted".into(),
            owned: owned.clone(),
        });
    }
    match res {
        Ok(r) => Ok((r, owned)),
        Err(e) => {
            let code = match e {
                ApplyError::Conflict { .. } | ApplyError::Probe { .. } => ExitCode::NotReady,
                ApplyError::Step { .. } | ApplyError::Journal(_) => ExitCode::OperationFailed,
            };
            let next = match &e {
                ApplyError::Conflict { .. } => "Nothing was changed: find which program owns that object (keepalived? an operator?) before migrating these services, or --exclude them".to_owned(),
                ApplyError::Journal(_) => format!("The journal in {} could not be written (is its file system full or read-only?): fix that and run the same command again, which re-reads the kernel", state_dir.display()),
                ApplyError::Probe { .. } => "Nothing new was admitted: the failing virtual servers are programmed but receive only the agent's probes. Check their endpoints, then run apply again, or take the namespace back with `ipvs-migrate rollback --namespace NS`".to_owned(),
                ApplyError::Step { .. } => format!("The journal in {} records exactly what is applied (`ipvs-migrate status`); running the same command again continues from there, `ipvs-migrate rollback --namespace NS` takes a namespace back", state_dir.display()),
            };
            Err(CliError::new(code, format!("{e}. {next}")))
        }
    }
}

fn summary(what: &str, r: &Report, owned: &Owned) -> String {
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
    if !no_watch && !dry_run {
        return Err(CliError::new(
            ExitCode::Usage,
            "no ipvs-migrate daemon runs on this node to refresh the dead man's switch (`serve` has no reconcile loop yet): pass --no-watch to apply without a timeout on the admission entries — then nothing rolls back by itself, and `status` says \"unwatched\"",
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
    let plan = plan_for(i, backend, &all, &ex, no_watch)?;
    // The preflight gate: a blocker stops apply before anything changes (cutover adds
    // `--allow CHECK_ID`; apply has no override). On Calico nodes admission must wait for
    // calico-node to restart after kube-ipvs0 exists (DESIGN.md): only cutover does that.
    let facts = inputs::node_facts(i)?;
    let kp = inputs::kube_proxy_config(i)?;
    let blockers: Vec<String> = ipvsmig_engine::preflight::run(&facts, kp.as_ref())
        .into_iter()
        .filter(|f| f.severity == ipvsmig_engine::preflight::Severity::Blocker)
        .map(|f| format!("{} ({})", f.id, f.title))
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
    let calico = facts
        .cni
        .iter()
        .any(|c| c.types.iter().any(|t| t == "calico"));
    if calico && !dry_run {
        return Err(CliError::new(
            ExitCode::NotReady,
            "this is a Calico node: Calico handles IPVS only if kube-ipvs0 existed when calico-node started, so admission must wait for a calico-node restart — `apply` cannot wait for it; use `cutover` (not in this build yet). Nothing was changed",
        ));
    }
    if dry_run {
        let mut text = String::from("Dry run: nothing was changed. The node would hold:\n");
        text.push_str(&plan.summary());
        text.push_str(&dry_run_changes(&owned, &plan));
        print!("{text}");
        return Ok(ExitCode::Ok);
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
    };
    let (r, owned) = run(state_dir, i, backend, Some(&plan), Some(no_watch), &mut env)?;
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
    drain: Duration,
    dry_run: bool,
    verbose: bool,
) -> Result<ExitCode, CliError> {
    if namespaces.is_empty() && !all {
        return Err(CliError::new(
            ExitCode::Usage,
            "say which namespaces to roll back (--namespace NS) or --all",
        ));
    }
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
            owned.no_watch,
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
    };
    let (r, owned) = run(state_dir, i, backend, plan.as_ref(), None, &mut env)?;
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
    last_failure: Option<String>,
    owned: Owned,
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
    let doc = status(state_dir, Path::new("/"))?;
    let (owned, boot_changed) = (&doc.owned, doc.boot_changed);
    match output {
        Format::Json => {
            let s = serde_json::to_string_pretty(&doc)
                .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))?;
            println!("{s}");
        }
        _ if owned.finalized => {
            println!("{}", crate::finalize::STATUS_FINALIZED);
            if let Some(f) = &doc.last_failure {
                println!(
                    "The last finalize stopped ({f}): run `ipvs-migrate finalize` again to finish removing kube-proxy's iptables-mode leftovers."
                );
            }
        }
        _ => {
            if owned.is_empty() && owned.namespaces.is_empty() {
                println!(
                    "Nothing migrated on this node (state: {}).",
                    state_dir.display()
                );
            } else {
                let (adm, probing) = owned.admission();
                println!("State directory: {}", state_dir.display());
                println!("Migrated namespaces: {}", owned.namespaces.join(", "));
                if !owned.exclude.is_empty() {
                    println!("Excluded services: {}", owned.exclude.join(", "));
                }
                println!(
                    "Admission: {} key(s) admitted for all traffic, {} probing; {}",
                    adm.len(),
                    probing.len(),
                    if owned.no_watch {
                        "UNWATCHED (--no-watch: no timeout, no automatic rollback)"
                    } else {
                        "watched (entries expire unless refreshed)"
                    }
                );
                println!(
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
                    println!(
                        "The node rebooted since: the kernel objects above are gone; the next apply or rollback reconciles."
                    );
                }
            }
            if doc.interrupted {
                println!(
                    "The last run was interrupted or failed: the next apply or rollback re-reads the kernel first."
                );
            }
            if let Some(f) = &doc.last_failure {
                println!("Last failure: {f}");
            }
        }
    }
    Ok(ExitCode::Ok)
}
