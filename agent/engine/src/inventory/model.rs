//! The inventory model: what kube-proxy (iptables mode) programmed on a node, as typed data.
//!
//! This module only defines values; it does no parsing and no I/O. The JSON form of these
//! types (`ipvs-migrate inventory -o json`) is documented in `docs/schemas/inventory.md`;
//! field renames here are schema changes.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `apiVersion` of every JSON document ipvs-migrate prints.
pub const API_VERSION: &str = "ipvs-migrate/v1";

/// L4 protocol of a service port, as kube-proxy writes it (lowercase) in `-p` and chain hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Protocol {
    /// Lowercase name, as used by kube-proxy in `-p` and in chain-name hashes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses `tcp`, `udp`, `sctp` (any case; iptables-save may print `6`/`17`/`132`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "tcp" | "TCP" | "6" => Some(Protocol::Tcp),
            "udp" | "UDP" | "17" => Some(Protocol::Udp),
            "sctp" | "SCTP" | "132" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// IP family of one kube-proxy instance (kube-proxy runs one proxier per family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4 (`iptables-save`)
    IPv4,
    /// IPv6 (`ip6tables-save`)
    IPv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        if ip.is_ipv4() {
            IpFamily::IPv4
        } else {
            IpFamily::IPv6
        }
    }

    /// `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }
}

/// `namespace/name[:port-name]`: kube-proxy's `ServicePortName.String()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePortName {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Name of the port; empty for a Service's single unnamed port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
}

impl ServicePortName {
    /// Parses `ns/name` or `ns/name:port`. Returns `None` for anything else.
    pub fn parse(s: &str) -> Option<ServicePortName> {
        // Split at ASCII bytes found by plain loops (`split_once(char)` runs a string searcher;
        // this is done once per service port of a dump).
        fn split(s: &str, c: u8) -> Option<(&str, &str)> {
            let i = s.bytes().position(|b| b == c)?;
            Some((s.get(..i)?, s.get(i + 1..)?))
        }
        let (namespace, rest) = split(s, b'/')?;
        let (name, port_name) = split(rest, b':').unwrap_or((rest, ""));
        let ok = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if !ok(namespace) || !ok(name) || (!port_name.is_empty() && !ok(port_name)) {
            return None;
        }
        Some(ServicePortName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port_name: port_name.to_owned(),
        })
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }
}

/// Traffic policy (internalTrafficPolicy / externalTrafficPolicy) as seen in the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// What the filter table does with traffic that has no (local) endpoint to go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoEndpointVerdict {
    /// `-j REJECT`: the service has no endpoints at all (`"… has no endpoints"`).
    Reject,
    /// `-j DROP`: a Local policy with no local endpoint (`"… has no local endpoints"`).
    Drop,
}

/// One endpoint (pod address and target port) of a service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint address.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// `Some(true)` if the endpoint is in the service's Local-policy chain (`KUBE-SVL-…`), i.e. on
    /// this node; `Some(false)` if a Local-policy chain exists and it is not in it; `None` if the
    /// rules do not say (the service uses no Local policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
}

/// A dispatch chain (`KUBE-SVC-…`, `KUBE-SVL-…`, or legacy `KUBE-XLB-…`) and the endpoints it
/// picks from, in rule order, with the `statistic` probability of each rule (the last is 1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Chain name.
    pub chain: String,
    /// Endpoints in rule order.
    pub endpoints: Vec<WeightedEndpoint>,
}

/// One `-j KUBE-SEP-…` rule of a dispatch chain. In JSON the endpoint is one string,
/// `ip:port` as kube-proxy formats it (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "WeightedEndpointJson", try_from = "WeightedEndpointJson")]
pub struct WeightedEndpoint {
    /// Endpoint address.
    pub ip: IpAddr,
    /// Endpoint port.
    pub port: u16,
    /// `--probability` of the rule; 1.0 for the final, unconditional rule.
    pub probability: f64,
}

#[derive(Serialize, Deserialize)]
struct WeightedEndpointJson {
    endpoint: String,
    probability: f64,
}

impl From<WeightedEndpoint> for WeightedEndpointJson {
    fn from(w: WeightedEndpoint) -> Self {
        let endpoint = match w.ip {
            IpAddr::V4(v4) => format!("{v4}:{}", w.port),
            IpAddr::V6(v6) => format!("[{v6}]:{}", w.port),
        };
        WeightedEndpointJson {
            endpoint,
            probability: w.probability,
        }
    }
}

