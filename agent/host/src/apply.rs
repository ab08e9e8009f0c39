//! The op interpreter: makes the node hold a hybrid plan (or nothing), touching only what the
//! journal says the agent owns. Apply and rollback are one function, [`converge`], from the
//! owned state to a desired hybrid plan (empty for a full rollback) — rollback is not a second
//! code path (DESIGN.md "Data flow").
//!
//! Order (DESIGN.md "hybrid data plane"): on the way out, admission first (new connections go
//! back to kube-proxy's rules at once), then a bounded drain, then virtual servers (while their
//! VIPs are still bound), then UDP conntrack entries of removed VIPs, then addresses, sets,
//! rules, the link and sysctls. On the way in: sysctls (ARP ones before any LB IP is bound),
//! kube-ipvs0, virtual servers before their destinations, addresses after the services exist,
//! the classification sets, the rules, the probing set; then the agent's own probes go
//! through IPVS, and only when every new key answered as expected are the keys admitted for
//! all traffic.
//!
//! Every step writes an intent to the journal before it touches the kernel and the resulting
//! owned state after; a failure stops at once and leaves the journal naming exactly what was
//! applied.

pub mod graceful;
pub mod ipvs;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipvsmig_engine::inventory::{IpFamily, Protocol};
use ipvsmig_engine::plan::diff::{self, Op, Owner, State, VsKey, VsState};
use ipvsmig_engine::plan::hybrid::{HybridPlan, HybridSet, set, set_name};
use ipvsmig_engine::plan::ipsets::Member;
use ipvsmig_ipvs::Request;
use serde::{Deserialize, Serialize};

use crate::ipset::Ipsets;
use crate::link::{KUBE_IPVS0, LinkError, Links};
use crate::restore::IptablesRestore;
use crate::sysctl::Sysctls;
use ipvs::IpvsOps;

/// What the agent owns on the node: the journal's truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owned {
    /// Migrated namespaces.
    pub namespaces: Vec<String>,
    /// `NS/SVC` kept on iptables.
    pub exclude: Vec<String>,
    /// Admission entries carry no timeout (`--no-watch`).
    pub no_watch: bool,
    /// Our virtual servers.
    pub services: Vec<(VsKey, VsState)>,
    /// Addresses we bound on kube-ipvs0.
    pub addresses: Vec<IpAddr>,
    /// We created kube-ipvs0.
    pub created_link: bool,
    /// Our ipsets and the members we put in them.
    pub sets: BTreeMap<String, HybridSet>,
    /// Families whose `IPVSMIG-` chains and hooks are installed.
    pub rules: Vec<IpFamily>,
    /// sysctls we changed and their values before (None: the key did not exist).
    pub sysctl_prior: Vec<(String, Option<String>)>,
    /// The iptables backend our rules were written to: later runs use it, whatever detection
    /// says then, so a rollback finds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<ipvsmig_engine::inventory::Backend>,
    /// `finalize` handed the node to kube-proxy in IPVS mode: nothing is ours any more
    /// (finalize.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finalized: bool,
    /// The daemon's cutover (its phase machine's state), journaled before each effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<ipvsmig_engine::cutover::Cutover>,
    /// Rollbacks, oldest first, the last [`ROLLBACK_HISTORY`] kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollbacks: Vec<RollbackEntry>,
}

/// How many rollbacks the journal remembers.
pub const ROLLBACK_HISTORY: usize = 20;

/// One rollback: when, what, why and who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackEntry {
    /// When it started (unix seconds).
    pub at: u64,
    /// The namespaces taken back.
    pub namespaces: Vec<String>,
    /// Why (the alert's name, the failed probe, the operator).
    pub reason: String,
    /// Who triggered it: `builtin`, `alertmanager`, `prometheus`, `probe`, `operator`,
    /// `restart`, `apply`.
    pub source: String,
}

impl Owned {
    /// Records a rollback, keeping the last [`ROLLBACK_HISTORY`].
    pub fn record_rollback(&mut self, e: RollbackEntry) {
        self.rollbacks.push(e);
        let extra = self.rollbacks.len().saturating_sub(ROLLBACK_HISTORY);
        self.rollbacks.drain(..extra);
    }
}

impl Owned {
    /// Whether nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.addresses.is_empty()
            && !self.created_link
            && self.sets.is_empty()
            && self.rules.is_empty()
            && self.sysctl_prior.is_empty()
    }

    /// Admitted keys (all traffic) and probing keys.
    pub fn admission(&self) -> (BTreeSet<Member>, BTreeSet<Member>) {
        let mut a = BTreeSet::new();
        let mut p = BTreeSet::new();
        for (name, s) in &self.sets {
            for fam in [IpFamily::IPv4, IpFamily::IPv6] {
                if *name == set_name(set::ADMITTED, fam) {
                    a.extend(s.members.iter().cloned());
                } else if *name == set_name(set::PROBING, fam) {
                    p.extend(s.members.iter().cloned());
                }
            }
        }
        (a, p)
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "camelCase")]
pub enum Record {
    /// About to run a step.
    Intent {
        /// Step name.
        step: String,
        /// What it will do.
        detail: String,
        /// Virtual servers the step creates: if the run dies before the step's state is
        /// written, the next run treats them as ours (re-reading them from the kernel).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        claims: Vec<VsKey>,
        /// Addresses the step binds, likewise.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        claim_addresses: Vec<IpAddr>,
        /// The step creates kube-ipvs0, likewise.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        claim_link: bool,
    },
    /// The owned state after a step.
    State {
        /// Step name.
        step: String,
        /// Owned state.
        owned: Owned,
    },
    /// A step failed; the owned state is what was applied.
    Failed {
        /// Step name.
        step: String,
        /// The error.
        error: String,
        /// Owned state.
        owned: Owned,
    },
}

