//! The cutover phase machine (DESIGN.md; issue 6): `(state, event) → (state, effects)`, pure.
//! The daemon's I/O loop feeds it events (results of the effects, clock ticks, alerts) and
//! runs the effects it returns, persisting the state to the journal before the first effect
//! of every transition ([`Effect::Persist`] always comes first when the phase changes).
//!
//! A wave moves through: preflight gate → prepare (kube-ipvs0; on Calico nodes wait until
//! calico-node has restarted since the link exists) → apply → probe (only the agent's own
//! probes reach IPVS) → admit → soak (watched) → committed; then the next wave. A rejection
//! alert, a failed probe or an abort at any point after apply started rolls the wave back —
//! exactly once, however many alerts arrive.

use serde::{Deserialize, Serialize};

/// Where a cutover is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing running.
    Idle,
    /// Waiting for the preflight result.
    Preflight,
    /// Creating kube-ipvs0.
    Prepare,
    /// Calico node: waiting for calico-node to restart after kube-ipvs0 was created.
    WaitCalico {
        /// When kube-ipvs0 was created (unix seconds).
        link_created: u64,
    },
    /// Programming the wave's IPVS objects, sets and rules.
    Apply,
    /// Only the agent's probes reach IPVS; waiting for their result.
    Probe,
    /// Admitting all traffic.
    Admit,
    /// Watching until `until`.
    Soak {
        /// End of the soak (unix seconds).
        until: u64,
    },
    /// Every wave soaked without an alert.
    Committed,
    /// Taking the wave back to iptables.
    RollingBack {
        /// Why.
        reason: String,
        /// What is being taken back.
        #[serde(default)]
        namespaces: Vec<String>,
    },
    /// The wave is back on iptables.
    RolledBack {
        /// Why it was rolled back.
        reason: String,
    },
    /// Stopped before touching the kernel (a blocker), or a rollback that failed.
    Failed {
        /// Why.
        error: String,
    },
}

impl Phase {
    /// The phase's name (the `phase` label of the metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Preflight => "preflight",
            Phase::Prepare => "prepare",
            Phase::WaitCalico { .. } => "wait-calico",
            Phase::Apply => "apply",
            Phase::Probe => "probe",
            Phase::Admit => "admit",
            Phase::Soak { .. } => "soak",
            Phase::Committed => "committed",
            Phase::RollingBack { .. } => "rolling-back",
            Phase::RolledBack { .. } => "rolled-back",
            Phase::Failed { .. } => "failed",
        }
    }

    /// Whether a cutover in this phase is still moving (not idle, committed, rolled back or
    /// failed): another cutover or an apply must wait.
    pub fn in_flight(&self) -> bool {
        !matches!(
            self,
            Phase::Idle | Phase::Committed | Phase::RolledBack { .. } | Phase::Failed { .. }
        )
    }

    /// Whether the kernel may hold objects of the current wave (a rollback has work to do).
    pub fn touched_kernel(&self) -> bool {
        matches!(
            self,
            Phase::Apply | Phase::Probe | Phase::Admit | Phase::Soak { .. } | Phase::Committed
        )
    }
}

/// The machine's whole state (journaled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cutover {
    /// Namespace groups, in order.
    pub waves: Vec<Vec<String>>,
    /// Index of the current wave.
    pub wave: usize,
    /// Where it is.
    pub phase: Phase,
    /// Blocker findings deliberately allowed (`--allow CHECK_ID`).
    pub allow: Vec<String>,
    /// Blockers that were allowed when the gate ran (recorded).
    pub allowed: Vec<String>,
    /// Soak per wave, seconds.
    pub soak_secs: u64,
    /// Calico node: wait for calico-node to restart after kube-ipvs0 exists.
    pub calico: bool,
    /// When the phase was entered (unix seconds).
    pub since: u64,
    /// Rollbacks so far.
    pub rollbacks: u32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Begin (or restart) with these waves.
    Start {
        /// Now.
        now: u64,
    },
    /// The preflight checks' blockers (ids).
    PreflightDone {
        /// Blocker ids.
        blockers: Vec<String>,
        /// Now.
        now: u64,
    },
    /// kube-ipvs0 exists.
    Prepared {
        /// When it was created (or found).
        link_created: u64,
        /// Now.
        now: u64,
    },
    /// calico-node's process start time.
    CalicoStarted {
        /// Unix seconds.
        started: u64,
        /// Now.
        now: u64,
    },
    /// The wave's objects are programmed.
    Applied {
        /// Now.
        now: u64,
    },
    /// Programming failed (the journal says what was applied).
    ApplyFailed {
        /// Error.
        error: String,
        /// Now.
        now: u64,
    },
    /// The probes' result: the virtual servers that did not answer as expected.
    Probed {
        /// Failed VIPs, described.
        failed: Vec<String>,
        /// Now.
        now: u64,
    },
    /// All traffic admitted.
    Admitted {
        /// Now.
        now: u64,
    },
    /// Clock.
    Tick {
        /// Now.
        now: u64,
    },
    /// A rollback trigger: the built-in evaluator, the Alertmanager webhook, Prometheus.
    Alert {
        /// Which alert and where it came from.
        reason: String,
        /// The namespace the alert is about; `None`: the node-wide alert.
        #[serde(default)]
        namespace: Option<String>,
        /// Now.
        now: u64,
    },
    /// The agent (re)started and found this state in its journal.
    Resume {
        /// Now.
        now: u64,
    },
    /// The operator aborts.
    Abort {
        /// Now.
        now: u64,
    },
    /// The rollback finished.
    RolledBack {
        /// Now.
        now: u64,
    },
    /// The rollback failed.
    RollbackFailed {
        /// Error.
        error: String,
        /// Now.
        now: u64,
    },
}