impl TryFrom<WeightedEndpointJson> for WeightedEndpoint {
    type Error = String;
    fn try_from(j: WeightedEndpointJson) -> Result<Self, String> {
        let (host, port) = j
            .endpoint
            .rsplit_once(':')
            .ok_or_else(|| format!("{:?} is not ip:port", j.endpoint))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip = host
            .parse()
            .map_err(|_| format!("{:?}: bad address", j.endpoint))?;
        let port = port
            .parse()
            .map_err(|_| format!("{:?}: bad port", j.endpoint))?;
        Ok(WeightedEndpoint {
            ip,
            port,
            probability: j.probability,
        })
    }
}

/// How kube-proxy decides which traffic is "local" (from pods on this node / in the cluster)
/// when marking for masquerade: `--detect-local-mode` as seen in the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum LocalDetector {
    /// No detector: no `! -s`/`! -i` match on the masquerade rule (nothing is masqueraded
    /// for ClusterIP traffic unless masqueradeAll).
    None,
    /// `! -s CIDR`: ClusterCIDR or NodeCIDR mode (the rules cannot tell the two apart).
    Cidr {
        /// The CIDR.
        cidr: IpNet,
    },
    /// `! -i PREFIX+`: InterfaceNamePrefix mode (e.g. `cali+`, `veth+`).
    InterfaceNamePrefix {
        /// The prefix, without the `+`.
        prefix: String,
    },
    /// `! -i NAME`: BridgeInterface mode (e.g. `cbr0`).
    BridgeInterface {
        /// Bridge name.
        interface: String,
    },
}

/// Node-wide masquerade settings of one family, from KUBE-MARK-MASQ, KUBE-POSTROUTING and the
/// first rule of the dispatch chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Masquerade {
    /// The mark KUBE-MARK-MASQ sets (`0x4000` by default).
    pub mark: u32,
    /// `masqueradeBit` when the mark is a single bit (14 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// Every ClusterIP connection is masqueraded (`--masquerade-all`).
    pub masquerade_all: bool,
    /// The local-traffic detector, if one could be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_detector: Option<LocalDetector>,
    /// `MASQUERADE --random-fully` in KUBE-POSTROUTING.
    pub random_fully: bool,
}

/// Where NodePorts are accepted (the last rule of nat KUBE-SERVICES).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum NodePortAddresses {
    /// `-m addrtype --dst-type LOCAL`: every local address (minus the listed exclusions).
    AllLocal {
        /// Destinations excluded with `! -d` (e.g. `127.0.0.0/8`, `::1/128`).
        excluded: Vec<IpNet>,
    },
    /// One rule per address (`nodePortAddresses` set).
    Addresses {
        /// The addresses.
        addresses: Vec<IpAddr>,
    },
}

/// One service port of one family, as kube-proxy's iptables rules describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// `namespace/name[:port]`.
    pub name: ServicePortName,
    /// L4 protocol.
    pub protocol: Protocol,
    /// IP family of these rules.
    pub family: IpFamily,
    /// ClusterIP.
    pub cluster_ip: IpAddr,
    /// Service port.
    pub port: u16,
    /// NodePort, if the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// NodePort also accepted on 127.0.0.0/8 (localhost NodePorts, IPv4 only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub localhost_node_port: bool,
    /// `spec.externalIPs` (of this family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs (of this family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_ips: Vec<IpAddr>,
    /// External or load-balancer IPs of a service whose traffic iptables mode rejects or drops
    /// in filter KUBE-EXTERNAL-SERVICES without any nat rule: kube-proxy writes the same rule for
    /// both kinds, so the dump cannot tell which one each is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_or_load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` (the `-s` rules of `KUBE-FW-…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// The firewall chain also admits the LB IP itself as a source (a source range contains the
    /// node IP, so node-originated traffic to the LB IP is allowed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_balancer_allows_node: bool,
    /// ClientIP session affinity timeout in seconds, if affinity is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_seconds: Option<u32>,
    /// internalTrafficPolicy.
    pub internal_traffic_policy: TrafficPolicy,
    /// externalTrafficPolicy (meaningful when the service has external destinations).
    pub external_traffic_policy: TrafficPolicy,
    /// healthCheckNodePort (eTP=Local load balancers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    /// Endpoints: those of the Cluster chain in its order, then local-only ones.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// `KUBE-SVC-…` (Cluster policy) dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_dispatch: Option<Dispatch>,
    /// `KUBE-SVL-…` (Local policy) dispatch, or the legacy `KUBE-XLB-…` chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_dispatch: Option<Dispatch>,
    /// Filter verdict for ClusterIP traffic when there is no (local) endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_no_endpoints: Option<NoEndpointVerdict>,
    /// Filter verdict for external traffic (NodePort, external and LB IPs) when there is no
    /// (local) endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_no_endpoints: Option<NoEndpointVerdict>,
    /// ClusterIP traffic from outside the detector's "local" set is masqueraded (the first rule
    /// of the dispatch chain, `! -s CIDR -j KUBE-MARK-MASQ`, or any source with masqueradeAll).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masquerade_cluster_ip: bool,
    /// Every endpoint chain masquerades hairpin traffic (`-s <endpoint ip> -j KUBE-MARK-MASQ`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hairpin_masquerade: bool,
    /// Chains of this service port whose names kube-proxy's hash did not reproduce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_mismatches: Vec<String>,
}

