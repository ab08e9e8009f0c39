//! The `IPVSMigration` status as deploy/crd.yaml defines it: the fleet's summary (`phase`,
//! `currentWave`, `rollbacks`, `observedGeneration`) and one entry per node that ever took a
//! wave (`nodes.<name>`: phase, wave, since, heartbeat) — the claims of the slot protocol
//! (docs/rollout.md). Fields this build does not know are kept as they were, because a status
//! write replaces the whole status.
//!
//! Pure data and the summary; the decision that changes entries is `decide.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::spec::{Plan, State};

/// `status` of an `IPVSMigration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The fleet's phase (a summary every writer recomputes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FleetPhase>,
    /// The highest wave (1-based) any node has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<u32>,
    /// Rollbacks across the fleet (a wave rolled back by a node, or a claim that expired).
    #[serde(default)]
    pub rollbacks: u32,
    /// One entry per node that took a wave.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeEntry>,
    /// The `metadata.generation` of the spec the last writer acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (written by others; kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<serde_json::Value>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The fleet's phase (the CRD's `status.phase` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FleetPhase {
    /// No node took a wave yet.
    Pending,
    /// Nodes are taking waves.
    Progressing,
    /// `state: Paused`.
    Paused,
    /// `rollbacks` reached `haltAfterRollbacks`.
    Halted,
    /// `state: Aborted`, nodes still rolling back.
    Aborting,
    /// `state: Aborted`, every node that took a wave is back.
    Aborted,
    /// Every selected node finished the last wave.
    Completed,
}

/// One node's claim and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    /// Where the node is with `wave`.
    pub phase: NodePhase,
    /// The wave (1-based) the entry is about.
    pub wave: u32,
    /// When the phase was entered (RFC 3339).
    pub since: String,
    /// The holder's last sign of life (RFC 3339); a slot whose heartbeat is older than
    /// `spec.slotTimeout` expires.
    pub heartbeat: String,
    /// Why, for people (rollback reason, expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A node's phase in its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodePhase {
    /// Holds a slot: the wave is cutting over or soaking.
    InProgress,
    /// The wave soaked; slot released.
    Completed,
    /// The wave was rolled back (counted in `rollbacks`); the node starts nothing more.
    RolledBack,
    /// The wave stopped before touching the kernel (a preflight blocker) or its rollback
    /// failed; the node starts nothing more.
    Failed,
    /// The holder wrote no heartbeat for `slotTimeout` (counted in `rollbacks`): the slot is
    /// free; the agent rolls the wave back if it comes back.
    Expired,
    /// The migration was aborted and this node's namespaces of it are back on iptables.
    Aborted,
}

impl NodePhase {
    /// The name as the status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodePhase::InProgress => "InProgress",
            NodePhase::Completed => "Completed",
            NodePhase::RolledBack => "RolledBack",
            NodePhase::Failed => "Failed",
            NodePhase::Expired => "Expired",
            NodePhase::Aborted => "Aborted",
        }
    }
}

impl NodeEntry {
    /// How many waves the node is through (finished, whichever way): a node stopped at a
    /// wave does not hold the fleet back (its rollback counts towards the halt instead); an
    /// aborted node starts from the beginning if the migration is resumed.
    pub fn waves_done(&self) -> u32 {
        match self.phase {
            NodePhase::InProgress => self.wave.saturating_sub(1),
            NodePhase::Aborted => 0,
            _ => self.wave,
        }
    }
}

impl Status {
    /// Nodes holding a slot.
    pub fn holders(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, e)| e.phase == NodePhase::InProgress)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How many waves `node` is through (0 without an entry).
    pub fn waves_done(&self, node: &str) -> u32 {
        self.nodes.get(node).map_or(0, NodeEntry::waves_done)
    }

    /// Recomputes the summary fields from the entries, the plan and the selected nodes.
    pub fn summarize(&mut self, plan: &Plan, selected: &BTreeSet<&str>, generation: Option<i64>) {
        let last = u32::try_from(plan.waves.len()).unwrap_or(u32::MAX);
        let phase = if plan.state == State::Aborted {
            if self.nodes.values().all(|e| e.phase == NodePhase::Aborted) {
                FleetPhase::Aborted
            } else {
                FleetPhase::Aborting
            }
        } else if self.rollbacks >= plan.halt_after_rollbacks {
            FleetPhase::Halted
        } else if plan.state == State::Paused {
            FleetPhase::Paused
        } else if !selected.is_empty()
            && selected.iter().all(|n| {
                self.nodes
                    .get(*n)
                    .is_some_and(|e| e.phase == NodePhase::Completed && e.wave == last)
            })
        {
            FleetPhase::Completed
        } else if self.nodes.is_empty() {
            FleetPhase::Pending
        } else {
            FleetPhase::Progressing
        };
        self.phase = Some(phase);
        self.current_wave = Some(self.nodes.values().map(|e| e.wave).max().unwrap_or(0));
        if generation.is_some() {
            self.observed_generation = generation;
        }
    }
}