impl Event {
    fn now(&self) -> u64 {
        match self {
            Event::Start { now }
            | Event::PreflightDone { now, .. }
            | Event::Prepared { now, .. }
            | Event::CalicoStarted { now, .. }
            | Event::Applied { now }
            | Event::ApplyFailed { now, .. }
            | Event::Probed { now, .. }
            | Event::Admitted { now }
            | Event::Tick { now }
            | Event::Alert { now, .. }
            | Event::Resume { now }
            | Event::Abort { now }
            | Event::RolledBack { now }
            | Event::RollbackFailed { now, .. } => *now,
        }
    }
}

/// What the I/O loop must do, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    /// Write the new state to the journal (always first when the phase changes).
    Persist,
    /// Run the preflight checks.
    RunPreflight,
    /// Create kube-ipvs0 if missing.
    CreateLink,
    /// Watch calico-node's start time.
    WatchCalico,
    /// Program the namespaces' objects with admission for probes only.
    Apply {
        /// Namespaces.
        namespaces: Vec<String>,
    },
    /// Probe every virtual server of the namespaces through IPVS.
    Probe {
        /// Namespaces.
        namespaces: Vec<String>,
    },
    /// Admit all traffic.
    Admit {
        /// Namespaces.
        namespaces: Vec<String>,
    },
    /// Take the namespaces back to iptables (admission off, drain, delete).
    Rollback {
        /// Namespaces.
        namespaces: Vec<String>,
        /// Why.
        reason: String,
    },
    /// Tell the world (Kubernetes Event, log, metrics).
    Announce {
        /// Message.
        message: String,
    },
}

impl Cutover {
    /// A new cutover, idle.
    pub fn new(
        waves: Vec<Vec<String>>,
        allow: Vec<String>,
        soak_secs: u64,
        calico: bool,
    ) -> Cutover {
        Cutover {
            waves,
            wave: 0,
            phase: Phase::Idle,
            allow,
            allowed: Vec::new(),
            soak_secs,
            calico,
            since: 0,
            rollbacks: 0,
        }
    }

    /// The current wave's namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.waves.get(self.wave).cloned().unwrap_or_default()
    }

    /// Every namespace migrated so far (earlier waves committed, and the current one).
    pub fn migrated(&self) -> Vec<String> {
        self.waves
            .iter()
            .take(self.wave + 1)
            .flatten()
            .cloned()
            .collect()
    }
}

