//! The packets the check sends: derived from the inventory's entry points (the service ports'
//! ClusterIPs, external and LB IPs, NodePorts), not from the plan. Source addresses are chosen
//! from documentation/benchmark ranges so they are never a node address, an endpoint or
//! (unless meant to be) inside a source range or the local-traffic detector.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::trace::{Origin, Packet};
use crate::inventory::{FamilyFacts, IpFamily, LocalDetector, ServicePort};

/// What a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// ClusterIP from a client off the node.
    ClusterIpRemote,
    /// ClusterIP from a pod on the node (inside the detector when there is one).
    ClusterIpPod,
    /// ClusterIP from the node itself.
    ClusterIpNode,
    /// An external IP from a remote client.
    ExternalIp,
    /// An LB IP (no source ranges) from a remote client.
    LoadBalancer,
    /// An LB IP from a source its ranges allow.
    LoadBalancerAllowed,
    /// An LB IP from a source its ranges do not allow.
    LoadBalancerDenied,
    /// A NodePort on a node address from a remote client.
    NodePort,
    /// An external IP, or an LB IP without source ranges, from a pod on the node or from the
    /// node itself (iptables mode short-circuits these to the cluster-wide endpoints).
    ExternalInCluster,
    /// A NodePort on 127.0.0.1 from the node.
    LocalhostNodePort,
    /// An endpoint calling its own service's ClusterIP.
    Hairpin,
}

impl CaseKind {
    /// True for traffic to external destinations (external IPs, LBs, NodePorts).
    pub fn is_external(self) -> bool {
        matches!(
            self,
            CaseKind::ExternalIp
                | CaseKind::LoadBalancer
                | CaseKind::LoadBalancerAllowed
                | CaseKind::LoadBalancerDenied
                | CaseKind::NodePort
        )
    }
}

/// One packet to trace through both sides.
#[derive(Debug, Clone)]
pub struct Case {
    /// Index of the service port in the inventory.
    pub port: usize,
    /// What it exercises.
    pub kind: CaseKind,
    /// Human description (destination and source).
    pub label: String,
    /// The packet.
    pub packet: Packet,
    /// Where it starts.
    pub origin: Origin,
}

/// The sources a family's cases use.
pub struct Sources {
    /// The node's address used as the source of its own traffic.
    pub node: IpAddr,
    remote: Vec<IpAddr>,
    remote_iface: Arc<str>,
    pod: IpAddr,
    pod_iface: Arc<str>,
}

impl Sources {
    /// Chooses sources for a family, given the node's addresses and kube-proxy's detector.
    pub fn new(family: IpFamily, node_ips: &[IpAddr], facts: Option<&FamilyFacts>) -> Sources {
        let det = facts
            .and_then(|f| f.masquerade.as_ref())
            .and_then(|m| m.local_detector.as_ref());
        let v4 = family == IpFamily::IPv4;
        let node = node_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family && !ip.is_loopback())
            .unwrap_or(if v4 {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
            });
        let remote: Vec<IpAddr> = if v4 {
            [
                [198, 18, 0, 1],
                [192, 0, 2, 200],
                [198, 51, 100, 200],
                [100, 64, 0, 1],
                [172, 16, 0, 1],
            ]
            .iter()
            .map(|a| IpAddr::from(*a))
            .collect()
        } else {
            [0xff01u16, 0xff02, 0xff03]
                .iter()
                .map(|s| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, *s, 0, 0, 0, 0, 1)))
                .collect()
        };
        let default_pod = if v4 {
            IpAddr::V4(Ipv4Addr::new(10, 255, 255, 254))
        } else {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 0xfe))
        };
        let (pod, pod_iface): (IpAddr, Arc<str>) = match det {
            Some(LocalDetector::Cidr { cidr }) => (last_but_one(cidr), "cni0".into()),
            Some(LocalDetector::InterfaceNamePrefix { prefix }) => {
                (default_pod, format!("{prefix}0a1b2c").into())
            }
            Some(LocalDetector::BridgeInterface { interface }) => {
                (default_pod, interface.as_str().into())
            }
            Some(LocalDetector::None) | None => (default_pod, "cni0".into()),
        };
        let remote_iface: Arc<str> = match det {
            Some(LocalDetector::InterfaceNamePrefix { prefix }) if "eth0".starts_with(prefix) => {
                "ens3".into()
            }
            Some(LocalDetector::BridgeInterface { interface }) if interface == "eth0" => {
                "ens3".into()
            }
            _ => "eth0".into(),
        };
        let inside = |ip: &IpAddr| match det {
            Some(LocalDetector::Cidr { cidr }) => cidr.contains(ip),
            _ => false,
        };
        let remote = remote.into_iter().filter(|ip| !inside(ip)).collect();
        Sources {
            node,
            remote,
            remote_iface,
            pod,
            pod_iface,
        }
    }

    fn remote_outside(&self, ranges: &[IpNet]) -> Option<IpAddr> {
        self.remote
            .iter()
            .copied()
            .find(|ip| !ranges.iter().any(|r| r.contains(ip)))
    }
}

