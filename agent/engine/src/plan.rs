//! Plan: the inventory → exactly what kube-proxy's IPVS mode would program (the "full" state).
//!
//! Follows kube-proxy's IPVS proxier (pkg/proxy/ipvs/proxier.go `syncProxyRules` /
//! `syncService` / `syncEndpoint`; shared/reference/kube-proxy-facts.md §2): one virtual server
//! per ClusterIP, external IP, load-balancer IP and NodePort-on-each-node-IP; real servers are
//! the endpoints with weight 1, NAT forwarding; ClientIP affinity becomes persistence; the `mh`
//! scheduler gets the source-hash port flag; services without endpoints keep an empty virtual
//! server. Pure: no I/O. The hybrid (per-namespace) state, the diff and the equivalence check
//! build on this.

pub mod adoption;
pub mod diff;
pub mod hybrid;
pub mod ipsets;
pub mod ipvs_rules;
pub mod kube_proxy_config;
pub mod leftovers;
pub mod render;
pub mod switch;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::inventory::{
    Inventory, IpFamily, Protocol, ServicePort, ServicePortName, TrafficPolicy,
};

/// `IP_VS_SVC_F_PERSISTENT` (include/uapi/linux/ip_vs.h).
pub const FLAG_PERSISTENT: u32 = 0x1;
/// `IP_VS_SVC_F_SCHED2`: `mh-port` / `sh-port`, set by kube-proxy for the mh scheduler.
pub const FLAG_SCHED2: u32 = 0x10;

/// What a virtual server's address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VsKind {
    /// spec.clusterIP
    ClusterIp,
    /// spec.externalIPs
    ExternalIp,
    /// status.loadBalancer.ingress
    LoadBalancer,
    /// An external or LB IP of a service without endpoints (the dump does not tell which).
    ExternalOrLoadBalancer,
    /// NodePort on one node address.
    NodePort,
}

/// A real server (destination).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RealServer {
    /// Endpoint address.
    pub address: IpAddr,
    /// Endpoint port.
    pub port: u16,
    /// Weight (kube-proxy: 1; 0 while terminating).
    pub weight: u32,
}

/// A virtual server and its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServer {
    /// The service port it serves (shared by the port's virtual servers).
    pub service: std::sync::Arc<ServicePortName>,
    /// What the address is.
    pub kind: VsKind,
    /// Protocol.
    pub protocol: Protocol,
    /// Virtual address.
    pub address: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Scheduler name (shared by every virtual server of a plan).
    pub scheduler: std::sync::Arc<str>,
    /// IPVS service flags (persistent, sched2).
    pub flags: u32,
    /// Persistence timeout in seconds (0 unless persistent).
    pub timeout: u32,
    /// Netmask: 0xffffffff for IPv4, 128 for IPv6 (as kube-proxy sets it).
    pub netmask: u32,
    /// Destinations, sorted.
    pub real_servers: Vec<RealServer>,
}

impl VirtualServer {
    /// Identity in the kernel: (protocol, address, port).
    pub fn key(&self) -> (Protocol, IpAddr, u16) {
        (self.protocol, self.address, self.port)
    }
}

/// Something that cannot be carried over exactly, or behaves differently under IPVS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFinding {
    /// Stable id.
    pub id: String,
    /// Service port concerned.
    pub service: String,
    /// What differs.
    pub message: String,
}

/// Inputs the inventory does not have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// kube-proxy's `ipvs.scheduler` ("" = rr).
    pub scheduler: String,
    /// Addresses NodePort virtual servers are created on (the node's addresses, excluding
    /// kube-ipvs0 and loopback, filtered by nodePortAddresses).
    pub node_ips: Vec<IpAddr>,
}

