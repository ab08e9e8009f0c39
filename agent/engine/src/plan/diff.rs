//! Diff: observed kernel state + desired state → an ordered list of ops, for one interpreter
//! to execute. Ownership is part of the state: only objects the journal records as ours are
//! ever edited or deleted; a desired object whose key is held by another program is a
//! conflict, never adopted (DESIGN.md "Ownership").
//!
//! Order (DESIGN.md, kernel layer): on the way out destinations go before their services and
//! services before their addresses are unbound; on the way in services come before their
//! destinations and addresses are bound after the services exist. Rollback is the same diff
//! back to the snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{IpvsPlan, VirtualServer};
use crate::inventory::Protocol;

/// Who created an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// ipvs-migrate (recorded in its journal).
    Us,
    /// Anything else (kube-proxy, keepalived, an operator).
    Foreign,
}

/// A virtual server's kernel identity.
pub type VsKey = (Protocol, IpAddr, u16);
/// A destination's identity within its service.
pub type DestKey = (IpAddr, u16);

/// A virtual server's attributes as the kernel holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsState {
    /// Scheduler.
    pub scheduler: std::sync::Arc<str>,
    /// Flags.
    pub flags: u32,
    /// Persistence timeout.
    pub timeout: u32,
    /// Netmask.
    pub netmask: u32,
    /// Destinations → weight (serialized as a list of `[[address, port], weight]`).
    #[serde(with = "dest_list")]
    pub dests: BTreeMap<DestKey, u32>,
    /// Owner.
    pub owner: Owner,
}

mod dest_list {
    //! JSON maps need string keys: destinations travel as a list of pairs.
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::DestKey;

    pub fn serialize<S: Serializer>(m: &BTreeMap<DestKey, u32>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<DestKey, u32>, D::Error> {
        Ok(Vec::<(DestKey, u32)>::deserialize(d)?.into_iter().collect())
    }
}

/// Kernel objects the agent manages: IPVS services and kube-ipvs0 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Virtual servers.
    pub services: BTreeMap<VsKey, VsState>,
    /// Addresses on kube-ipvs0.
    pub addresses: BTreeMap<IpAddr, Owner>,
}

impl State {
    /// The desired state of a plan: everything ours.
    pub fn from_plan(plan: &IpvsPlan) -> State {
        State::desired(&plan.virtual_servers, &plan.addresses)
    }

    /// The desired state of planned virtual servers and addresses (the full plan's, or a
    /// hybrid plan's): everything ours.
    pub fn desired(virtual_servers: &[VirtualServer], addresses: &[IpAddr]) -> State {
        State {
            services: virtual_servers
                .iter()
                .map(|vs| (vs.key(), vs_state(vs)))
                .collect(),
            addresses: addresses.iter().map(|a| (*a, Owner::Us)).collect(),
        }
    }
}

/// A planned virtual server as kernel state, ours.
pub fn vs_state(vs: &VirtualServer) -> VsState {
    VsState {
        scheduler: vs.scheduler.clone(),
        flags: vs.flags,
        timeout: vs.timeout,
        netmask: vs.netmask,
        dests: vs
            .real_servers
            .iter()
            .map(|r| ((r.address, r.port), r.weight))
            .collect(),
        owner: Owner::Us,
    }
}

/// One kernel mutation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// Remove a destination.
    DelDest {
        /// Service.
        service: VsKey,
        /// Destination.
        dest: DestKey,
    },
    /// Remove a virtual server.
    DelService {
        /// Service.
        service: VsKey,
    },
    /// Add a virtual server.
    AddService {
        /// Service.
        service: VsKey,
        /// Scheduler.
        scheduler: std::sync::Arc<str>,
        /// Flags.
        flags: u32,
        /// Timeout.
        timeout: u32,
        /// Netmask.
        netmask: u32,
    },
    /// Change a virtual server's scheduler / flags / timeout.
    EditService {
        /// Service.
        service: VsKey,
        /// Scheduler.
        scheduler: std::sync::Arc<str>,
        /// Flags.
        flags: u32,
        /// Timeout.
        timeout: u32,
        /// Netmask.
        netmask: u32,
    },
    /// Add a destination.
    AddDest {
        /// Service.
        service: VsKey,
        /// Destination.
        dest: DestKey,
        /// Weight.
        weight: u32,
    },
    /// Change a destination's weight.
    EditDest {
        /// Service.
        service: VsKey,
        /// Destination.
        dest: DestKey,
        /// Weight.
        weight: u32,
    },
    /// Bind an address on kube-ipvs0.
    AddAddress {
        /// Address.
        address: IpAddr,
    },
    /// Unbind an address from kube-ipvs0.
    DelAddress {
        /// Address.
        address: IpAddr,
    },
}

/// A desired object whose key another program holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    /// A virtual server with this key exists and is not ours.
    Service(VsKey),
    /// The address is already bound by someone else.
    Address(IpAddr),
}

