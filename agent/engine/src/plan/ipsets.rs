//! The ipsets kube-proxy's IPVS mode keeps (pkg/proxy/ipvs/proxier.go `ipsetInfo` and the
//! entries `syncProxyRules` adds; kube-proxy-facts.md §2.4). Members are written as
//! `ipset add` takes them: `ip,proto:port` (hash:ip,port), `ip,proto:port,ip` (hash:ip,port,ip),
//! `ip,proto:port,net` (hash:ip,port,net), `port` (bitmap:port). IPv6 sets use the `KUBE-6-`
//! prefix.
//!
//! One deliberate difference: kube-proxy fills KUBE-LOOP-BACK from endpoints on this node only,
//! but the iptables rules say where an endpoint runs only for services with a Local policy.
//! Endpoints whose locality is unknown are included; for an endpoint on another node the entry
//! can never match (its source, the pod itself, is not on this node), so the effect is the same.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::PlanOptions;
use crate::inventory::{Inventory, IpFamily, Protocol, ServicePort, TrafficPolicy};

/// One set: its type and members.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpSetPlan {
    /// ipset type (`hash:ip,port`, …).
    pub set_type: String,
    /// Members, sorted, without duplicates.
    pub members: Vec<Member>,
}

/// One ipset member, typed (sorting and building 100k+ of them as strings dominated the
/// plan's cost); rendered and serialized as `ipset add` takes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// `hash:ip`: `ip`.
    Ip(IpAddr),
    /// `hash:ip,port`: `ip,proto:port`.
    IpPort(IpAddr, Protocol, u16),
    /// `hash:ip,port,ip`: `ip,proto:port,ip`.
    IpPortIp(IpAddr, Protocol, u16, IpAddr),
    /// `hash:ip,port,net`: `ip,proto:port,net` (a host network prints as the bare address).
    IpPortNet(IpAddr, Protocol, u16, ipnet::IpNet),
    /// `bitmap:port`: `port`.
    Port(u16),
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::Ip(ip) => write!(f, "{ip}"),
            Member::IpPort(ip, p, port) => write!(f, "{ip},{}:{port}", p.as_str()),
            Member::IpPortIp(ip, p, port, ip2) => write!(f, "{ip},{}:{port},{ip2}", p.as_str()),
            Member::IpPortNet(ip, p, port, net) => {
                if net.prefix_len() == net.max_prefix_len() {
                    write!(f, "{ip},{}:{port},{}", p.as_str(), net.addr())
                } else {
                    write!(f, "{ip},{}:{port},{net}", p.as_str())
                }
            }
            Member::Port(port) => write!(f, "{port}"),
        }
    }
}

impl std::str::FromStr for Member {
    type Err = String;

    fn from_str(s: &str) -> Result<Member, String> {
        let bad = || format!("not an ipset member: {s:?}");
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Member::Port(port));
        }
        let mut parts = s.splitn(3, ',');
        let ip: IpAddr = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let Some(pp) = parts.next() else {
            return Ok(Member::Ip(ip));
        };
        let (proto, port) = pp.split_once(':').ok_or_else(bad)?;
        let proto = Protocol::parse(proto).ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        match parts.next() {
            None => Ok(Member::IpPort(ip, proto, port)),
            Some(third) if third.contains('/') => Ok(Member::IpPortNet(
                ip,
                proto,
                port,
                third.parse().map_err(|_| bad())?,
            )),
            Some(third) => {
                let ip2: IpAddr = third.parse().map_err(|_| bad())?;
                Ok(Member::IpPortIp(ip, proto, port, ip2))
            }
        }
    }
}

