//! The fleet rollout in `serve` (docs/rollout.md): a task on the daemon's runtime that watches
//! the `IPVSMigration` objects, and at every change and every `rollout.period` runs one round
//! of the slot protocol (`ipvsmig_kube::migration::sync`) for this node, then hands what the
//! decision asks for to the reconcile loop: start a wave (the same cutover the socket's
//! `Cutover` request starts, with the plan's soak and thresholds) or roll namespaces back.
//!
//! Must not: change the node itself (the reconcile loop does, through the cutover machine,
//! whose gate, probes and automatic rollback stay as they are), start a wave whose claim was
//! not written, or stop the daemon when the API server fails (it logs and tries next round).

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ipvsmig_engine::rollback::Thresholds;
use ipvsmig_engine::rollout::selector::LabelSelector;
use ipvsmig_engine::rollout::{Action, Labels, Local, Plan, Verdict};
use ipvsmig_kube::ApiClient;
use ipvsmig_kube::migration::{self, Ask, Objects};
use tokio::sync::oneshot;

use super::agent::Msg;
use super::config::RolloutConfig;
use crate::migrate::unix_now;

/// What the rollout asks of the reconcile loop.
#[derive(Debug)]
pub enum ToAgent {
    /// This node's state (journal: migrated namespaces, cutover).
    Local {
        /// Where the answer goes.
        reply: oneshot::Sender<Local>,
    },
    /// Use the plan's rollback thresholds (while the node holds any of its namespaces).
    Thresholds(Thresholds),
    /// Start a wave (claimed).
    Start {
        /// Its namespaces.
        namespaces: Vec<String>,
        /// Services kept on iptables.
        exclude: Vec<String>,
        /// The plan's soak.
        soak: Duration,
        /// The outcome, for the log.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Take namespaces back (abort, expired claim).
    RollBack {
        /// Namespaces.
        namespaces: Vec<String>,
        /// Why.
        reason: String,
        /// The outcome, for the log.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The rollout task's state.
pub struct Rollout {
    api: ApiClient,
    node: String,
    cfg: RolloutConfig,
    inbox: Sender<Msg>,
    /// The last Node list, when and for which selector.
    nodes: Option<(Instant, Option<LabelSelector>, BTreeMap<String, Labels>)>,
    /// What was last logged (a verdict is logged when it changes).
    said: String,
}

impl Rollout {
    /// A rollout for `node`, asking the reconcile loop behind `inbox`.
    pub fn new(api: ApiClient, node: String, cfg: RolloutConfig, inbox: Sender<Msg>) -> Rollout {
        Rollout {
            api,
            node,
            cfg,
            inbox,
            nodes: None,
            said: String::new(),
        }
    }

    /// Runs until the watch ends (it does not: kube-runtime's watcher retries; the task ends
    /// with the runtime).
    pub async fn run(mut self) {
        let mut objects = Objects::default();
        let mut stream = std::pin::pin!(migration::watch(&self.api));
        let mut tick = tokio::time::interval(self.cfg.period);
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => {
                        backoff = Duration::from_secs(1);
                        if objects.apply(ev) {
                            self.round(&objects).await;
                        }
                    }
                    Some(Err(e)) => {
                        // 410 Gone is routine (the watcher lists again); anything else is
                        // worth a warning. Either way, wait a little before the next try.
                        tracing::warn!(error = %e, "watching IPVSMigration objects");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if objects.listed() {
                        self.round(&objects).await;
                    }
                }
            }
        }
    }

    /// One decision for this node on the object in force.
    pub async fn round(&mut self, objects: &Objects) {
        let (active, others) = objects.active();
        let Some(m) = active else {
            self.say("no IPVSMigration object".into(), false);
            return;
        };
        let plan = match &m.plan {
            Ok(p) => p.clone(),
            Err(e) => {
                self.say(
                    format!("IPVSMigration {}: {e}; nothing is done for it", m.name),
                    true,
                );
                return;
            }
        };
        if !others.is_empty() {
            tracing::debug!(active = %m.name, waiting = %others.join(","), "one IPVSMigration at a time: the others wait");
        }
        let nodes = match self.nodes(&plan).await {
            Ok(n) => n,
            Err(e) => {
                self.say(format!("listing Nodes: {e}"), true);
                return;
            }
        };
        let Some(local) = self.ask(|reply| ToAgent::Local { reply }).await else {
            return;
        };
        // The plan's thresholds apply while the node holds any of its namespaces, or runs one
        // of its waves (a cutover started by hand for other namespaces keeps serve's own).
        let ours = plan.namespaces();
        let holds = local.migrated.iter().any(|n| ours.contains(n.as_str()))
            || local
                .cutover
                .as_ref()
                .is_some_and(|(ns, _)| ns.iter().all(|n| ours.contains(n.as_str())));
        if holds {
            let _ = self
                .inbox
                .send(Msg::Rollout(ToAgent::Thresholds(plan.thresholds.clone())));
        }
        let name = m.name.clone();
        let ask = Ask {
            node: &self.node,
            nodes: &nodes,
            local: &local,
            now: unix_now(),
        };
        let d = match migration::sync(&self.api, m, ask).await {
            Ok(d) => d,
            Err(e) => {
                self.say(format!("{e}; no change on this node"), true);
                return;
            }
        };
        self.say(describe(&name, &plan, &d.verdict), false);
        let outcome = match d.action {
            Action::None => return,
            Action::Start {
                wave,
                namespaces,
                exclude,
            } => {
                tracing::info!(migration = %name, wave = %plan.waves[wave].name, namespaces = %namespaces.join(","), "starting the wave claimed in the status");
                let soak = plan.soak;
                self.ask(|reply| ToAgent::Start {
                    namespaces,
                    exclude,
                    soak,
                    reply,
                })
                .await
            }
            Action::RollBack { namespaces, reason } => {
                tracing::warn!(migration = %name, namespaces = %namespaces.join(","), reason = %reason, "rolling back");
                self.ask(|reply| ToAgent::RollBack {
                    namespaces,
                    reason,
                    reply,
                })
                .await
            }
        };
        match outcome {
            Some(Ok(text)) => tracing::info!(migration = %name, outcome = %text, "rollout"),
            Some(Err(e)) => {
                tracing::error!(migration = %name, error = %e, "the reconcile loop refused or failed")
            }
            None => {}
        }
    }

    /// The selected Nodes' labels, listed again when older than `nodeListPeriod` or when the
    /// selector changed.
    async fn nodes(
        &mut self,
        plan: &Plan,
    ) -> Result<BTreeMap<String, Labels>, ipvsmig_kube::KubeError> {
        if let Some((at, sel, n)) = &self.nodes
            && *sel == plan.node_selector
            && at.elapsed() < self.cfg.node_list_period
        {
            return Ok(n.clone());
        }
        let n = migration::nodes(&self.api, plan.node_selector.as_ref()).await?;
        self.nodes = Some((Instant::now(), plan.node_selector.clone(), n.clone()));
        Ok(n)
    }

    /// Sends a message to the reconcile loop and waits for its answer.
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> ToAgent) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if self.inbox.send(Msg::Rollout(msg(tx))).is_err() {
            tracing::error!("the reconcile loop is gone: the rollout stops acting");
            return None;
        }
        rx.await.ok()
    }

    /// Logs `text` when it differs from the last (error or info).
    fn say(&mut self, text: String, error: bool) {
        if text != self.said {
            if error {
                tracing::error!(node = %self.node, "{text}");
            } else {
                tracing::info!(node = %self.node, "{text}");
            }
            self.said = text;
        }
    }
}

/// A verdict in words, for the log.
fn describe(name: &str, plan: &Plan, v: &Verdict) -> String {
    let wave = |k: &usize| {
        plan.waves
            .get(*k)
            .map_or("?".to_owned(), |w| w.name.clone())
    };
    let what = match v {
        Verdict::Waiting(k, w) => format!("waiting to start {}: {w:?}", wave(k)),
        Verdict::Starting(k) => format!("starting {}", wave(k)),
        Verdict::InProgress(k) => format!("{} in progress", wave(k)),
        Verdict::WaveDone(k) => format!("{} done", wave(k)),
        Verdict::Stopped(p, w) => format!(
            "stopped at wave {w} ({}): delete this node's status entry to let it go on (docs/rollout.md)",
            p.as_str()
        ),
        other => other.as_str().to_owned(),
    };
    format!("IPVSMigration {name}: {what}")
}

#[cfg(test)]
mod tests;
