//! Golden tests: hand-written kube-proxy rule sets (tests/golden/*/restore.txt), the same rules
//! as the kernel printed them back (live-legacy.txt, live-nft.txt, produced by iptables-restore
//! and iptables-save -c in a private network namespace), and expectations written by hand from
//! kube-proxy's documented layout (expected.json; sources in tests/golden/README.md).
//!
//! Each form must give the expected model, and all three forms must give the same model.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ipvsmig_engine::inventory::{
    DumpInput, FamilyFacts, Inventory, IpFamily, ServicePort, SourceKind, inventory,
    normalize_probability,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expected {
    family: IpFamily,
    service_ports: Vec<ServicePort>,
    node: serde_json::Value,
    warnings: Vec<ExpectedWarning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpectedWarning {
    code: String,
    table: String,
    chain: String,
    restore_lines: Vec<u32>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(case: &str, file: &str, family: IpFamily) -> Inventory {
    let path = golden_dir().join(case).join(file);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    inventory(vec![DumpInput {
        name: format!("{case}/{file}"),
        family,
        source: SourceKind::File { path: file.into() },
        reader: &text[..],
    }])
    .unwrap_or_else(|e| panic!("{case}/{file}: {e}"))
}

fn normalized(mut ports: Vec<ServicePort>) -> Vec<ServicePort> {
    for sp in &mut ports {
        for d in sp
            .cluster_dispatch
            .iter_mut()
            .chain(sp.local_dispatch.iter_mut())
        {
            for e in &mut d.endpoints {
                e.probability = normalize_probability(e.probability);
            }
        }
    }
    ports.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    ports
}

fn node_json(f: &FamilyFacts) -> serde_json::Value {
    serde_json::json!({
        "masquerade": f.masquerade,
        "nodePortAddresses": f.node_port_addresses,
        "dropsInvalid": f.drops_invalid,
    })
}

fn check(case: &str) {
    let exp_path = golden_dir().join(case).join("expected.json");
    let exp: Expected = serde_json::from_str(
        &std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display()));
    let want = normalized(exp.service_ports);
    let mut models = Vec::new();
    for file in ["restore.txt", "live-legacy.txt", "live-nft.txt"] {
        let inv = read(case, file, exp.family);
        let got = normalized(inv.service_ports.clone());
        assert_eq!(
            got.len(),
            want.len(),
            "{case}/{file}: number of service ports\n got: {:#?}",
            got.iter().map(|s| s.name.to_string()).collect::<Vec<_>>()
        );
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{case}/{file}: service port {}", w.name);
        }
        let facts = &inv.families[0];
        let mut want_node = exp.node.clone();
        // Null-valued keys in the expectation mean "absent".
        if let Some(o) = want_node.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        let mut got_node = node_json(facts);
        if let Some(o) = got_node.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        assert_eq!(got_node, want_node, "{case}/{file}: node-level facts");
        // Warnings: same codes and chains in every form; line numbers checked on restore.txt.
        let mut got_w: Vec<(String, String, String)> = inv
            .warnings
            .iter()
            .map(|w| (w.code.clone(), w.table.clone(), w.chain.clone()))
            .collect();
        got_w.dedup();
        let want_w: Vec<(String, String, String)> = exp
            .warnings
            .iter()
            .map(|w| (w.code.clone(), w.table.clone(), w.chain.clone()))
            .collect();
        let mut gs = got_w.clone();
        gs.sort();
        let mut ws = want_w.clone();
        ws.sort();
        assert_eq!(gs, ws, "{case}/{file}: warnings {:#?}", inv.warnings);
        if file == "restore.txt" {
            for w in &inv.warnings {
                let e = exp
                    .warnings
                    .iter()
                    .find(|e| e.code == w.code && e.chain == w.chain);
                assert!(
                    e.is_some_and(|e| e.restore_lines.contains(&w.line)),
                    "{case}: warning at unexpected line: {w:?}"
                );
            }
        }
        models.push(got);
    }
    assert_eq!(
        models[0], models[1],
        "{case}: restore form and live legacy form differ"
    );
    assert_eq!(
        models[0], models[2],
        "{case}: restore form and live nft form differ"
    );
}

macro_rules! golden {
    ($($name:ident => $case:literal),* $(,)?) => {
        $(#[test] fn $name() { check($case); })*
    };
}

golden! {
    kube_proxys_overall_test_services_are_inventoried => "overall",
    traffic_policies_and_local_endpoints_are_inventoried => "policies",
    udp_sctp_named_ports_and_rejected_services_are_inventoried => "protocols",
    an_ipv6_dump_is_inventoried => "ipv6",
    large_cluster_mode_without_endpoint_comments_is_inventoried => "large-cluster",
    masquerade_all_is_detected => "detectors",
    an_interface_prefix_detector_is_detected => "detector-iface",
    a_bridge_detector_is_detected => "detector-bridge",
    node_port_addresses_and_localhost_node_ports_are_inventoried => "nodeport-addresses",
    the_legacy_xlb_layout_is_inventoried => "legacy-xlb",
    unplaced_stale_and_foreign_rules_are_reported_with_their_lines => "warnings",
}

#[test]
fn every_golden_case_has_a_test() {
    let src = include_str!("golden.rs");
    for entry in std::fs::read_dir(golden_dir()).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        if entry.path().join("expected.json").exists() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                src.contains(&format!("=> \"{name}\"")),
                "golden case {name} has no test"
            );
        }
    }
}
