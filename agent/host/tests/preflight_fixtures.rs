//! Preflight on host-root fixtures (tests/preflight/*): the findings must be exactly the
//! hand-written expectations (id and severity) of each fixture.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ipvsmig_engine::preflight::{Severity, run};
use ipvsmig_host::node::read_node_facts;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/preflight")
}

fn check(name: &str) {
    let root = fixtures().join(name);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let mut want: Vec<(String, String)> = want["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    want.sort();
    let facts = read_node_facts(&root);
    let kp = std::fs::read_to_string(root.join("kube-proxy-config.yaml"))
        .ok()
        .map(|t| ipvsmig_engine::preflight::kubeproxy::parse(&t).unwrap());
    let findings = run(&facts, kp.as_ref());
    let mut got: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            let s = match f.severity {
                Severity::Blocker => "blocker",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            (f.id.clone(), s.to_owned())
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "{name}: {findings:#?}");
}

#[test]
fn ubuntu_22_04_with_calico() {
    check("ubuntu-22.04-calico");
}

#[test]
fn centos_7_is_unsupported() {
    check("centos-7-flannel");
}

#[test]
fn a_monolithic_kernel_without_ipvs_is_a_blocker() {
    check("debian-12-monolithic-no-ipvs");
}

#[test]
fn rhel_8_with_loadable_modules_and_a_leftover_kube_ipvs0() {
    check("rhel-8-loadable-modules");
}

#[test]
fn amazon_linux_2023_with_the_vpc_cni_and_an_eks_configmap() {
    check("amazon-linux-2023-aws-cni");
}

#[test]
fn flatcar_with_cilium_and_localhost_nodeports() {
    check("flatcar-cilium");
}

#[test]
fn k3s_embeds_kube_proxy() {
    check("k3s-ubuntu-20.04");
}

#[test]
fn rke2_runs_kube_proxy_as_a_static_pod() {
    check("rke2-rocky-9-canal");
}

#[test]
fn sles_already_in_ipvs_mode_with_a_bad_scheduler() {
    check("sles-15-static-pod-weave");
}

#[test]
fn ubuntu_18_04_is_unsupported() {
    check("ubuntu-18.04-old");
}

#[test]
fn every_fixture_has_a_test() {
    let src = include_str!("preflight_fixtures.rs");
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let e = e.unwrap();
        if e.path().join("expected.json").exists() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                src.contains(&format!("check(\"{name}\")")),
                "fixture {name} has no test"
            );
        }
    }
}

#[test]
fn a_missing_host_root_gives_findings_not_a_panic() {
    let facts = read_node_facts(Path::new("/nonexistent-host-root"));
    let findings = run(&facts, None);
    assert!(findings.iter().any(|f| f.id == "os-unknown"));
    assert!(
        findings
            .iter()
            .any(|f| f.id == "kernel-version" && f.severity == Severity::Warning)
    );
}

#[test]
fn a_malformed_cni_file_is_a_finding_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cni = dir.path().join("etc/cni/net.d");
    std::fs::create_dir_all(&cni).unwrap();
    std::fs::write(cni.join("10-broken.conflist"), "{ not json").unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/os-release"),
        "ID=debian\nVERSION_ID=12\n",
    )
    .unwrap();
    let findings = run(&read_node_facts(dir.path()), None);
    let unreadable = findings
        .iter()
        .find(|f| f.id == "host-file-unreadable")
        .expect("finding");
    assert!(
        unreadable
            .evidence
            .iter()
            .any(|e| e.contains("10-broken.conflist: not valid JSON")),
        "{unreadable:?}"
    );
}
