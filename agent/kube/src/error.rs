//! The errors of a Kubernetes API call, each naming the server and the call (verb, resource,
//! namespace, name), and the class an error belongs to (which exit code the CLI gives it).
//!
//! Must not: talk to the API server, or decide exit code numbers (the binary owns those;
//! docs/kubernetes.md "Errors and exit codes" documents the mapping).

use std::fmt;
use std::time::Duration;

/// One API request as RBAC sees it: verb, resource (with its group), namespace, name.
/// Messages name it so that a 403 says exactly which rule deploy/rbac.yaml must grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Call {
    /// RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Resource (plural, lower case), with `/subresource` where there is one (`nodes/status`).
    pub resource: String,
    /// Namespace; `None` for cluster-scoped objects and lists across all namespaces.
    pub namespace: Option<String>,
    /// Object name; `None` for lists and creates.
    pub name: Option<String>,
}

impl Call {
    /// A call on a resource: `Call::new("get", "", "configmaps")`.
    pub fn new(verb: &str, group: &str, resource: &str) -> Call {
        Call {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: None,
            name: None,
        }
    }

    /// The same call in a namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Call {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// The same call on one object.
    pub fn named(mut self, name: &str) -> Call {
        self.name = Some(name.to_owned());
        self
    }

    /// `resource.group` as kubectl spells it (`endpointslices.discovery.k8s.io`; core: `nodes`).
    pub fn qualified_resource(&self) -> String {
        match (self.group.as_str(), self.resource.split_once('/')) {
            ("", _) => self.resource.clone(),
            (g, Some((res, sub))) => format!("{res}.{g}/{sub}"),
            (g, None) => format!("{}.{g}", self.resource),
        }
    }

    /// The object or collection: `configmaps kube-system/kube-proxy`, `nodes node-1`,
    /// `services (all namespaces)`.
    pub fn target(&self) -> String {
        let res = self.qualified_resource();
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => format!("{res} {ns}/{n}"),
            (None, Some(n)) => format!("{res} {n}"),
            (Some(ns), None) => format!("{res} in namespace {ns}"),
            (None, None) => format!("{res} (all namespaces or cluster-scoped)"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.target())
    }
}

/// What kind of failure an error is; the CLI maps each class to one exit code
/// (docs/kubernetes.md): `Unavailable` 69, `Missing` 66, `BadData` 65, `Failed` 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The API cannot be used: no configuration, unreachable, timed out, 401 or 403.
    Unavailable,
    /// The object asked for does not exist (404, or a ConfigMap without the key).
    Missing,
    /// The server answered with something that is not what the API reference says.
    BadData,
    /// The server refused or failed the operation (409, 422, 5xx, ...).
    Failed,
}

/// Every value [`KubeError::kind`] returns.
pub const KINDS: [&str; 8] = [
    "config",
    "unauthorized",
    "forbidden",
    "not_found",
    "timeout",
    "unreachable",
    "api",
    "decode",
];

/// An API call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No way to reach an API server was configured.
    #[error(
        "no Kubernetes API configuration: {message} (give --kubeconfig FILE, set KUBECONFIG, or run in a pod with a service account)"
    )]
    Config {
        /// Why the configuration could not be loaded.
        message: String,
    },
    /// 401: the credentials were not accepted.
    #[error(
        "{server}: unauthorized (HTTP 401) to {call}: {message}; the service account token or the kubeconfig's credentials were not accepted"
    )]
    Unauthorized {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// The server's message.
        message: String,
    },
    /// 403: RBAC (or an admission policy) does not allow the call.
    #[error(
        "{server}: forbidden (HTTP 403): the agent may not {verb} {target}: {message}; deploy/rbac.yaml grants `{verb}` on `{resource}`{scope} — is it applied and bound to this service account?",
        verb = call.verb,
        target = call.target(),
        resource = call.qualified_resource(),
        scope = call.namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default()
    )]
    Forbidden {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// The server's message.
        message: String,
    },
    /// 404: the object (or the resource type) does not exist.
    #[error("{server}: not found (HTTP 404): {target}: {message}", target = call.target())]
    NotFound {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// The server's message.
        message: String,
    },
    /// A ConfigMap exists but lacks the key asked for.
    #[error(
        "{server}: configmap {namespace}/{name} has no key {key:?} (keys: {present}); set the key name (kubeProxyConfigMap.key / --kube-proxy-configmap-key) or give --kube-proxy-config FILE"
    )]
    MissingKey {
        /// API server URL.
        server: String,
        /// ConfigMap namespace.
        namespace: String,
        /// ConfigMap name.
        name: String,
        /// The key asked for.
        key: String,
        /// The keys the ConfigMap has, comma-separated.
        present: String,
    },
    /// No answer in time.
    #[error("{server}: no answer within {} s to {call} (is the API server reachable from here?)", timeout.as_secs_f64())]
    Timeout {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// The time allowed.
        timeout: Duration,
    },
    /// The connection failed (refused, DNS, TLS).
    #[error("{server}: unreachable for {call}: {message}")]
    Unreachable {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// What the connection said.
        message: String,
    },
    /// Any other failure status (409, 422, 5xx, ...).
    #[error("{server}: {call} failed: HTTP {code} {reason}: {message}")]
    Api {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// HTTP status code.
        code: u16,
        /// The Status object's `reason`.
        reason: String,
        /// The Status object's `message`.
        message: String,
    },
    /// A 2xx answer whose body is not the object the API reference describes.
    #[error("{server}: {call}: the answer is not a valid object: {message}")]
    Decode {
        /// API server URL.
        server: String,
        /// The request.
        call: Call,
        /// The parse error.
        message: String,
    },
}