impl ServicePort {
    /// Sort key: namespace, name, port, family (DESIGN.md JSON conventions).
    pub fn sort_key(&self) -> (&str, &str, &str, Protocol, IpFamily) {
        (
            &self.name.namespace,
            &self.name.name,
            &self.name.port_name,
            self.protocol,
            self.family,
        )
    }

    /// True if the rules show no endpoint anywhere (REJECT).
    pub fn has_no_endpoints(&self) -> bool {
        self.internal_no_endpoints == Some(NoEndpointVerdict::Reject)
    }
}

/// iptables backend that holds kube-proxy's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// iptables-legacy (x_tables).
    Legacy,
    /// iptables-nft (nf_tables with the x_tables compat layer).
    Nft,
}

/// Where the rules came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SourceKind {
    /// An `iptables-save` file (or stdin).
    File {
        /// Path, or `-` for stdin.
        path: String,
    },
    /// The node's live rules, read with `iptables-save` of the detected backend.
    Live {
        /// Backend read.
        backend: Backend,
    },
}

/// Node-level facts of one family's dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyFacts {
    /// Family.
    pub family: IpFamily,
    /// Where this family's rules came from.
    pub source: SourceKind,
    /// Tables seen in the dump.
    pub tables: Vec<String>,
    /// Number of rules (`-A` lines) in KUBE-* chains and KUBE-* jumps, all tables.
    pub kube_rules: usize,
    /// Number of KUBE-* chains declared.
    pub kube_chains: usize,
    /// Masquerade settings, if KUBE-MARK-MASQ was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Masquerade>,
    /// Where NodePorts are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port_addresses: Option<NodePortAddresses>,
    /// filter KUBE-FORWARD drops ctstate INVALID packets.
    pub drops_invalid: bool,
    /// Kubelet/kube-proxy marker chains seen in mangle (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY,
    /// KUBE-PROXY-CANARY), used to tell which backend kube-proxy writes to.
    pub marker_chains: Vec<String>,
    /// Legacy chains seen (KUBE-XLB-*, KUBE-MARK-DROP): written by kube-proxy ≤ 1.23 / kubelet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_chains: Vec<String>,
    /// Chains IPVS-mode kube-proxy writes (KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-IPVS-FILTER…):
    /// the node is, or was, in IPVS mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipvs_mode_chains: Vec<String>,
    /// Jumps from built-in chains into KUBE-* chains, in order: `table/CHAIN -> KUBE-…`.
    pub hooks: Vec<Hook>,
    /// How long reading the live rules took (iptables-save plus parsing), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_millis: Option<u64>,
}

/// A jump from a built-in chain to a KUBE-* chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Table.
    pub table: String,
    /// Built-in chain (PREROUTING, INPUT, …).
    pub chain: String,
    /// Target chain.
    pub target: String,
    /// 1-based position within the built-in chain.
    pub position: usize,
    /// Line in the dump.
    pub line: u32,
}

