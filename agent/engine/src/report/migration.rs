//! The report's migration section: what the daemon's journal and probes say about this node's
//! move to IPVS — each namespace's phase and since when, its probe counts and rejection rate,
//! the cutover, the rollback history, and the last hour of rejection samples for the chart.
//!
//! Pure: built from values the daemon passes in (its journal's state converted by the binary,
//! its in-memory [`History`], `now`). It must not decide anything: phases are read from the
//! cutover machine's state, never inferred from probes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::history::{self, History, Sample};
use crate::cutover::{Cutover, Phase};

/// The migration section of `kind: Report`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// The node's name.
    pub node: String,
    /// When the report was made (unix seconds).
    pub generated_at: u64,
    /// When the daemon started (unix seconds): the rejection history begins no earlier.
    pub history_since: u64,
    /// A daemon refreshes the admission entries (false: `--no-watch`, or nothing migrated).
    pub watched: bool,
    /// `finalize` handed the node to kube-proxy in IPVS mode.
    pub finalized: bool,
    /// One row per namespace migrated, in a cutover, or rolled back, sorted by name.
    pub namespaces: Vec<NamespaceStatus>,
    /// The cutover, when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverStatus>,
    /// Rollbacks, newest first.
    pub rollbacks: Vec<Rollback>,
    /// The last hour of cumulative probe counts per namespace (since `historySince`).
    pub rejections: BTreeMap<String, Vec<Sample>>,
    /// The last failed step, as the journal records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// One namespace's state.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The namespace.
    pub namespace: String,
    /// The cutover phase (`soak`, `committed`, …), `waiting` (a later wave), `applied`
    /// (migrated with `apply`, no cutover) or `rolled-back`.
    pub phase: String,
    /// Since when (unix seconds), where the journal knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Probes since the daemon started probing it (cumulative).
    pub probes: u64,
    /// Rejected probes among them.
    pub rejected: u64,
    /// Rejected probes per second between the last two samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_rate: Option<f64>,
    /// Share of probes rejected over the history (the last hour at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_ratio: Option<f64>,
}

/// The cutover machine's state, for reading.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CutoverStatus {
    /// Namespace groups, in order.
    pub waves: Vec<Vec<String>>,
    /// The current wave (1-based).
    pub wave: usize,
    /// Its phase.
    pub phase: String,
    /// Since when (unix seconds).
    pub since: u64,
    /// The soak's end (unix seconds), in the soak phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<u64>,
    /// The phase's detail: the rollback's reason, the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Blockers allowed with `--allow`.
    pub allowed: Vec<String>,
}

/// One rollback.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// When it started (unix seconds).
    pub at: u64,
    /// The namespaces taken back.
    pub namespaces: Vec<String>,
    /// Why.
    pub reason: String,
    /// Who triggered it (`builtin`, `alertmanager`, `prometheus`, `probe`, `operator`, …).
    pub source: String,
}

/// What the section is built from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The node's name.
    pub node: &'a str,
    /// Now (unix seconds).
    pub now: u64,
    /// When the daemon started.
    pub started: u64,
    /// Migrated namespaces (the journal's).
    pub migrated: &'a [String],
    /// The admission entries carry no timeout.
    pub no_watch: bool,
    /// Finalized.
    pub finalized: bool,
    /// The cutover machine's state.
    pub cutover: Option<&'a Cutover>,
    /// Rollbacks, oldest first (the journal's order).
    pub rollbacks: &'a [Rollback],
    /// The probe history.
    pub history: &'a History,
    /// The last failure.
    pub last_failure: Option<&'a str>,
}

impl Migration {
    /// Builds the section.
    pub fn build(i: Inputs<'_>) -> Migration {
        let mut rows: BTreeMap<String, (String, Option<u64>)> = BTreeMap::new();
        // Rolled back first: a later state (migrated again, in a cutover) overwrites it.
        for r in i.rollbacks {
            for ns in &r.namespaces {
                rows.insert(ns.clone(), ("rolled-back".into(), Some(r.at)));
            }
        }
        for ns in i.migrated {
            rows.insert(ns.clone(), ("applied".into(), None));
        }
        if let Some(c) = i.cutover {
            for (w, group) in c.waves.iter().enumerate() {
                let row = match w.cmp(&c.wave) {
                    std::cmp::Ordering::Less => ("committed".into(), None),
                    std::cmp::Ordering::Equal => (c.phase.name().to_owned(), Some(c.since)),
                    // A later wave of a cutover that stopped never starts.
                    std::cmp::Ordering::Greater if c.phase.in_flight() => ("waiting".into(), None),
                    std::cmp::Ordering::Greater => continue,
                };
                for ns in group {
                    // A committed earlier wave rolled back later by an alert is rolled back.
                    if row.0 == "committed" && !i.migrated.contains(ns) {
                        continue;
                    }
                    rows.insert(ns.clone(), row.clone());
                }
            }
        }
        let series = i.history.series();
        let namespaces = rows
            .into_iter()
            .map(|(namespace, (phase, since))| {
                let s = series.get(&namespace).map(Vec::as_slice).unwrap_or(&[]);
                let last = s.last();
                NamespaceStatus {
                    phase,
                    since,
                    probes: last.map_or(0, |x| x.total),
                    rejected: last.map_or(0, |x| x.rejected),
                    rejection_rate: history::rates(s).last().map(|r| r.1),
                    rejection_ratio: history::ratio(s),
                    namespace,
                }
            })
            .collect();
        let probed: BTreeSet<&String> = series.keys().collect();
        Migration {
            node: i.node.to_owned(),
            generated_at: i.now,
            history_since: i.started,
            watched: !i.no_watch && !i.migrated.is_empty(),
            finalized: i.finalized,
            namespaces,
            cutover: i.cutover.map(cutover_status),
            rollbacks: i.rollbacks.iter().rev().cloned().collect(),
            rejections: probed
                .into_iter()
                .map(|ns| (ns.clone(), series[ns].clone()))
                .collect(),
            last_failure: i.last_failure.map(str::to_owned),
        }
    }
}

fn cutover_status(c: &Cutover) -> CutoverStatus {
    CutoverStatus {
        waves: c.waves.clone(),
        wave: c.wave + 1,
        phase: c.phase.name().to_owned(),
        since: c.since,
        soak_until: match &c.phase {
            Phase::Soak { until } => Some(*until),
            _ => None,
        },
        detail: match &c.phase {
            Phase::RollingBack { reason, .. } | Phase::RolledBack { reason } => {
                Some(reason.clone())
            }
            Phase::Failed { error } => Some(error.clone()),
            _ => None,
        },
        allowed: c.allowed.clone(),
    }
}
