//! Host side of ipvs-migrate: everything that touches the node.
//!
//! This crate runs processes (iptables-save, iptables-restore, ipset), talks rtnetlink,
//! reads /proc, /sys and /etc relative to a host root, and sends bounded HTTP/1.0 GETs
//! (`http_get`: kube-proxy's loopback endpoints, a Prometheus query). It holds no policy: it
//! gathers inputs for the pure engine, carries out what it is told through small traits
//! (`Links`, `Ipsets`, `IptablesRestore`, `Sysctls`, each with a real implementation and a
//! recording fake), and returns typed errors; the binary decides exit codes.

pub mod apply;
pub mod calico;
pub mod counters;
pub mod finalize;
pub mod http_get;
pub mod ipset;
pub mod iptables;
pub mod journal;
pub mod kube_proxy;
pub mod link;
pub mod node;
pub mod probe;
pub mod restore;
pub mod sysctl;