impl Record {
    /// An intent that claims nothing (steps that only remove or forget).
    pub fn intent(step: &str, detail: String) -> Record {
        Record::Intent {
            step: step.into(),
            detail,
            claims: Vec::new(),
            claim_addresses: Vec::new(),
            claim_link: false,
        }
    }
}

/// What the journal's records add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The owned state (claims of an interrupted step included).
    pub owned: Owned,
    /// The last run stopped between an intent and its result: re-read the kernel.
    pub interrupted: bool,
    /// The last recorded failure, `step: error`.
    pub last_failure: Option<String>,
}

/// Replays journal records (the snapshot first).
pub fn replay(records: impl IntoIterator<Item = Record>) -> Replayed {
    let mut r = Replayed::default();
    let mut open: Option<(Vec<VsKey>, Vec<IpAddr>, bool)> = None;
    for rec in records {
        match rec {
            Record::Intent {
                claims,
                claim_addresses,
                claim_link,
                ..
            } => open = Some((claims, claim_addresses, claim_link)),
            Record::State { owned, step } => {
                r.owned = owned;
                open = None;
                // A run that ended: apply/rollback's last step, or finalize's (finalize.rs).
                if step == "converged" || step == "finalized" {
                    r.last_failure = None;
                }
            }
            Record::Failed {
                owned, error, step, ..
            } => {
                r.owned = owned;
                r.last_failure = Some(format!("{step}: {error}"));
                // A failed step may have been partly applied: the next run re-reads.
                open = Some((Vec::new(), Vec::new(), false));
            }
        }
    }
    if let Some((claims, addrs, link)) = open {
        r.interrupted = true;
        r.owned.created_link |= link;
        for key in claims {
            if !r.owned.services.iter().any(|(k, _)| *k == key) {
                r.owned.services.push((
                    key,
                    VsState {
                        scheduler: "rr".into(),
                        flags: 0,
                        timeout: 0,
                        netmask: 0,
                        dests: BTreeMap::new(),
                        owner: Owner::Us,
                    },
                ));
            }
        }
        for a in addrs {
            if !r.owned.addresses.contains(&a) {
                r.owned.addresses.push(a);
            }
        }
    }
    r
}

/// Where the records go (the journal; a Vec in tests).
pub trait Log {
    /// Appends a record durably.
    fn record(&mut self, r: &Record) -> Result<(), String>;
}

impl Log for Vec<Record> {
    fn record(&mut self, r: &Record) -> Result<(), String> {
        self.push(r.clone());
        Ok(())
    }
}

/// The node's kernel interfaces.
pub struct Kernel<'a> {
    /// IPVS.
    pub ipvs: &'a mut dyn IpvsOps,
    /// kube-ipvs0 and its addresses.
    pub links: &'a mut dyn Links,
    /// ipsets.
    pub ipsets: &'a mut dyn Ipsets,
    /// iptables-restore.
    pub iptables: &'a mut dyn IptablesRestore,
    /// sysctls.
    pub sysctls: &'a mut dyn Sysctls,
}

/// Hooks the interpreter calls out to (time, probes, conntrack, progress).
pub trait Env {
    /// Waits for established IPVS connections of removed services to drain.
    fn drain(&mut self);
    /// Probes keys through IPVS with the probe mark; returns the keys that failed, with why.
    fn probe(&mut self, keys: &[(VsKey, Expect)]) -> Vec<(VsKey, String)>;
    /// Deletes conntrack entries of removed UDP VIPs.
    fn flush_udp(&mut self, vips: &[(IpAddr, u16)]) -> Result<(), String>;
    /// Progress of a long step.
    fn progress(&mut self, step: &str, done: usize, total: usize);
}

/// What a probe of a virtual server must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A real server answers.
    Answer,
    /// Refused: no real servers (IPVS answers ICMP port-unreachable, as iptables' REJECT).
    Refused,
    /// Dropped: an LB whose source ranges exclude the node (the probe comes from the node).
    Dropped,
}

/// What converging did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// IPVS requests sent.
    pub ipvs_requests: usize,
    /// Addresses bound / unbound.
    pub addresses_added: usize,
    /// Addresses unbound.
    pub addresses_removed: usize,
    /// ipset lines applied.
    pub ipset_lines: usize,
    /// Keys admitted for all traffic by this run.
    pub admitted: usize,
    /// Keys taken out of admission by this run.
    pub withdrawn: usize,
    /// Real servers kept at weight 0 while their connections end (graceful removal).
    pub terminating: usize,
    /// Keys left in the probing set (only the agent's probes reach them).
    pub probing: usize,
    /// Steps run, in order.
    pub steps: Vec<String>,
}

/// Why converging stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Objects another program holds on keys the plan needs; nothing was changed.
    #[error(
        "{} object(s) the plan needs are held by another program (first: {first}); nothing was changed",
        count
    )]
    Conflict {
        /// How many.
        count: usize,
        /// The first, described.
        first: String,
    },
    /// A kernel operation failed; the journal records what was applied.
    #[error("step {step} failed: {error}")]
    Step {
        /// Step.
        step: String,
        /// Error.
        error: String,
    },
    /// Probes did not answer as expected: nothing new was admitted.
    #[error(
        "{} virtual server(s) failed the probe through IPVS (first: {first}); not admitted",
        count
    )]
    Probe {
        /// How many.
        count: usize,
        /// The first, described.
        first: String,
    },
    /// The journal could not be written: stopped before touching the kernel further.
    #[error("journal: {0}")]
    Journal(String),
}

