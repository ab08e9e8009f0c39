//! The fleet rollout driven by the cluster-scoped `IPVSMigration` object (DESIGN.md
//! "Kubernetes", docs/rollout.md): which wave this node may start, when, and what its claim in
//! the object's status says — pure. Every agent runs the same decision on its own node only;
//! the cluster side (agent/cli's `serve/rollout`) reads the object and the Nodes, writes the
//! status this returns with optimistic concurrency, and hands a started wave to the node's
//! cutover machine ([`crate::cutover`]), which alone changes the node.
//!
//! - `spec.rs`: the spec as the CRD stores it, validated into a [`Plan`] (errors name fields);
//! - `selector.rs`: label selectors as the Kubernetes API reference defines them;
//! - `status.rs`: the status, per-node claims, the fleet summary;
//! - `decide.rs`: the decision (claim, wait, report, pause, halt, abort, expiry);
//! - `time.rs`: the CRD's durations and RFC 3339 timestamps.
//!
//! It does no I/O and reads no clock; it never decides *how* a wave is cut over (the node's
//! gate, probes and automatic rollback stay the cutover machine's).

mod decide;
pub mod selector;
mod spec;
mod status;
pub mod time;

pub use decide::{Action, Decision, Input, Labels, Local, LocalPhase, Verdict, Wait, decide};
pub use spec::{Plan, Spec, State, ThresholdsSpec, Wave, WaveSpec};
pub use status::{FleetPhase, NodeEntry, NodePhase, Status};

/// Of several `IPVSMigration` objects (name, `creationTimestamp`, fleet phase), the index of
/// the one every agent acts on: the oldest that is not finished (`Completed` or `Aborted`),
/// ties broken by name; when all are finished, the newest (so a node that joins later, or an
/// abort still to carry out, is seen). The others wait their turn and are reported; two
/// migrations never run side by side, because their waves and slots would not know of each
/// other.
pub fn choose(objects: &[(&str, &str, Option<FleetPhase>)]) -> Option<usize> {
    let key = |i: &usize| {
        let (name, created, _) = objects[*i];
        (time::parse_time(created).unwrap_or(u64::MAX), name)
    };
    let finished =
        |p: Option<FleetPhase>| matches!(p, Some(FleetPhase::Completed | FleetPhase::Aborted));
    let open: Vec<usize> = (0..objects.len())
        .filter(|i| !finished(objects[*i].2))
        .collect();
    if open.is_empty() {
        (0..objects.len()).max_by_key(key)
    } else {
        open.into_iter().min_by_key(key)
    }
}

/// What is wrong with an `IPVSMigration`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// A field's value is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a path (`spec.waves[0].namespaces[1]`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl RolloutError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> RolloutError {
        RolloutError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
