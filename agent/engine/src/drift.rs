//! Drift between the API server and the node: the Services and EndpointSlices the API holds
//! (as an [`ApiView`], converted by the kube crate) compared with what kube-proxy programmed
//! into iptables (the [`Inventory`]). A difference means kube-proxy on this node is behind,
//! stuck or was changed by hand — a migration planned from the node's rules would then
//! program something the cluster no longer wants.
//!
//! Must not: do I/O or know kube-rs types; decide that drift is an error (it is a finding).
//!
//! What kube-proxy programs, from upstream kube-proxy (pkg/proxy/endpointslicecache.go,
//! pkg/proxy/topology.go `CategorizeEndpoints`, pkg/proxy/servicechangetracker.go), which this
//! module follows (read for behaviour, not copied):
//! - no rules for ExternalName or headless Services, or Services labelled
//!   `service.kubernetes.io/service-proxy-name` (another proxy owns them) — the converter
//!   leaves them out of the view;
//! - an endpoint's conditions: `ready` nil means true, `serving` nil means true, `terminating`
//!   nil means false;
//! - the endpoints a Service port uses are the ready ones; when none is ready, the ones that
//!   are serving and terminating (the terminating fallback); for a Local traffic policy the
//!   same rule among the endpoints on this node, in addition.
//!
//! Sync lag: kube-proxy applies API changes after its `minSyncPeriod` (1 s by default) and a
//! large sync takes seconds, so a single comparison reports changes still in flight.
//! [`persisting`] keeps only differences present in two comparisons taken some seconds apart;
//! callers compare twice (docs/kubernetes.md "Drift").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::inventory::{Inventory, IpFamily, Protocol, ServicePortName};
use crate::preflight::{Finding, Severity};

/// Check id of the drift finding (docs/runbooks/preflight.md#api-drift).
pub const CHECK_ID: &str = "api-drift";

/// The API's Services and EndpointSlices, one entry per service port and IP family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiView {
    /// Service ports kube-proxy would program.
    pub service_ports: Vec<ApiServicePort>,
}

/// One port of a Service in one IP family, with the endpoints of its EndpointSlices.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiServicePort {
    /// `namespace/name[:port]`.
    pub name: ServicePortName,
    /// Protocol.
    pub protocol: Protocol,
    /// The family of `cluster_ip`.
    pub family: IpFamily,
    /// The ClusterIP of that family (`spec.clusterIPs`).
    pub cluster_ip: IpAddr,
    /// `port`.
    pub port: u16,
    /// `nodePort`.
    pub node_port: Option<u16>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Reachable from outside: a NodePort, externalIPs or load-balancer ingress IPs.
    pub externally_accessible: bool,
    /// Some endpoint carries topology hints: kube-proxy may use only a subset (the node's zone),
    /// which this comparison does not model — only endpoints the node has and the API lacks
    /// are reported then.
    pub hinted: bool,
    /// Endpoints from the Service's EndpointSlices, for this port's name and protocol.
    pub endpoints: Vec<ApiEndpoint>,
}

/// One endpoint address and port, with its EndpointSlice conditions (nil already resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiEndpoint {
    /// The address.
    pub ip: IpAddr,
    /// The slice port's `port`.
    pub port: u16,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `nodeName` is this node.
    pub local: bool,
}

/// The endpoints kube-proxy would program for a service port, by the rules in the module doc:
/// the cluster-wide ones if some traffic uses the Cluster policy (internal traffic with
/// `internalTrafficPolicy: Cluster`, or external traffic of an externally reachable Service
/// with `externalTrafficPolicy: Cluster`), plus this node's if some traffic uses Local
/// (upstream `ServicePort.UsesClusterEndpoints` / `UsesLocalEndpoints`).
pub fn programmed_endpoints(sp: &ApiServicePort) -> BTreeSet<(IpAddr, u16)> {
    fn usable<'a>(eps: impl Iterator<Item = &'a ApiEndpoint> + Clone) -> Vec<&'a ApiEndpoint> {
        if eps.clone().any(|e| e.ready) {
            eps.filter(|e| e.ready).collect()
        } else {
            eps.filter(|e| e.serving && e.terminating).collect()
        }
    }
    let uses_cluster = !sp.internal_local || (!sp.external_local && sp.externally_accessible);
    let uses_local = sp.internal_local || (sp.external_local && sp.externally_accessible);
    let mut out = BTreeSet::new();
    if uses_cluster {
        out.extend(
            usable(sp.endpoints.iter())
                .into_iter()
                .map(|e| (e.ip, e.port)),
        );
    }
    if uses_local {
        out.extend(
            usable(sp.endpoints.iter().filter(|e| e.local))
                .into_iter()
                .map(|e| (e.ip, e.port)),
        );
    }
    out
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DriftItem {
    /// The API has the service port; the node's rules do not.
    MissingOnNode {
        /// `ns/name[:port] protocol family`.
        service: String,
    },
    /// The node's rules have a service port the API no longer has.
    StaleOnNode {
        /// `ns/name[:port] protocol family`.
        service: String,
    },
    /// ClusterIP, port or NodePort differ.
    Changed {
        /// `ns/name[:port] protocol family`.
        service: String,
        /// `clusterIP`, `port` or `nodePort`.
        field: String,
        /// The API's value.
        api: String,
        /// The node's value.
        node: String,
    },
    /// The endpoints differ.
    Endpoints {
        /// `ns/name[:port] protocol family`.
        service: String,
        /// In the API (usable), not on the node.
        missing_on_node: Vec<String>,
        /// On the node, not usable in the API.
        extra_on_node: Vec<String>,
    },
}

