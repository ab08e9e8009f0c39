//! The Kubernetes API side of ipvs-migrate (DESIGN.md "Kubernetes"): building a client
//! (kubeconfig or the pod's service account) with request deadlines, errors that name the
//! server and the RBAC rule a call needs, and the reads and writes the agent and the CLI make.
//!
//! Must not: touch the node (iptables, IPVS, files other than the kubeconfig), or hold
//! migration logic — comparisons and decisions live in the pure `ipvsmig-engine`; this crate
//! converts API objects to and from its types. docs/kubernetes.md is the user-facing picture.

pub mod client;
pub mod configmap;
pub mod error;
pub mod fleet;
pub mod migration;
pub mod node_status;
pub mod switch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod view;

pub use client::{ApiClient, ClientOptions};
pub use error::{Call, ErrorClass, KubeError};
