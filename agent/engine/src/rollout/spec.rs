//! The `IPVSMigration` spec as deploy/crd.yaml defines it (serde mirror, camelCase, the
//! schema's defaults), and its validation into a [`Plan`] the decision works on: durations
//! parsed, namespaces checked, every error naming its field (`spec.waves[1].exclude[0]`).
//!
//! The API server already enforces the schema; this checks again because an agent must not
//! act on an object it misreads (an older CRD version, a schema edited by hand), and because
//! some rules (a namespace in two waves, an exclude outside its wave) are not in the schema.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RolloutError;
use super::selector::LabelSelector;
use super::time::parse_duration;
use crate::rollback::Thresholds;

/// `spec` of an `IPVSMigration`, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Namespace groups, in order.
    pub waves: Vec<WaveSpec>,
    /// Which nodes take part; absent: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Which of them take each wave first; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_node_selector: Option<LabelSelector>,
    /// Rollback thresholds.
    #[serde(default)]
    pub thresholds: ThresholdsSpec,
    /// Soak per wave per node.
    #[serde(default = "default_soak")]
    pub soak: String,
    /// Nodes holding a wave at the same time, fleet-wide.
    #[serde(default = "one")]
    pub max_nodes_in_parallel: u32,
    /// Fleet rollbacks at which nothing new starts.
    #[serde(default = "one")]
    pub halt_after_rollbacks: u32,
    /// A slot whose holder has not written a heartbeat for this long expires.
    #[serde(default = "default_slot_timeout")]
    pub slot_timeout: String,
    /// `Running`, `Paused` or `Aborted`.
    #[serde(default)]
    pub state: State,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveSpec {
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespaces moved together.
    pub namespaces: Vec<String>,
    /// Services kept on iptables, `NAMESPACE/NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// `spec.thresholds`, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdsSpec {
    /// `rate()` window.
    #[serde(default = "default_window")]
    pub window: String,
    /// Rejections per second per node.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Rejected / attempted per namespace.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// How long a condition holds before it fires.
    #[serde(default = "default_for", rename = "for")]
    pub for_: String,
}

impl Default for ThresholdsSpec {
    fn default() -> Self {
        ThresholdsSpec {
            window: default_window(),
            rate: default_rate(),
            ratio: default_ratio(),
            for_: default_for(),
        }
    }
}

/// What the operator wants the rollout to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Go on.
    #[default]
    Running,
    /// Start nothing new; waves in flight finish.
    Paused,
    /// Take this migration's namespaces back to iptables on every node.
    Aborted,
}

fn default_soak() -> String {
    "10m".into()
}
fn default_slot_timeout() -> String {
    "10m".into()
}
fn default_window() -> String {
    "5m".into()
}
fn default_for() -> String {
    "1m".into()
}
fn default_rate() -> f64 {
    10.0
}
fn default_ratio() -> f64 {
    0.01
}
fn one() -> u32 {
    1
}

/// A wave, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// Its name, or `wave N`.
    pub name: String,
    /// Namespaces, as written.
    pub namespaces: Vec<String>,
    /// Excluded services, `NAMESPACE/NAME`.
    pub exclude: Vec<String>,
}

/// A validated spec: what the decision reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Waves in order.
    pub waves: Vec<Wave>,
    /// Which nodes take part (`None`: every node).
    pub node_selector: Option<LabelSelector>,
    /// Which go first (`None`: no canaries).
    pub canary_node_selector: Option<LabelSelector>,
    /// The evaluator's thresholds (seconds).
    pub thresholds: Thresholds,
    /// Soak per wave.
    pub soak: Duration,
    /// Fleet-wide slots.
    pub max_nodes_in_parallel: u32,
    /// Rollbacks at which the fleet halts.
    pub halt_after_rollbacks: u32,
    /// Heartbeat age at which a slot expires.
    pub slot_timeout: Duration,
    /// Running / Paused / Aborted.
    pub state: State,
}