impl DriftItem {
    /// The service port the difference is about.
    pub fn service(&self) -> &str {
        match self {
            DriftItem::MissingOnNode { service }
            | DriftItem::StaleOnNode { service }
            | DriftItem::Changed { service, .. }
            | DriftItem::Endpoints { service, .. } => service,
        }
    }
}

impl fmt::Display for DriftItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftItem::MissingOnNode { service } => {
                write!(f, "{service}: in the API, no rules on the node")
            }
            DriftItem::StaleOnNode { service } => {
                write!(f, "{service}: rules on the node, not in the API")
            }
            DriftItem::Changed {
                service,
                field,
                api,
                node,
            } => write!(
                f,
                "{service}: {field} is {api} in the API, {node} on the node"
            ),
            DriftItem::Endpoints {
                service,
                missing_on_node,
                extra_on_node,
            } => write!(
                f,
                "{service}: endpoints missing on the node [{}], extra on the node [{}]",
                missing_on_node.join(" "),
                extra_on_node.join(" ")
            ),
        }
    }
}

/// The differences of one comparison, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Differences, sorted by service.
    pub items: Vec<DriftItem>,
}

type Key = (ServicePortName, Protocol, IpFamily);

fn label(k: &Key) -> String {
    format!("{} {} {}", k.0, k.1.as_str(), k.2.as_str())
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Compares the node's rules with the API. Only the families the node's rules were read for
/// are compared (an IPv4-only dump says nothing about IPv6 services).
pub fn compare(node: &Inventory, api: &ApiView) -> Drift {
    let families: BTreeSet<IpFamily> = node.families.iter().map(|f| f.family).collect();
    let api_ports: BTreeMap<Key, &ApiServicePort> = api
        .service_ports
        .iter()
        .filter(|sp| families.contains(&sp.family))
        .map(|sp| ((sp.name.clone(), sp.protocol, sp.family), sp))
        .collect();
    let node_ports: BTreeMap<Key, _> = node
        .service_ports
        .iter()
        .map(|sp| ((sp.name.clone(), sp.protocol, sp.family), sp))
        .collect();
    let mut items = Vec::new();
    for (k, a) in &api_ports {
        let Some(n) = node_ports.get(k) else {
            items.push(DriftItem::MissingOnNode { service: label(k) });
            continue;
        };
        let opt = |p: Option<u16>| p.map_or_else(|| "none".to_owned(), |p| p.to_string());
        for (field, av, nv) in [
            (
                "clusterIP",
                a.cluster_ip.to_string(),
                n.cluster_ip.to_string(),
            ),
            ("port", a.port.to_string(), n.port.to_string()),
            ("nodePort", opt(a.node_port), opt(n.node_port)),
        ] {
            if av != nv {
                items.push(DriftItem::Changed {
                    service: label(k),
                    field: field.into(),
                    api: av,
                    node: nv,
                });
            }
        }
        let want = programmed_endpoints(a);
        let have: BTreeSet<(IpAddr, u16)> = n.endpoints.iter().map(|e| (e.ip, e.port)).collect();
        let missing: Vec<String> = if a.hinted {
            Vec::new()
        } else {
            want.difference(&have)
                .map(|(i, p)| endpoint(*i, *p))
                .collect()
        };
        let extra: Vec<String> = have
            .difference(&want)
            .map(|(i, p)| endpoint(*i, *p))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            items.push(DriftItem::Endpoints {
                service: label(k),
                missing_on_node: missing,
                extra_on_node: extra,
            });
        }
    }
    for k in node_ports.keys().filter(|k| !api_ports.contains_key(*k)) {
        items.push(DriftItem::StaleOnNode { service: label(k) });
    }
    items.sort_by(|a, b| a.service().cmp(b.service()).then(a.cmp(b)));
    Drift { items }
}

/// The differences present in both comparisons (the earlier one some seconds before the
/// later): what kube-proxy's sync did not catch up with in between.
pub fn persisting(earlier: &Drift, later: &Drift) -> Drift {
    Drift {
        items: later
            .items
            .iter()
            .filter(|i| earlier.items.contains(i))
            .cloned()
            .collect(),
    }
}

/// The preflight finding: info when the node matches the API, warning otherwise (a plan from
/// the node's rules would not be what the cluster wants). At most 20 items are listed.
pub fn finding(drift: &Drift, api_ports: usize) -> Finding {
    if drift.items.is_empty() {
        return Finding::new(
            CHECK_ID,
            Severity::Info,
            format!("kube-proxy's rules match the API's {api_ports} service ports"),
            Vec::new(),
            "Nothing to do.",
        );
    }
    let mut evidence: Vec<String> = drift.items.iter().take(20).map(|i| i.to_string()).collect();
    if drift.items.len() > 20 {
        evidence.push(format!("... and {} more", drift.items.len() - 20));
    }
    Finding::new(
        CHECK_ID,
        Severity::Warning,
        format!(
            "{} difference(s) between the API's Services/EndpointSlices and kube-proxy's rules on this node, persisting across two reads",
            drift.items.len()
        ),
        evidence,
        "Check kube-proxy on this node (its /healthz, logs, sync errors) and look for rules changed by hand; migrate only once the node's rules follow the API (runbook).",
    )
}

#[cfg(test)]
mod tests;
