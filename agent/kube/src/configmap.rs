//! kube-proxy's configuration text from its ConfigMap (DESIGN.md "Kubernetes": default
//! `kube-system/kube-proxy`, key `config.conf` as kubeadm writes it; some distributions call
//! the ConfigMap `kube-proxy-config`).
//!
//! Must not: parse the configuration (the engine's `preflight::kubeproxy::parse` does), or
//! fall back to another name by itself — a wrong name is an error the user fixes.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::client::ApiClient;
use crate::error::{Call, KubeError};

/// Which ConfigMap key holds kube-proxy's KubeProxyConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapKey {
    /// Namespace.
    pub namespace: String,
    /// ConfigMap name.
    pub name: String,
    /// Key in its `data`.
    pub key: String,
}

impl Default for ConfigMapKey {
    /// kubeadm's: `kube-system/kube-proxy`, key `config.conf`.
    fn default() -> ConfigMapKey {
        ConfigMapKey {
            namespace: "kube-system".into(),
            name: "kube-proxy".into(),
            key: "config.conf".into(),
        }
    }
}

impl fmt::Display for ConfigMapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} key {}", self.namespace, self.name, self.key)
    }
}

impl FromStr for ConfigMapKey {
    type Err = String;

    /// `NAMESPACE/NAME` or `NAME` (in kube-system); the key stays `config.conf`.
    fn from_str(s: &str) -> Result<ConfigMapKey, String> {
        let (namespace, name) = match s.split_once('/') {
            Some((ns, n)) => (ns, n),
            None => ("kube-system", s),
        };
        let ok = |v: &str| {
            !v.is_empty()
                && v.len() <= 253
                && v.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        };
        if !ok(namespace) || !ok(name) || name.contains('/') {
            return Err(format!(
                "{s:?}: expected NAMESPACE/NAME or NAME of a ConfigMap (lower-case DNS names)"
            ));
        }
        Ok(ConfigMapKey {
            namespace: namespace.into(),
            name: name.into(),
            ..ConfigMapKey::default()
        })
    }
}

/// Reads the key's text: 404 if the ConfigMap does not exist, [`KubeError::MissingKey`] if it
/// lacks the key.
pub async fn read_config_text(api: &ApiClient, src: &ConfigMapKey) -> Result<String, KubeError> {
    let call = Call::new("get", "", "configmaps")
        .in_namespace(&src.namespace)
        .named(&src.name);
    let cms: Api<ConfigMap> = Api::namespaced(api.client().clone(), &src.namespace);
    let cm = api.run(call, cms.get(&src.name)).await?;
    let data = cm.data.unwrap_or_default();
    match data.get(&src.key) {
        Some(text) => Ok(text.clone()),
        None => Err(KubeError::MissingKey {
            server: api.server().to_owned(),
            namespace: src.namespace.clone(),
            name: src.name.clone(),
            key: src.key.clone(),
            present: if data.is_empty() {
                "none".into()
            } else {
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        }),
    }
}

#[cfg(test)]
mod tests;
