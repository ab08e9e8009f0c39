//! Inventory: kube-proxy's iptables-mode rules (iptables-save text) → a typed model of every
//! service port, its VIPs, endpoints and policies.
//!
//! Layers: [`save`] splits the dump into tables/chains/rules (format only), [`rule`] reads one
//! rule's options order-independently, [`facts`] keeps what each KUBE-* rule says while the dump
//! streams by, and [`resolve`] follows the jump graph from KUBE-SERVICES / KUBE-NODEPORTS to the
//! endpoint chains and builds [`ServicePort`]s. Chain names are verified against kube-proxy's
//! hash ([`hash`]); comments identify a service only where kube-proxy always writes them
//! (KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS), never on endpoint chains.
//!
//! Invariant: every rule in a KUBE-* chain, and every jump into one, is either placed in the
//! model or reported as a [`Warning`] with its line number.

pub(crate) mod chains;
pub(crate) mod facts;
pub mod hash;
pub mod model;
pub(crate) mod num;
pub(crate) mod quick;
pub(crate) mod resolve;
pub(crate) mod rule;
pub mod save;
pub(crate) mod scan;

use std::io::Read;

pub use facts::{format_endpoint, normalize_probability};
pub use model::*;

/// Errors reading a dump. Each names the input and, where there is one, the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    /// The text is not a well-formed iptables-save dump.
    #[error("{input}:{line}: {message}")]
    Malformed {
        /// File name, `-` for stdin, or `iptables-save (live)`.
        input: String,
        /// 1-based line.
        line: u32,
        /// What is wrong.
        message: String,
    },
    /// A table was opened and never committed: the dump was cut short.
    #[error("{input}: table {table} opened at line {line} has no COMMIT: the dump is truncated")]
    Truncated {
        /// Input name.
        input: String,
        /// Table left open.
        table: String,
        /// Line of its `*table` header.
        line: u32,
    },
    /// Reading the input failed.
    #[error("{input}: read error: {error}")]
    Io {
        /// Input name.
        input: String,
        /// The I/O error.
        error: String,
    },
}

impl InventoryError {
    pub(crate) fn malformed(source: &str, line: u32, message: impl Into<String>) -> InventoryError {
        InventoryError::Malformed {
            input: source.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// One dump to read: its name (for messages), family, where it came from, and its bytes.
pub struct DumpInput<R> {
    /// Name used in errors and warnings.
    pub name: String,
    /// IP family of the rules.
    pub family: IpFamily,
    /// Where the dump came from.
    pub source: SourceKind,
    /// The text.
    pub reader: R,
}

/// Tables the inventory reads; others (raw, security) are passed over.
pub const TABLES: [&str; 3] = ["nat", "filter", "mangle"];

/// One family's facts, service ports and warnings.
pub type FamilyRead = (FamilyFacts, Vec<ServicePort>, Vec<Warning>);

/// Reads one family's dump into its facts, service ports and warnings.
pub fn read_family<R: Read>(input: DumpInput<R>) -> Result<FamilyRead, InventoryError> {
    let mut collector = facts::Collector::new(&input.name, input.family);
    save::read_dump_text(&input.name, input.reader, &TABLES, |event, text, line| {
        collector.event(event, text, line)
    })?;
    resolve::resolve(collector, input.source)
}

/// As [`read_family`] for a dump already in memory: its lines are borrowed, not copied
/// (same result, same errors).
pub fn read_family_bytes(input: DumpInput<&[u8]>) -> Result<FamilyRead, InventoryError> {
    let mut collector = facts::Collector::new(&input.name, input.family);
    save::read_dump_bytes(&input.name, input.reader, &TABLES, |event, text, line| {
        collector.event(event, text, line)
    })?;
    resolve::resolve(collector, input.source)
}

/// Reads dumps (typically one IPv4 and optionally one IPv6) into one inventory.
pub fn inventory<R: Read>(inputs: Vec<DumpInput<R>>) -> Result<Inventory, InventoryError> {
    let mut inv = Inventory::default();
    for input in inputs {
        inv.add_family(read_family(input)?);
    }
    inv.normalize();
    Ok(inv)
}

/// As [`inventory`] for dumps already in memory ([`read_family_bytes`]).
pub fn inventory_of_bytes(inputs: Vec<DumpInput<&[u8]>>) -> Result<Inventory, InventoryError> {
    let mut inv = Inventory::default();
    for input in inputs {
        inv.add_family(read_family_bytes(input)?);
    }
    inv.normalize();
    Ok(inv)
}

impl Inventory {
    /// Adds one family's result (call [`Inventory::normalize`] after the last).
    pub fn add_family(&mut self, (facts, ports, warnings): FamilyRead) {
        self.families.push(facts);
        // The first family's vectors are taken as they are: copying 20k service ports of a
        // few hundred bytes each costs more than a millisecond.
        if self.service_ports.is_empty() {
            self.service_ports = ports;
        } else {
            self.service_ports.extend(ports);
        }
        if self.warnings.is_empty() {
            self.warnings = warnings;
        } else {
            self.warnings.extend(warnings);
        }
    }
}

/// Convenience: inventory of one in-memory IPv4 dump.
pub fn inventory_from_str(name: &str, text: &str) -> Result<Inventory, InventoryError> {
    inventory_of_bytes(vec![DumpInput {
        name: name.to_owned(),
        family: IpFamily::IPv4,
        source: SourceKind::File {
            path: name.to_owned(),
        },
        reader: text.as_bytes(),
    }])
}

#[cfg(test)]
mod tests;
