//! Host side of ipvs-migrate: everything that touches the node.
//!
//! This crate runs processes (iptables-save) and, in later layers, reads /proc, /sys and /etc
//! relative to a host root. It holds no policy: it gathers inputs for the pure engine and
//! returns typed errors; the binary decides exit codes.

pub mod iptables;
pub mod journal;
pub mod node;