/// The full IPVS-mode state for the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsPlan {
    /// Virtual servers, sorted by (protocol, address, port).
    pub virtual_servers: Vec<VirtualServer>,
    /// Addresses bound on kube-ipvs0 (ClusterIPs, external IPs, LB IPs), sorted.
    pub addresses: Vec<IpAddr>,
    /// kube-proxy's IPVS-mode ipsets and their members (`KUBE-…`, `KUBE-6-…`).
    pub ipsets: std::collections::BTreeMap<String, ipsets::IpSetPlan>,
    /// sysctls IPVS-mode kube-proxy sets (`key`, `value`).
    pub sysctls: Vec<(String, String)>,
    /// The iptables rules IPVS-mode kube-proxy installs, per family (`plan/ipvs_rules.rs`).
    #[serde(default)]
    pub iptables: Vec<hybrid::FamilyRules>,
    /// Behaviour differences and things not carried over.
    pub findings: Vec<PlanFinding>,
}

fn real_servers(sp: &ServicePort, external: bool) -> Vec<RealServer> {
    // syncEndpoint: with a Local policy only local endpoints — and when there are none, the
    // cluster endpoints instead (PR kubernetes/kubernetes#97081).
    let local_policy = if external {
        sp.external_traffic_policy == TrafficPolicy::Local
    } else {
        sp.internal_traffic_policy == TrafficPolicy::Local
    };
    let all: Vec<_> = sp.endpoints.iter().collect();
    let chosen: Vec<_> = if local_policy {
        let local: Vec<_> = all
            .iter()
            .copied()
            .filter(|e| e.local == Some(true))
            .collect();
        if local.is_empty() {
            all.iter()
                .copied()
                .filter(|e| e.local != Some(true))
                .collect()
        } else {
            local
        }
    } else {
        all
    };
    let mut rs: Vec<RealServer> = chosen
        .into_iter()
        .map(|e| RealServer {
            address: e.ip,
            port: e.port,
            weight: 1,
        })
        .collect();
    rs.sort();
    rs.dedup();
    rs
}