impl Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// (name without prefix, type) of every set kube-proxy's IPVS mode creates.
pub const SETS: &[(&str, &str)] = &[
    ("LOOP-BACK", "hash:ip,port,ip"),
    ("CLUSTER-IP", "hash:ip,port"),
    ("EXTERNAL-IP", "hash:ip,port"),
    ("EXTERNAL-IP-LOCAL", "hash:ip,port"),
    ("LOAD-BALANCER", "hash:ip,port"),
    ("LOAD-BALANCER-FW", "hash:ip,port"),
    ("LOAD-BALANCER-LOCAL", "hash:ip,port"),
    ("LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
    ("LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
    ("NODE-PORT-TCP", "bitmap:port"),
    ("NODE-PORT-LOCAL-TCP", "bitmap:port"),
    ("NODE-PORT-UDP", "bitmap:port"),
    ("NODE-PORT-LOCAL-UDP", "bitmap:port"),
    ("NODE-PORT-SCTP-HASH", "hash:ip,port"),
    ("NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port"),
    ("HEALTH-CHECK-NODE-PORT", "bitmap:port"),
    ("IPVS-IPS", "hash:ip"),
];

/// A set's full name for a family (`KUBE-` / `KUBE-6-`, at most 31 characters).
pub fn set_name(base: &str, family: IpFamily) -> String {
    let mut n = match family {
        IpFamily::IPv4 => format!("KUBE-{base}"),
        IpFamily::IPv6 => format!("KUBE-6-{base}"),
    };
    n.truncate(31);
    n
}

fn ip_port(ip: &IpAddr, proto: Protocol, port: u16) -> Member {
    Member::IpPort(*ip, proto, port)
}

/// Every set of every family present in the inventory, with its members.
pub fn ipsets(
    inv: &Inventory,
    opts: &PlanOptions,
    bound: &[IpAddr],
) -> BTreeMap<String, IpSetPlan> {
    let mut families: Vec<IpFamily> = inv.families.iter().map(|f| f.family).collect();
    families.sort();
    families.dedup();
    // Members are collected per (set, family) and bulk-built into sorted sets at the end:
    // much cheaper than a sorted insert per member at 100k+ members.
    let mut acc: rustc_hash::FxHashMap<(&str, IpFamily), Vec<Member>> =
        rustc_hash::FxHashMap::default();
    let mut add = |base: &'static str, fam: IpFamily, member: Member| {
        acc.entry((base, fam)).or_default().push(member);
    };
    for sp in &inv.service_ports {
        service_entries(sp, opts, &mut add);
    }
    for ip in bound {
        add("IPVS-IPS", IpFamily::of(ip), Member::Ip(*ip));
    }
    let mut sets: BTreeMap<String, IpSetPlan> = BTreeMap::new();
    for fam in &families {
        for (base, t) in SETS {
            sets.insert(
                set_name(base, *fam),
                IpSetPlan {
                    set_type: (*t).to_owned(),
                    members: sorted(acc.remove(&(*base, *fam)).unwrap_or_default()),
                },
            );
        }
    }
    for ((base, fam), members) in acc {
        let set = sets.entry(set_name(base, fam)).or_default();
        set.members.extend(members);
        set.members = sorted(std::mem::take(&mut set.members));
    }
    sets
}

fn sorted(mut v: Vec<Member>) -> Vec<Member> {
    v.sort_unstable();
    v.dedup();
    v
}

fn service_entries(
    sp: &ServicePort,
    opts: &PlanOptions,
    add: &mut impl FnMut(&'static str, IpFamily, Member),
) {
    let fam = sp.family;
    let p = sp.protocol;
    let etp_local = sp.external_traffic_policy == TrafficPolicy::Local;
    for e in &sp.endpoints {
        if e.local != Some(false) {
            add("LOOP-BACK", fam, Member::IpPortIp(e.ip, p, e.port, e.ip));
        }
    }
    add("CLUSTER-IP", fam, ip_port(&sp.cluster_ip, p, sp.port));
    for ip in &sp.external_ips {
        add(
            if etp_local {
                "EXTERNAL-IP-LOCAL"
            } else {
                "EXTERNAL-IP"
            },
            fam,
            ip_port(ip, p, sp.port),
        );
    }
    for ip in sp
        .load_balancer_ips
        .iter()
        .chain(&sp.external_or_load_balancer_ips)
    {
        let entry = ip_port(ip, p, sp.port);
        add("LOAD-BALANCER", fam, entry.clone());
        if etp_local {
            add("LOAD-BALANCER-LOCAL", fam, entry.clone());
        }
        if !sp.load_balancer_source_ranges.is_empty() {
            add("LOAD-BALANCER-FW", fam, entry.clone());
            for cidr in &sp.load_balancer_source_ranges {
                // ipset keeps a host network as the bare address (as `ipset save` prints it;
                // Member's Display does the same).
                add(
                    "LOAD-BALANCER-SOURCE-CIDR",
                    fam,
                    Member::IpPortNet(*ip, p, sp.port, *cidr),
                );
            }
            if sp.load_balancer_allows_node {
                add(
                    "LOAD-BALANCER-SOURCE-IP",
                    fam,
                    Member::IpPortIp(*ip, p, sp.port, *ip),
                );
            }
        }
    }
    if let Some(np) = sp.node_port {
        match p {
            Protocol::Tcp | Protocol::Udp => {
                let (all, local) = if p == Protocol::Tcp {
                    ("NODE-PORT-TCP", "NODE-PORT-LOCAL-TCP")
                } else {
                    ("NODE-PORT-UDP", "NODE-PORT-LOCAL-UDP")
                };
                add(all, fam, Member::Port(np));
                if etp_local {
                    add(local, fam, Member::Port(np));
                }
            }
            Protocol::Sctp => {
                for ip in opts.node_ips.iter().filter(|ip| IpFamily::of(ip) == fam) {
                    add("NODE-PORT-SCTP-HASH", fam, ip_port(ip, p, np));
                    if etp_local {
                        add("NODE-PORT-LOCAL-SCTP-HASH", fam, ip_port(ip, p, np));
                    }
                }
            }
        }
    }
    if let Some(hc) = sp.health_check_node_port {
        add("HEALTH-CHECK-NODE-PORT", fam, Member::Port(hc));
    }
}
