//! Law: generated cluster → rendered kube-proxy rules → inventory gives back the generated
//! cluster (as `expected`, which derives the model from the cluster, not from the text).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use ipvsmig_clustergen::{Shape, expected, generate, render};
use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory};
use proptest::prelude::*;

fn check(
    family: IpFamily,
    shape: Shape,
    services: u32,
    endpoints: u32,
    seed: u64,
    large: Option<bool>,
) {
    let mut cluster = generate(family, shape, services, endpoints, seed);
    if let Some(l) = large {
        cluster.node.large_cluster = l;
    }
    let text = render(&cluster);
    let inv = inventory(vec![DumpInput {
        name: "generated".into(),
        family,
        source: SourceKind::File {
            path: "generated".into(),
        },
        reader: text.as_bytes(),
    }])
    .unwrap_or_else(|e| panic!("generated rules do not parse: {e}"));
    assert!(
        inv.warnings.is_empty(),
        "warnings on generated rules: {:#?}",
        &inv.warnings[..inv.warnings.len().min(5)]
    );
    let want = expected(&cluster);
    assert_eq!(inv.service_ports.len(), want.len(), "service port count");
    for (got, want) in inv.service_ports.iter().zip(&want) {
        assert_eq!(got, want, "service port {}", want.name);
    }
}

#[test]
fn a_mixed_ipv4_cluster_round_trips() {
    check(IpFamily::IPv4, Shape::Mix, 300, 3, 7, None);
}

#[test]
fn the_mixed_shape_covers_every_service_shape() {
    use ipvsmig_engine::inventory::{NoEndpointVerdict, Protocol, TrafficPolicy};
    let want = expected(&generate(IpFamily::IPv4, Shape::Mix, 300, 3, 7));
    let count = |f: &dyn Fn(&ipvsmig_engine::inventory::ServicePort) -> bool| {
        want.iter().filter(|s| f(s)).count()
    };
    assert!(count(&|s| s.node_port.is_some()) > 10);
    assert!(
        count(&|s| s.external_traffic_policy == TrafficPolicy::Local
            && s.health_check_node_port.is_some())
            > 3
    );
    assert!(count(&|s| s.internal_traffic_policy == TrafficPolicy::Local) > 3);
    assert!(
        count(&|s| !s.load_balancer_source_ranges.is_empty()
            && s.session_affinity_seconds == Some(10800))
            > 3
    );
    assert!(count(&|s| s.load_balancer_allows_node) > 0);
    assert!(count(&|s| !s.external_ips.is_empty()) > 3);
    assert!(
        count(
            &|s| s.internal_no_endpoints == Some(NoEndpointVerdict::Reject)
                && !s.external_or_load_balancer_ips.is_empty()
        ) > 3
    );
    assert!(count(&|s| s.protocol == Protocol::Udp) > 3);
    assert!(count(&|s| s.protocol == Protocol::Sctp) > 0);
    assert!(count(&|s| s.endpoints.iter().any(|e| e.local == Some(true))) > 3);
}

#[test]
fn a_mixed_ipv6_cluster_round_trips() {
    check(IpFamily::IPv6, Shape::Mix, 200, 2, 11, None);
}

#[test]
fn a_large_cluster_without_endpoint_comments_round_trips() {
    check(IpFamily::IPv4, Shape::Mix, 150, 4, 5, Some(true));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn any_generated_cluster_round_trips(services in 1u32..60, endpoints in 0u32..6, seed in any::<u64>(), v6 in any::<bool>(), large in any::<bool>()) {
        let family = if v6 { IpFamily::IPv6 } else { IpFamily::IPv4 };
        check(family, Shape::Mix, services, endpoints, seed, Some(large));
    }
}
