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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use ipvsmig_engine::cutover::{Cutover, Phase};
    use ipvsmig_engine::rollout::LocalPhase;
    use tokio::sync::oneshot;

    use super::*;
    use crate::cli::{BackendArg, Inputs};
    use crate::serve::agent::Settings;
    use crate::serve::http::App;

    /// A loop on a temporary state directory and host root (a boot id only): nothing here
    /// reaches the kernel.
    fn agent(dir: &tempfile::TempDir) -> Agent {
        let root = dir.path().join("root");
        let random = root.join("proc/sys/kernel/random");
        std::fs::create_dir_all(&random).unwrap();
        std::fs::write(
            random.join("boot_id"),
            "5b1f3a52-0000-4000-8000-000000000001\n",
        )
        .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let app = Arc::new(App::new("n1".into(), state.clone(), root.clone(), None, tx));
        let cfg = crate::serve::config::parse("", None, Some("n1".into())).unwrap();
        let inputs = Inputs {
            host_root: Some(root),
            ..Inputs::default()
        };
        let s = Settings {
            state_dir: state,
            inputs,
            backend: BackendArg::Auto,
            cfg,
            reporter: None,
        };
        Agent::open(s, app).unwrap()
    }

    fn ask<T>(a: &mut Agent, msg: impl FnOnce(oneshot::Sender<T>) -> ToAgent) -> T {
        let (tx, mut rx) = oneshot::channel();
        a.fleet(msg(tx));
        rx.try_recv().unwrap()
    }

    #[test]
    fn the_node_state_is_the_journals_migrated_namespaces_and_cutover() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(&dir);
        assert_eq!(
            ask(&mut a, |reply| ToAgent::Local { reply }),
            Local::default()
        );
        a.owned.namespaces = vec!["shop".into()];
        let mut c = Cutover::new(vec![vec!["shop".into()]], vec![], 600, false);
        c.phase = Phase::Committed;
        a.owned.cutover = Some(c);
        let l = ask(&mut a, |reply| ToAgent::Local { reply });
        assert_eq!(l.migrated, ["shop".to_owned()].into());
        assert_eq!(
            l.cutover,
            Some((["shop".to_owned()].into(), LocalPhase::Committed))
        );
    }

    #[test]
    fn the_plans_thresholds_replace_the_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(&dir);
        let t = Thresholds {
            window: 120.0,
            rate: 5.0,
            ratio: 0.05,
            for_secs: 30.0,
        };
        a.fleet(ToAgent::Thresholds(t.clone()));
        assert_eq!(a.s.cfg.thresholds, t);
    }

    #[test]
    fn aborting_a_wave_still_in_its_gate_stops_it_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(&dir);
        let mut c = Cutover::new(vec![vec!["shop".into()]], vec![], 600, false);
        c.phase = Phase::Preflight;
        a.owned.cutover = Some(c);
        let r = ask(&mut a, |reply| ToAgent::RollBack {
            namespaces: vec!["shop".into()],
            reason: "the IPVSMigration m was aborted".into(),
            reply,
        });
        assert_eq!(
            r.unwrap(),
            "the IPVSMigration m was aborted: nothing left to roll back"
        );
        let phase = a.owned.cutover.as_ref().map(|c| c.phase.clone());
        assert!(matches!(phase, Some(Phase::Failed { .. })), "{phase:?}");
        assert!(
            a.owned.is_empty(),
            "nothing is owned: the kernel was never touched"
        );
    }
}
