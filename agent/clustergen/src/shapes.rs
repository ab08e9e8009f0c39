//! Deterministic cluster shapes: `generate(shape, services, endpoints, seed)`.
//!
//! Addresses follow kube-proxy's test conventions: ClusterIPs in 172.30.0.0/16 and above
//! (fd00:30::/64 for IPv6), pods in 10.128.0.0/9 (fd00:10::/64), external IPs in
//! 192.168.99.0/24, LB IPs in 203.0.113.0/24 and 198.51.100.0/24 (documentation ranges).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use ipvsmig_engine::inventory::{IpFamily, Protocol};

use crate::{Cluster, EndpointSpec, Node, ServicePortSpec};

/// Which service shapes to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// ClusterIP services only (the benchmark layout: 2 + 3E rules per service).
    ClusterIp,
    /// Every shape kube-proxy writes: ClusterIP, NodePort, LB (eTP Local with health check,
    /// source ranges, affinity), external IPs, iTP Local, no endpoints, multi-port UDP/TCP, SCTP.
    Mix,
}

/// A small, fast, deterministic generator (xorshift64*), so fixtures repeat across runs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn cluster_ip(family: IpFamily, i: u32) -> IpAddr {
    match family {
        IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(172, 30, 0, 0)) + i + 1,
        )),
        IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0)) + u128::from(i) + 1,
        )),
    }
}

fn pod_ip(family: IpFamily, k: u32) -> IpAddr {
    match family {
        IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 128, 0, 0)) + k + 1,
        )),
        IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0)) + u128::from(k) + 1,
        )),
    }
}

fn doc_ip(family: IpFamily, base: [u8; 3], i: u32) -> IpAddr {
    match family {
        IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::new(
            base[0],
            base[1],
            base[2],
            (i % 250 + 1) as u8,
        )),
        IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(base[2]),
            0,
            0,
            0,
            0,
            (i % 60000 + 1) as u16,
        )),
    }
}

/// Namespace names for the mixed shape: what a production cluster looks like (a few platform
/// namespaces and many application ones), so the demo and reports read naturally. Past the
/// list, names repeat with a numeric suffix.
const NAMESPACES: &[&str] = &[
    "kube-system",
    "ingress-nginx",
    "monitoring",
    "logging",
    "cert-manager",
    "payments",
    "checkout",
    "catalog",
    "search",
    "recommendations",
    "accounts",
    "notifications",
    "orders",
    "inventory",
    "shipping",
    "reviews",
    "analytics",
    "data-pipeline",
    "auth",
    "api-gateway",
];

fn namespace(shape: Shape, i: u32) -> String {
    match shape {
        Shape::ClusterIp => format!("ns{}", i % 97),
        Shape::Mix => {
            let n = NAMESPACES.len() as u32;
            let base = NAMESPACES[(i % n) as usize];
            let round = i / (n * 12);
            if round == 0 {
                base.to_owned()
            } else {
                format!("{base}-{round}")
            }
        }
    }
}

