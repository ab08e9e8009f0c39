//! IPVS over generic netlink: no maintained crate speaks this family, so ipvs-migrate carries
//! its own (shared/reference/rust-crates.md §2). [`codec`] builds and parses messages and holds
//! no socket (tested on fixed bytes); [`client`] sends them on a NETLINK_GENERIC socket.
//!
//! This first cut covers what preflight's `--probe` needs — resolving the family and adding,
//! reading back and deleting one virtual server, as kube-proxy's `CanUseIPVSProxier` does; the
//! kernel layer (issue 5) extends it to destinations, dumps, timeouts and pipelining.

pub mod client;
pub mod codec;

pub use client::{Client, IpvsError, probe};