fn vs_desc(k: &VsKey) -> String {
    match k.1 {
        IpAddr::V4(a) => format!("{}:{}/{}", a, k.2, k.0.as_str()),
        IpAddr::V6(a) => format!("[{}]:{}/{}", a, k.2, k.0.as_str()),
    }
}

struct Run<'a, 'k> {
    k: &'a mut Kernel<'k>,
    owned: &'a mut Owned,
    log: &'a mut dyn Log,
    report: Report,
}

impl Run<'_, '_> {
    fn intent(&mut self, step: &str, detail: String) -> Result<(), ApplyError> {
        self.claim(step, detail, Vec::new(), Vec::new())
    }
    fn claim(
        &mut self,
        step: &str,
        detail: String,
        claims: Vec<VsKey>,
        claim_addresses: Vec<IpAddr>,
    ) -> Result<(), ApplyError> {
        self.report.steps.push(step.to_owned());
        self.log
            .record(&Record::Intent {
                step: step.into(),
                detail,
                claims,
                claim_addresses,
                claim_link: false,
            })
            .map_err(ApplyError::Journal)
    }
    fn done(&mut self, step: &str) -> Result<(), ApplyError> {
        self.log
            .record(&Record::State {
                step: step.into(),
                owned: self.owned.clone(),
            })
            .map_err(ApplyError::Journal)
    }
    fn fail(&mut self, step: &str, error: String) -> ApplyError {
        // The failure itself is best-effort journaled: the error goes to the user either way.
        let _ = self.log.record(&Record::Failed {
            step: step.into(),
            error: error.clone(),
            owned: self.owned.clone(),
        });
        ApplyError::Step {
            step: step.into(),
            error,
        }
    }
}

/// The observed state of the objects the diff manages: IPVS services (ours with the journal's
/// destinations, unless `reread`; others foreign) and kube-ipvs0's addresses.
pub fn observe(
    ipvs: &mut dyn IpvsOps,
    links: &mut dyn Links,
    owned: &Owned,
    reread: bool,
) -> Result<State, ApplyError> {
    let obs = |e: String| ApplyError::Step {
        step: "observe".into(),
        error: e,
    };
    let ours: BTreeMap<VsKey, &VsState> = owned.services.iter().map(|(k, v)| (*k, v)).collect();
    let mut st = State::default();
    for s in ipvs.services().map_err(|e| obs(e.to_string()))? {
        let Some(key) = ipvs::key_of(&s) else {
            continue; // FWM or another protocol: never ours
        };
        // Ours only if it still looks as we left it: a key whose attributes differ from the
        // journal's was recreated or changed by someone else (after an `ipvsadm -C`, say) and
        // is not adopted. A claim recovered from an interrupted run (netmask 0: attributes
        // unknown) matches any.
        let mine = ours.get(&key).copied().filter(|v| {
            v.netmask == 0
                || (&*v.scheduler, v.flags, v.timeout, v.netmask)
                    == (s.scheduler.as_str(), s.flags, s.timeout, s.netmask)
        });
        let dests = match (mine, reread) {
            (Some(v), false) => v.dests.clone(),
            _ => ipvs
                .dests(&s)
                .map_err(|e| obs(e.to_string()))?
                .into_iter()
                .map(|d| ((d.address, d.port), d.weight))
                .collect(),
        };
        st.services.insert(
            key,
            VsState {
                scheduler: s.scheduler.as_str().into(),
                flags: s.flags,
                timeout: s.timeout,
                netmask: s.netmask,
                dests,
                owner: if mine.is_some() {
                    Owner::Us
                } else {
                    Owner::Foreign
                },
            },
        );
    }
    let owned_addrs: BTreeSet<IpAddr> = owned.addresses.iter().copied().collect();
    match links.addresses(KUBE_IPVS0) {
        Ok(addrs) => {
            for a in addrs {
                let ip = a.addr();
                st.addresses.insert(
                    ip,
                    if owned_addrs.contains(&ip) {
                        Owner::Us
                    } else {
                        Owner::Foreign
                    },
                );
            }
        }
        Err(LinkError::LinkNotFound { .. }) => {}
        Err(e) => return Err(obs(e.to_string())),
    }
    Ok(st)
}

fn desired_state(plan: Option<&HybridPlan>) -> State {
    plan.map_or_else(State::default, |p| {
        State::desired(&p.virtual_servers, &p.addresses)
    })
}

fn request(op: &Op, desired: &State, observed: &State) -> Option<Request> {
    let sv = |key: &VsKey| {
        let v = desired
            .services
            .get(key)
            .or_else(|| observed.services.get(key));
        match v {
            Some(v) => ipvs::service(key, &v.scheduler, v.flags, v.timeout, v.netmask),
            None => ipvs::service(key, "rr", 0, 0, 0),
        }
    };
    Some(match op {
        Op::AddService {
            service,
            scheduler,
            flags,
            timeout,
            netmask,
        } => Request::AddService(ipvs::service(
            service, scheduler, *flags, *timeout, *netmask,
        )),
        Op::EditService {
            service,
            scheduler,
            flags,
            timeout,
            netmask,
        } => Request::EditService(ipvs::service(
            service, scheduler, *flags, *timeout, *netmask,
        )),
        Op::DelService { service } => Request::DelService(sv(service)),
        Op::AddDest {
            service,
            dest,
            weight,
        } => Request::AddDest(sv(service), ipvs::dest(dest.0, dest.1, *weight)),
        Op::EditDest {
            service,
            dest,
            weight,
        } => Request::EditDest(sv(service), ipvs::dest(dest.0, dest.1, *weight)),
        Op::DelDest { service, dest } => {
            Request::DelDest(sv(service), ipvs::dest(dest.0, dest.1, 0))
        }
        Op::AddAddress { .. } | Op::DelAddress { .. } => return None,
    })
}

