//! IPVS over generic netlink: no maintained crate speaks this family, so ipvs-migrate carries
//! its own (shared/reference/rust-crates.md §2). [`codec`] builds and parses messages and holds
//! no socket (tested on fixed bytes); [`client`] sends them on a NETLINK_GENERIC socket.
//!
//! It resolves the family; adds, edits, deletes and dumps services and destinations; reads
//! GET_INFO; gets and sets the connection timeouts; and runs kube-proxy's `CanUseIPVSProxier`
//! probe. The kernel layer (issue 5) adds pipelining.

pub mod client;
pub mod codec;

pub use client::{Client, IpvsError, Request, probe};