/// One transition.
pub fn step(s: &Cutover, ev: &Event) -> (Cutover, Vec<Effect>) {
    let now = ev.now();
    let mut n = s.clone();
    let mut fx = Vec::new();
    let to = |n: &mut Cutover, fx: &mut Vec<Effect>, p: Phase| {
        let msg = format!(
            "wave {} ({}): {} -> {}",
            n.wave + 1,
            n.namespaces().join(","),
            n.phase.name(),
            p.name()
        );
        n.phase = p;
        n.since = now;
        fx.push(Effect::Persist);
        fx.push(Effect::Announce { message: msg });
    };
    // What a rollback takes back: the current wave while it is in flight (earlier waves
    // soaked and stay); once everything is committed, what the alert names, else all of it.
    let rollback = |n: &mut Cutover, fx: &mut Vec<Effect>, reason: String, ns: Option<&String>| {
        n.rollbacks += 1;
        let namespaces = match ns {
            Some(ns) if n.migrated().contains(ns) => vec![ns.clone()],
            _ if n.phase == Phase::Committed => n.migrated(),
            _ => n.namespaces(),
        };
        to(
            n,
            fx,
            Phase::RollingBack {
                reason: reason.clone(),
                namespaces: namespaces.clone(),
            },
        );
        fx.push(Effect::Rollback { namespaces, reason });
    };
    match (&s.phase, ev) {
        (Phase::Idle | Phase::RolledBack { .. } | Phase::Failed { .. }, Event::Start { .. })
            if !s.waves.is_empty() && s.wave < s.waves.len() =>
        {
            to(&mut n, &mut fx, Phase::Preflight);
            fx.push(Effect::RunPreflight);
        }
        (Phase::Preflight, Event::PreflightDone { blockers, .. }) => {
            let unallowed: Vec<&String> =
                blockers.iter().filter(|b| !s.allow.contains(b)).collect();
            if unallowed.is_empty() {
                n.allowed = blockers.clone();
                to(&mut n, &mut fx, Phase::Prepare);
                fx.push(Effect::CreateLink);
            } else {
                let error = format!(
                    "blocked by {} (allow deliberately with --allow CHECK_ID)",
                    unallowed
                        .iter()
                        .map(|b| b.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                to(&mut n, &mut fx, Phase::Failed { error });
            }
        }
        (Phase::Prepare, Event::Prepared { link_created, .. }) => {
            if s.calico {
                to(
                    &mut n,
                    &mut fx,
                    Phase::WaitCalico {
                        link_created: *link_created,
                    },
                );
                fx.push(Effect::WatchCalico);
            } else {
                to(&mut n, &mut fx, Phase::Apply);
                fx.push(Effect::Apply {
                    namespaces: n.migrated(),
                });
            }
        }
        // Calico turns its IPVS handling on only if kube-ipvs0 existed when calico-node started.
        (Phase::WaitCalico { link_created }, Event::CalicoStarted { started, .. })
            if started > link_created =>
        {
            to(&mut n, &mut fx, Phase::Apply);
            fx.push(Effect::Apply {
                namespaces: n.migrated(),
            });
        }
        (Phase::Apply, Event::Applied { .. }) => {
            to(&mut n, &mut fx, Phase::Probe);
            fx.push(Effect::Probe {
                namespaces: n.namespaces(),
            });
        }
        // kube-ipvs0 could not be created: nothing of the wave is in the kernel yet.
        (Phase::Prepare | Phase::WaitCalico { .. }, Event::ApplyFailed { error, .. }) => {
            let error = format!("prepare failed: {error}");
            to(&mut n, &mut fx, Phase::Failed { error });
        }
        (Phase::Apply, Event::ApplyFailed { error, .. }) => {
            rollback(&mut n, &mut fx, format!("apply failed: {error}"), None);
        }
        (Phase::Probe, Event::Probed { failed, .. }) => {
            if failed.is_empty() {
                to(&mut n, &mut fx, Phase::Admit);
                fx.push(Effect::Admit {
                    namespaces: n.migrated(),
                });
            } else {
                rollback(
                    &mut n,
                    &mut fx,
                    format!("{} probe(s) failed, first {}", failed.len(), failed[0]),
                    None,
                );
            }
        }
        (Phase::Admit, Event::Admitted { .. }) => {
            to(
                &mut n,
                &mut fx,
                Phase::Soak {
                    until: now.saturating_add(s.soak_secs),
                },
            );
        }
        (Phase::Soak { until }, Event::Tick { .. }) if now >= *until => {
            if s.wave + 1 < s.waves.len() {
                // The next wave goes through the whole gate again.
                n.wave += 1;
                to(&mut n, &mut fx, Phase::Preflight);
                fx.push(Effect::RunPreflight);
            } else {
                to(&mut n, &mut fx, Phase::Committed);
            }
        }
        (
            p,
            Event::Alert {
                reason, namespace, ..
            },
        ) if p.touched_kernel() => {
            rollback(&mut n, &mut fx, reason.clone(), namespace.as_ref());
        }
        (p, Event::Abort { .. }) if p.touched_kernel() && *p != Phase::Committed => {
            rollback(&mut n, &mut fx, "aborted by the operator".into(), None);
        }
        // Restarted mid-wave: a wave that had not finished its soak is taken back (the
        // agent cannot know what happened while it was down); committed waves stay.
        (p, Event::Resume { .. }) if p.touched_kernel() && *p != Phase::Committed => {
            let reason = format!("the agent restarted during the {} phase", p.name());
            rollback(&mut n, &mut fx, reason, None);
        }
        // Restarted while rolling back: the rollback is run again (it converges, so running
        // it twice is safe); the phase and the count stay.
        (Phase::RollingBack { reason, namespaces }, Event::Resume { .. }) => {
            fx.push(Effect::Rollback {
                namespaces: namespaces.clone(),
                reason: reason.clone(),
            });
        }
        (Phase::Preflight, Event::Resume { .. }) => fx.push(Effect::RunPreflight),
        (Phase::Prepare, Event::Resume { .. }) => fx.push(Effect::CreateLink),
        (Phase::WaitCalico { .. }, Event::Resume { .. }) => fx.push(Effect::WatchCalico),
        (
            Phase::Idle | Phase::Preflight | Phase::Prepare | Phase::WaitCalico { .. },
            Event::Abort { .. },
        ) => {
            to(
                &mut n,
                &mut fx,
                Phase::Failed {
                    error: "aborted by the operator before any change".into(),
                },
            );
        }
        (Phase::RollingBack { reason, .. }, Event::RolledBack { .. }) => {
            let reason = reason.clone();
            to(&mut n, &mut fx, Phase::RolledBack { reason });
        }
        (Phase::RollingBack { reason, .. }, Event::RollbackFailed { error, .. }) => {
            let error = format!("rollback ({reason}) failed: {error}");
            to(&mut n, &mut fx, Phase::Failed { error });
        }
        // Anything else (a second alert while rolling back, a stale result, a tick) changes
        // nothing.
        _ => {}
    }
    (n, fx)
}

#[cfg(test)]
mod tests;
