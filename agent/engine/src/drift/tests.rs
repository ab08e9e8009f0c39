//! The comparison on the `policies` golden fixture (kube-proxy's rules for four Services with
//! traffic policies, tests/golden/README.md) against API views written by hand from the same
//! Services and EndpointSlices in Kubernetes terms (conditions, nodeName, policies).

use std::net::IpAddr;

use super::*;
use crate::inventory::{DumpInput, SourceKind, inventory};

const POLICIES: &str = include_str!("../../tests/golden/policies/restore.txt");

fn node() -> Inventory {
    inventory(vec![DumpInput {
        name: "policies/restore.txt".into(),
        family: IpFamily::IPv4,
        source: SourceKind::File {
            path: "policies/restore.txt".into(),
        },
        reader: POLICIES.as_bytes(),
    }])
    .expect("fixture parses")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A ready endpoint; `local`: on this node.
fn ep(addr: &str, local: bool) -> ApiEndpoint {
    ApiEndpoint {
        ip: ip(addr),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        local,
    }
}

fn port(
    name: &str,
    cluster_ip: &str,
    node_port: Option<u16>,
    eps: Vec<ApiEndpoint>,
) -> ApiServicePort {
    ApiServicePort {
        name: ServicePortName::parse(name).expect("name"),
        protocol: Protocol::Tcp,
        family: IpFamily::IPv4,
        cluster_ip: ip(cluster_ip),
        port: 80,
        node_port,
        internal_local: false,
        external_local: false,
        externally_accessible: node_port.is_some(),
        hinted: false,
        endpoints: eps,
    }
}

/// The fixture's Services as the API describes them.
fn api() -> ApiView {
    let mut itp_local = port(
        "ns1/itp-local:http",
        "172.30.1.1",
        None,
        // A third endpoint on another node: iTP=Local and no external destination, so
        // kube-proxy uses only this node's endpoints.
        vec![
            ep("10.180.0.1", true),
            ep("10.180.0.2", true),
            ep("10.181.0.1", false),
        ],
    );
    itp_local.internal_local = true;
    let mut itp_nolocal = port(
        "ns1/itp-nolocal:http",
        "172.30.1.2",
        None,
        vec![ep("10.181.0.3", false)],
    );
    itp_nolocal.internal_local = true;
    let mut etp = port(
        "ns2/etp-nolocal:http",
        "172.30.1.3",
        Some(30080),
        vec![ep("10.181.0.5", false)],
    );
    etp.external_local = true;
    let mut mixed = port(
        "ns3/mixed:http",
        "172.30.1.4",
        Some(30081),
        vec![
            ep("10.180.0.7", true),
            ep("10.180.0.9", true),
            ep("10.181.0.8", false),
        ],
    );
    mixed.external_local = true;
    ApiView {
        service_ports: vec![itp_local, itp_nolocal, etp, mixed],
    }
}

fn texts(d: &Drift) -> Vec<String> {
    d.items.iter().map(|i| i.to_string()).collect()
}

#[test]
fn a_node_that_follows_the_api_has_no_drift() {
    assert_eq!(texts(&compare(&node(), &api())), Vec::<String>::new());
}

#[test]
fn a_service_the_node_lacks_and_one_the_api_deleted_are_both_reported() {
    let mut view = api();
    view.service_ports.retain(|sp| sp.name.name != "mixed");
    view.service_ports.push(port(
        "ns4/new:http",
        "172.30.1.9",
        None,
        vec![ep("10.180.0.4", true)],
    ));
    assert_eq!(
        texts(&compare(&node(), &view)),
        [
            "ns3/mixed:http tcp IPv4: rules on the node, not in the API",
            "ns4/new:http tcp IPv4: in the API, no rules on the node",
        ]
    );
}

#[test]
fn a_changed_node_port_is_reported_with_both_values() {
    let mut view = api();
    view.service_ports[2].node_port = Some(30999);
    assert_eq!(
        texts(&compare(&node(), &view)),
        ["ns2/etp-nolocal:http tcp IPv4: nodePort is 30999 in the API, 30080 on the node"]
    );
}

#[test]
fn an_endpoint_no_longer_ready_should_have_left_the_node() {
    let mut view = api();
    view.service_ports[3].endpoints[2].ready = false;
    assert_eq!(
        texts(&compare(&node(), &view)),
        [
            "ns3/mixed:http tcp IPv4: endpoints missing on the node [], extra on the node [10.181.0.8:8080]"
        ]
    );
}

#[test]
fn terminating_endpoints_are_used_only_when_none_is_ready() {
    // kube-proxy's terminating fallback: with no ready endpoint, serving+terminating ones
    // are used; so the node keeping 10.181.0.5 is right.
    let mut view = api();
    let e = &mut view.service_ports[2].endpoints[0];
    e.ready = false;
    e.serving = true;
    e.terminating = true;
    assert!(compare(&node(), &view).items.is_empty());
    // Once another endpoint is ready, the terminating one must go.
    view.service_ports[2]
        .endpoints
        .push(ep("10.181.0.6", false));
    assert_eq!(
        texts(&compare(&node(), &view)),
        [
            "ns2/etp-nolocal:http tcp IPv4: endpoints missing on the node [10.181.0.6:8080], extra on the node [10.181.0.5:8080]"
        ]
    );
}

#[test]
fn hinted_services_report_only_endpoints_the_api_lacks() {
    let mut view = api();
    view.service_ports[3]
        .endpoints
        .push(ep("10.182.0.1", false));
    view.service_ports[3].hinted = true;
    assert!(compare(&node(), &view).items.is_empty());
}

#[test]
fn ipv6_services_are_not_compared_with_an_ipv4_only_dump() {
    let mut view = api();
    let mut v6 = port("ns5/v6:http", "fd00::1", None, Vec::new());
    v6.family = IpFamily::IPv6;
    view.service_ports.push(v6);
    assert!(compare(&node(), &view).items.is_empty());
}

#[test]
fn only_differences_seen_twice_persist() {
    let mut view = api();
    view.service_ports[2].node_port = Some(30999);
    let first = compare(&node(), &view);
    let caught_up = compare(&node(), &api());
    assert!(persisting(&first, &caught_up).items.is_empty());
    assert_eq!(persisting(&first, &first), first);
}

#[test]
fn the_finding_warns_only_on_drift() {
    let clean = finding(&Drift::default(), 4);
    assert_eq!(
        (clean.id.as_str(), clean.severity),
        (CHECK_ID, Severity::Info)
    );
    let mut view = api();
    view.service_ports.clear();
    let f = finding(&compare(&node(), &view), 0);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence.len(), 4);
}
