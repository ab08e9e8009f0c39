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

use std::collections::{BTreeMap, BTreeSet};
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
    /// Members.
    pub members: BTreeSet<String>,
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

fn ip_port(ip: &IpAddr, proto: Protocol, port: u16) -> String {
    format!("{ip},{}:{port}", proto.as_str())
}

/// Every set of every family present in the inventory, with its members.
pub fn ipsets(
    inv: &Inventory,
    opts: &PlanOptions,
    bound: &[IpAddr],
) -> BTreeMap<String, IpSetPlan> {
    let mut sets: BTreeMap<String, IpSetPlan> = BTreeMap::new();
    let mut families: Vec<IpFamily> = inv.families.iter().map(|f| f.family).collect();
    families.sort();
    families.dedup();
    for fam in &families {
        for (base, t) in SETS {
            sets.insert(
                set_name(base, *fam),
                IpSetPlan {
                    set_type: (*t).to_owned(),
                    members: BTreeSet::new(),
                },
            );
        }
    }
    let mut add = |base: &str, fam: IpFamily, member: String| {
        sets.entry(set_name(base, fam))
            .or_default()
            .members
            .insert(member);
    };
    for sp in &inv.service_ports {
        service_entries(sp, opts, &mut add);
    }
    for ip in bound {
        add("IPVS-IPS", IpFamily::of(ip), ip.to_string());
    }
    sets
}

fn service_entries(
    sp: &ServicePort,
    opts: &PlanOptions,
    add: &mut impl FnMut(&str, IpFamily, String),
) {
    let fam = sp.family;
    let p = sp.protocol;
    let etp_local = sp.external_traffic_policy == TrafficPolicy::Local;
    for e in &sp.endpoints {
        if e.local != Some(false) {
            add(
                "LOOP-BACK",
                fam,
                format!("{},{}:{},{}", e.ip, p.as_str(), e.port, e.ip),
            );
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
                // ipset keeps a host network as the bare address (as `ipset save` prints it).
                let net = if cidr.prefix_len() == cidr.max_prefix_len() {
                    cidr.addr().to_string()
                } else {
                    cidr.to_string()
                };
                add("LOAD-BALANCER-SOURCE-CIDR", fam, format!("{entry},{net}"));
            }
            if sp.load_balancer_allows_node {
                add("LOAD-BALANCER-SOURCE-IP", fam, format!("{entry},{ip}"));
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
                add(all, fam, np.to_string());
                if etp_local {
                    add(local, fam, np.to_string());
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
        add("HEALTH-CHECK-NODE-PORT", fam, hc.to_string());
    }
}
