//! Pure core of ipvs-migrate.
//!
//! No I/O beyond reading from a caller-supplied `Read`, no processes, no sockets, no clocks:
//! everything here is a function of its inputs so that it can be tested on fixtures and fuzzed.
//! The host crate gathers inputs; the binary prints results.

pub mod cutover;
pub mod drift;
pub mod inventory;
pub mod plan;
pub mod preflight;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod rules;
pub mod verify;
