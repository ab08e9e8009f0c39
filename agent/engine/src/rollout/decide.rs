//! The rollout decision for one node (docs/rollout.md): from the plan, the object's status
//! (the fleet's claims), the Nodes' labels and this node's own state (its journal), what this
//! node does now and what its status write must say.
//!
//! The result carries the whole new status (or `None`: nothing to write). The caller writes it
//! with the `resourceVersion` it read: a conflict means another agent wrote first, and the
//! caller reads again and decides again — so a claim is only ever made against the status as
//! it is, and `maxNodesInParallel` holds however the agents interleave. The caller starts a
//! wave only after the write that claims it succeeded.
//!
//! It never does I/O and never reads a clock: `now` is an input.

use std::collections::{BTreeMap, BTreeSet};

use super::spec::{Plan, State};
use super::status::{FleetPhase, NodeEntry, NodePhase, Status};
use super::time::{format_time, parse_time};
use crate::cutover::{Cutover, Phase};

/// A Node's labels.
pub type Labels = BTreeMap<String, String>;

/// Where this node's own cutover is (from its journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalPhase {
    /// Cutting over, soaking or rolling back.
    InFlight,
    /// Soaked.
    Committed,
    /// Rolled back.
    RolledBack,
    /// Stopped before the kernel, or its rollback failed.
    Failed,
    /// Aborted on request (the rollout's abort, or `ipvs-migrate rollback` during the wave):
    /// not a failure of the wave, never counted as a rollback.
    Aborted,
}

/// This node's state, from its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// Namespaces migrated on the node now.
    pub migrated: BTreeSet<String>,
    /// The last cutover: its (current wave's) namespaces and phase.
    pub cutover: Option<(BTreeSet<String>, LocalPhase)>,
}

impl Local {
    /// From the journal's migrated namespaces and cutover state.
    pub fn new(migrated: &[String], cutover: Option<&Cutover>) -> Local {
        let cutover = cutover.and_then(|c| {
            let phase = match &c.phase {
                Phase::Idle => return None,
                Phase::Committed => LocalPhase::Committed,
                // The machine words an abort "aborted by the operator" (cutover.rs).
                Phase::RolledBack { reason } if reason.starts_with("aborted") => {
                    LocalPhase::Aborted
                }
                Phase::Failed { error } if error.starts_with("aborted") => LocalPhase::Aborted,
                Phase::RolledBack { .. } => LocalPhase::RolledBack,
                Phase::Failed { .. } => LocalPhase::Failed,
                _ => LocalPhase::InFlight,
            };
            Some((c.namespaces().into_iter().collect(), phase))
        });
        Local {
            migrated: migrated.iter().cloned().collect(),
            cutover,
        }
    }

    fn in_flight(&self) -> Option<&BTreeSet<String>> {
        self.cutover
            .as_ref()
            .filter(|(_, p)| *p == LocalPhase::InFlight)
            .map(|(ns, _)| ns)
    }
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The validated spec.
    pub plan: &'a Plan,
    /// The object's `metadata.name` (for messages).
    pub name: &'a str,
    /// The object's `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as read.
    pub status: &'a Status,
    /// This node's name.
    pub node: &'a str,
    /// Every Node's labels (name → labels); this node's must be among them to take part.
    pub nodes: &'a BTreeMap<String, Labels>,
    /// This node's own state.
    pub local: &'a Local,
    /// Now, unix seconds.
    pub now: u64,
}

/// What this node must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Cut over this wave (after the status write claiming it succeeded).
    Start {
        /// 0-based wave index.
        wave: usize,
        /// Its namespaces.
        namespaces: Vec<String>,
        /// Its excluded services.
        exclude: Vec<String>,
    },
    /// Take these namespaces back to iptables (an abort, or a claim that expired).
    RollBack {
        /// Namespaces.
        namespaces: Vec<String>,
        /// Why.
        reason: String,
    },
}

/// Why a node waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// These selected nodes have not finished the previous wave.
    PreviousWave(Vec<String>),
    /// These canary nodes have not finished this wave.
    Canaries(Vec<String>),
    /// Every slot is held, by these nodes.
    Slots(Vec<String>),
    /// The node runs a cutover that is not one of this plan's waves.
    LocalCutover,
}