impl KubeError {
    /// The class (and so the exit code) of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            KubeError::Config { .. }
            | KubeError::Unauthorized { .. }
            | KubeError::Forbidden { .. }
            | KubeError::Timeout { .. }
            | KubeError::Unreachable { .. } => ErrorClass::Unavailable,
            KubeError::NotFound { .. } | KubeError::MissingKey { .. } => ErrorClass::Missing,
            KubeError::Decode { .. } => ErrorClass::BadData,
            KubeError::Api { .. } => ErrorClass::Failed,
        }
    }

    /// A closed label for metrics (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            KubeError::Config { .. } => "config",
            KubeError::Unauthorized { .. } => "unauthorized",
            KubeError::Forbidden { .. } => "forbidden",
            KubeError::NotFound { .. } | KubeError::MissingKey { .. } => "not_found",
            KubeError::Timeout { .. } => "timeout",
            KubeError::Unreachable { .. } => "unreachable",
            KubeError::Api { .. } => "api",
            KubeError::Decode { .. } => "decode",
        }
    }

    /// Maps kube-client's error for `call` on `server`. A failure status is classified by its
    /// HTTP code (the API reference's `Status` object: `code`, `reason`, `message`).
    pub fn from_kube(server: &str, call: Call, err: kube::Error) -> KubeError {
        let server = server.to_owned();
        match err {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    401 => KubeError::Unauthorized {
                        server,
                        call,
                        message,
                    },
                    403 => KubeError::Forbidden {
                        server,
                        call,
                        message,
                    },
                    404 => KubeError::NotFound {
                        server,
                        call,
                        message,
                    },
                    code => KubeError::Api {
                        server,
                        call,
                        code,
                        reason: status.reason.clone(),
                        message,
                    },
                }
            }
            kube::Error::SerdeError(e) => KubeError::Decode {
                server,
                call,
                message: e.to_string(),
            },
            kube::Error::FromUtf8(e) => KubeError::Decode {
                server,
                call,
                message: e.to_string(),
            },
            // Connection-level failures: refused, reset, DNS, TLS, hyper's own errors.
            other => KubeError::Unreachable {
                server,
                call,
                message: chain(&other),
            },
        }
    }
}

/// An error and its sources on one line ("a: b: c"), so "connection refused" is not hidden
/// behind "ServiceError".
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_is_in_the_closed_label_set() {
        let call = || Call::new("list", "discovery.k8s.io", "endpointslices");
        let s = || "https://k/".to_owned();
        let m = || "m".to_owned();
        let all = [
            KubeError::Config { message: m() },
            KubeError::Unauthorized {
                server: s(),
                call: call(),
                message: m(),
            },
            KubeError::Forbidden {
                server: s(),
                call: call(),
                message: m(),
            },
            KubeError::NotFound {
                server: s(),
                call: call(),
                message: m(),
            },
            KubeError::MissingKey {
                server: s(),
                namespace: m(),
                name: m(),
                key: m(),
                present: m(),
            },
            KubeError::Timeout {
                server: s(),
                call: call(),
                timeout: Duration::from_secs(1),
            },
            KubeError::Unreachable {
                server: s(),
                call: call(),
                message: m(),
            },
            KubeError::Api {
                server: s(),
                call: call(),
                code: 500,
                reason: m(),
                message: m(),
            },
            KubeError::Decode {
                server: s(),
                call: call(),
                message: m(),
            },
        ];
        for e in &all {
            assert!(KINDS.contains(&e.kind()), "{e:?}");
        }
    }

    #[test]
    fn a_cluster_wide_list_names_the_group() {
        let c = Call::new("list", "discovery.k8s.io", "endpointslices");
        assert_eq!(
            c.to_string(),
            "list endpointslices.discovery.k8s.io (all namespaces or cluster-scoped)"
        );
    }
}