/// The ops that turn `observed` into `desired` for the objects we own, and the conflicts.
/// `desired` holds only our objects. Foreign objects are never deleted or edited.
pub fn diff(observed: &State, desired: &State) -> (Vec<Op>, Vec<Conflict>) {
    let mut del_dests = Vec::new();
    let mut del_services = Vec::new();
    let mut add_services = Vec::new();
    let mut edit_services = Vec::new();
    let mut dest_ops = Vec::new();
    let mut add_addresses = Vec::new();
    let mut del_addresses = Vec::new();
    let mut conflicts = Vec::new();

    for (key, have) in &observed.services {
        if have.owner != Owner::Us {
            continue;
        }
        match desired.services.get(key) {
            None => {
                for d in have.dests.keys() {
                    del_dests.push(Op::DelDest {
                        service: *key,
                        dest: *d,
                    });
                }
                del_services.push(Op::DelService { service: *key });
            }
            Some(want) => {
                for d in have.dests.keys().filter(|d| !want.dests.contains_key(d)) {
                    del_dests.push(Op::DelDest {
                        service: *key,
                        dest: *d,
                    });
                }
            }
        }
    }
    for (key, want) in &desired.services {
        match observed.services.get(key) {
            Some(have) if have.owner != Owner::Us => conflicts.push(Conflict::Service(*key)),
            Some(have) => {
                if (&have.scheduler, have.flags, have.timeout, have.netmask)
                    != (&want.scheduler, want.flags, want.timeout, want.netmask)
                {
                    edit_services.push(Op::EditService {
                        service: *key,
                        scheduler: want.scheduler.clone(),
                        flags: want.flags,
                        timeout: want.timeout,
                        netmask: want.netmask,
                    });
                }
                for (d, w) in &want.dests {
                    match have.dests.get(d) {
                        None => dest_ops.push(Op::AddDest {
                            service: *key,
                            dest: *d,
                            weight: *w,
                        }),
                        Some(hw) if hw != w => dest_ops.push(Op::EditDest {
                            service: *key,
                            dest: *d,
                            weight: *w,
                        }),
                        Some(_) => {}
                    }
                }
            }
            None => {
                add_services.push(Op::AddService {
                    service: *key,
                    scheduler: want.scheduler.clone(),
                    flags: want.flags,
                    timeout: want.timeout,
                    netmask: want.netmask,
                });
                for (d, w) in &want.dests {
                    dest_ops.push(Op::AddDest {
                        service: *key,
                        dest: *d,
                        weight: *w,
                    });
                }
            }
        }
    }
    for (a, owner) in &observed.addresses {
        if *owner == Owner::Us && !desired.addresses.contains_key(a) {
            del_addresses.push(Op::DelAddress { address: *a });
        }
    }
    for a in desired.addresses.keys() {
        match observed.addresses.get(a) {
            Some(Owner::Foreign) => conflicts.push(Conflict::Address(*a)),
            Some(Owner::Us) => {}
            None => add_addresses.push(Op::AddAddress { address: *a }),
        }
    }
    let mut ops = del_dests;
    ops.extend(del_services);
    ops.extend(add_services);
    ops.extend(edit_services);
    ops.extend(dest_ops);
    ops.extend(add_addresses);
    ops.extend(del_addresses);
    (ops, conflicts)
}

/// Applies ops to a state the way the kernel would (used by the tests and the dry-run).
/// Errors name the op that the kernel would refuse.
pub fn apply(state: &mut State, ops: &[Op]) -> Result<(), String> {
    for op in ops {
        match op {
            Op::DelDest { service, dest } => {
                let s = state
                    .services
                    .get_mut(service)
                    .ok_or_else(|| format!("{op:?}: no such service"))?;
                s.dests
                    .remove(dest)
                    .ok_or_else(|| format!("{op:?}: no such destination"))?;
            }
            Op::DelService { service } => {
                state
                    .services
                    .remove(service)
                    .ok_or_else(|| format!("{op:?}: no such service"))?;
            }
            Op::AddService {
                service,
                scheduler,
                flags,
                timeout,
                netmask,
            } => {
                if state.services.contains_key(service) {
                    return Err(format!("{op:?}: exists"));
                }
                state.services.insert(
                    *service,
                    VsState {
                        scheduler: scheduler.clone(),
                        flags: *flags,
                        timeout: *timeout,
                        netmask: *netmask,
                        dests: BTreeMap::new(),
                        owner: Owner::Us,
                    },
                );
            }
            Op::EditService {
                service,
                scheduler,
                flags,
                timeout,
                netmask,
            } => {
                let s = state
                    .services
                    .get_mut(service)
                    .ok_or_else(|| format!("{op:?}: no such service"))?;
                s.scheduler = scheduler.clone();
                s.flags = *flags;
                s.timeout = *timeout;
                s.netmask = *netmask;
            }
            Op::AddDest {
                service,
                dest,
                weight,
            } => {
                let s = state
                    .services
                    .get_mut(service)
                    .ok_or_else(|| format!("{op:?}: no such service"))?;
                if s.dests.insert(*dest, *weight).is_some() {
                    return Err(format!("{op:?}: exists"));
                }
            }
            Op::EditDest {
                service,
                dest,
                weight,
            } => {
                let s = state
                    .services
                    .get_mut(service)
                    .ok_or_else(|| format!("{op:?}: no such service"))?;
                let w = s
                    .dests
                    .get_mut(dest)
                    .ok_or_else(|| format!("{op:?}: no such destination"))?;
                *w = *weight;
            }
            Op::AddAddress { address } => {
                if state.addresses.insert(*address, Owner::Us).is_some() {
                    return Err(format!("{op:?}: exists"));
                }
            }
            Op::DelAddress { address } => {
                state
                    .addresses
                    .remove(address)
                    .ok_or_else(|| format!("{op:?}: no such address"))?;
            }
        }
    }
    Ok(())
}
