//! finalize's per-node kube-proxy switch applied through the API instead of kubectl
//! (docs/finalize.md "The manifests"): the same four changes, in the same order, as the
//! commands finalize prints — server-side apply of the second ConfigMap and DaemonSet, a
//! strategic-merge patch keeping the original DaemonSet off labelled nodes, then the node's
//! label, which switches that one node.
//!
//! Must not: build the manifests (the engine's `plan::switch` does), touch any node but the one
//! named, or run with the agent's service account (it has no rights on DaemonSets; this runs
//! with the operator's credentials, deploy/rbac.yaml `ipvs-migrate-finalize`).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::client::ApiClient;
use crate::error::{Call, KubeError};

/// The field manager of the agent's server-side applies (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "ipvs-migrate";

/// The switch for one node, as parsed values.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    /// kube-proxy's namespace.
    pub namespace: String,
    /// The second ConfigMap.
    pub configmap: Value,
    /// The second DaemonSet.
    pub daemonset: Value,
    /// The original DaemonSet's name.
    pub original: String,
    /// The strategic-merge patch for it.
    pub patch: Value,
    /// The node to label.
    pub node: String,
    /// The label.
    pub label: (String, String),
}

/// One request the switch sends, for `--dry-run` and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// RBAC view of the request.
    pub call: Call,
    /// Patch type: `apply` (server-side apply), `strategic`, `merge`; empty for a read.
    pub patch_type: &'static str,
    /// The body (`null` for a read).
    pub body: Value,
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The requests, in order: read the original DaemonSet (nothing changes if it is missing),
/// apply the ConfigMap and DaemonSet, patch the original, label the node.
pub fn steps(s: &Switch) -> Vec<Step> {
    let ns = s.namespace.as_str();
    let label_patch = serde_json::json!({"metadata": {"labels": {&s.label.0: &s.label.1}}});
    vec![
        Step {
            call: Call::new("get", "apps", "daemonsets")
                .in_namespace(ns)
                .named(&s.original),
            patch_type: "",
            body: Value::Null,
        },
        Step {
            call: Call::new("patch", "", "configmaps")
                .in_namespace(ns)
                .named(&name_of(&s.configmap)),
            patch_type: "apply",
            body: s.configmap.clone(),
        },
        Step {
            call: Call::new("patch", "apps", "daemonsets")
                .in_namespace(ns)
                .named(&name_of(&s.daemonset)),
            patch_type: "apply",
            body: s.daemonset.clone(),
        },
        Step {
            call: Call::new("patch", "apps", "daemonsets")
                .in_namespace(ns)
                .named(&s.original),
            patch_type: "strategic",
            body: s.patch.clone(),
        },
        Step {
            call: Call::new("patch", "", "nodes").named(&s.node),
            patch_type: "merge",
            body: label_patch,
        },
    ]
}

/// Sends the steps in order; stops at the first failure and says which steps were done.
pub async fn apply(api: &ApiClient, s: &Switch) -> Result<Vec<Step>, (Vec<Step>, KubeError)> {
    let ns = s.namespace.as_str();
    let cms: Api<ConfigMap> = Api::namespaced(api.client().clone(), ns);
    let dss: Api<DaemonSet> = Api::namespaced(api.client().clone(), ns);
    let nodes: Api<Node> = Api::all(api.client().clone());
    let ssa = PatchParams::apply(FIELD_MANAGER);
    let plain = PatchParams::default();
    let mut done = Vec::new();
    for step in steps(s) {
        let name = step.call.name.clone().unwrap_or_default();
        let call = step.call.clone();
        let result = match (step.call.resource.as_str(), step.patch_type) {
            ("daemonsets", "") => api.run(call, dss.get(&name)).await.map(|_| ()),
            ("configmaps", _) => api
                .run(call, cms.patch(&name, &ssa, &Patch::Apply(&step.body)))
                .await
                .map(|_| ()),
            ("daemonsets", "apply") => api
                .run(call, dss.patch(&name, &ssa, &Patch::Apply(&step.body)))
                .await
                .map(|_| ()),
            ("daemonsets", _) => api
                .run(
                    call,
                    dss.patch(&name, &plain, &Patch::Strategic(&step.body)),
                )
                .await
                .map(|_| ()),
            _ => api
                .run(call, nodes.patch(&name, &plain, &Patch::Merge(&step.body)))
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => done.push(step),
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
