//! Alertmanager's webhook (webhook_config, payload version "4") turned into rollback triggers.
//!
//! Only a firing alert labelled `ipvs_migrate_rollback="true"` whose `node` label is this node
//! is a trigger (rules/ puts both labels on the two rollback alerts). Alertmanager repeats a
//! group's notification every `group_interval`/`repeat_interval` and a rule may keep firing for
//! hours, so triggers are deduplicated: one per (alertname, namespace) until Alertmanager
//! reports that alert resolved (`send_resolved`, on by default for webhooks). This module
//! does no I/O: [`Dedup`] decides, the HTTP handler sends.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

pub mod prom;

/// The label that marks an alert as a rollback trigger (rules/ sets it).
pub const ROLLBACK_LABEL: &str = "ipvs_migrate_rollback";
/// The payload version this agent understands.
pub const VERSION: &str = "4";

/// Alertmanager's webhook body (fields this agent reads; others are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Payload format version ("4").
    pub version: String,
    /// The alerts of the group.
    pub alerts: Vec<Alert>,
    /// The group's key (for logs).
    #[serde(default)]
    pub group_key: String,
}

/// One alert of the group.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: Status,
    /// The alert's labels (`alertname`, `node`, `namespace`, ...).
    pub labels: BTreeMap<String, String>,
    /// Annotations (summary, description).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(default)]
    pub starts_at: Option<String>,
}

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

/// A rollback trigger for the reconcile loop: roll back `namespace` (or, without one, every
/// namespace of this node — the node-wide rejection-rate alert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The alert's name (recorded as the rollback's reason).
    pub alertname: String,
    /// The namespace to roll back; `None`: all of this node's.
    pub namespace: Option<String>,
    /// When the alert started firing, as Alertmanager said.
    pub starts_at: Option<String>,
    /// The alert's summary annotation, if any.
    pub summary: Option<String>,
}

/// (alertname, namespace): one trigger per key until it resolves.
pub type Key = (String, Option<String>);

/// What to do with one alert of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not for this agent (other node, no rollback label, or no alertname).
    Ignore,
    /// Already triggered and not resolved since.
    Duplicate,
    /// A new trigger: send it, then [`Dedup::sent`] its key.
    Trigger(Key, Trigger),
    /// The key resolved: the next firing triggers again.
    Resolved(Key),
}

/// The keys triggered and not resolved since.
#[derive(Debug, Default)]
pub struct Dedup {
    active: BTreeSet<Key>,
}

impl Dedup {
    /// Decides about one alert for node `node`. Changes nothing: a new trigger's key becomes
    /// active only once it was handed on ([`Dedup::sent`]), so a trigger that could not be
    /// queued is triggered again when Alertmanager retries.
    pub fn decide(&self, node: &str, a: &Alert) -> Decision {
        let label = |k: &str| a.labels.get(k).map(String::as_str);
        if label(ROLLBACK_LABEL) != Some("true") || label("node") != Some(node) {
            return Decision::Ignore;
        }
        let Some(name) = label("alertname").filter(|n| !n.is_empty()) else {
            return Decision::Ignore;
        };
        let key: Key = (
            name.to_owned(),
            label("namespace")
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        );
        match a.status {
            Status::Resolved => Decision::Resolved(key),
            Status::Firing if self.active.contains(&key) => Decision::Duplicate,
            Status::Firing => Decision::Trigger(
                key.clone(),
                Trigger {
                    alertname: key.0,
                    namespace: key.1,
                    starts_at: a.starts_at.clone(),
                    summary: a.annotations.get("summary").cloned(),
                },
            ),
        }
    }

    /// The trigger for `key` was handed on.
    pub fn sent(&mut self, key: Key) {
        self.active.insert(key);
    }

    /// `key` resolved.
    pub fn resolve(&mut self, key: &Key) {
        self.active.remove(key);
    }
}

/// Equal, in time that depends on the lengths only (not on where the first difference is).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_documented_alertmanager_payload_parses() {
        // The shape Alertmanager's webhook_config sends (version 4), extra fields included.
        let p: Payload = serde_json::from_str(
            r#"{"receiver":"ipvs-migrate","status":"firing","alerts":[{"status":"firing",
            "labels":{"alertname":"IPVSMigrateRejectionRatioHigh","node":"n1","namespace":"shop",
            "ipvs_migrate_rollback":"true","severity":"critical"},
            "annotations":{"summary":"rejections"},"startsAt":"2026-11-24T10:00:00Z",
            "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p/graph","fingerprint":"ab12"}],
            "groupLabels":{"alertname":"IPVSMigrateRejectionRatioHigh"},"commonLabels":{},
            "commonAnnotations":{},"externalURL":"http://am:9093","version":"4",
            "groupKey":"{}:{alertname=\"IPVSMigrateRejectionRatioHigh\"}","truncatedAlerts":0}"#,
        )
        .unwrap();
        assert_eq!(p.version, VERSION);
        let d = Dedup::default();
        match d.decide("n1", &p.alerts[0]) {
            Decision::Trigger(key, t) => {
                assert_eq!(
                    key,
                    ("IPVSMigrateRejectionRatioHigh".into(), Some("shop".into()))
                );
                assert_eq!(t.summary.as_deref(), Some("rejections"));
                assert_eq!(t.starts_at.as_deref(), Some("2026-11-24T10:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
    }
}