/// The node's situation, for logs, metrics and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The plan's nodeSelector does not select this node.
    NotSelected,
    /// Waiting to start `wave` (0-based).
    Waiting(usize, Wait),
    /// Starting `wave` (claimed).
    Starting(usize),
    /// `wave` is cutting over or soaking here.
    InProgress(usize),
    /// `wave` just finished here.
    WaveDone(usize),
    /// Every wave finished here.
    Completed,
    /// `state: Paused`: nothing new starts.
    Paused,
    /// The fleet reached `haltAfterRollbacks`: nothing new starts.
    Halted,
    /// Rolling this plan's namespaces back (abort).
    Aborting,
    /// Nothing of this plan is left here.
    Aborted,
    /// The node stopped at a wave (rolled back, failed, expired); an operator clears it by
    /// deleting the node's status entry.
    Stopped(NodePhase, u32),
}

impl Verdict {
    /// A short name (closed set: log field, metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::NotSelected => "not-selected",
            Verdict::Waiting(..) => "waiting",
            Verdict::Starting(_) => "starting",
            Verdict::InProgress(_) => "in-progress",
            Verdict::WaveDone(_) => "wave-done",
            Verdict::Completed => "completed",
            Verdict::Paused => "paused",
            Verdict::Halted => "halted",
            Verdict::Aborting => "aborting",
            Verdict::Aborted => "aborted",
            Verdict::Stopped(..) => "stopped",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The situation.
    pub verdict: Verdict,
    /// What to do (after the write, when there is one).
    pub action: Action,
    /// The status to write with the `resourceVersion` read; `None`: nothing changed.
    pub status: Option<Status>,
}

fn entry(phase: NodePhase, wave: u32, now: u64, message: Option<String>) -> NodeEntry {
    NodeEntry {
        phase,
        wave,
        since: format_time(now),
        heartbeat: format_time(now),
        message,
    }
}

fn set_of(ns: &[String]) -> BTreeSet<String> {
    ns.iter().cloned().collect()
}

/// Decides for `i.node`.
pub fn decide(i: &Input<'_>) -> Decision {
    let plan = i.plan;
    let mut st = i.status.clone();
    expire(&mut st, plan, i.now);
    let selected: BTreeSet<&str> = i
        .nodes
        .iter()
        .filter(|(_, l)| plan.node_selector.as_ref().is_none_or(|s| s.matches(l)))
        .map(|(n, _)| n.as_str())
        .collect();
    let (verdict, action) = node(i, &mut st, &selected);
    st.summarize(plan, &selected, i.generation);
    // The entries say Aborted only once their nodes are back; this node may hold the plan's
    // namespaces with no entry at all (its entry was removed): the fleet is not through yet.
    if verdict == Verdict::Aborting {
        st.phase = Some(FleetPhase::Aborting);
    }
    let status = (st != *i.status).then_some(st);
    Decision {
        verdict,
        action,
        status,
    }
}

/// Slots whose holder wrote no heartbeat for `slotTimeout` expire (and count as rollbacks:
/// the holder rolls the wave back when it returns).
fn expire(st: &mut Status, plan: &Plan, now: u64) {
    let timeout = plan.slot_timeout.as_secs();
    for e in st.nodes.values_mut() {
        let stale = parse_time(&e.heartbeat).is_none_or(|h| now.saturating_sub(h) >= timeout);
        if e.phase == NodePhase::InProgress && stale {
            e.phase = NodePhase::Expired;
            e.since = format_time(now);
            e.message = Some(format!(
                "no heartbeat since {} (slotTimeout {}s): the agent died or lost the API server; it rolls the wave back when it returns",
                e.heartbeat, timeout
            ));
            st.rollbacks = st.rollbacks.saturating_add(1);
        }
    }
}

