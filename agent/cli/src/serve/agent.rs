//! The reconcile loop (DESIGN.md "Who runs it"): the one long-running owner of a node's
//! migration. It holds the journal's lock for the daemon's life, and on its own thread —
//! everything it does blocks: netlink, iptables-save, ipset, probes — it
//! - reconciles every `reconcilePeriod`: plans the migrated namespaces from kube-proxy's live
//!   rules and converges (real servers follow kube-proxy's endpoints with kube-proxy's graceful
//!   removal, services created or deleted in migrated namespaces are followed, the admission
//!   hooks are re-asserted first in their chains, the admission entries' timeouts — the dead
//!   man's switch — are refreshed);
//! - probes the migrated namespaces' VIPs every `probeInterval` (the rejection signal) and runs
//!   the built-in evaluator of rules/ thresholds over those counters;
//! - acts on rollback triggers (the evaluator, the Alertmanager webhook) and on requests from
//!   the CLI (apply, rollback, cutover) handed over the local socket;
//! - drives the cutover phase machine (engine `cutover`), journaling its state before each
//!   effect; after a restart it resumes from the journal (an unfinished wave is rolled back).
//!
//! It never touches an object its journal does not own: every change goes through the op
//! interpreter (`node::converge`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ipvsmig_engine::cutover::{self, Cutover, Effect, Event, Phase};
use ipvsmig_engine::inventory::Protocol;
use ipvsmig_engine::plan::diff::VsKey;
use ipvsmig_engine::plan::hybrid::{HybridPlan, set, set_name};
use ipvsmig_engine::rollback::{Alert, Evaluator, NodeSeries};
use ipvsmig_host::apply::{self, Expect, Options, Owned, Record, Report, RollbackEntry};
use ipvsmig_host::journal::Journal;

