//! The per-node kube-proxy switch as Kubernetes manifests (`finalize`, DESIGN.md "finalize";
//! docs/finalize.md): kube-proxy's ConfigMap is shared by every node, so flipping its `mode`
//! would switch all nodes at their next kube-proxy restart. Instead: a second ConfigMap (the
//! node's KubeProxyConfiguration rewritten for IPVS mode by `kube_proxy_config::ipvs_config`), a
//! second DaemonSet that runs only on nodes carrying a label, a patch keeping the original
//! DaemonSet off those nodes (nodeAffinity `NotIn`), and the `kubectl label node` command.
//!
//! The original DaemonSet is not known offline: the second one follows kubeadm's conventional
//! layout (cmd/kubeadm/app/phases/addons/proxy: `--config` from a ConfigMap volume,
//! `--hostname-override=$(NODE_NAME)`, privileged, hostNetwork, /run/xtables.lock and
//! /lib/modules from the host, `system-node-critical`, tolerate everything) and must be
//! compared with the cluster's own before it is applied — every output says so.
//! Pure: text in, YAML text out; the YAML is built as a value and serialized, never templated.

use serde_json::{Value, json};

/// The node label that selects the IPVS-mode kube-proxy.
pub const LABEL_KEY: &str = "ipvs-migrate.io/kube-proxy-mode";
/// Its value.
pub const LABEL_VALUE: &str = "ipvs";

/// Where the second kube-proxy mounts its configuration (the original ConfigMap stays mounted
/// at kubeadm's /var/lib/kube-proxy, so `clientConnection.kubeconfig` still finds
/// kubeconfig.conf there).
pub const CONFIG_DIR: &str = "/var/lib/kube-proxy-ipvs";

/// Names and values the manifests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchOptions {
    /// The node to switch.
    pub node: String,
    /// kube-proxy's namespace (kube-system).
    pub namespace: String,
    /// The original ConfigMap (kube-proxy).
    pub configmap: String,
    /// The original DaemonSet (kube-proxy).
    pub daemonset: String,
    /// The kube-proxy image (the one the original DaemonSet runs).
    pub image: String,
}

impl Default for SwitchOptions {
    fn default() -> Self {
        SwitchOptions {
            node: String::new(),
            namespace: "kube-system".into(),
            configmap: "kube-proxy".into(),
            daemonset: "kube-proxy".into(),
            image: String::new(),
        }
    }
}

/// The manifests, as YAML documents, and the commands that use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifests {
    /// The second ConfigMap (`<configmap>-ipvs`).
    pub configmap: String,
    /// The second DaemonSet (`<daemonset>-ipvs`).
    pub daemonset: String,
    /// Strategic-merge patch for the original DaemonSet: not on labelled nodes.
    pub patch: String,
    /// The commands, in order (apply, patch, label).
    pub commands: Vec<String>,
}

/// File names [`Manifests`] are written under.
pub const FILES: [&str; 3] = [
    "kube-proxy-ipvs-configmap.yaml",
    "kube-proxy-ipvs-daemonset.yaml",
    "kube-proxy-original-patch.yaml",
];

/// Errors: a name that Kubernetes would refuse, or YAML that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    /// Not a DNS-1123 subdomain (node, namespace or object name).
    #[error(
        "{what} {value:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.')"
    )]
    Name {
        /// Which name.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Serialization failed.
    #[error("YAML: {0}")]
    Yaml(String),
}

/// RFC 1123 subdomain, as Kubernetes validates object and node names.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn yaml(v: &Value) -> Result<String, SwitchError> {
    serde_saphyr::to_string(v).map_err(|e| SwitchError::Yaml(e.to_string()))
}