/// This node's verdict and action; updates its entry in `st`.
fn node(i: &Input<'_>, st: &mut Status, selected: &BTreeSet<&str>) -> (Verdict, Action) {
    let (plan, now, me) = (i.plan, i.now, i.node);
    let local = i.local;
    let wave_ns: Vec<BTreeSet<String>> = plan.waves.iter().map(|w| set_of(&w.namespaces)).collect();
    // Which of the plan's waves the node's own cutover is, and where it is.
    let local_wave = local
        .cutover
        .as_ref()
        .and_then(|(ns, p)| wave_ns.iter().position(|w| w == ns).map(|k| (k, *p)));
    let last = u32::try_from(plan.waves.len()).unwrap_or(u32::MAX);

    if plan.state == State::Aborted {
        let ours = plan.namespaces();
        let mut held: BTreeSet<String> = local
            .migrated
            .iter()
            .filter(|n| ours.contains(n.as_str()))
            .cloned()
            .collect();
        if let Some((k, LocalPhase::InFlight)) = local_wave {
            held.extend(wave_ns[k].iter().cloned());
        }
        if !held.is_empty() {
            let reason = format!("the IPVSMigration {} was aborted", i.name);
            let namespaces = held.into_iter().collect();
            return (Verdict::Aborting, Action::RollBack { namespaces, reason });
        }
        if let Some(e) = st.nodes.get_mut(me)
            && e.phase != NodePhase::Aborted
        {
            // A wave that rolled back by itself before the abort is still a rollback.
            let rolled_back = e.phase == NodePhase::InProgress
                && local_wave
                    .is_some_and(|(k, p)| p == LocalPhase::RolledBack && k + 1 == e.wave as usize);
            *e = entry(NodePhase::Aborted, e.wave, now, None);
            if rolled_back {
                st.rollbacks = st.rollbacks.saturating_add(1);
            }
        }
        return (Verdict::Aborted, Action::None);
    }

    let gate = if st.rollbacks >= plan.halt_after_rollbacks {
        Some(Verdict::Halted)
    } else if plan.state == State::Paused {
        Some(Verdict::Paused)
    } else {
        None
    };
    let mine = st.nodes.get(me).cloned();
    match mine {
        Some(e) if e.phase == NodePhase::InProgress => {
            let Some(k) = (e.wave as usize)
                .checked_sub(1)
                .filter(|k| *k < wave_ns.len())
            else {
                let msg = format!("wave {} is not in the plan (was the spec edited?)", e.wave);
                st.nodes
                    .insert(me.into(), entry(NodePhase::Failed, e.wave, now, Some(msg)));
                return (Verdict::Stopped(NodePhase::Failed, e.wave), Action::None);
            };
            let report = |st: &mut Status, phase, msg| {
                st.nodes.insert(me.into(), entry(phase, e.wave, now, msg));
            };
            match local_wave {
                Some((lk, LocalPhase::InFlight)) if lk == k => {
                    heartbeat(st, me, plan, now);
                    (Verdict::InProgress(k), Action::None)
                }
                Some((lk, LocalPhase::RolledBack)) if lk == k => {
                    report(
                        st,
                        NodePhase::RolledBack,
                        Some("the node rolled the wave back".into()),
                    );
                    st.rollbacks = st.rollbacks.saturating_add(1);
                    (
                        Verdict::Stopped(NodePhase::RolledBack, e.wave),
                        Action::None,
                    )
                }
                Some((lk, LocalPhase::Aborted)) if lk == k => {
                    let msg = "the wave was aborted on the node (`ipvs-migrate rollback`)";
                    report(st, NodePhase::Failed, Some(msg.into()));
                    (Verdict::Stopped(NodePhase::Failed, e.wave), Action::None)
                }
                Some((lk, LocalPhase::Failed)) if lk == k => {
                    report(
                        st,
                        NodePhase::Failed,
                        Some(
                            "the node's cutover failed (see its journal: `ipvs-migrate status`)"
                                .into(),
                        ),
                    );
                    (Verdict::Stopped(NodePhase::Failed, e.wave), Action::None)
                }
                _ if local.in_flight().is_none() && wave_ns[k].is_subset(&local.migrated) => {
                    report(st, NodePhase::Completed, None);
                    (Verdict::WaveDone(k), Action::None)
                }
                _ if local.in_flight().is_some() => {
                    heartbeat(st, me, plan, now);
                    (Verdict::Waiting(k, Wait::LocalCutover), Action::None)
                }
                // Claimed, not started, but an earlier wave is no longer here (an abort took
                // it back before the entry said so): the claim is void; without an entry, the
                // next round starts from what the node holds.
                _ if !wave_ns[..k].iter().all(|w| w.is_subset(&local.migrated)) => {
                    st.nodes.remove(me);
                    (Verdict::Waiting(k, Wait::LocalCutover), Action::None)
                }
                // Claimed, not started (the agent stopped between the write and the start, or
                // the node refused to start it). A node no longer selected gives it back too.
                _ => {
                    match gate.or_else(|| (!selected.contains(me)).then_some(Verdict::NotSelected))
                    {
                        None => {
                            heartbeat(st, me, plan, now);
                            (Verdict::Starting(k), start(plan, k))
                        }
                        Some(v) => {
                            // Give the slot back as it was before the claim.
                            if k == 0 {
                                st.nodes.remove(me);
                            } else {
                                report(st, NodePhase::Completed, None);
                                if let Some(x) = st.nodes.get_mut(me) {
                                    x.wave = e.wave - 1;
                                }
                            }
                            (v, Action::None)
                        }
                    }
                }
            }
        }
        Some(e) if e.phase != NodePhase::Completed && e.phase != NodePhase::Aborted => {
            // Stopped here. An expired claim whose wave still runs is taken back: the fleet
            // already gave its slot away.
            if e.phase == NodePhase::Expired
                && let Some((k, LocalPhase::InFlight)) = local_wave
            {
                let reason = format!("this node's claim on {} expired", plan.waves[k].name);
                let namespaces = plan.waves[k].namespaces.clone();
                return (
                    Verdict::Stopped(e.phase, e.wave),
                    Action::RollBack { namespaces, reason },
                );
            }
            (Verdict::Stopped(e.phase, e.wave), Action::None)
        }
        _ => {
            // Without an entry (new, or cleared by the operator after a stop), the node is
            // through the waves its journal holds in full, from the first on.
            let done = mine.as_ref().map_or_else(
                || {
                    let n = wave_ns
                        .iter()
                        .take_while(|w| w.is_subset(&local.migrated))
                        .count();
                    u32::try_from(n).unwrap_or(u32::MAX)
                },
                NodeEntry::waves_done,
            );
            // A wave finished here earlier whose namespaces are no longer all migrated was
            // rolled back after its soak (an alert, an operator): that is a rollback too.
            if let Some(j) = (0..(done as usize).min(wave_ns.len()))
                .find(|j| !wave_ns[*j].is_subset(&local.migrated))
            {
                let gone: Vec<&String> = wave_ns[j].difference(&local.migrated).collect();
                let msg = format!(
                    "{} of {} no longer migrated on this node (rolled back after it soaked)",
                    gone.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    plan.waves[j].name
                );
                st.nodes.insert(
                    me.into(),
                    entry(NodePhase::RolledBack, done, now, Some(msg)),
                );
                st.rollbacks = st.rollbacks.saturating_add(1);
                return (Verdict::Stopped(NodePhase::RolledBack, done), Action::None);
            }
            // The node runs one of the plan's waves the status does not show (its entry was
            // deleted while it ran): the status is rebuilt from the node, whatever the slots.
            if let Some((k, LocalPhase::InFlight)) = local_wave {
                st.nodes.insert(
                    me.into(),
                    entry(NodePhase::InProgress, k as u32 + 1, now, None),
                );
                return (Verdict::InProgress(k), Action::None);
            }
            if done >= last {
                return (Verdict::Completed, Action::None);
            }
            if let Some(v) = gate {
                return (v, Action::None);
            }
            if !selected.contains(me) {
                return (Verdict::NotSelected, Action::None);
            }
            let k = done as usize;
            if local.in_flight().is_some() {
                return (Verdict::Waiting(k, Wait::LocalCutover), Action::None);
            }
            if let Some(w) = wait(i, st, selected, k) {
                return (Verdict::Waiting(k, w), Action::None);
            }
            st.nodes
                .insert(me.into(), entry(NodePhase::InProgress, done + 1, now, None));
            (Verdict::Starting(k), start(plan, k))
        }
    }
}

