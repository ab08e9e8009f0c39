//! The agent's report on its own Node (DESIGN.md "Kubernetes"): the phase as a label
//! (`ipvs-migrate.io/phase`, selectable: `kubectl get nodes -l ipvs-migrate.io/phase=soak`),
//! the details as a JSON annotation (`ipvs-migrate.io/status`), both in one JSON merge patch
//! (RFC 7386; the API server takes `application/merge-patch+json` on every resource), and
//! core/v1 Events about the Node for phase changes and rollbacks.
//!
//! Must not: decide when to report (the daemon does, best-effort and rate-limited), or patch
//! anything but metadata of the agent's own Node.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::client::ApiClient;
use crate::error::{Call, KubeError};

/// The phase label's key.
pub const PHASE_LABEL: &str = "ipvs-migrate.io/phase";
/// The details annotation's key.
pub const STATUS_ANNOTATION: &str = "ipvs-migrate.io/status";
/// Where Events about a cluster-scoped object (the Node) are recorded, as kubelet does; the
/// only namespace deploy/rbac.yaml lets the agent create events in.
pub const EVENTS_NAMESPACE: &str = "default";
/// `source.component` / `reportingComponent` of the agent's Events.
pub const COMPONENT: &str = "ipvs-migrate";

/// The details annotation's value (JSON; schema in docs/kubernetes.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node-wide phase (the label's value before sanitising).
    pub phase: String,
    /// Per migrated namespace: its phase.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// When the node entered `phase` (RFC 3339).
    #[serde(default)]
    pub since: String,
    /// Rollbacks on this node so far.
    #[serde(default)]
    pub rollbacks: u32,
    /// The agent's version.
    #[serde(default)]
    pub version: String,
}

/// A phase as a valid label value (Kubernetes "Labels and Selectors": at most 63 characters,
/// `[A-Za-z0-9._-]`, beginning and ending with an alphanumeric): other characters become `-`,
/// ends are trimmed, an empty result is `unknown`.
pub fn label_value(phase: &str) -> String {
    let mapped: String = phase
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unknown".into()
    } else {
        trimmed.to_owned()
    }
}

/// A time as RFC 3339 in UTC with whole seconds, as the API's `Time` fields are written
/// (`2026-11-25T01:00:00Z`); empty before 1970.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Sets the label and the annotation on `node` with one merge patch.
pub async fn patch_node(api: &ApiClient, node: &str, status: &NodeStatus) -> Result<(), KubeError> {
    let details = serde_json::to_string(status).map_err(|e| KubeError::Decode {
        server: api.server().to_owned(),
        call: Call::new("patch", "", "nodes").named(node),
        message: e.to_string(),
    })?;
    let patch = serde_json::json!({
        "metadata": {
            "labels": { PHASE_LABEL: label_value(&status.phase) },
            "annotations": { STATUS_ANNOTATION: details },
        }
    });
    let nodes: Api<Node> = Api::all(api.client().clone());
    let call = Call::new("patch", "", "nodes").named(node);
    api.run(
        call,
        nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map(|_| ())
}

/// Reads the status back from a Node object (fleet status).
pub fn status_of(node: &Node) -> Option<Result<NodeStatus, String>> {
    let text = node.metadata.annotations.as_ref()?.get(STATUS_ANNOTATION)?;
    Some(serde_json::from_str(text).map_err(|e| e.to_string()))
}

/// What an Event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// CamelCase reason (`PhaseChanged`, `RolledBack`).
    pub reason: String,
    /// One sentence for humans.
    pub message: String,
    /// `Warning` (a rollback) rather than `Normal`.
    pub warning: bool,
}

/// Records a core/v1 Event about `node` in [`EVENTS_NAMESPACE`]; `involvedObject` is the Node
/// (kind, apiVersion, name, and uid when known), as `kubectl describe node` lists them.
pub async fn record_event(
    api: &ApiClient,
    node: &str,
    node_uid: Option<&str>,
    note: &EventNote,
    now: SystemTime,
) -> Result<(), KubeError> {
    let call = Call::new("create", "", "events").in_namespace(EVENTS_NAMESPACE);
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = rfc3339(now);
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        // kubelet's naming: the object's name and a hex timestamp, unique per event.
        "metadata": { "name": format!("{node}.{nanos:x}"), "namespace": EVENTS_NAMESPACE },
        "involvedObject": { "kind": "Node", "apiVersion": "v1", "name": node, "uid": node_uid },
        "reason": note.reason,
        "message": note.message,
        "type": if note.warning { "Warning" } else { "Normal" },
        "source": { "component": COMPONENT, "host": node },
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    let event: Event = serde_json::from_value(value).map_err(|e| KubeError::Decode {
        server: api.server().to_owned(),
        call: call.clone(),
        message: e.to_string(),
    })?;
    let events: Api<Event> = Api::namespaced(api.client().clone(), EVENTS_NAMESPACE);
    api.run(call, events.create(&PostParams::default(), &event))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests;