/// Options of one convergence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Re-read every destination from the kernel instead of trusting the journal (after an
    /// interrupted run or a reboot).
    pub reread: bool,
    /// Skip the probe stage (tests of the interpreter alone; never from the CLI).
    pub skip_probe: bool,
    /// Leave new keys in the probing set: neither probe nor admit them (the cutover's apply
    /// phase; its probe and admit phases follow).
    pub hold_admission: bool,
    /// Remove TCP/SCTP real servers gracefully (weight 0 until their connections end), as
    /// kube-proxy does; the daemon's reconcile passes. Off: at once (a namespace's rollback,
    /// which has its own drain).
    pub graceful: bool,
}

fn set_script(
    from: &BTreeMap<String, HybridSet>,
    to: &BTreeMap<String, HybridSet>,
    timeout: u32,
    only: &dyn Fn(&str) -> bool,
) -> (String, usize) {
    let mut out = String::new();
    let mut n = 0;
    for (name, s) in to {
        if !only(name) {
            continue;
        }
        if !from.contains_key(name) {
            out.push_str(&s.create_line(name));
            n += 1;
        }
    }
    for (name, s) in from {
        if !only(name) {
            continue;
        }
        let keep: BTreeSet<&Member> = to
            .get(name)
            .map(|t| t.members.iter().collect())
            .unwrap_or_default();
        for m in s.members.iter().filter(|m| !keep.contains(m)) {
            out.push_str(&format!("del {name} {m}\n"));
            n += 1;
        }
    }
    for (name, s) in to {
        if !only(name) {
            continue;
        }
        let have: BTreeSet<&Member> = from
            .get(name)
            .map(|f| f.members.iter().collect())
            .unwrap_or_default();
        for m in &s.members {
            // Admission members are re-added on every run: that refreshes their timeout.
            if s.timeout || !have.contains(m) {
                if s.timeout && timeout > 0 {
                    out.push_str(&format!("add {name} {m} timeout {timeout}\n"));
                } else {
                    out.push_str(&format!("add {name} {m}\n"));
                }
                n += 1;
            }
        }
    }
    (out, n)
}

fn is_admission(name: &str) -> bool {
    [IpFamily::IPv4, IpFamily::IPv6]
        .iter()
        .any(|f| name == set_name(set::ADMITTED, *f) || name == set_name(set::PROBING, *f))
}

/// Creates kube-ipvs0 when it is missing (journaled as ours); whether it was created.
fn link_step(run: &mut Run<'_, '_>) -> Result<bool, ApplyError> {
    let created = prepare(run.k.links, run.owned, run.log)?;
    if created {
        run.report.steps.push("link".into());
    }
    Ok(created)
}

/// The cutover's prepare step: kube-ipvs0 exists afterwards (Calico decides at calico-node's
/// start whether to handle IPVS, so the link must exist before it restarts); whether this call
/// created it (then it is ours, journaled with an intent before and the state after).
pub fn prepare(
    links: &mut dyn Links,
    owned: &mut Owned,
    log: &mut dyn Log,
) -> Result<bool, ApplyError> {
    let step = "link";
    let failed = |owned: &Owned, log: &mut dyn Log, error: String| {
        let _ = log.record(&Record::Failed {
            step: step.into(),
            error: error.clone(),
            owned: owned.clone(),
        });
        ApplyError::Step {
            step: step.into(),
            error,
        }
    };
    match links.link(KUBE_IPVS0) {
        Ok(Some(_)) => Ok(false),
        Ok(None) => {
            log.record(&Record::Intent {
                step: step.into(),
                detail: format!("create the dummy link {KUBE_IPVS0}"),
                claims: Vec::new(),
                claim_addresses: Vec::new(),
                claim_link: true,
            })
            .map_err(ApplyError::Journal)?;
            if let Err(e) = links.create_dummy(KUBE_IPVS0) {
                return Err(failed(owned, log, e.to_string()));
            }
            owned.created_link = true;
            log.record(&Record::State {
                step: step.into(),
                owned: owned.clone(),
            })
            .map_err(ApplyError::Journal)?;
            Ok(true)
        }
        Err(e) => Err(failed(owned, log, e.to_string())),
    }
}

/// The virtual servers of `plan` whose admission keys are in `keys`, each with the answer a
/// probe through IPVS must get: a connection where there are real servers, refused where there
/// are none (as kube-proxy's REJECT), nothing where the LB's source ranges exclude this node.
pub fn probe_targets(plan: &HybridPlan, keys: &BTreeSet<Member>) -> Vec<(VsKey, Expect)> {
    let denied: BTreeSet<&Member> = plan
        .ipsets
        .iter()
        .filter(|(n, _)| n.ends_with(set::NODE_DENIED))
        .flat_map(|(_, s)| s.members.iter())
        .collect();
    plan.virtual_servers
        .iter()
        .filter(|v| keys.contains(&Member::IpPort(v.address, v.protocol, v.port)))
        .map(|v| {
            let m = Member::IpPort(v.address, v.protocol, v.port);
            let e = if denied.contains(&m) {
                Expect::Dropped
            } else if v.real_servers.is_empty() {
                Expect::Refused
            } else {
                Expect::Answer
            };
            (v.key(), e)
        })
        .collect()
}