/// Why wave `k` cannot start on `i.node` yet, if it cannot: every selected node must be
/// through the previous wave; a non-canary waits for every selected canary to be through
/// this one; and a slot must be free.
fn wait(i: &Input<'_>, st: &Status, selected: &BTreeSet<&str>, k: usize) -> Option<Wait> {
    let k32 = u32::try_from(k).unwrap_or(u32::MAX);
    let behind = |need: u32, nodes: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        nodes
            .filter(|n| *n != i.node && st.waves_done(n) < need)
            .map(str::to_owned)
            .collect()
    };
    if k > 0 {
        let pending = behind(k32, &mut selected.iter().copied());
        if !pending.is_empty() {
            return Some(Wait::PreviousWave(pending));
        }
    }
    if let Some(cs) = &i.plan.canary_node_selector {
        let canary = |n: &str| i.nodes.get(n).is_some_and(|l| cs.matches(l));
        if !canary(i.node) {
            let pending = behind(k32 + 1, &mut selected.iter().copied().filter(|n| canary(n)));
            if !pending.is_empty() {
                return Some(Wait::Canaries(pending));
            }
        }
    }
    let holders = st.holders();
    if holders.len() >= i.plan.max_nodes_in_parallel as usize {
        return Some(Wait::Slots(holders));
    }
    None
}

fn start(plan: &Plan, k: usize) -> Action {
    Action::Start {
        wave: k,
        namespaces: plan.waves[k].namespaces.clone(),
        exclude: plan.waves[k].exclude.clone(),
    }
}

/// Refreshes the holder's heartbeat when a quarter of `slotTimeout` has passed (so a slow
/// round or two never lets a live claim expire, and the object is not rewritten every round).
fn heartbeat(st: &mut Status, me: &str, plan: &Plan, now: u64) {
    let every = (plan.slot_timeout.as_secs() / 4).max(1);
    if let Some(e) = st.nodes.get_mut(me)
        && parse_time(&e.heartbeat).is_none_or(|h| now.saturating_sub(h) >= every)
    {
        e.heartbeat = format_time(now);
    }
}
