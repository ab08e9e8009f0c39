//! The report's per-namespace rule count (`placing_rules`) against an independent count: the
//! rules kube-proxy's layout (clustergen's renderer) writes for a set of service ports, i.e.
//! the KUBE-* rules of the dump minus those of the same node with no service at all.

#![allow(clippy::panic)]

use ipvsmig_clustergen::{Cluster, Shape, generate, render};
use ipvsmig_engine::inventory::{IpFamily, inventory_from_str};
use ipvsmig_engine::report::Summary;

fn kube_rules(c: &Cluster) -> usize {
    let inv = inventory_from_str("gen", &render(c)).unwrap_or_else(|e| panic!("{e}"));
    Summary::of(&inv).kube_rules
}

#[test]
fn the_rules_counted_per_namespace_are_the_rules_the_services_add_to_the_dump() {
    let cluster = generate(IpFamily::IPv4, Shape::ClusterIp, 300, 3, 7);
    let empty = Cluster {
        node: cluster.node.clone(),
        ports: Vec::new(),
    };
    let inv = inventory_from_str("gen", &render(&cluster)).unwrap_or_else(|e| panic!("{e}"));
    let s = Summary::of(&inv);
    let placed: usize = s.per_namespace.values().map(|c| c.iptables_rules).sum();
    assert!(s.per_namespace.len() > 10);
    assert_eq!(placed, kube_rules(&cluster) - kube_rules(&empty));
}
