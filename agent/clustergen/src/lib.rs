//! Cluster generator (dev tool): writes kube-proxy-layout iptables rule sets of any size and
//! shape, and — independently of the parser — the inventory those rules describe.
//!
//! [`render`] follows kube-proxy's iptables proxier (`syncProxyRules` and
//! `writeServiceToEndpointRules` in pkg/proxy/iptables/proxier.go, v1.28–v1.34 layout; see
//! shared/reference/kube-proxy-facts.md §1) from a [`Cluster`] of services and endpoints.
//! [`expected`] derives the `ServicePort` model from the same [`Cluster`] by the rules of
//! `CategorizeEndpoints`, never by reading the rendered text, so the two can check each other.

pub mod render;
pub mod shapes;

use std::net::IpAddr;

use ipnet::IpNet;
use ipvsmig_engine::inventory::{IpFamily, Protocol};

pub use render::{expected, render};
pub use shapes::{Shape, generate};

/// How kube-proxy detects "local" traffic (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detector {
    /// No detector.
    None,
    /// ClusterCIDR / NodeCIDR.
    Cidr(IpNet),
    /// InterfaceNamePrefix.
    InterfacePrefix(String),
    /// BridgeInterface.
    Bridge(String),
}

/// Node-wide settings of one kube-proxy (one family).
#[derive(Debug, Clone)]
pub struct Node {
    /// IP family of the rules.
    pub family: IpFamily,
    /// Local-traffic detector.
    pub detector: Detector,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `masqueradeBit` (14 by default → 0x4000).
    pub mark_bit: u8,
    /// The node's IP (for loadBalancerSourceRanges containing the node).
    pub node_ip: IpAddr,
    /// `nodePortAddresses` resolved to addresses, or `None` for all local addresses.
    pub node_port_addresses: Option<Vec<IpAddr>>,
    /// `iptables.localhostNodePorts` (IPv4 only).
    pub localhost_node_ports: bool,
    /// Drop per-endpoint comments (kube-proxy does when > 1000 endpoints).
    pub large_cluster: bool,
}

impl Node {
    /// kube-proxy's test conventions: pod CIDR 10.0.0.0/8 (fd00:10::/64), node 192.168.0.2.
    pub fn default_for(family: IpFamily) -> Node {
        let (cidr, node_ip): (IpNet, IpAddr) = match family {
            IpFamily::IPv4 => (
                IpNet::V4("10.0.0.0/8".parse().unwrap_or_default()),
                IpAddr::from([192, 168, 0, 2]),
            ),
            IpFamily::IPv6 => (
                IpNet::V6("fd00:10::/64".parse().unwrap_or_default()),
                IpAddr::from([0xfd00, 0x192, 0x168, 0, 0, 0, 0, 2]),
            ),
        };
        Node {
            family,
            detector: Detector::Cidr(cidr),
            masquerade_all: false,
            mark_bit: 14,
            node_ip,
            node_port_addresses: None,
            localhost_node_ports: false,
            large_cluster: false,
        }
    }
}

/// An endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Pod IP.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// One service port as the API would describe it (after kube-proxy's family filtering).
#[derive(Debug, Clone)]
pub struct ServicePortSpec {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Port name ("" if unnamed).
    pub port_name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// ClusterIP.
    pub cluster_ip: IpAddr,
    /// Port.
    pub port: u16,
    /// NodePort.
    pub node_port: Option<u16>,
    /// externalIPs.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs.
    pub lb_ips: Vec<IpAddr>,
    /// loadBalancerSourceRanges.
    pub source_ranges: Vec<IpNet>,
    /// ClientIP affinity timeout.
    pub affinity: Option<u32>,
    /// internalTrafficPolicy: Local.
    pub itp_local: bool,
    /// externalTrafficPolicy: Local.
    pub etp_local: bool,
    /// healthCheckNodePort.
    pub hc_node_port: Option<u16>,
    /// Ready endpoints, in EndpointSlice order.
    pub endpoints: Vec<EndpointSpec>,
}

impl ServicePortSpec {
    /// `ns/name[:port]`.
    pub fn spn(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }

    /// NodePort, external IPs or LB IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.lb_ips.is_empty()
    }
}

/// A node's worth of services for one family.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Node settings.
    pub node: Node,
    /// Service ports, in the order rules are written.
    pub ports: Vec<ServicePortSpec>,
}