use super::alerts::Trigger;
use super::alerts::prom::PollDedup;
use super::config::Config;
use super::http::App;
use super::metrics::node::RollbackReason;
use super::metrics::{Metrics, Source};
use super::socket::{Request, Response};
use crate::cli::{BackendArg, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::migrate::{self, unix_now};
use crate::node::{self, NodeEnv};

mod fleet;

/// What the loop is told.
#[derive(Debug)]
pub enum Msg {
    /// A rollback trigger (deduplicated by its source).
    Trigger {
        /// The alert.
        trigger: Trigger,
        /// Where it came from.
        source: Source,
    },
    /// A request from the CLI; the answer goes back on `reply`.
    Request {
        /// The request.
        req: Request,
        /// Where the answer goes.
        reply: Sender<Response>,
    },
    /// The fleet rollout's questions and commands (serve/rollout.rs).
    Rollout(super::rollout::ToAgent),
    /// Shut down.
    Stop,
}

/// The rejection-signal probes per namespace per round (rotating through its VIPs).
pub const PROBES_PER_ROUND: usize = 4;
/// Samples of the evaluator's series older than its window by this much are dropped.
const SERIES_SLACK: f64 = 60.0;

/// Where the loop finds the node and how it behaves.
pub struct Settings {
    /// The state directory (journal, socket).
    pub state_dir: PathBuf,
    /// The node's inputs: host root, node IPs, kube-proxy's config; never dump files.
    pub inputs: Inputs,
    /// `--iptables-backend`.
    pub backend: BackendArg,
    /// The daemon's configuration.
    pub cfg: Config,
    /// The Kubernetes reporter (`kubernetes.enabled`): the Node's status and Events.
    pub reporter: Option<super::kube::Reporter>,
}

/// The loop's state.
pub struct Agent {
    s: Settings,
    journal: Journal<Record>,
    owned: Owned,
    /// The last run failed or was interrupted: re-read the kernel on the next one.
    reread: bool,
    /// The HTTP side's shared state: the metrics live there.
    app: Arc<App>,
    /// The plan of the last successful convergence.
    plan: Option<HybridPlan>,
    /// Admitted TCP virtual servers with real servers, per namespace: what the rejection
    /// signal probes.
    targets: BTreeMap<String, Vec<VsKey>>,
    cursor: BTreeMap<String, usize>,
    /// Cumulative probe counts per namespace (total, rejected), as the counters export them.
    counts: BTreeMap<String, (u64, u64)>,
    series: NodeSeries,
    evaluator: Evaluator,
    firing: BTreeSet<Alert>,
    /// Who triggered the rollback the cutover machine is about to run.
    trigger_source: Option<&'static str>,
    /// Which polled Prometheus alerts were already triggers.
    polled: PollDedup,
    /// kube-proxy said it is unhealthy at the last pass (following it is paused).
    kube_proxy_unhealthy: bool,
    /// kube-proxy's `/proxyMode` answered something else than `iptables`: it switched (the
    /// finalize step); the loop neither follows its rules nor rolls back any more.
    kube_proxy_switched: Option<String>,
    /// The drain of the rollback the cutover machine is about to run, when the operator gave
    /// one.
    drain_override: Option<Duration>,
}

impl Agent {
    /// Opens the journal under its lock (another daemon or a running CLI command: exit 3).
    pub fn open(s: Settings, app: Arc<App>) -> Result<Agent, CliError> {
        let o = node::open_journal(&s.state_dir, node::host_root(&s.inputs))?;
        let evaluator = Evaluator::new(s.cfg.thresholds.clone());
        Ok(Agent {
            s,
            journal: o.journal,
            owned: o.owned,
            reread: o.interrupted || o.boot_changed,
            app,
            plan: None,
            targets: BTreeMap::new(),
            cursor: BTreeMap::new(),
            counts: BTreeMap::new(),
            series: NodeSeries::default(),
            evaluator,
            firing: BTreeSet::new(),
            trigger_source: None,
            polled: PollDedup::default(),
            kube_proxy_unhealthy: false,
            kube_proxy_switched: None,
            drain_override: None,
        })
    }

    /// Runs until [`Msg::Stop`] or until every sender is gone.
    pub fn run(mut self, inbox: Receiver<Msg>) {
        self.startup();
        let mut next_reconcile = Instant::now() + self.s.cfg.reconcile_period;
        let mut next_probe = Instant::now() + self.s.cfg.probe_interval;
        let mut next_poll = Instant::now() + self.s.cfg.prometheus_interval;
        loop {
            let wake = next_reconcile
                .min(next_probe)
                .min(if self.s.cfg.prometheus_url.is_some() {
                    next_poll
                } else {
                    next_reconcile
                });
            match inbox.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Trigger { trigger, source }) => {
                    self.trigger(trigger.namespace, &trigger.alertname, source.as_str());
                }
                Ok(Msg::Request { req, reply }) => {
                    let resp = self.request(req);
                    let _ = reply.send(resp);
                }
                Ok(Msg::Rollout(m)) => self.fleet(m),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_probe {
                self.probe_round();
                next_probe = Instant::now() + self.s.cfg.probe_interval;
            }
            if self.s.cfg.prometheus_url.is_some() && Instant::now() >= next_poll {
                self.poll_prometheus();
                next_poll = Instant::now() + self.s.cfg.prometheus_interval;
            }
            if Instant::now() >= next_reconcile {
                self.reconcile();
                next_reconcile = Instant::now() + self.s.cfg.reconcile_period;
            }
            self.tick();
            // Hands the state over; the reporter sends it when it changed (never waits).
            if let Some(r) = &self.s.reporter {
                r.status(super::kube::snapshot(&self.owned));
            }
        }
        tracing::info!("reconcile loop stopped");
    }

    fn startup(&mut self) {
        if self.owned.no_watch && !self.owned.namespaces.is_empty() {
            tracing::info!(
                namespaces = %self.owned.namespaces.join(","),
                "watching namespaces applied with --no-watch: their admission entries get the switch's timeout"
            );
        }
        self.owned.no_watch = false;
        if self.owned.cutover.is_some() {
            self.feed(Event::Resume { now: unix_now() });
        }
        self.reconcile();
    }

    fn metrics(&self) -> &Metrics {
        &self.app.metrics
    }

    fn switch_secs(&self) -> u32 {
        u32::try_from(self.s.cfg.switch_timeout.as_secs()).unwrap_or(u32::MAX)
    }

    /// Converges the node to the hybrid plan of `namespaces` (none: nothing of ours).
    fn converge_to(
        &mut self,
        namespaces: &[String],
        exclude: &[String],
        opts: Options,
        drain: Duration,
    ) -> Result<Report, CliError> {
        let plan = if namespaces.is_empty() {
            None
        } else {
            Some(node::plan_for(
                &self.s.inputs,
                self.s.backend,
                namespaces,
                exclude,
                self.switch_secs(),
            )?)
        };
        self.converge_plan(plan, opts, drain)
    }

    fn converge_plan(
        &mut self,
        plan: Option<HybridPlan>,
        opts: Options,
        drain: Duration,
    ) -> Result<Report, CliError> {
        let mut env = NodeEnv {
            drain,
            probe_mark: plan
                .as_ref()
                .map_or(ipvsmig_engine::plan::hybrid::DEFAULT_PROBE_MARK, |p| {
                    p.probe_mark
                }),
            verbose: false,
            refresh: refresh_script(plan.as_ref(), &self.owned, self.switch_secs()),
        };
        let opts = Options {
            reread: self.reread || opts.reread,
            ..opts
        };
        let started = Instant::now();
        let r = node::converge(
            &mut self.journal,
            &mut self.owned,
            &self.s.state_dir,
            self.s.backend,
            plan.as_ref(),
            &mut env,
            opts,
        );
        self.reread = r.is_err();
        match &r {
            Ok(rep) => {
                self.app.metrics.node.observe_sync(started.elapsed());
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    ipvs_requests = rep.ipvs_requests,
                    ipset_lines = rep.ipset_lines,
                    terminating = rep.terminating,
                    "converged"
                );
                self.targets = plan
                    .as_ref()
                    .map(|p| probe_targets(p, &self.owned))
                    .unwrap_or_default();
                self.plan = plan;
                self.set_switch_gauge();
            }
            Err(e) => {
                self.metrics().reconcile_errors.inc();
                tracing::error!(error = %e.message, "converging failed");
            }
        }
        r
    }

    fn set_switch_gauge(&self) {
        // (get_or_create's guard holds the family's lock: never held across remove.)
        if self.owned.namespaces.is_empty() {
            self.metrics().switch_expires.remove(&Vec::new());
        } else {
            self.metrics()
                .switch_expires
                .get_or_create(&Vec::new())
                .set(unix_now() as f64 + self.s.cfg.switch_timeout.as_secs_f64());
        }
    }

    /// One reconcile pass over the migrated namespaces.
    fn reconcile(&mut self) {
        if self.owned.namespaces.is_empty() {
            self.targets.clear();
            self.set_switch_gauge();
            // Objects owned with no namespace left: a rollback was decided (and journaled) but
            // not finished — the daemon was killed in it. Finish it. Not while a cutover is in
            // flight: its prepare step owns kube-ipvs0 before any namespace is applied.
            let in_flight = self
                .owned
                .cutover
                .as_ref()
                .is_some_and(|c| c.phase.in_flight());
            if !self.owned.is_empty() && !in_flight {
                tracing::warn!(
                    "objects owned with no namespace migrated: finishing an interrupted rollback"
                );
                let _ = self.converge_plan(None, Options::default(), Duration::ZERO);
            }
            return;
        }
        // kube-proxy switched to IPVS mode (the node is being finalized): its rules no longer
        // describe the services and it owns the virtual servers now — following or rolling
        // back would delete what it adopted.
        if self.kube_proxy_switched_now() {
            return;
        }
        // A cutover between apply and admit holds the wave's keys in the probing set; its
        // own steps move them on (they run to completion within one message, so this is a
        // guard, not a path).
        let hold = self
            .owned
            .cutover
            .as_ref()
            .is_some_and(|c| matches!(c.phase, Phase::Apply | Phase::Probe | Phase::Admit));
        let namespaces = self.owned.namespaces.clone();
        let exclude = self.owned.exclude.clone();
        let opts = Options {
            graceful: true,
            hold_admission: hold,
            ..Options::default()
        };
        // kube-proxy unhealthy: its rules may be stale, so following them is paused — the last
        // plan is kept (admission refreshed, hooks re-asserted) until it syncs again.
        if self.kube_proxy_unhealthy_now()
            && let Some(plan) = self.plan.clone()
            && plan.namespaces == namespaces
        {
            let _ = self.converge_plan(Some(plan), opts, Duration::ZERO);
            return;
        }
        let _ = self.converge_to(&namespaces, &exclude, opts, Duration::ZERO);
    }

    /// Asks kube-proxy's `/proxyMode` (when configured); whether it runs in another mode than
    /// iptables. No answer is not a switch.
    fn kube_proxy_switched_now(&mut self) -> bool {
        let Some(addr) = self.s.cfg.kube_proxy_metrics else {
            return false;
        };
        let mode = match ipvsmig_host::kube_proxy::proxy_mode(addr, Default::default()) {
            Ok(m) if m.trim() != "iptables" => Some(m.trim().to_owned()),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "kube-proxy's /proxyMode did not answer");
                None
            }
        };
        if mode != self.kube_proxy_switched {
            match &mode {
                Some(m) => {
                    tracing::warn!(mode = %m, %addr, "kube-proxy runs in {m} mode on this node: the agent stops following its rules and rolling back; run `ipvs-migrate finalize`")
                }
                None => {
                    tracing::info!(%addr, "kube-proxy runs in iptables mode again: following its rules")
                }
            }
        }
        self.kube_proxy_switched = mode;
        self.kube_proxy_switched.is_some()
    }

    /// Asks kube-proxy's healthz (when configured). Unreachable is not unhealthy: kube-proxy
    /// may serve healthz elsewhere, and the rules themselves are what is followed.
    fn kube_proxy_unhealthy_now(&mut self) -> bool {
        let Some(addr) = self.s.cfg.kube_proxy_healthz else {
            return false;
        };
        let unhealthy = match ipvsmig_host::kube_proxy::healthz(addr, Default::default()) {
            // A node being drained answers 503 with nodeEligible false: the proxier is fine.
            Ok(h) => !h.healthy && h.node_eligible != Some(false),
            Err(e) => {
                tracing::debug!(error = %e, "kube-proxy's healthz did not answer");
                false
            }
        };
        if unhealthy != self.kube_proxy_unhealthy {
            if unhealthy {
                tracing::warn!(%addr, "kube-proxy reports itself unhealthy: following its rules is paused (admission is still refreshed)");
            } else {
                tracing::info!(%addr, "kube-proxy is healthy again: following its rules");
            }
        }
        self.kube_proxy_unhealthy = unhealthy;
        unhealthy
    }

    /// One query of the configured Prometheus: this node's firing rollback alerts.
    fn poll_prometheus(&mut self) {
        let Some(url) = self.s.cfg.prometheus_url.as_deref() else {
            return;
        };
        let series = match ipvsmig_host::http_get::Url::parse(url)
            .map_err(|e| e.to_string())
            .and_then(|u| {
                super::alerts::prom::query(
                    &u,
                    &self.s.cfg.prometheus_query,
                    super::alerts::prom::LIMITS,
                )
                .map_err(|e| e.to_string())
            }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, url, "polling Prometheus failed");
                return;
            }
        };
        let node = self.s.cfg.node_name.clone();
        let polled = self.polled.poll(&node, &series);
        for (_, t) in polled.triggers {
            self.metrics().trigger(Source::Prometheus);
            tracing::warn!(alertname = %t.alertname, namespace = ?t.namespace, "rollback trigger from Prometheus");
            self.trigger(t.namespace, &t.alertname, Source::Prometheus.as_str());
        }
    }

    /// One round of the rejection-signal probes, then the built-in evaluator.
    fn probe_round(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let mut picked: Vec<(String, VsKey)> = Vec::new();
        for (ns, keys) in &self.targets {
            if keys.is_empty() {
                continue;
            }
            let c = self.cursor.entry(ns.clone()).or_default();
            for i in 0..PROBES_PER_ROUND.min(keys.len()) {
                picked.push((ns.clone(), keys[(*c + i) % keys.len()]));
            }
            *c = (*c + PROBES_PER_ROUND) % keys.len();
        }
        let addrs: Vec<SocketAddr> = picked
            .iter()
            .map(|(_, k)| SocketAddr::new(k.1, k.2))
            .collect();
        let timeout = self.s.cfg.probe_interval.min(Duration::from_secs(1));
        // Probes without the probe mark: they take the path every client takes.
        let outcomes = ipvsmig_host::probe::tcp_many(&addrs, 0, timeout);
        let now = unix_now_f64();
        match ipvsmig_host::counters::read(node::host_root(&self.s.inputs)) {
            Ok(c) => self.app.metrics.node.refresh_node(&c),
            Err(e) => tracing::debug!(error = %e, "kernel counters"),
        }
        for ((ns, key), (out, took)) in picked.iter().zip(outcomes) {
            let rejected = out != ipvsmig_host::probe::Outcome::Connected;
            self.app.metrics.probe(ns, took, rejected);
            let c = self.counts.entry(ns.clone()).or_default();
            c.0 += 1;
            if rejected {
                c.1 += 1;
                tracing::debug!(namespace = %ns, vip = %SocketAddr::new(key.1, key.2), outcome = ?out, "probe rejected");
            }
        }
        let keep = now - self.s.cfg.thresholds.window - SERIES_SLACK;
        for (ns, (total, rejected)) in &self.counts {
            // The report's last hour (in memory; docs/report.md).
            self.app.report.record(
                ns,
                ipvsmig_engine::report::Sample {
                    at: now as u64,
                    total: *total,
                    rejected: *rejected,
                },
            );
            for (series, v) in [
                (&mut self.series.total, *total),
                (&mut self.series.rejected, *rejected),
            ] {
                let s = series.entry(ns.clone()).or_default();
                s.push((now, v as f64));
                s.retain(|(t, _)| *t >= keep);
            }
        }
        if !self.s.cfg.builtin_evaluator {
            return;
        }
        let firing = self.evaluator.eval(&self.series, now);
        let new: Vec<Alert> = firing.difference(&self.firing).cloned().collect();
        self.firing = firing;
        for a in new {
            self.metrics().trigger(Source::Builtin);
            let ns = match &a {
                Alert::RejectionRate => None,
                Alert::RejectionRatio(ns) => Some(ns.clone()),
            };
            tracing::warn!(alert = a.name(), namespace = ?ns, "the built-in evaluator fires");
            self.trigger(ns, a.name(), Source::Builtin.as_str());
        }
    }

    /// A rollback trigger: through the cutover machine when a cutover holds the namespace,
    /// else straight to a rollback of the namespace (or, node-wide, of every namespace).
    fn trigger(&mut self, namespace: Option<String>, alert: &str, source: &'static str) {
        let now = unix_now();
        if let Some(mode) = &self.kube_proxy_switched {
            tracing::error!(alert, source, mode = %mode, "rollback trigger ignored: kube-proxy already runs in {mode} mode and owns the virtual servers");
            return;
        }
        if let Some(c) = &self.owned.cutover
            && c.phase.touched_kernel()
            && namespace
                .as_ref()
                .is_none_or(|ns| c.migrated().contains(ns))
        {
            self.trigger_source = Some(source);
            self.feed(Event::Alert {
                reason: alert.to_owned(),
                namespace,
                now,
            });
            return;
        }
        let targets: Vec<String> = match namespace {
            Some(ns) if self.owned.namespaces.contains(&ns) => vec![ns],
            Some(ns) => {
                tracing::info!(namespace = %ns, alert, "trigger for a namespace that is not migrated here: nothing to roll back");
                return;
            }
            None => self.owned.namespaces.clone(),
        };
        if targets.is_empty() {
            return;
        }
        let _ = self.rollback(&targets, alert, source, self.s.cfg.drain);
    }

    /// Takes `namespaces` back to iptables: admission off, drain (refreshing what stays),
    /// delete; the rollback is journaled with its reason first.
    fn rollback(
        &mut self,
        namespaces: &[String],
        reason: &str,
        source: &str,
        drain: Duration,
    ) -> Result<Report, CliError> {
        let remaining: Vec<String> = self
            .owned
            .namespaces
            .iter()
            .filter(|n| !namespaces.contains(n))
            .cloned()
            .collect();
        let exclude = self.owned.exclude.clone();
        let (plan, taken) = if remaining.is_empty() {
            (None, self.owned.namespaces.clone())
        } else {
            match node::plan_for(
                &self.s.inputs,
                self.s.backend,
                &remaining,
                &exclude,
                self.switch_secs(),
            ) {
                Ok(p) => (Some(p), namespaces.to_vec()),
                Err(e) => {
                    // Without a plan for what stays, the safe direction is all the way back.
                    tracing::error!(error = %e.message, "cannot plan the namespaces that stay: taking every namespace back to iptables");
                    (None, self.owned.namespaces.clone())
                }
            }
        };
        tracing::warn!(namespaces = %taken.join(","), reason, source, "rolling back");
        if let Some(r) = &self.s.reporter {
            r.event(ipvsmig_kube::node_status::EventNote {
                reason: "RolledBack".into(),
                message: format!(
                    "namespaces {} rolled back to kube-proxy's iptables rules: {reason} (trigger: {source})",
                    taken.join(",")
                ),
                warning: true,
            });
        }
        self.owned.record_rollback(RollbackEntry {
            at: unix_now(),
            namespaces: taken.clone(),
            reason: reason.to_owned(),
            source: source.to_owned(),
        });
        // The decision is journaled before anything moves: a daemon killed during the drain
        // finishes this rollback after its restart instead of re-admitting the namespaces.
        self.owned.namespaces.retain(|n| !taken.contains(n));
        if let Err(e) = node::persist(&mut self.journal, &self.owned, "rollback") {
            tracing::error!(error = %e.message, "journaling the rollback decision");
        }
        self.app.metrics.node.rollback(match source {
            "builtin" => RollbackReason::AlertBuiltin,
            "alertmanager" => RollbackReason::Alertmanager,
            "prometheus" => RollbackReason::Prometheus,
            "probe" => RollbackReason::ProbeFailed,
            "restart" => RollbackReason::Restart,
            "operator" => RollbackReason::Operator,
            _ => RollbackReason::ApplyFailed,
        });
        let r = self.converge_plan(plan, Options::default(), drain);
        if r.is_ok() {
            for ns in &taken {
                self.app.metrics.forget_phase(ns);
                self.series.total.remove(ns);
                self.series.rejected.remove(ns);
                self.counts.remove(ns);
                self.cursor.remove(ns);
            }
            // Alerts that fired for what is gone may fire again later, for a new migration.
            self.firing.retain(|a| match a {
                Alert::RejectionRatio(ns) => !taken.contains(ns),
                Alert::RejectionRate => !self.owned.namespaces.is_empty(),
            });
        }
        r
    }

    /// Feeds the cutover machine and runs its effects, in order.
    fn feed(&mut self, ev: Event) {
        let Some(c) = self.owned.cutover.clone() else {
            return;
        };
        let (n, fx) = cutover::step(&c, &ev);
        self.owned.cutover = Some(n);
        for f in fx {
            self.effect(f);
        }
    }

    fn effect(&mut self, f: Effect) {
        let now = unix_now();
        match f {
            Effect::Persist => {
                if let Err(e) = node::persist(&mut self.journal, &self.owned, "cutover") {
                    tracing::error!(error = %e.message, "journaling the cutover's phase");
                }
            }
            Effect::Announce { message } => {
                tracing::info!(%message, "cutover");
                self.phase_metrics();
                if let Some(r) = &self.s.reporter {
                    r.event(ipvsmig_kube::node_status::EventNote {
                        reason: "PhaseChanged".into(),
                        message: message.clone(),
                        warning: false,
                    });
                }
            }
            Effect::RunPreflight => {
                let blockers = match migrate::gate(&self.s.inputs) {
                    Ok(g) => g.blockers.into_iter().map(|(id, _)| id).collect(),
                    Err(e) => {
                        tracing::error!(error = %e.message, "preflight could not run");
                        vec!["preflight-unavailable".to_owned()]
                    }
                };
                self.feed(Event::PreflightDone { blockers, now });
            }
            Effect::CreateLink => match node::prepare_link(&mut self.journal, &mut self.owned) {
                Ok(_) => self.feed(Event::Prepared {
                    link_created: now,
                    now,
                }),
                Err(e) => self.feed(Event::ApplyFailed {
                    error: e.message,
                    now,
                }),
            },
            // Polled by tick().
            Effect::WatchCalico => {}
            Effect::Apply { namespaces } => {
                let mut all = self.owned.namespaces.clone();
                all.extend(namespaces);
                all.sort();
                all.dedup();
                let exclude = self.owned.exclude.clone();
                let opts = Options {
                    hold_admission: true,
                    graceful: true,
                    ..Options::default()
                };
                match self.converge_to(&all, &exclude, opts, Duration::ZERO) {
                    Ok(_) => self.feed(Event::Applied { now }),
                    Err(e) => self.feed(Event::ApplyFailed {
                        error: e.message,
                        now: unix_now(),
                    }),
                }
            }
            Effect::Probe { .. } => {
                let failed = self.verify();
                self.feed(Event::Probed {
                    failed,
                    now: unix_now(),
                });
            }
            Effect::Admit { .. } => {
                let all = self.owned.namespaces.clone();
                let exclude = self.owned.exclude.clone();
                let opts = Options {
                    graceful: true,
                    ..Options::default()
                };
                match self.converge_to(&all, &exclude, opts, Duration::ZERO) {
                    Ok(_) => self.feed(Event::Admitted { now: unix_now() }),
                    Err(e) => {
                        self.trigger_source = Some("apply");
                        self.feed(Event::Alert {
                            reason: format!("admitting traffic failed: {}", e.message),
                            namespace: None,
                            now: unix_now(),
                        });
                    }
                }
            }
            Effect::Rollback { namespaces, reason } => {
                let source = self.trigger_source.take().unwrap_or(
                    if reason.starts_with("the agent restarted") {
                        "restart"
                    } else if reason.contains("probe") {
                        "probe"
                    } else if reason.starts_with("aborted") {
                        "operator"
                    } else {
                        "apply"
                    },
                );
                let drain = self.drain_override.take().unwrap_or(self.s.cfg.drain);
                match self.rollback(&namespaces, &reason, source, drain) {
                    Ok(_) => self.feed(Event::RolledBack { now: unix_now() }),
                    Err(e) => self.feed(Event::RollbackFailed {
                        error: e.message,
                        now: unix_now(),
                    }),
                }
            }
        }
    }

    /// The cutover's verification: for `verify`, rounds of marked probes (only they reach
    /// IPVS while the keys are in the probing set) to every probing virtual server; the
    /// failures of the first round that has any.
    fn verify(&mut self) -> Vec<String> {
        let Some(plan) = &self.plan else {
            return vec!["no plan to verify against".into()];
        };
        let (_, probing) = self.owned.admission();
        let targets = apply::probe_targets(plan, &probing);
        let mark = plan.probe_mark;
        let until = Instant::now() + self.s.cfg.verify;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let failed = node::probe(&targets, mark, Duration::from_secs(2), false);
            if !failed.is_empty() {
                return failed
                    .into_iter()
                    .map(|(k, why)| format!("{}:{}/{}: {why}", k.1, k.2, k.0.as_str()))
                    .collect();
            }
            if Instant::now() + Duration::from_secs(1) >= until {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        tracing::info!(
            virtual_servers = targets.len(),
            rounds,
            "verified through IPVS with the agent's probes"
        );
        Vec::new()
    }

    /// Clock-driven cutover events: the soak's end, calico-node's restart.
    fn tick(&mut self) {
        let Some(c) = &self.owned.cutover else {
            return;
        };
        let now = unix_now();
        match c.phase {
            Phase::Soak { .. } => self.feed(Event::Tick { now }),
            Phase::WaitCalico { .. } => {
                if let Some(started) = calico_started(node::host_root(&self.s.inputs)) {
                    self.feed(Event::CalicoStarted { started, now });
                }
            }
            _ => {}
        }
    }

    /// The phase gauges (`ipvs_migrate_phase`, `ipvs_migrate_phase_started_timestamp_seconds`):
    /// one series per namespace of the cutover's current wave, at its current phase.
    fn phase_metrics(&mut self) {
        let Some(c) = &self.owned.cutover else {
            return;
        };
        for ns in c.namespaces() {
            self.app.metrics.set_phase(&ns, &c.phase, c.since as f64);
        }
    }

    /// Answers a CLI request.
    fn request(&mut self, req: Request) -> Response {
        let r = match req {
            // A finalized node is kube-proxy's: nothing is migrated onto it again.
            Request::Apply { .. } | Request::Cutover { .. } if self.owned.finalized => {
                Err(crate::finalize::finalized_refusal("apply/cutover"))
            }
            // kube-proxy switched: it owns the virtual servers; only finalize goes on.
            Request::Apply { .. } | Request::Cutover { .. } | Request::Rollback { .. }
                if self.kube_proxy_switched.is_some() =>
            {
                Err(CliError::new(
                    ExitCode::NotReady,
                    format!(
                        "kube-proxy already runs in {} mode on this node and owns the virtual servers: apply, cutover and rollback are over here; run `ipvs-migrate finalize` (docs/finalize.md)",
                        self.kube_proxy_switched.as_deref().unwrap_or("another")
                    ),
                ))
            }
            Request::Finalize {
                kube_proxy_metrics,
                manifests,
                node_name,
                kube_proxy_image,
                iptables_save,
                ip6tables_save,
                json,
                kubernetes_version,
            } => {
                let a = crate::finalize::FinalizeArgs {
                    dry_run: false,
                    metrics_url: &kube_proxy_metrics,
                    manifests: manifests.as_deref(),
                    node_name: node_name.as_deref(),
                    kube_proxy_image: kube_proxy_image.as_deref(),
                    // The daemon's service account has no rights on DaemonSets: the CLI
                    // applies the switch itself (finalize/api_switch.rs).
                    apply_switch: false,
                    output: if json {
                        crate::cli::Format::Json
                    } else {
                        crate::cli::Format::Table
                    },
                };
                let inputs = Inputs {
                    iptables_save,
                    ip6tables_save,
                    kubernetes_version,
                    ..self.s.inputs.clone()
                };
                return self.finalize(&a, inputs);
            }
            Request::Apply {
                namespaces,
                exclude,
            } => self.apply(&namespaces, &exclude),
            Request::Rollback {
                namespaces,
                all,
                drain_secs,
            } => self.operator_rollback(&namespaces, all, drain_secs.map(Duration::from_secs)),
            Request::Cutover {
                waves,
                soak_secs,
                allow,
            } => self.cutover(waves, soak_secs, allow),
        };
        match r {
            Ok(text) => {
                tracing::info!(outcome = %text.lines().next().unwrap_or(""), "request done");
                Response::ok(text)
            }
            Err(e) => {
                tracing::warn!(code = e.code.code(), error = %e.message, "request refused or failed");
                Response::error(&e)
            }
        }
    }

    /// Finalize with the daemon's journal and owned state (finalize.rs). Refused while a
    /// cutover is in flight; once finalized the loop owns nothing, so it reconciles, probes
    /// and rolls back nothing.
    fn finalize(&mut self, a: &crate::finalize::FinalizeArgs<'_>, inputs: Inputs) -> Response {
        if let Some(why) = self.in_flight() {
            return Response::error(&CliError::new(
                ExitCode::NotReady,
                format!("{why}: wait for it to commit, or roll it back; nothing was changed"),
            ));
        }
        let r = crate::finalize::finalize(
            &self.s.state_dir,
            &inputs,
            self.s.backend,
            a,
            Some(&mut self.journal),
            &mut self.owned,
            self.reread,
        );
        if self.owned.finalized {
            // Whatever the hand-over left undone is finalize's to finish, never the loop's.
            self.reread = r.is_err();
            self.plan = None;
            self.targets.clear();
            self.set_switch_gauge();
        }
        match r {
            Ok(f) => Response {
                code: f
                    .refusal
                    .as_ref()
                    .map_or(f.code, |_| ExitCode::NotReady)
                    .code(),
                message: f.refusal.unwrap_or_default(),
                output: f.stdout,
            },
            Err(e) => Response::error(&e),
        }
    }

    fn in_flight(&self) -> Option<String> {
        self.owned
            .cutover
            .as_ref()
            .filter(|c| c.phase.in_flight())
            .map(|c| {
                format!(
                    "a cutover is in flight on this node (wave {} of {}: {}, phase {})",
                    c.wave + 1,
                    c.waves.len(),
                    c.namespaces().join(","),
                    c.phase.name()
                )
            })
    }

    fn apply(&mut self, namespaces: &[String], exclude: &[String]) -> Result<String, CliError> {
        if let Some(why) = self.in_flight() {
            return Err(CliError::new(
                ExitCode::NotReady,
                format!("{why}: wait for it to commit, or roll it back; nothing was changed"),
            ));
        }
        let g = migrate::gate(&self.s.inputs)?;
        if !g.blockers.is_empty() {
            return Err(CliError::new(
                ExitCode::NotReady,
                format!(
                    "preflight blockers, nothing was changed: {} (`ipvs-migrate preflight` explains each; `cutover --allow CHECK_ID` overrides deliberately)",
                    g.blockers
                        .iter()
                        .map(|(id, t)| format!("{id} ({t})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        if g.calico {
            return Err(CliError::new(
                ExitCode::NotReady,
                "this is a Calico node: admission must wait for calico-node to restart after kube-ipvs0 exists; use `ipvs-migrate cutover`, which waits for it. Nothing was changed",
            ));
        }
        let mut all = self.owned.namespaces.clone();
        all.extend(namespaces.iter().cloned());
        all.sort();
        all.dedup();
        let mut ex = self.owned.exclude.clone();
        ex.extend(exclude.iter().cloned());
        ex.sort();
        ex.dedup();
        let opts = Options {
            graceful: true,
            ..Options::default()
        };
        let r = self.converge_to(&all, &ex, opts, Duration::ZERO)?;
        Ok(migrate::summary(
            "Applied by the ipvs-migrate daemon (watched: admission entries expire unless it refreshes them).",
            &r,
            &self.owned,
        ))
    }

    fn operator_rollback(
        &mut self,
        namespaces: &[String],
        all: bool,
        drain: Option<Duration>,
    ) -> Result<String, CliError> {
        for ns in namespaces {
            if !self.owned.namespaces.contains(ns) {
                return Err(CliError::new(
                    ExitCode::Usage,
                    format!(
                        "namespace {ns} is not migrated on this node (migrated: {})",
                        if self.owned.namespaces.is_empty() {
                            "none".to_owned()
                        } else {
                            self.owned.namespaces.join(", ")
                        }
                    ),
                ));
            }
        }
        let drain = drain.unwrap_or(self.s.cfg.drain);
        let reason = "requested with `ipvs-migrate rollback`";
        let asked: Vec<String> = if all {
            self.owned.namespaces.clone()
        } else {
            namespaces.to_vec()
        };
        // Namespaces a cutover holds go back through its machine, so that its phase and
        // history say so: a wave in flight is aborted; after the commit, the namespace (or,
        // for several, all of the cutover's) is rolled back as an alert would. Whatever else
        // was asked for follows directly.
        if let Some(c) = self.owned.cutover.clone()
            && c.phase.touched_kernel()
        {
            let held = if c.phase == Phase::Committed {
                c.migrated()
            } else {
                c.namespaces()
            };
            let hit: Vec<&String> = asked.iter().filter(|n| held.contains(n)).collect();
            if !hit.is_empty() {
                self.trigger_source = Some("operator");
                self.drain_override = Some(drain);
                let ev = if c.phase == Phase::Committed {
                    Event::Alert {
                        reason: reason.into(),
                        namespace: (hit.len() == 1).then(|| hit[0].clone()),
                        now: unix_now(),
                    }
                } else {
                    Event::Abort { now: unix_now() }
                };
                self.feed(ev);
                self.drain_override = None;
            }
        }
        let targets: Vec<String> = if all {
            self.owned.namespaces.clone()
        } else {
            namespaces
                .iter()
                .filter(|n| self.owned.namespaces.contains(n))
                .cloned()
                .collect()
        };
        let r = if !targets.is_empty() {
            self.rollback(&targets, reason, "operator", drain)?
        } else if all && !self.owned.is_empty() && self.in_flight().is_none() {
            // Nothing migrated but objects still owned (an interrupted rollback): finish it.
            self.converge_plan(None, Options::default(), drain)?
        } else {
            Report::default()
        };
        Ok(migrate::summary(
            "Rolled back by the ipvs-migrate daemon.",
            &r,
            &self.owned,
        ))
    }

    fn cutover(
        &mut self,
        waves: Vec<Vec<String>>,
        soak_secs: Option<u64>,
        allow: Vec<String>,
    ) -> Result<String, CliError> {
        if let Some(why) = self.in_flight() {
            return Err(CliError::new(
                ExitCode::NotReady,
                format!("{why}; nothing was started"),
            ));
        }
        if waves.is_empty() || waves.iter().any(Vec::is_empty) {
            return Err(CliError::new(
                ExitCode::Usage,
                "a cutover needs at least one wave, and no empty wave",
            ));
        }
        let calico = migrate::gate(&self.s.inputs).map(|g| g.calico)?;
        let soak = soak_secs.unwrap_or(self.s.cfg.soak.as_secs());
        self.owned.cutover = Some(Cutover::new(waves, allow, soak, calico));
        // Preflight, prepare, apply, verification and admission run now (the verification
        // takes `verify`); the soak goes on after the answer.
        self.feed(Event::Start { now: unix_now() });
        let c = self.owned.cutover.clone().ok_or_else(|| {
            CliError::new(ExitCode::OperationFailed, "the cutover state vanished")
        })?;
        let wave = format!(
            "wave {} of {} ({})",
            c.wave + 1,
            c.waves.len(),
            c.namespaces().join(",")
        );
        match &c.phase {
            Phase::Soak { until } => Ok(format!(
                "Cutover: {wave} verified through IPVS and admitted; soaking for {}, watched. Follow it with `ipvs-migrate status`.",
                migrate::ago_rev(*until)
            )),
            Phase::WaitCalico { .. } => Ok(format!(
                "Cutover: {wave}: kube-ipvs0 exists; waiting for calico-node to restart (restart it: `kubectl -n kube-system delete pod -l k8s-app=calico-node --field-selector spec.nodeName=THIS_NODE`). The daemon continues by itself."
            )),
            Phase::Committed => Ok(format!("Cutover committed ({wave}).")),
            // A kernel operation that failed is exit 3, as for apply; a gate that held, 1.
            Phase::Failed { error } => Err(CliError::new(
                if error.starts_with("prepare failed") {
                    ExitCode::OperationFailed
                } else {
                    ExitCode::NotReady
                },
                format!("Cutover stopped at {wave}: {error}"),
            )),
            Phase::RolledBack { reason } => Err(CliError::new(
                ExitCode::NotReady,
                format!("Cutover of {wave} was rolled back: {reason}"),
            )),
            p => Ok(format!("Cutover: {wave} is in phase {}.", p.name())),
        }
    }
}

/// The admitted TCP virtual servers of `plan` that have real servers, per namespace.
fn probe_targets(plan: &HybridPlan, owned: &Owned) -> BTreeMap<String, Vec<VsKey>> {
    let (admitted, _) = owned.admission();
    let expect: BTreeMap<VsKey, Expect> =
        apply::probe_targets(plan, &admitted).into_iter().collect();
    let mut out: BTreeMap<String, Vec<VsKey>> = BTreeMap::new();
    for v in &plan.virtual_servers {
        let k = v.key();
        if k.0 == Protocol::Tcp && expect.get(&k) == Some(&Expect::Answer) {
            out.entry(v.service.namespace.to_string())
                .or_default()
                .push(k);
        }
    }
    out
}

/// `ipset restore -exist` lines re-adding, with the switch's timeout, the admitted entries
/// that `plan` keeps (run while a rollback drains).
fn refresh_script(plan: Option<&HybridPlan>, owned: &Owned, timeout: u32) -> String {
    let Some(plan) = plan else {
        return String::new();
    };
    let (admitted, _) = owned.admission();
    let mut out = String::new();
    for fam in [
        ipvsmig_engine::inventory::IpFamily::IPv4,
        ipvsmig_engine::inventory::IpFamily::IPv6,
    ] {
        let name = set_name(set::ADMITTED, fam);
        if let Some(s) = plan.ipsets.get(&name) {
            for m in s.members.iter().filter(|m| admitted.contains(*m)) {
                out.push_str(&format!("add {name} {m} timeout {timeout}\n"));
            }
        }
    }
    out
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When calico-node last started (unix seconds), if it runs.
fn calico_started(root: &std::path::Path) -> Option<u64> {
    match ipvsmig_host::calico::calico_node_started(root) {
        Ok(s) => s.map(|s| s.started),
        Err(e) => {
            tracing::warn!(error = %e, "reading calico-node's start time");
            None
        }
    }
}
