//! `ipvs-migrate fleet status`: the cluster's view of the migration, from what the agents
//! report and what runs — every Node's phase label and status annotation, the kube-proxy pods
//! on each Node (two running kube-proxies on one node is flagged: `kubeadm upgrade` rewrites
//! the kube-proxy DaemonSet and drops the exclusion finalize added, DESIGN.md "finalize"), and
//! the IPVSMigration objects.
//!
//! Must not: write anything; need the agent's service account (it runs with the operator's
//! credentials, like kubectl; the rights it needs are the `ipvs-migrate-fleet-viewer`
//! ClusterRole in deploy/rbac.yaml).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Serialize;

use crate::client::ApiClient;
use crate::error::{Call, KubeError};
use crate::node_status::{NodeStatus, PHASE_LABEL, status_of};
use crate::view::list_pages;

/// kube-proxy's namespace and the pod labels of the original DaemonSet (kubeadm:
/// `k8s-app=kube-proxy`) and of finalize's per-node one (`k8s-app=kube-proxy-ipvs`).
pub const KUBE_PROXY_NAMESPACE: &str = "kube-system";
/// Label selector of both.
pub const KUBE_PROXY_SELECTOR: &str = "k8s-app in (kube-proxy,kube-proxy-ipvs)";
/// The flag of a node with more than one running kube-proxy.
pub const TWO_KUBE_PROXIES: &str = "two-kube-proxies";

/// The document `fleet status -o json` prints (docs/schemas/fleet-status.md).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// `ipvs-migrate/v1`.
    pub api_version: &'static str,
    /// `FleetStatus`.
    pub kind: &'static str,
    /// Nodes, by name.
    pub nodes: Vec<FleetNode>,
    /// IPVSMigration objects, by name.
    pub migrations: Vec<FleetMigration>,
    /// What could not be read (the CRD not installed, an annotation that is not JSON).
    pub notes: Vec<String>,
}

/// One node.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetNode {
    /// Node name.
    pub name: String,
    /// The phase label (`None`: no agent has reported on this node).
    pub phase: Option<String>,
    /// The status annotation.
    pub status: Option<NodeStatus>,
    /// kube-proxy pods scheduled on the node.
    pub kube_proxies: Vec<KubeProxyPod>,
    /// Problems: `two-kube-proxies`.
    pub flags: Vec<String>,
    /// The node's creationTimestamp (RFC 3339).
    pub created: Option<String>,
}

/// One kube-proxy pod.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyPod {
    /// Pod name.
    pub name: String,
    /// The DaemonSet owning it, if any.
    pub daemon_set: Option<String>,
    /// `status.phase` (`Running`, `Pending`, ...).
    pub phase: String,
}

/// One IPVSMigration.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetMigration {
    /// Object name.
    pub name: String,
    /// `spec.state` (Running, Paused, Aborted).
    pub state: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.rollbacks`.
    pub rollbacks: Option<u64>,
}

impl FleetStatus {
    /// Nodes carrying a flag.
    pub fn flagged(&self) -> impl Iterator<Item = &FleetNode> {
        self.nodes.iter().filter(|n| !n.flags.is_empty())
    }
}

/// The CRD's resource (deploy/crd.yaml).
pub fn migration_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ipvs-migrate.io", "v1alpha1", "IPVSMigration"),
        "ipvsmigrations",
    )
}

/// Reads nodes, kube-proxy pods and migrations. A missing CRD (404 on its list) is a note, not
/// an error: fleet status still shows the nodes.
pub async fn read_fleet(api: &ApiClient) -> Result<FleetStatus, KubeError> {
    let nodes: Api<Node> = Api::all(api.client().clone());
    let nodes = list_pages(
        api,
        Call::new("list", "", "nodes"),
        &nodes,
        ListParams::default(),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(api.client().clone(), KUBE_PROXY_NAMESPACE);
    let pods = list_pages(
        api,
        Call::new("list", "", "pods").in_namespace(KUBE_PROXY_NAMESPACE),
        &pods,
        ListParams::default().labels(KUBE_PROXY_SELECTOR),
    )
    .await?;
    let res = migration_resource();
    let migs: Api<DynamicObject> = Api::all_with(api.client().clone(), &res);
    let mut notes = Vec::new();
    let migs = match list_pages(
        api,
        Call::new("list", "ipvs-migrate.io", "ipvsmigrations"),
        &migs,
        ListParams::default(),
    )
    .await
    {
        Ok(m) => m,
        Err(KubeError::NotFound { .. }) => {
            notes.push(
                "the IPVSMigration CRD is not installed (kubectl apply -f deploy/crd.yaml)".into(),
            );
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut status = assemble(&nodes, &pods, &migs);
    status.notes.splice(0..0, notes);
    Ok(status)
}

/// The pure part: objects in, the report out.
pub fn assemble(nodes: &[Node], pods: &[Pod], migrations: &[DynamicObject]) -> FleetStatus {
    let mut notes = Vec::new();
    let mut by_node: BTreeMap<&str, Vec<KubeProxyPod>> = BTreeMap::new();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let daemon_set = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "DaemonSet")
            .map(|o| o.name.clone());
        by_node.entry(node).or_default().push(KubeProxyPod {
            name: p.metadata.name.clone().unwrap_or_default(),
            daemon_set,
            phase: p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Unknown".into()),
        });
    }
    let mut out_nodes: Vec<FleetNode> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let status = match status_of(n) {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    notes.push(format!(
                        "node {name}: annotation ipvs-migrate.io/status is not valid: {e}"
                    ));
                    None
                }
                None => None,
            };
            let mut kube_proxies = by_node.remove(name.as_str()).unwrap_or_default();
            kube_proxies.sort_by(|a, b| a.name.cmp(&b.name));
            let running = kube_proxies.iter().filter(|p| p.phase == "Running").count();
            let flags = if running > 1 {
                vec![TWO_KUBE_PROXIES.to_owned()]
            } else {
                Vec::new()
            };
            FleetNode {
                phase: n
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(PHASE_LABEL))
                    .cloned(),
                status,
                kube_proxies,
                flags,
                created: n
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
                name,
            }
        })
        .collect();
    out_nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut migrations: Vec<FleetMigration> = migrations
        .iter()
        .map(|m| {
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            FleetMigration {
                name: m.metadata.name.clone().unwrap_or_default(),
                state: text(&m.data["spec"]["state"]),
                phase: text(&m.data["status"]["phase"]),
                rollbacks: m.data["status"]["rollbacks"].as_u64(),
            }
        })
        .collect();
    migrations.sort_by(|a, b| a.name.cmp(&b.name));
    FleetStatus {
        api_version: ipvsmig_engine::inventory::API_VERSION,
        kind: "FleetStatus",
        nodes: out_nodes,
        migrations,
        notes,
    }
}

/// Time since an RFC 3339 timestamp, as kubectl's AGE column prints it (`90s`, `12m`,
/// `5h`, `3d`); `None` if the text is not a timestamp.
pub fn age(rfc3339: &str, now: std::time::SystemTime) -> Option<String> {
    let t: k8s_openapi::jiff::Timestamp = rfc3339.parse().ok()?;
    let now = k8s_openapi::jiff::Timestamp::try_from(now).ok()?;
    let secs = now.as_second().saturating_sub(t.as_second()).max(0);
    Some(match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    })
}

#[cfg(test)]
mod tests;