fn last_but_one(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let b = u32::from(n.broadcast());
            let a = u32::from(n.network());
            IpAddr::V4(Ipv4Addr::from(if b > a + 1 { b - 1 } else { a }))
        }
        IpNet::V6(n) => {
            let b = u128::from(n.broadcast());
            let a = u128::from(n.network());
            IpAddr::V6(Ipv6Addr::from(if b > a + 1 { b - 1 } else { a }))
        }
    }
}

fn first_host(net: &IpNet) -> IpAddr {
    if net.prefix_len() == net.max_prefix_len() {
        return net.addr();
    }
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)),
    }
}

/// A source: its label, address and incoming interface.
type From<'a> = (&'a str, IpAddr, Arc<str>);

/// How cases are added: kind, destination label, destination, port, source, origin.
type Push<'p> = dyn FnMut(CaseKind, &str, IpAddr, u16, From<'_>, Origin) + 'p;

fn show(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Every case for one service port.
pub fn for_port(idx: usize, sp: &ServicePort, src: &Sources, node_ips: &[IpAddr]) -> Vec<Case> {
    let mut out = Vec::new();
    let proto = sp.protocol.as_str();
    let mut push =
        |kind: CaseKind, what: &str, dst: IpAddr, dport: u16, from: From<'_>, origin: Origin| {
            out.push(Case {
                port: idx,
                kind,
                label: format!(
                    "{what} {}/{proto} from {} {}",
                    show(&dst, dport),
                    from.0,
                    from.1
                ),
                packet: Packet {
                    src: from.1,
                    dst,
                    proto: sp.protocol,
                    dport,
                    in_iface: from.2,
                    mark: 0,
                    dnat: false,
                    rcheck: None,
                    recent_set: false,
                    masq: false,
                },
                origin,
            });
        };
    let remote = |ranges: &[IpNet]| {
        src.remote_outside(ranges)
            .map(|ip| ("remote", ip, src.remote_iface.clone()))
    };
    let pod = ("pod", src.pod, src.pod_iface.clone());
    let node = ("node", src.node, Arc::<str>::from(""));
    let (cip, port) = (sp.cluster_ip, sp.port);
    if let Some(r) = remote(&[]) {
        push(
            CaseKind::ClusterIpRemote,
            "clusterIP",
            cip,
            port,
            r,
            Origin::Arriving,
        );
    }
    push(
        CaseKind::ClusterIpPod,
        "clusterIP",
        cip,
        port,
        pod,
        Origin::Arriving,
    );
    push(
        CaseKind::ClusterIpNode,
        "clusterIP",
        cip,
        port,
        node,
        Origin::Node,
    );
    let in_cluster = |push: &mut Push<'_>, what: &str, ip: IpAddr| {
        push(
            CaseKind::ExternalInCluster,
            what,
            ip,
            port,
            ("pod", src.pod, src.pod_iface.clone()),
            Origin::Arriving,
        );
        push(
            CaseKind::ExternalInCluster,
            what,
            ip,
            port,
            ("node", src.node, Arc::<str>::from("")),
            Origin::Node,
        );
    };
    for ip in &sp.external_ips {
        if let Some(r) = remote(&[]) {
            push(
                CaseKind::ExternalIp,
                "externalIP",
                *ip,
                port,
                r,
                Origin::Arriving,
            );
        }
        in_cluster(&mut push, "externalIP", *ip);
    }
    let ranges = &sp.load_balancer_source_ranges;
    for ip in sp
        .load_balancer_ips
        .iter()
        .chain(&sp.external_or_load_balancer_ips)
    {
        if ranges.is_empty() {
            if let Some(r) = remote(&[]) {
                push(
                    CaseKind::LoadBalancer,
                    "loadBalancer",
                    *ip,
                    port,
                    r,
                    Origin::Arriving,
                );
            }
            in_cluster(&mut push, "loadBalancer", *ip);
            continue;
        }
        if let Some(first) = ranges.first() {
            let allowed = (
                "allowed remote",
                first_host(first),
                src.remote_iface.clone(),
            );
            push(
                CaseKind::LoadBalancerAllowed,
                "loadBalancer",
                *ip,
                port,
                allowed,
                Origin::Arriving,
            );
        }
        if let Some((_, a, i)) = remote(ranges) {
            push(
                CaseKind::LoadBalancerDenied,
                "loadBalancer",
                *ip,
                port,
                ("denied remote", a, i),
                Origin::Arriving,
            );
        }
    }
    if let Some(np) = sp.node_port {
        for ip in node_ips
            .iter()
            .filter(|ip| IpFamily::of(ip) == sp.family && !ip.is_loopback())
        {
            if let Some(r) = remote(&[]) {
                push(CaseKind::NodePort, "nodePort", *ip, np, r, Origin::Arriving);
            }
        }
        if sp.localhost_node_port && sp.family == IpFamily::IPv4 {
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            push(
                CaseKind::LocalhostNodePort,
                "nodePort",
                lo,
                np,
                ("node", lo, Arc::<str>::from("")),
                Origin::Node,
            );
        }
    }
    if let Some(ep) = sp.endpoints.iter().find(|e| e.local != Some(false)) {
        push(
            CaseKind::Hairpin,
            "clusterIP",
            cip,
            port,
            ("its own endpoint", ep.ip, src.pod_iface.clone()),
            Origin::Arriving,
        );
    }
    out
}
