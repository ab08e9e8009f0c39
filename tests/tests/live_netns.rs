//! Real-kernel round trip: generated kube-proxy rule sets are loaded with iptables-restore
//! (legacy and nft backends) into a network namespace this test creates; `ipvs-migrate
//! inventory` then reads the live rules inside that namespace (detecting the backend itself)
//! and must give exactly the model the file-based inventory gives for the restore input.
//! Nothing here touches the machine's own network namespace.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;

use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::{
    DumpInput, Inventory, IpFamily, ServicePort, SourceKind, inventory,
};
use ipvsmig_tests::{ipvs_migrate_bin, netns_available, tool_available};

fn file_model(text: &str, family: IpFamily) -> Vec<ServicePort> {
    inventory(vec![DumpInput {
        name: "restore".into(),
        family,
        source: SourceKind::File {
            path: "restore".into(),
        },
        reader: text.as_bytes(),
    }])
    .unwrap_or_else(|e| panic!("file inventory: {e}"))
    .service_ports
}

fn live(backend: &str, v4: &str, v6: Option<&str>) -> Inventory {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p4 = dir.path().join("v4.txt");
    std::fs::File::create(&p4)
        .and_then(|mut f| f.write_all(v4.as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut script = format!(
        "set -e; nfacct add localhost_nps_accepted_pkts >/dev/null; iptables-{backend}-restore < {}; ",
        p4.display()
    );
    if let Some(v6) = v6 {
        let p6 = dir.path().join("v6.txt");
        std::fs::write(&p6, v6).unwrap_or_else(|e| panic!("{e}"));
        script.push_str(&format!("ip6tables-{backend}-restore < {}; ", p6.display()));
    }
    script.push_str(&format!(
        "exec {} inventory -o json",
        ipvs_migrate_bin().display()
    ));
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("unshare: {e}"));
    assert!(
        out.status.success(),
        "live inventory failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON from ipvs-migrate: {e}"))
}

fn round_trip(test: &str, backend: &str) {
    if !netns_available(test)
        || !tool_available(test, &format!("iptables-{backend}-restore"))
        || !tool_available(test, "nfacct")
    {
        return;
    }
    let mut c4 = generate(IpFamily::IPv4, Shape::Mix, 400, 3, 42);
    c4.node.localhost_node_ports = true;
    let c6 = generate(IpFamily::IPv6, Shape::Mix, 80, 2, 43);
    let (t4, t6) = (render(&c4), render(&c6));
    let inv = live(backend, &t4, Some(&t6));
    let want_backend = if backend == "legacy" { "legacy" } else { "nft" };
    assert_eq!(inv.families.len(), 2, "both families read live");
    for f in &inv.families {
        let src = serde_json::to_value(&f.source).unwrap_or_default();
        assert_eq!(src["kind"], "live", "{:?}", f.source);
        assert_eq!(
            src["backend"], want_backend,
            "backend detected from the kubelet hint chain"
        );
    }
    assert!(
        inv.warnings.is_empty(),
        "warnings on live rules: {:#?}",
        &inv.warnings[..inv.warnings.len().min(5)]
    );
    let mut want = file_model(&t4, IpFamily::IPv4);
    want.extend(file_model(&t6, IpFamily::IPv6));
    want.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    assert_eq!(inv.service_ports.len(), want.len());
    for (g, w) in inv.service_ports.iter().zip(&want) {
        assert_eq!(g, w, "{test}: {}", w.name);
    }
}

#[test]
fn live_legacy_rules_give_the_same_model_as_the_restore_file() {
    round_trip("live_legacy", "legacy");
}

#[test]
fn live_nft_rules_give_the_same_model_as_the_restore_file() {
    round_trip("live_nft", "nft");
}

#[test]
fn rules_in_both_backends_are_reported() {
    let test = "both_backends";
    if !netns_available(test)
        || !tool_available(test, "iptables-legacy-restore")
        || !tool_available(test, "iptables-nft-restore")
    {
        return;
    }
    let t = render(&generate(IpFamily::IPv4, Shape::ClusterIp, 5, 1, 1));
    // The nft side carries kubelet's hint (a full kube-proxy rule set); the legacy side holds
    // a stale copy without the mangle table, as after a backend switch.
    let legacy_only: String = t
        .split("COMMIT\n")
        .filter(|tb| !tb.contains("*mangle"))
        .map(|tb| format!("{tb}COMMIT\n"))
        .filter(|s| s.contains('*'))
        .collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (pn, pl) = (dir.path().join("n.txt"), dir.path().join("l.txt"));
    std::fs::write(&pn, &t).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&pl, &legacy_only).unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "set -e; iptables-nft-restore < {}; iptables-legacy-restore < {}; exec {} inventory -o json",
        pn.display(),
        pl.display(),
        ipvs_migrate_bin().display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: Inventory = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        serde_json::to_value(&inv.families[0].source).unwrap_or_default()["backend"],
        "nft"
    );
    assert!(
        inv.warnings.iter().any(|w| w.code == "both-backends"),
        "{:#?}",
        inv.warnings
    );
}