/// Severity-free note about a KUBE-* rule or chain that the inventory could not place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// Stable code (`unplaced-rule`, `hash-mismatch`, `stale-chain`, `foreign-chain`, …).
    pub code: String,
    /// Family of the dump.
    pub family: IpFamily,
    /// Line in the dump (1-based), 0 when not tied to a line.
    pub line: u32,
    /// Table.
    pub table: String,
    /// Chain.
    pub chain: String,
    /// What was found and why it was not placed.
    pub message: String,
}

/// Everything the inventory found on a node (or in dumps).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Per-family facts (one entry per dump read).
    pub families: Vec<FamilyFacts>,
    /// Service ports, sorted by namespace, name, port name, protocol, family.
    pub service_ports: Vec<ServicePort>,
    /// KUBE-* rules and chains not placed in the model.
    pub warnings: Vec<Warning>,
}

impl Inventory {
    /// Number of distinct namespaces.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .service_ports
            .iter()
            .map(|s| s.name.namespace.as_str())
            .collect();
        v.dedup();
        v
    }

    /// Sorts service ports and warnings into the documented, deterministic order.
    pub fn normalize(&mut self) {
        // Service ports are large; sort small keys (with the index as the last key, so the
        // unstable sort gives the stable order), then move the ports into place by following
        // the permutation's cycles (one swap per misplaced port, no second vector of ports).
        let ports = &mut self.service_ports;
        if !ports.is_sorted_by(|a, b| a.sort_key() <= b.sort_key()) {
            let mut keys: Vec<SortKey<'_>> = ports
                .iter()
                .enumerate()
                .map(|(i, p)| SortKey::new(p, i))
                .collect();
            keys.sort_unstable_by(SortKey::cmp);
            let idx: Vec<usize> = keys.into_iter().map(|k| k.index).collect();
            // Position k must receive the port now at idx[k].
            let mut placed = vec![false; ports.len()];
            for start in 0..ports.len() {
                let mut k = start;
                while !placed[k] {
                    placed[k] = true;
                    let from = idx[k];
                    if from == start {
                        break;
                    }
                    ports.swap(k, from);
                    k = from;
                }
            }
        }
        self.warnings
            .sort_by(|a, b| (a.family, a.line, &a.code).cmp(&(b.family, b.line, &b.code)));
    }
}

/// A service port's sort key with its three names also as [`Short`]s, so that most
/// comparisons of the sort need no call to memcmp.
struct SortKey<'a> {
    short: [Short; 3],
    key: (&'a str, &'a str, &'a str, Protocol, IpFamily),
    index: usize,
}

impl<'a> SortKey<'a> {
    fn new(p: &'a ServicePort, index: usize) -> SortKey<'a> {
        let key = p.sort_key();
        SortKey {
            short: [Short::of(key.0), Short::of(key.1), Short::of(key.2)],
            key,
            index,
        }
    }

    /// The order of `(sort_key, index)`: the index last, so the unstable sort gives the
    /// stable order.
    fn cmp(a: &SortKey<'_>, b: &SortKey<'_>) -> std::cmp::Ordering {
        let names = [(a.key.0, b.key.0), (a.key.1, b.key.1), (a.key.2, b.key.2)];
        for ((x, y), (sx, sy)) in names.into_iter().zip(a.short.iter().zip(&b.short)) {
            let o = sx.0.cmp(&sy.0);
            if o.is_ne() {
                return o;
            }
            if !sx.exact() {
                let o = x.cmp(y);
                if o.is_ne() {
                    return o;
                }
            }
        }
        (a.key.3, a.key.4, a.index).cmp(&(b.key.3, b.key.4, b.index))
    }
}

/// The first 8 bytes of a string, zero-padded, as a big-endian number, then its length up
/// to 9. Two strings compare as their `Short`s do whenever those differ; equal `Short`s of
/// strings of at most 8 bytes mean equal strings (a shorter string's zero padding sorts it
/// before a longer one that starts with it, as the byte order does).
struct Short(u128);

impl Short {
    fn of(s: &str) -> Short {
        let mut b = [0u8; 8];
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        let len = s.len().min(9) as u128;
        Short((u128::from(u64::from_be_bytes(b)) << 8) | len)
    }

    /// The string is wholly in the key (at most 8 bytes).
    fn exact(&self) -> bool {
        self.0 & 0xff <= 8
    }
}
