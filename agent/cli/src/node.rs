//! What every state-changing command shares, in the CLI and in the daemon: the journal opened
//! under its lock and replayed, the node's kernel handles, the hybrid plan from the node's
//! inputs, and one convergence through the op interpreter with the journal compacted after.
//! Commands (migrate.rs) and the daemon (serve/agent.rs) decide *what* to converge to.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipvsmig_engine::inventory::{Inventory, Protocol};
use ipvsmig_engine::plan::diff::VsKey;
use ipvsmig_engine::plan::hybrid::{HybridOptions, HybridPlan, hybrid};
use ipvsmig_engine::plan::{IpvsPlan, PlanOptions, full};
use ipvsmig_host::apply::{self, ApplyError, Env, Kernel, Log, Options, Owned, Record, Report};
use ipvsmig_host::journal::{Journal, JournalError, boot_id};

use crate::cli::{BackendArg, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::inputs;

/// The journal as the interpreter's [`Log`].
pub struct JournalLog<'a>(pub &'a mut Journal<Record>);

impl Log for JournalLog<'_> {
    fn record(&mut self, r: &Record) -> Result<(), String> {
        self.0.append(r).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The interpreter's environment on a real node: drain by waiting (refreshing the admission
/// entries that stay, so a long drain does not let the dead man's switch fire for the
/// namespaces that remain), TCP probes with the probe mark, UDP conntrack flushing with
/// conntrack(8).
pub struct NodeEnv {
    /// How long a rollback lets established IPVS connections drain.
    pub drain: Duration,
    /// The firewall mark of the agent's probe packets.
    pub probe_mark: u32,
    /// Print every probe's outcome.
    pub verbose: bool,
    /// `ipset restore -exist` lines re-adding the admission entries that stay, with their
    /// timeout, run every [`REFRESH_EVERY`] while draining; empty: none.
    pub refresh: String,
}

/// How often a drain refreshes the admission entries that stay.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

impl Env for NodeEnv {
    fn drain(&mut self) {
        if self.drain.is_zero() {
            return;
        }
        tracing::warn!(
            drain_s = self.drain.as_secs(),
            "admission is off; letting established IPVS connections drain"
        );
        let until = std::time::Instant::now() + self.drain;
        let ipsets = (!self.refresh.is_empty())
            .then(ipvsmig_host::ipset::IpsetCli::discover)
            .and_then(Result::ok);
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(REFRESH_EVERY));
            if let Some(ips) = &ipsets {
                use ipvsmig_host::ipset::Ipsets;
                let mut ips = ips.clone();
                if let Err(e) = ips.restore(&self.refresh) {
                    tracing::warn!(error = %e, "refreshing the admission entries that stay");
                }
            }
        }
    }
    fn probe(&mut self, keys: &[(VsKey, apply::Expect)]) -> Vec<(VsKey, String)> {
        probe(keys, self.probe_mark, Duration::from_secs(3), self.verbose)
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

/// Probes every TCP key through IPVS (UDP and SCTP have no generic request/response to check)
/// with `mark`, side by side; the keys whose answer was not the expected one, with why.
pub fn probe(
    keys: &[(VsKey, apply::Expect)],
    mark: u32,
    timeout: Duration,
    verbose: bool,
) -> Vec<(VsKey, String)> {
    use apply::Expect;
    use ipvsmig_host::probe::Outcome;
    let tcp: Vec<&(VsKey, Expect)> = keys.iter().filter(|(k, _)| k.0 == Protocol::Tcp).collect();
    let addrs: Vec<SocketAddr> = tcp.iter().map(|(k, _)| SocketAddr::new(k.1, k.2)).collect();
    let outcomes = ipvsmig_host::probe::tcp_many(&addrs, mark, timeout);
    let mut failed = Vec::new();
    for ((key, expect), (out, _)) in tcp.into_iter().zip(outcomes) {
        let ok = matches!(
            (&out, expect),
            (Outcome::Connected, Expect::Answer)
                | (Outcome::Refused, Expect::Refused)
                | (Outcome::TimedOut, Expect::Dropped)
        );
        if verbose {
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

/// The CLI error for a journal error.
pub fn journal_err(e: JournalError) -> CliError {
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
pub fn replay(snapshot: Option<Record>, records: Vec<Record>) -> (Owned, bool, Option<String>) {
    let r = apply::replay(snapshot.into_iter().chain(records));
    (r.owned, r.interrupted, r.last_failure)
}

/// `--host-root`, or `/`.
pub fn host_root(i: &Inputs) -> &Path {
    i.host_root.as_deref().unwrap_or(Path::new("/"))
}

/// Exit 69 with `what`.
pub fn unavailable(what: String) -> CliError {
    CliError::new(ExitCode::Unavailable, what)
}

/// The hybrid plan for `namespaces` from the node's inputs (live rules unless files are given),
/// admission entries expiring after `switch_timeout` seconds (0: never, `--no-watch`).
pub fn plan_for(
    i: &Inputs,
    backend: BackendArg,
    namespaces: &[String],
    exclude: &[String],
    switch_timeout: u32,
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
            switch_timeout,
            ..Default::default()
        },
    ))
}

/// The inventory of the INPUTS, the plan options (kube-proxy's scheduler, the node IPs) and the
/// full IPVS-mode plan: what the hybrid is cut from and what finalize checks against.
pub fn full_plan(
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
pub fn iptables_for(
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
pub fn ipvs_error(e: ipvsmig_ipvs::IpvsError) -> CliError {
    match e {
        e @ ipvsmig_ipvs::IpvsError::NoIpvs => unavailable(e.to_string()),
        e => CliError::new(ExitCode::OperationFailed, format!("IPVS: {e}")),
    }
}

/// rtnetlink for kube-ipvs0.
pub fn open_links() -> Result<ipvsmig_host::link::RtnlLinks, CliError> {
    ipvsmig_host::link::RtnlLinks::open()
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))
}

/// The journal of `state_dir`, opened under its lock, and what it says: the owned state
/// (after a reboot: only what survives one), whether the last run was interrupted, and whether
/// the node rebooted since it was written.
pub struct Opened {
    /// The journal (the lock is held while it lives).
    pub journal: Journal<Record>,
    /// The owned state.
    pub owned: Owned,
    /// The last run stopped between an intent and its result.
    pub interrupted: bool,
    /// The node rebooted since.
    pub boot_changed: bool,
}

/// Opens the journal in `state_dir` (the boot id read below `host_root`).
pub fn open_journal(state_dir: &Path, host_root: &Path) -> Result<Opened, CliError> {
    let boot =
        boot_id(host_root).map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))?;
    let (journal, opened) = Journal::<Record>::open(state_dir, &boot).map_err(journal_err)?;
    let (mut owned, interrupted, _) = replay(opened.snapshot, opened.records);
    if opened.boot_changed {
        tracing::warn!(
            "the node rebooted since the journal was written: reconciling with what the kernel holds"
        );
        // IPVS, addresses, sets and rules did not survive the reboot; sysctls' prior values
        // may be wrong now, so keep what was recorded (the first value seen before us), and
        // the history.
        owned = Owned {
            sysctl_prior: std::mem::take(&mut owned.sysctl_prior),
            no_watch: owned.no_watch,
            cutover: owned.cutover.take(),
            rollbacks: std::mem::take(&mut owned.rollbacks),
            // A finalized node stays finalized: kube-proxy owns what is left (finalize.rs).
            finalized: owned.finalized,
            ..Owned::default()
        };
    }
    Ok(Opened {
        journal,
        owned,
        interrupted,
        boot_changed: opened.boot_changed,
    })
}