/// Builds the full IPVS-mode plan.
pub fn full(inv: &Inventory, opts: &PlanOptions) -> IpvsPlan {
    let scheduler: std::sync::Arc<str> = if opts.scheduler.is_empty() {
        "rr".into()
    } else {
        opts.scheduler.as_str().into()
    };
    let mut vss = Vec::new();
    let mut addresses = Vec::new();
    let mut findings = Vec::new();
    for sp in &inv.service_ports {
        let mut flags = 0;
        let mut timeout = 0;
        if let Some(t) = sp.session_affinity_seconds {
            flags |= FLAG_PERSISTENT;
            timeout = t;
        }
        if &*scheduler == "mh" {
            flags |= FLAG_SCHED2;
        }
        let netmask = match sp.family {
            IpFamily::IPv4 => 0xffff_ffff,
            IpFamily::IPv6 => 128,
        };
        let name = std::sync::Arc::new(sp.name.clone());
        let mk = |kind: VsKind, address: IpAddr, port: u16, rs: Vec<RealServer>| VirtualServer {
            service: name.clone(),
            kind,
            protocol: sp.protocol,
            address,
            port,
            scheduler: scheduler.clone(),
            flags,
            timeout,
            netmask,
            real_servers: rs,
        };
        let internal = real_servers(sp, false);
        let external = real_servers(sp, true);
        vss.push(mk(VsKind::ClusterIp, sp.cluster_ip, sp.port, internal));
        addresses.push(sp.cluster_ip);
        for ip in &sp.external_ips {
            vss.push(mk(VsKind::ExternalIp, *ip, sp.port, external.clone()));
            addresses.push(*ip);
        }
        for ip in &sp.load_balancer_ips {
            vss.push(mk(VsKind::LoadBalancer, *ip, sp.port, external.clone()));
            addresses.push(*ip);
        }
        for ip in &sp.external_or_load_balancer_ips {
            vss.push(mk(
                VsKind::ExternalOrLoadBalancer,
                *ip,
                sp.port,
                external.clone(),
            ));
            addresses.push(*ip);
        }
        if let Some(np) = sp.node_port {
            for ip in opts
                .node_ips
                .iter()
                .filter(|ip| IpFamily::of(ip) == sp.family && !ip.is_loopback())
            {
                vss.push(mk(VsKind::NodePort, *ip, np, external.clone()));
            }
            if sp.localhost_node_port {
                findings.push(PlanFinding {
                    id: "localhost-nodeport".into(),
                    service: sp.name.to_string(),
                    message: format!("NodePort {np} answers on 127.0.0.0/8 in iptables mode; IPVS mode has no localhost NodePorts (virtual-ips.md)"),
                });
            }
        }
        let ext_accessible = sp.node_port.is_some()
            || !sp.external_ips.is_empty()
            || !sp.load_balancer_ips.is_empty();
        if !sp.load_balancer_ips.is_empty() {
            findings.push(PlanFinding {
                id: "lb-ip-bound-locally".into(),
                service: sp.name.to_string(),
                message: "its load-balancer IPs are bound on kube-ipvs0: the node answers them itself, so cloud LB health checks and proxy-protocol load balancers that expect traffic to pass through the LB behave differently (kubernetes/kubernetes#79783, #66607; `ipMode: Proxy` avoids it)".into(),
            });
        }
        if ext_accessible
            && sp.external_traffic_policy == TrafficPolicy::Local
            && !sp.endpoints.iter().any(|e| e.local == Some(true))
            && !sp.endpoints.is_empty()
        {
            findings.push(PlanFinding {
                id: "etp-local-no-local-endpoints".into(),
                service: sp.name.to_string(),
                message: "externalTrafficPolicy=Local with no local endpoint: iptables mode drops external traffic, IPVS mode sends it to all endpoints (kubernetes/kubernetes#97081)".into(),
            });
        }
    }
    vss.sort_by(|a, b| {
        a.key()
            .cmp(&b.key())
            .then(a.kind.cmp(&b.kind))
            .then(a.service.cmp(&b.service))
    });
    // One kernel key can hold one virtual server. Two services claiming the same external or
    // LB IP and port (a cluster misconfiguration: kube-proxy's IPVS mode would keep rewriting
    // one with the other's endpoints) keep the first in sort order and are reported.
    let mut deduped: Vec<VirtualServer> = Vec::with_capacity(vss.len());
    for vs in vss {
        match deduped.last() {
            Some(prev) if prev.key() == vs.key() => {
                findings.push(PlanFinding {
                    id: "duplicate-virtual-server".into(),
                    service: vs.service.to_string(),
                    message: format!(
                        "{} {}:{} is also claimed by {}; one virtual server per key: {} keeps it, this service port is not planned there",
                        vs.protocol.as_str(),
                        vs.address,
                        vs.port,
                        prev.service,
                        prev.service
                    ),
                });
            }
            _ => deduped.push(vs),
        }
    }
    let vss = deduped;
    addresses.sort();
    addresses.dedup();
    let sysctls = [
        ("net.ipv4.vs.conntrack", "1"),
        ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.expire_quiescent_template", "1"),
        ("net.ipv4.ip_forward", "1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let ipsets = ipsets::ipsets(inv, opts, &addresses);
    let mut iptables = Vec::new();
    for f in &inv.families {
        if iptables
            .iter()
            .any(|r: &hybrid::FamilyRules| r.family == f.family)
        {
            continue;
        }
        let no_node: Vec<(IpAddr, &str, u16)> = inv
            .service_ports
            .iter()
            .filter(|sp| {
                sp.family == f.family
                    && !sp.load_balancer_source_ranges.is_empty()
                    && !sp.load_balancer_allows_node
            })
            .flat_map(|sp| {
                sp.load_balancer_ips
                    .iter()
                    .chain(&sp.external_or_load_balancer_ips)
                    .map(|ip| (*ip, sp.protocol.as_str(), sp.port))
            })
            .collect();
        iptables.push(ipvs_rules::ipvs_mode_rules(
            f.family,
            &ipsets,
            f.masquerade.as_ref(),
            &no_node,
        ));
    }
    IpvsPlan {
        iptables,
        virtual_servers: vss,
        addresses,
        ipsets,
        sysctls,
        findings,
    }
}

#[cfg(test)]
mod tests;