impl Plan {
    /// Every namespace of every wave.
    pub fn namespaces(&self) -> BTreeSet<&str> {
        self.waves
            .iter()
            .flat_map(|w| w.namespaces.iter().map(String::as_str))
            .collect()
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn duration(field: &str, text: &str, positive: bool) -> Result<Duration, RolloutError> {
    match parse_duration(text) {
        Some(d) if positive && d.is_zero() => Err(RolloutError::invalid(
            field,
            format!("{text:?} must be longer than 0s"),
        )),
        Some(d) => Ok(d),
        None => Err(RolloutError::invalid(
            field,
            format!("{text:?} is not a duration like 30s, 5m or 1h30m"),
        )),
    }
}

impl Spec {
    /// Checks every field; the first problem is returned, naming its field.
    pub fn validate(&self) -> Result<Plan, RolloutError> {
        if self.waves.is_empty() {
            return Err(RolloutError::invalid(
                "spec.waves",
                "needs at least one wave",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut waves = Vec::with_capacity(self.waves.len());
        for (i, w) in self.waves.iter().enumerate() {
            let at = format!("spec.waves[{i}]");
            if w.namespaces.is_empty() {
                return Err(RolloutError::invalid(
                    format!("{at}.namespaces"),
                    "needs at least one namespace",
                ));
            }
            for (j, ns) in w.namespaces.iter().enumerate() {
                if !dns_label(ns) {
                    return Err(RolloutError::invalid(
                        format!("{at}.namespaces[{j}]"),
                        format!("{ns:?} is not a namespace name (RFC 1123 label)"),
                    ));
                }
                if !seen.insert(ns.as_str()) {
                    return Err(RolloutError::invalid(
                        format!("{at}.namespaces[{j}]"),
                        format!("namespace {ns} is already in this or an earlier wave"),
                    ));
                }
            }
            for (j, ex) in w.exclude.iter().enumerate() {
                let ok = ex.split_once('/').is_some_and(|(ns, svc)| {
                    dns_label(ns) && dns_label(svc) && w.namespaces.iter().any(|n| n == ns)
                });
                if !ok {
                    return Err(RolloutError::invalid(
                        format!("{at}.exclude[{j}]"),
                        format!("{ex:?} is not NAMESPACE/SERVICE with a namespace of this wave"),
                    ));
                }
            }
            waves.push(Wave {
                name: w.name.clone().unwrap_or_else(|| format!("wave {}", i + 1)),
                namespaces: w.namespaces.clone(),
                exclude: w.exclude.clone(),
            });
        }
        for (field, s) in [
            ("spec.nodeSelector", &self.node_selector),
            ("spec.canaryNodeSelector", &self.canary_node_selector),
        ] {
            if let Some(s) = s {
                s.validate(field)?;
            }
        }
        let t = &self.thresholds;
        if !(t.rate.is_finite() && t.rate > 0.0) {
            return Err(RolloutError::invalid(
                "spec.thresholds.rate",
                format!("{} must be a number above 0", t.rate),
            ));
        }
        if !(t.ratio > 0.0 && t.ratio <= 1.0) {
            return Err(RolloutError::invalid(
                "spec.thresholds.ratio",
                format!("{} must be above 0 and at most 1", t.ratio),
            ));
        }
        let thresholds = Thresholds {
            window: duration("spec.thresholds.window", &t.window, true)?.as_secs_f64(),
            rate: t.rate,
            ratio: t.ratio,
            for_secs: duration("spec.thresholds.for", &t.for_, false)?.as_secs_f64(),
        };
        if self.max_nodes_in_parallel == 0 {
            return Err(RolloutError::invalid(
                "spec.maxNodesInParallel",
                "must be at least 1",
            ));
        }
        if self.halt_after_rollbacks == 0 {
            return Err(RolloutError::invalid(
                "spec.haltAfterRollbacks",
                "must be at least 1 (1 halts at the first rollback)",
            ));
        }
        Ok(Plan {
            waves,
            node_selector: self.node_selector.clone(),
            canary_node_selector: self.canary_node_selector.clone(),
            thresholds,
            soak: duration("spec.soak", &self.soak, false)?,
            max_nodes_in_parallel: self.max_nodes_in_parallel,
            halt_after_rollbacks: self.halt_after_rollbacks,
            slot_timeout: duration("spec.slotTimeout", &self.slot_timeout, true)?,
            state: self.state,
        })
    }
}
