//! IPVS over generic netlink: no maintained crate speaks this family, so ipvs-migrate carries
//! its own (shared/reference/rust-crates.md §2). [`codec`] builds and parses messages and holds
//! no socket (tested on fixed bytes); [`client`] sends them on a NETLINK_GENERIC socket.
//!
//! It resolves the family; adds, edits, deletes and dumps services and destinations; and runs
//! kube-proxy's `CanUseIPVSProxier` probe. The kernel layer (issue 5) adds timeouts, GET_INFO
//! and pipelining.

pub mod client;
pub mod codec;

pub use client::{Client, IpvsError, probe};
