//! The API's Services and EndpointSlices, listed across all namespaces page by page, and
//! converted into the engine's [`ApiView`] as kube-proxy reads them (the engine's `drift`
//! module doc cites the upstream rules).
//!
//! Must not: compare anything (the engine does), or watch — this is a one-shot read for the
//! drift check; the reconcile loop follows kube-proxy's rules on the node, not the API.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvsmig_engine::drift::{ApiEndpoint, ApiServicePort, ApiView};
use ipvsmig_engine::inventory::{IpFamily, Protocol, ServicePortName};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;

use crate::client::ApiClient;
use crate::error::{Call, KubeError};

/// Page size of list calls (the API server's `limit`; it answers with a `continue` token
/// while more remain — API reference, "Retrieving large results sets in chunks").
pub const PAGE_SIZE: u32 = 500;

/// The label linking an EndpointSlice to its Service (`discovery.k8s.io/v1`).
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service with this label belongs to another proxy; kube-proxy skips it.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The view and what was left out of it.
#[derive(Debug, Clone, Default)]
pub struct ApiSnapshot {
    /// Service ports as kube-proxy would program them.
    pub view: ApiView,
    /// Services kube-proxy writes no rules for (headless, ExternalName, another proxy's).
    pub skipped_services: usize,
    /// Things that could not be read (a bad address, an unknown protocol), each naming the
    /// object.
    pub notes: Vec<String>,
}

/// Lists every object of a kind across all namespaces, following `continue` tokens.
pub async fn list_all<K>(api: &ApiClient, call: Call) -> Result<Vec<K>, KubeError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let handle: Api<K> = Api::all(api.client().clone());
    list_pages(api, call, &handle, ListParams::default()).await
}

/// Lists with `params`, page by page.
pub async fn list_pages<K>(
    api: &ApiClient,
    call: Call,
    handle: &Api<K>,
    params: ListParams,
) -> Result<Vec<K>, KubeError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut p = params.clone().limit(PAGE_SIZE);
        if let Some(t) = &token {
            p = p.continue_token(t);
        }
        let page = api.run(call.clone(), handle.list(&p)).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

/// Reads Services and EndpointSlices and converts them for `node_name`.
pub async fn read_view(api: &ApiClient, node_name: &str) -> Result<ApiSnapshot, KubeError> {
    let services: Vec<Service> = list_all(api, Call::new("list", "", "services")).await?;
    let slices: Vec<EndpointSlice> =
        list_all(api, Call::new("list", "discovery.k8s.io", "endpointslices")).await?;
    Ok(convert(&services, &slices, node_name))
}

/// The conversion alone (pure).
pub fn convert(services: &[Service], slices: &[EndpointSlice], node_name: &str) -> ApiSnapshot {
    let mut snap = ApiSnapshot::default();
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
    }
    for svc in services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let Some(spec) = &svc.spec else { continue };
        let other_proxy = svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
        let ips: Vec<&String> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(list), _) if !list.is_empty() => list.iter().collect(),
            (_, Some(ip)) => vec![ip],
            _ => Vec::new(),
        };
        if other_proxy
            || spec.type_.as_deref() == Some("ExternalName")
            || ips.is_empty()
            || ips.iter().any(|ip| ip.as_str() == "None" || ip.is_empty())
        {
            snap.skipped_services += 1;
            continue;
        }
        let lb_ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| i.iter().any(|i| i.ip.is_some()));
        let external_ips = spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for ip_text in ips {
            let Ok(cluster_ip) = ip_text.parse::<IpAddr>() else {
                snap.notes.push(format!(
                    "service {ns}/{name}: clusterIP {ip_text:?} is not an address"
                ));
                continue;
            };
            let family = IpFamily::of(&cluster_ip);
            for p in spec.ports.iter().flatten() {
                let proto_text = p.protocol.as_deref().unwrap_or("TCP");
                let Some(protocol) = Protocol::parse(proto_text) else {
                    snap.notes.push(format!(
                        "service {ns}/{name}: protocol {proto_text:?} not handled by kube-proxy"
                    ));
                    continue;
                };
                let port_name = p.name.clone().unwrap_or_default();
                let Ok(port) = u16::try_from(p.port) else {
                    snap.notes
                        .push(format!("service {ns}/{name}: port {} out of range", p.port));
                    continue;
                };
                let node_port = p.node_port.and_then(|n| u16::try_from(n).ok());
                let (endpoints, hinted) = endpoints(
                    slices,
                    &port_name,
                    proto_text,
                    family,
                    node_name,
                    &mut snap.notes,
                );
                snap.view.service_ports.push(ApiServicePort {
                    name: ServicePortName {
                        namespace: ns.to_owned(),
                        name: name.to_owned(),
                        port_name,
                    },
                    protocol,
                    family,
                    cluster_ip,
                    port,
                    node_port,
                    internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                    external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                    externally_accessible: node_port.is_some() || external_ips || lb_ingress,
                    hinted,
                    endpoints,
                });
            }
        }
    }
    snap
}

/// The endpoints of one service port: slices of the port's family, the slice port with the
/// same name and protocol, each endpoint's first address (kube-proxy uses only that one),
/// conditions with nil read as kube-proxy reads them.
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    family: IpFamily,
    node_name: &str,
    notes: &mut Vec<String>,
) -> (Vec<ApiEndpoint>, bool) {
    let mut out = Vec::new();
    let mut hinted = false;
    for s in slices {
        if s.address_type != family.as_str() {
            continue;
        }
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(addr) = e.addresses.first() else {
                continue;
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                let slice = s.metadata.name.as_deref().unwrap_or("?");
                notes.push(format!("endpointslice {slice}: {addr:?} is not an address"));
                continue;
            };
            let c = e.conditions.as_ref();
            hinted |= e
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .is_some_and(|z| !z.is_empty());
            out.push(ApiEndpoint {
                ip,
                port,
                ready: c.and_then(|c| c.ready).unwrap_or(true),
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: e.node_name.as_deref() == Some(node_name),
            });
        }
    }
    (out, hinted)
}

#[cfg(test)]
mod tests;