/// Moves the node from `owned` to `plan` (None: nothing of ours left).
pub fn converge(
    k: &mut Kernel<'_>,
    owned: &mut Owned,
    plan: Option<&HybridPlan>,
    env: &mut dyn Env,
    log: &mut dyn Log,
    opts: Options,
) -> Result<Report, ApplyError> {
    let observed = observe(k.ipvs, k.links, owned, opts.reread)?;
    let desired = desired_state(plan);
    let (ops, conflicts) = diff::diff(&observed, &desired);
    let (ops, terminating) = if opts.graceful {
        let s = graceful::soften(ops, &observed, k.ipvs).map_err(|e| ApplyError::Step {
            step: "observe".into(),
            error: format!("connection counts: {e}"),
        })?;
        (s.ops, s.terminating)
    } else {
        (ops, 0)
    };
    if let Some(c) = conflicts.first() {
        let first = match c {
            diff::Conflict::Service(key) => format!("virtual server {}", vs_desc(key)),
            diff::Conflict::Address(ip) => format!("address {ip} on {KUBE_IPVS0}"),
        };
        return Err(ApplyError::Conflict {
            count: conflicts.len(),
            first,
        });
    }
    let timeout = plan.map_or(0, |p| if owned.no_watch { 0 } else { p.switch_timeout });
    let mut run = Run {
        k,
        owned,
        log,
        report: Report {
            terminating,
            ..Report::default()
        },
    };
    // What the journal owns but the kernel no longer holds (someone flushed IPVS, a reboot)
    // is forgotten: a later object on the same key belongs to whoever made it. After an
    // interrupted run, the recovered state (claims included) is journaled first, so a second
    // interruption cannot lose it.
    let before = (run.owned.services.len(), run.owned.addresses.len());
    run.owned.services.retain(|(k, _)| {
        observed
            .services
            .get(k)
            .is_some_and(|v| v.owner == Owner::Us)
    });
    run.owned
        .addresses
        .retain(|a| observed.addresses.get(a) == Some(&Owner::Us));
    // Namespaces count as migrated from the start of their apply, so that one cut short can be
    // rolled back by name.
    let mut started = false;
    if let Some(p) = plan {
        for ns in &p.namespaces {
            if !run.owned.namespaces.contains(ns) {
                run.owned.namespaces.push(ns.clone());
                started = true;
            }
        }
        run.owned.namespaces.sort();
    }
    if started || opts.reread || before != (run.owned.services.len(), run.owned.addresses.len()) {
        run.done("reconciled")?;
    }

    // Final admission sets (empty when nothing stays) and what leaves admission now.
    let (admitted_now, probing_now) = run.owned.admission();
    let desired_sets: BTreeMap<String, HybridSet> =
        plan.map(|p| p.ipsets.clone()).unwrap_or_default();
    let final_admitted: BTreeSet<Member> = desired_sets
        .iter()
        .filter(|(n, _)| n.starts_with("IPVSMIG") && n.ends_with(set::ADMITTED))
        .flat_map(|(_, s)| s.members.iter().cloned())
        .collect();
    let withdrawn: Vec<Member> = admitted_now
        .union(&probing_now)
        .filter(|m| !final_admitted.contains(*m))
        .cloned()
        .collect();

    // 1. Admission off for what leaves.
    if !withdrawn.is_empty() {
        let step = "admission-off";
        run.intent(
            step,
            format!("{} key(s) leave IPVS admission", withdrawn.len()),
        )?;
        let gone: BTreeSet<&Member> = withdrawn.iter().collect();
        let mut next = run.owned.sets.clone();
        for (name, s) in next.iter_mut() {
            if is_admission(name) {
                s.members.retain(|m| !gone.contains(m));
            }
        }
        // Every withdrawn key leaves both admission sets, whatever the journal says each
        // holds: an admit step cut short may have moved keys the journal still lists as
        // probing (`del` of an absent member is a no-op under -exist).
        let existing = existing_sets(run.k.ipsets);
        let mut script = String::new();
        let mut n = 0;
        for m in &withdrawn {
            let fam = member_family(m);
            for base in [set::ADMITTED, set::PROBING] {
                let name = set_name(base, fam);
                if existing.contains(&name) || run.owned.sets.contains_key(&name) {
                    script.push_str(&format!("del {name} {m}\n"));
                    n += 1;
                }
            }
        }
        if !script.is_empty()
            && let Err(e) = run.k.ipsets.restore(&script)
        {
            return Err(run.fail(step, e.to_string()));
        }
        run.owned.sets = next;
        run.report.ipset_lines += n;
        run.report.withdrawn = withdrawn.len();
        run.done(step)?;
        // 2. Drain, only when virtual servers are about to go.
        if ops
            .iter()
            .any(|o| matches!(o, Op::DelService { .. } | Op::DelDest { .. }))
        {
            env.drain();
        }
    }

    // 3. sysctls and the link on the way in.
    if let Some(p) = plan {
        let step = "sysctls";
        let todo: Vec<&(String, String)> = p
            .sysctls
            .iter()
            .filter(|(key, v)| run.k.sysctls.get(key).ok().flatten().as_deref() != Some(v.as_str()))
            .collect();
        if !todo.is_empty() {
            run.intent(
                step,
                todo.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )?;
            for (key, v) in todo {
                if !run.owned.sysctl_prior.iter().any(|(k2, _)| k2 == key) {
                    let prior = match run.k.sysctls.get(key) {
                        Ok(p) => p,
                        Err(e) => return Err(run.fail(step, e.to_string())),
                    };
                    run.owned.sysctl_prior.push((key.clone(), prior));
                    run.done(step)?;
                }
                if let Err(e) = run.k.sysctls.set(key, v) {
                    return Err(run.fail(step, e.to_string()));
                }
            }
            run.done(step)?;
        }
        link_step(&mut run)?;
    }

    // 4. IPVS: the diff's service and destination ops, pipelined; stop at the first failure.
    let ipvs_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| !matches!(o, Op::AddAddress { .. } | Op::DelAddress { .. }))
        .collect();
    if !ipvs_ops.is_empty() {
        let step = "ipvs";
        let claims = ipvs_ops
            .iter()
            .filter_map(|o| match o {
                Op::AddService { service, .. } => Some(*service),
                _ => None,
            })
            .collect();
        run.claim(
            step,
            format!(
                "{} virtual server / real server operation(s)",
                ipvs_ops.len()
            ),
            claims,
            Vec::new(),
        )?;
        // The journal's view of our virtual servers; each op the kernel accepted is applied to
        // it with the diff's own `apply` (an op it rejects there changes nothing, which is
        // already the journal's state).
        let mut mine = State {
            services: run.owned.services.drain(..).collect(),
            addresses: BTreeMap::new(),
        };
        let mut failure = None;
        let total = ipvs_ops.len();
        let mut done = 0;
        // Services first, destinations after, and only into services that are ours by then: a
        // pipelined AddDest behind a failed AddService (someone took the key meanwhile) would
        // land in the other program's virtual server.
        let (service_ops, dest_ops): (Vec<&Op>, Vec<&Op>) = ipvs_ops
            .iter()
            .partition(|o| !matches!(o, Op::AddDest { .. } | Op::EditDest { .. }));
        'phases: for phase in [service_ops, dest_ops] {
            let phase: Vec<&Op> = phase
                .into_iter()
                .filter(|o| match o {
                    Op::AddDest { service, .. } | Op::EditDest { service, .. } => {
                        mine.services.contains_key(service)
                    }
                    _ => true,
                })
                .collect();
            for chunk in phase.chunks(4096) {
                let mut reqs = Vec::with_capacity(chunk.len());
                let mut map = Vec::with_capacity(chunk.len());
                for (i, op) in chunk.iter().enumerate() {
                    if let Some(r) = request(op, &desired, &observed) {
                        reqs.push(r);
                        map.push(i);
                    }
                }
                let results = match run.k.ipvs.batch(&reqs) {
                    Ok(r) => r,
                    Err(e) => {
                        // The socket failed mid-batch: which requests the kernel ran is
                        // unknown. Claim every service this chunk adds; the next run re-reads.
                        for op in chunk {
                            if let Op::AddService { .. } = op {
                                let _ = diff::apply(&mut mine, std::slice::from_ref(*op));
                            }
                        }
                        failure = Some(e.to_string());
                        break 'phases;
                    }
                };
                run.report.ipvs_requests += reqs.len();
                for ((res, i), req) in results.iter().zip(&map).zip(&reqs) {
                    match res {
                        Ok(()) => {
                            let _ = diff::apply(&mut mine, std::slice::from_ref(chunk[*i]));
                        }
                        Err(e) if failure.is_none() => failure = Some(format!("{req:?}: {e}")),
                        Err(_) => {}
                    }
                }
                done += chunk.len();
                env.progress(step, done.min(total), total);
                if failure.is_some() {
                    break 'phases;
                }
            }
        }
        run.owned.services = mine.services.into_iter().collect();
        if let Some(e) = failure {
            return Err(run.fail(step, e));
        }
        run.done(step)?;
    }

    // 5. UDP conntrack of removed UDP virtual servers (kube-proxy flushes stale UDP entries).
    let udp: Vec<(IpAddr, u16)> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DelService { service } if service.0 == Protocol::Udp => {
                Some((service.1, service.2))
            }
            _ => None,
        })
        .collect();
    if !udp.is_empty() {
        let step = "conntrack";
        run.intent(
            step,
            format!("delete conntrack entries of {} UDP VIP(s)", udp.len()),
        )?;
        if let Err(e) = env.flush_udp(&udp) {
            return Err(run.fail(step, e));
        }
        run.done(step)?;
    }

    // 6. Addresses leaving (binding new ones waits for the sets and rules: a VIP bound with
    // no access filter or bound-VIP rule behind it would expose host listeners and let
    // kube-proxy's NodePort rule DNAT VIP:NodePort).
    let addr_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o, Op::DelAddress { .. }))
        .collect();
    bind_or_unbind(&mut run, addr_ops)?;
    let add_addr_ops: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o, Op::AddAddress { .. }))
        .collect();

    // 7. Sets (classification members, creation) and 8. rules, on the way in; the probing set
    // gets the new keys, admitted keys stay admitted (their timeouts refreshed).
    if let Some(p) = plan {
        let step = "ipsets";
        let mut target = p.ipsets.clone();
        let new_keys: BTreeSet<Member> =
            final_admitted.difference(&admitted_now).cloned().collect();
        for (name, s) in target.iter_mut() {
            for fam in [IpFamily::IPv4, IpFamily::IPv6] {
                if *name == set_name(set::ADMITTED, fam) {
                    s.members.retain(|m| admitted_now.contains(m));
                } else if *name == set_name(set::PROBING, fam) {
                    let adm = p.ipsets.get(&set_name(set::ADMITTED, fam));
                    s.members = adm
                        .map(|a| {
                            a.members
                                .iter()
                                .filter(|m| new_keys.contains(*m))
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
        }
        let (script, n) = set_script(&run.owned.sets, &target, timeout, &|_| true);
        if !script.is_empty() {
            run.intent(step, format!("{n} ipset line(s)"))?;
            if let Err(e) = run.k.ipsets.restore(&script) {
                return Err(run.fail(step, e.to_string()));
            }
            run.report.ipset_lines += n;
        }
        run.owned.sets = target;
        run.done(step)?;

        let step = "rules";
        for fr in &p.rules {
            run.intent(step, format!("{} chains and hooks", fr.family.as_str()))?;
            if let Err(e) = run
                .k
                .iptables
                .restore_noflush(fr.family, &p.render_iptables(fr.family, false))
            {
                return Err(run.fail(step, e.to_string()));
            }
            if !run.owned.rules.contains(&fr.family) {
                run.owned.rules.push(fr.family);
            }
            // Hooks: each must be the first rule of its built-in chain, once. kube-proxy inserts
            // its own jump at position 1 when it finds it missing (after a flush), which would
            // put ours behind it: every run re-asserts the position.
            for table in ipvsmig_engine::plan::hybrid::TABLES {
                let hooks: Vec<_> = fr.hooks.iter().filter(|h| h.table == table).collect();
                if hooks.is_empty() {
                    continue;
                }
                let saved = match run.k.iptables.save_table(fr.family, table) {
                    Ok(s) => s,
                    Err(e) => return Err(run.fail(step, e.to_string())),
                };
                let mut text = format!("*{table}\n");
                let mut changes = 0;
                for h in hooks {
                    let rules = chain_rules(&saved, &h.chain);
                    let ours: Vec<usize> = rules
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| jumps_to(r, &h.target))
                        .map(|(i, _)| i)
                        .collect();
                    if ours == [0] {
                        continue;
                    }
                    for i in &ours {
                        text.push_str(&format!("-D {} {}\n", h.chain, rules[*i]));
                    }
                    text.push_str(&format!("-I {} 1 {}\n", h.chain, h.rule));
                    changes += 1;
                }
                text.push_str("COMMIT\n");
                if changes > 0
                    && let Err(e) = run.k.iptables.restore_noflush(fr.family, &text)
                {
                    return Err(run.fail(step, e.to_string()));
                }
            }
            run.done(step)?;
        }

        // Addresses are bound now that the access filter and the bound-VIP rules exist.
        bind_or_unbind(&mut run, add_addr_ops.clone())?;

        // 9. Probe the new keys, then admit them (unless the cutover holds admission).
        if opts.hold_admission {
            run.report.probing = new_keys.len();
        } else if !new_keys.is_empty() {
            let step = "probe";
            let keys = probe_targets(p, &new_keys);
            if !opts.skip_probe {
                run.intent(
                    step,
                    format!("probe {} virtual server(s) through IPVS", keys.len()),
                )?;
                let failed = env.probe(&keys);
                if let Some((k0, why)) = failed.first() {
                    let e = ApplyError::Probe {
                        count: failed.len(),
                        first: format!("{}: {why}", vs_desc(k0)),
                    };
                    let _ = run.fail(step, e.to_string());
                    return Err(e);
                }
                run.done(step)?;
            }
            let step = "admit";
            run.intent(
                step,
                format!("admit {} key(s) for all traffic", new_keys.len()),
            )?;
            let mut next = run.owned.sets.clone();
            for fam in [IpFamily::IPv4, IpFamily::IPv6] {
                let (a, pr) = (set_name(set::ADMITTED, fam), set_name(set::PROBING, fam));
                let moving: BTreeSet<Member> =
                    next.get(&pr).map(|s| s.members.clone()).unwrap_or_default();
                if let Some(s) = next.get_mut(&a) {
                    s.members.extend(moving);
                }
                if let Some(s) = next.get_mut(&pr) {
                    s.members.clear();
                }
            }
            let (script, n) = set_script(&run.owned.sets, &next, timeout, &|n| is_admission(n));
            if let Err(e) = run.k.ipsets.restore(&script) {
                return Err(run.fail(step, e.to_string()));
            }
            run.owned.sets = next;
            run.report.ipset_lines += n;
            run.report.admitted = new_keys.len();
            run.done(step)?;
        }
        run.owned.namespaces = p.namespaces.clone();
        run.owned.exclude = p.excluded.clone();
        run.done("converged")?;
    } else {
        teardown(&mut run)?;
    }
    Ok(run.report)
}

/// The family of an ipset member (its first address).
fn member_family(m: &Member) -> IpFamily {
    match m {
        Member::Ip(ip)
        | Member::IpPort(ip, ..)
        | Member::IpPortIp(ip, ..)
        | Member::IpPortNet(ip, ..) => IpFamily::of(ip),
        Member::Port(_) => IpFamily::IPv4,
    }
}

/// Names of the agent's sets that exist in the kernel (empty when ipset cannot be read).
pub(crate) fn existing_sets(ipsets: &mut dyn Ipsets) -> BTreeSet<String> {
    ipsets
        .save(None)
        .ok()
        .and_then(|text| crate::ipset::parse_save(&text).ok())
        .map(|sets| {
            sets.into_keys()
                .filter(|n| n.starts_with("IPVSMIG-") || n.starts_with("IPVSMIG6-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Binds or unbinds addresses on kube-ipvs0 (one journaled step).
fn bind_or_unbind(run: &mut Run<'_, '_>, addr_ops: Vec<&Op>) -> Result<(), ApplyError> {
    if addr_ops.is_empty() {
        return Ok(());
    }
    let step = "addresses";
    let claims = addr_ops
        .iter()
        .filter_map(|o| match o {
            Op::AddAddress { address } => Some(*address),
            _ => None,
        })
        .collect();
    run.claim(
        step,
        format!("{} address change(s) on {KUBE_IPVS0}", addr_ops.len()),
        Vec::new(),
        claims,
    )?;
    for op in addr_ops {
        let r = match op {
            Op::AddAddress { address } => run.k.links.add_address(KUBE_IPVS0, *address).map(|()| {
                run.owned.addresses.push(*address);
                run.report.addresses_added += 1;
            }),
            Op::DelAddress { address } => match run.k.links.del_address(KUBE_IPVS0, *address) {
                Ok(()) | Err(LinkError::AddressNotFound { .. }) => {
                    run.owned.addresses.retain(|a| a != address);
                    run.report.addresses_removed += 1;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            _ => Ok(()),
        };
        if let Err(e) = r {
            return Err(run.fail(step, e.to_string()));
        }
    }
    run.owned.addresses.sort();
    run.owned.addresses.dedup();
    run.done(step)?;
    Ok(())
}

/// `iptables-restore --noflush` input removing our hooks and chains from one table's save, or
/// `None` when it holds nothing of ours.
pub(crate) fn removal_script(table: &str, saved: &str) -> Option<String> {
    let mut text = format!("*{table}\n");
    for line in saved.lines() {
        if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, _) = rest.split_once(' ').unwrap_or((rest, ""));
            if !chain.starts_with("IPVSMIG-") && line.contains("-j IPVSMIG-") {
                text.push_str(&format!("-D {rest}\n"));
            }
        }
    }
    let ours: Vec<&str> = saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split(' ').next())
        .filter(|c| c.starts_with("IPVSMIG-"))
        .collect();
    if ours.is_empty() && text.len() == table.len() + 2 {
        return None;
    }
    for c in &ours {
        text.push_str(&format!("-F {c}\n"));
    }
    for c in &ours {
        text.push_str(&format!("-X {c}\n"));
    }
    text.push_str("COMMIT\n");
    Some(text)
}

/// The rules of one chain in a table's save, without `-A CHAIN `, in order.
fn chain_rules<'a>(saved: &'a str, chain: &str) -> Vec<&'a str> {
    let prefix = format!("-A {chain} ");
    saved
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// Whether a rule's target is `target`.
fn jumps_to(rule: &str, target: &str) -> bool {
    let jump = format!("-j {target}");
    rule.ends_with(&jump) || rule.contains(&format!("{jump} "))
}

/// Nothing of ours stays: hooks and chains, then sets (a referenced set cannot be destroyed),
/// then the link if we created it and it is empty, then the sysctls' prior values.
fn teardown(run: &mut Run<'_, '_>) -> Result<(), ApplyError> {
    let step = "teardown-rules";
    // Chains and hooks named IPVSMIG- are ours by name (DESIGN.md "Ownership"): both families
    // are scanned, so rules installed just before a crash (not yet in the journal) go too. Each
    // table is saved once, and only tables holding something of ours are restored.
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        let journaled = run.owned.rules.contains(&fam);
        let mut scripts = Vec::new();
        for table in ipvsmig_engine::plan::hybrid::TABLES {
            let saved = match run.k.iptables.save_table(fam, table) {
                Ok(s) => s,
                Err(e) if journaled => return Err(run.fail(step, e.to_string())),
                Err(_) => continue, // no tools for this family: nothing of ours there
            };
            scripts.extend(removal_script(table, &saved));
        }
        if scripts.is_empty() {
            // Nothing of ours there (any more): the final "converged" record says so.
            run.owned.rules.retain(|f| *f != fam);
            continue;
        }
        run.intent(
            step,
            format!(
                "remove the {} IPVSMIG- chains and their hooks",
                fam.as_str()
            ),
        )?;
        for text in scripts {
            if let Err(e) = run.k.iptables.restore_noflush(fam, &text) {
                return Err(run.fail(step, e.to_string()));
            }
        }
        run.owned.rules.retain(|f| *f != fam);
        run.done(step)?;
    }
    // Sets named IPVSMIG- are ours by name too; destroyed only now, after the rules using them.
    let mut set_names = existing_sets(run.k.ipsets);
    set_names.extend(run.owned.sets.keys().cloned());
    if !set_names.is_empty() {
        let step = "teardown-sets";
        run.intent(step, format!("destroy {} IPVSMIG- set(s)", set_names.len()))?;
        let script: String = set_names.iter().map(|n| format!("destroy {n}\n")).collect();
        if let Err(e) = run.k.ipsets.restore(&script) {
            return Err(run.fail(step, e.to_string()));
        }
        run.owned.sets.clear();
        run.done(step)?;
    }
    if run.owned.created_link {
        let step = "teardown-link";
        let empty = match run.k.links.addresses(KUBE_IPVS0) {
            Ok(a) => a.is_empty(),
            Err(LinkError::LinkNotFound { .. }) => {
                run.owned.created_link = false;
                false
            }
            Err(e) => return Err(run.fail(step, e.to_string())),
        };
        if empty {
            run.intent(
                step,
                format!("delete {KUBE_IPVS0} (created by ipvs-migrate, empty)"),
            )?;
            if let Err(e) = run.k.links.delete_link(KUBE_IPVS0) {
                return Err(run.fail(step, e.to_string()));
            }
            run.owned.created_link = false;
            run.done(step)?;
        }
    }
    if !run.owned.sysctl_prior.is_empty() {
        let step = "teardown-sysctls";
        run.intent(step, "restore the sysctls' prior values".into())?;
        for (key, prior) in run.owned.sysctl_prior.clone() {
            if let Some(v) = prior
                && let Err(e) = run.k.sysctls.set(&key, &v)
            {
                return Err(run.fail(step, e.to_string()));
            }
            run.owned.sysctl_prior.retain(|(k, _)| *k != key);
        }
        run.done(step)?;
    }
    run.owned.namespaces.clear();
    run.owned.exclude.clear();
    // Nothing of ours is left in any backend: the next apply detects afresh.
    run.owned.backend = None;
    run.done("converged")?;
    Ok(())
}

#[cfg(test)]
mod tests;