/// Builds the manifests from the IPVS-mode KubeProxyConfiguration (`ipvs_config`'s YAML).
pub fn manifests(ipvs_config_yaml: &str, o: &SwitchOptions) -> Result<Manifests, SwitchError> {
    for (what, value) in [
        ("node", &o.node),
        ("namespace", &o.namespace),
        ("ConfigMap", &o.configmap),
        ("DaemonSet", &o.daemonset),
    ] {
        if !valid_name(value) {
            return Err(SwitchError::Name {
                what,
                value: value.clone(),
            });
        }
    }
    let cm_name = format!("{}-ipvs", o.configmap);
    let ds_name = format!("{}-ipvs", o.daemonset);
    let labels = json!({ "k8s-app": ds_name, "app.kubernetes.io/managed-by": "ipvs-migrate" });
    let configmap = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": cm_name, "namespace": o.namespace, "labels": labels },
        "data": { "config.conf": ipvs_config_yaml },
    });
    let daemonset = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": ds_name, "namespace": o.namespace, "labels": labels },
        "spec": {
            // A selector of its own: two DaemonSets must not select each other's pods.
            "selector": { "matchLabels": { "k8s-app": ds_name } },
            "updateStrategy": { "type": "RollingUpdate" },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "hostNetwork": true,
                    "serviceAccountName": "kube-proxy",
                    "nodeSelector": { "kubernetes.io/os": "linux", LABEL_KEY: LABEL_VALUE },
                    "tolerations": [ { "operator": "Exists" } ],
                    "containers": [ {
                        "name": "kube-proxy",
                        "image": o.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "/usr/local/bin/kube-proxy",
                            format!("--config={CONFIG_DIR}/config.conf"),
                            "--hostname-override=$(NODE_NAME)",
                        ],
                        "env": [ {
                            "name": "NODE_NAME",
                            "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } },
                        } ],
                        // kube-proxy writes /proc/sys and programs netfilter and IPVS.
                        "securityContext": { "privileged": true },
                        "volumeMounts": [
                            { "name": "kube-proxy", "mountPath": "/var/lib/kube-proxy" },
                            { "name": "kube-proxy-ipvs", "mountPath": CONFIG_DIR },
                            { "name": "xtables-lock", "mountPath": "/run/xtables.lock", "readOnly": false },
                            { "name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true },
                        ],
                    } ],
                    "volumes": [
                        { "name": "kube-proxy", "configMap": { "name": o.configmap } },
                        { "name": "kube-proxy-ipvs", "configMap": { "name": cm_name } },
                        { "name": "xtables-lock", "hostPath": { "path": "/run/xtables.lock", "type": "FileOrCreate" } },
                        { "name": "lib-modules", "hostPath": { "path": "/lib/modules" } },
                    ],
                },
            },
        },
    });
    let patch = json!({
        "spec": { "template": { "spec": { "affinity": { "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [ {
                "matchExpressions": [ { "key": LABEL_KEY, "operator": "NotIn", "values": [LABEL_VALUE] } ],
            } ] },
        } } } } },
    });
    let commands = vec![
        format!("kubectl apply -f {} -f {}", FILES[0], FILES[1]),
        format!(
            "kubectl -n {} patch daemonset {} --type strategic --patch-file {}",
            o.namespace, o.daemonset, FILES[2]
        ),
        format!("kubectl label node {} {LABEL_KEY}={LABEL_VALUE}", o.node),
    ];
    Ok(Manifests {
        configmap: yaml(&configmap)?,
        daemonset: yaml(&daemonset)?,
        patch: yaml(&patch)?,
        commands,
    })
}

/// The note every output of the manifests carries.
pub const LIMITATION: &str = "The second DaemonSet follows kubeadm's kube-proxy layout: ipvs-migrate cannot read your cluster's DaemonSet offline. Compare it with `kubectl -n kube-system get daemonset kube-proxy -o yaml` (image, args, volumes, tolerations, resources, service account) and carry over anything yours has before applying it. The patch replaces nodeAffinity terms of the original DaemonSet if it has any; its pod template changes, so the original kube-proxy pods restart (in iptables mode) node by node.";

#[cfg(test)]
mod tests;
