//! The reconcile loop's side of the fleet rollout (serve/rollout.rs asks, this answers): this
//! node's state for the decision, the plan's thresholds, and the waves and rollbacks the
//! decision calls for — through the same cutover machine and rollback as the socket's
//! requests, so the node-local gate, probes and automatic rollback apply unchanged.
//!
//! Must not: decide when a wave starts (the claim in the cluster did), or talk to the API.

use ipvsmig_engine::cutover::Event;
use ipvsmig_engine::rollback::{Evaluator, Thresholds};
use ipvsmig_engine::rollout::Local;

use super::Agent;
use crate::migrate::unix_now;
use crate::serve::rollout::ToAgent;

impl Agent {
    /// Answers one rollout message.
    pub(super) fn fleet(&mut self, m: ToAgent) {
        match m {
            ToAgent::Local { reply } => {
                let _ = reply.send(Local::new(
                    &self.owned.namespaces,
                    self.owned.cutover.as_ref(),
                ));
            }
            ToAgent::Thresholds(t) => self.use_thresholds(t),
            ToAgent::Start {
                namespaces,
                exclude,
                soak,
                reply,
            } => {
                // The wave's excluded services join the node's: the cutover plans with them.
                self.owned.exclude.extend(exclude);
                self.owned.exclude.sort();
                self.owned.exclude.dedup();
                let r = self.cutover(vec![namespaces], Some(soak.as_secs()), Vec::new());
                let _ = reply.send(r.map_err(|e| e.message));
            }
            ToAgent::RollBack {
                namespaces,
                reason,
                reply,
            } => {
                let _ = reply.send(self.fleet_rollback(&namespaces, &reason));
            }
        }
    }

    /// The plan's thresholds replace the configured ones (the evaluator restarts: its pending
    /// alerts were judged by the old ones).
    fn use_thresholds(&mut self, t: Thresholds) {
        if self.s.cfg.thresholds != t {
            tracing::info!(
                window_s = t.window,
                rate = t.rate,
                ratio = t.ratio,
                for_s = t.for_secs,
                "rollback thresholds from the IPVSMigration"
            );
            self.evaluator = Evaluator::new(t.clone());
            self.s.cfg.thresholds = t;
        }
    }

    /// A wave in flight among `namespaces` is aborted through the cutover machine (its
    /// rollback runs there, counted once); whatever else of them is migrated is rolled back.
    fn fleet_rollback(&mut self, namespaces: &[String], reason: &str) -> Result<String, String> {
        if let Some(c) = &self.owned.cutover
            && c.phase.in_flight()
            && c.namespaces().iter().any(|n| namespaces.contains(n))
        {
            self.trigger_source = Some("operator");
            self.feed(Event::Abort { now: unix_now() });
        }
        let targets: Vec<String> = namespaces
            .iter()
            .filter(|n| self.owned.namespaces.contains(n))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Ok(format!("{reason}: nothing left to roll back"));
        }
        self.rollback(&targets, reason, "operator", self.s.cfg.drain)
            .map(|_| format!("{reason}: rolled back {}", targets.join(",")))
            .map_err(|e| e.message)
    }
}
