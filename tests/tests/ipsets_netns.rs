//! kube-proxy's IPVS-mode ipsets as the plan computes them load into the real ipset (in a
//! network namespace this test creates) and `ipset save` gives the same members back: the
//! member syntax of every set type is what the kernel accepts.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;

use ipvsmig_clustergen::{Shape, expected, generate};
use ipvsmig_engine::inventory::{Inventory, IpFamily};
use ipvsmig_engine::plan::{PlanOptions, full, render};
use ipvsmig_tests::{netns_available, tool_available};

#[test]
fn planned_ipsets_round_trip_through_the_kernel() {
    let test = "ipsets_netns";
    if !netns_available(test) || !tool_available(test, "ipset") {
        return;
    }
    let mut ports = Vec::new();
    let mut families = Vec::new();
    for (fam, seed) in [(IpFamily::IPv4, 3), (IpFamily::IPv6, 4)] {
        let c = generate(fam, Shape::Mix, 150, 2, seed);
        ports.extend(expected(&c));
        families.push(ipvsmig_engine::inventory::FamilyFacts {
            family: fam,
            source: ipvsmig_engine::inventory::SourceKind::File { path: "gen".into() },
            tables: vec![],
            kube_rules: 0,
            kube_chains: 0,
            masquerade: None,
            node_port_addresses: None,
            drops_invalid: false,
            marker_chains: vec![],
            legacy_chains: vec![],
            ipvs_mode_chains: vec![],
            hooks: vec![],
            read_millis: None,
        });
    }
    let inv = Inventory {
        families,
        service_ports: ports,
        warnings: vec![],
    };
    let node_ips: Vec<IpAddr> = vec!["192.168.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
    let plan = full(
        &inv,
        &PlanOptions {
            scheduler: String::new(),
            node_ips,
        },
    );
    let input = render::ipset_restore(&plan);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sets.txt");
    std::fs::write(&f, &input).unwrap();
    let out = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            &format!("ipset restore < {} && ipset save", f.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipset restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("create"), Some(name), _) => {
                got.entry(name.to_owned()).or_default();
            }
            (Some("add"), Some(name), Some(member)) => {
                got.entry(name.to_owned())
                    .or_default()
                    .insert(member.to_owned());
            }
            _ => {}
        }
    }
    let want: BTreeMap<String, BTreeSet<String>> = plan
        .ipsets
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                s.members.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, members) in &want {
        assert_eq!(&got[name], members, "set {name}");
    }
    assert!(
        want.values().map(|m| m.len()).sum::<usize>() > 500,
        "the generated cluster fills the sets"
    );
}