/// Writes `owned` as the journal's current state (`step` names why).
pub fn persist(journal: &mut Journal<Record>, owned: &Owned, step: &str) -> Result<(), CliError> {
    journal
        .append(&Record::State {
            step: step.into(),
            owned: owned.clone(),
        })
        .map(|_| ())
        .map_err(|e| {
            CliError::new(
                ExitCode::OperationFailed,
                format!("journal {}: {e}", journal.path().display()),
            )
        })
}

/// Converges the node from `owned` to `plan` (None: nothing of ours) through the op
/// interpreter, journaling into `journal`; compacts the journal after a successful run.
#[allow(clippy::too_many_arguments)]
pub fn converge(
    journal: &mut Journal<Record>,
    owned: &mut Owned,
    state_dir: &Path,
    backend: BackendArg,
    plan: Option<&HybridPlan>,
    env: &mut dyn Env,
    opts: Options,
) -> Result<Report, CliError> {
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
    let mut iptables = iptables_for(owned, backend)?;
    if plan.is_some() {
        owned.backend = iptables
            .v4
            .as_ref()
            .or(iptables.v6.as_ref())
            .map(|t| t.backend);
    }
    // Written through this process's own /proc/sys, never below the host root: the host root
    // is for reading the host's files (a read-only mount at /host in the DaemonSet), while a
    // net.* sysctl acts on the writer's network namespace — the host's on hostNetwork, like
    // the netlink and iptables changes beside it. (proc_sys_net: sysctls under net/ are per
    // network namespace, Documentation/admin-guide/sysctl/net.rst.)
    let mut sysctls = ipvsmig_host::sysctl::ProcSysctls::new("/");
    let mut k = Kernel {
        ipvs,
        links: &mut links,
        ipsets: &mut ipsets,
        iptables: &mut iptables,
        sysctls: &mut sysctls,
    };
    let res = apply::converge(&mut k, owned, plan, env, &mut JournalLog(journal), opts);
    // Every State record holds the whole owned state: compact after every successful run so
    // the journal stays one snapshot long.
    if res.is_ok() && journal.records_since_snapshot() > 1 {
        let _ = journal.compact(&Record::State {
            step: "compacted".into(),
            owned: owned.clone(),
        });
    }
    res.map_err(|e| {
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
        CliError::new(code, format!("{e}. {next}"))
    })
}

/// The cutover's prepare step: kube-ipvs0 created if missing (journaled); whether it was.
pub fn prepare_link(journal: &mut Journal<Record>, owned: &mut Owned) -> Result<bool, CliError> {
    let mut links = open_links()?;
    apply::prepare(&mut links, owned, &mut JournalLog(journal))
        .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()))
}