/// Generates `services` services with about `endpoints` endpoints each. With [`Shape::Mix`]
/// some services have several ports, so there are more service ports than services.
pub fn generate(
    family: IpFamily,
    shape: Shape,
    services: u32,
    endpoints: u32,
    seed: u64,
) -> Cluster {
    let mut node = Node::default_for(family);
    let mut rng = Rng::new(seed);
    let mut ports = Vec::new();
    let mut pod = 0u32;
    let mut node_port = 30000u32;
    let mut total_eps = 0usize;
    for i in 0..services {
        let ns = namespace(shape, i);
        let name = format!("svc{i}");
        let cip = cluster_ip(family, i);
        let mut eps = |n: u32, port: u16, rng: &mut Rng| -> Vec<EndpointSpec> {
            (0..n)
                .map(|_| {
                    pod += 1;
                    EndpointSpec {
                        ip: pod_ip(family, pod),
                        port,
                        local: rng.below(4) == 0,
                    }
                })
                .collect()
        };
        let base = |port_name: &str,
                    protocol: Protocol,
                    port: u16,
                    endpoints: Vec<EndpointSpec>| ServicePortSpec {
            namespace: ns.clone(),
            name: name.clone(),
            port_name: port_name.to_owned(),
            protocol,
            cluster_ip: cip,
            port,
            node_port: None,
            external_ips: Vec::new(),
            lb_ips: Vec::new(),
            source_ranges: Vec::new(),
            affinity: None,
            itp_local: false,
            etp_local: false,
            hc_node_port: None,
            endpoints,
        };
        let mut next_np = || {
            node_port = if node_port >= 32767 {
                30000
            } else {
                node_port + 1
            };
            node_port as u16
        };
        let kind = match shape {
            Shape::ClusterIp => 0,
            Shape::Mix => rng.below(100),
        };
        let n = endpoints;
        match kind {
            // 0..55: ClusterIP
            0..=54 => {
                let e = eps(n, 8080, &mut rng);
                ports.push(base("http", Protocol::Tcp, 80, e));
            }
            // NodePort
            55..=69 => {
                let e = eps(n, 8080, &mut rng);
                let mut p = base("", Protocol::Tcp, 80, e);
                p.node_port = Some(next_np());
                ports.push(p);
            }
            // LoadBalancer, eTP=Local with health check
            70..=75 => {
                let e = eps(n, 8443, &mut rng);
                let mut p = base("https", Protocol::Tcp, 443, e);
                p.node_port = Some(next_np());
                p.lb_ips = vec![doc_ip(family, [203, 0, 113], i)];
                p.etp_local = true;
                p.hc_node_port = Some(next_np());
                ports.push(p);
            }
            // LoadBalancer with source ranges and ClientIP affinity
            76..=80 => {
                let e = eps(n, 8080, &mut rng);
                let mut p = base("http", Protocol::Tcp, 80, e);
                p.node_port = Some(next_np());
                p.lb_ips = vec![doc_ip(family, [198, 51, 100], i)];
                p.source_ranges = match family {
                    IpFamily::IPv4 => vec![
                        IpNet::from(IpAddr::from([192, 0, 2, 0])),
                        "10.0.0.0/8".parse().unwrap_or_else(|_| IpNet::from(cip)),
                    ],
                    IpFamily::IPv6 => vec![
                        "2001:db8:1::/48"
                            .parse()
                            .unwrap_or_else(|_| IpNet::from(cip)),
                    ],
                };
                if rng.below(2) == 0 {
                    // A range containing the node IP: the node may reach the LB IP itself.
                    p.source_ranges.push(IpNet::from(node.node_ip).trunc());
                }
                p.affinity = Some(10800);
                ports.push(p);
            }
            // External IP
            81..=84 => {
                let e = eps(n, 8080, &mut rng);
                let mut p = base("", Protocol::Tcp, 80, e);
                p.external_ips = vec![doc_ip(family, [192, 168, 99], i)];
                ports.push(p);
            }
            // internalTrafficPolicy: Local
            85..=88 => {
                let e = eps(n, 8080, &mut rng);
                let mut p = base("", Protocol::Tcp, 80, e);
                p.itp_local = true;
                ports.push(p);
            }
            // No endpoints, with a NodePort and an external IP
            89..=91 => {
                let mut p = base("", Protocol::Tcp, 80, Vec::new());
                p.node_port = Some(next_np());
                p.external_ips = vec![doc_ip(family, [192, 168, 99], i)];
                ports.push(p);
            }
            // DNS-like: udp + tcp on port 53, ClientIP affinity on neither
            92..=96 => {
                let e = eps(n, 53, &mut rng);
                let mut e2 = e.clone();
                for x in &mut e2 {
                    x.port = 53;
                }
                ports.push(base("dns", Protocol::Udp, 53, e));
                ports.push(base("dns-tcp", Protocol::Tcp, 53, e2));
            }
            // SCTP
            _ => {
                let e = eps(n.max(1), 3868, &mut rng);
                ports.push(base("diameter", Protocol::Sctp, 3868, e));
            }
        }
    }
    total_eps += ports.iter().map(|p| p.endpoints.len()).sum::<usize>();
    // kube-proxy: largeClusterEndpointsThreshold = 1000.
    node.large_cluster = total_eps > 1000;
    Cluster { node, ports }
}
