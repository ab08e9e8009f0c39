//! deploy/kube-proxy-ipvs/ (the kustomize overlay of the IPVS-mode kube-proxy finalize hands a
//! node to) and what `finalize --manifests` writes (`plan::switch::manifests`) must be the same
//! objects: the DaemonSet and the original DaemonSet's patch compared as parsed YAML (comments
//! aside), and the kustomization's generated ConfigMap named as the DaemonSet mounts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use ipvsmig_engine::plan::switch::{self, SwitchOptions};
use serde_json::Value;

const DAEMONSET: &str = include_str!("../../../deploy/kube-proxy-ipvs/daemonset.yaml");
const PATCH: &str = include_str!("../../../deploy/kube-proxy-ipvs/kube-proxy-original-patch.yaml");
const KUSTOMIZATION: &str = include_str!("../../../deploy/kube-proxy-ipvs/kustomization.yaml");

fn parse(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// finalize's manifests for a node, with the overlay's image (kustomize sets the tag).
fn generated() -> switch::Manifests {
    let image = parse(DAEMONSET)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = SwitchOptions {
        node: "node-a".into(),
        image,
        ..SwitchOptions::default()
    };
    switch::manifests("mode: ipvs\n", &o).unwrap()
}

#[test]
fn the_overlays_daemonset_is_the_one_finalize_writes() {
    assert_eq!(parse(DAEMONSET), parse(&generated().daemonset));
}

#[test]
fn the_overlays_patch_is_the_one_finalize_writes() {
    assert_eq!(parse(PATCH), parse(&generated().patch));
}

#[test]
fn the_essentials_are_the_node_label_and_the_ipvs_config_mount() {
    // Independent of the generator: the label finalize tells the operator to set
    // (docs/finalize.md) selects the DaemonSet and excludes the original.
    let ds = parse(DAEMONSET);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"]["ipvs-migrate.io/kube-proxy-mode"],
        "ipvs"
    );
    let term = &parse(PATCH)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], "ipvs-migrate.io/kube-proxy-mode");
    assert_eq!(term["operator"], "NotIn");
    assert_eq!(term["values"][0], "ipvs");
    let args = pod["containers"][0]["command"].as_array().unwrap();
    assert!(args.contains(&Value::from(
        "--config=/var/lib/kube-proxy-ipvs/config.conf"
    )));
}

#[test]
fn the_kustomization_generates_the_configmap_the_daemonset_mounts() {
    let k = parse(KUSTOMIZATION);
    let ds = parse(DAEMONSET);
    let volume = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "kube-proxy-ipvs")
        .cloned()
        .unwrap();
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["name"], volume["configMap"]["name"]);
    assert_eq!(generator["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(generator["files"][0], "config.conf");
    // finalize's ConfigMap has no hash suffix: the two must be interchangeable.
    assert_eq!(generator["options"]["disableNameSuffixHash"], true);
    assert_eq!(k["resources"], serde_json::json!(["daemonset.yaml"]));
    let finalize_cm = parse(&generated().configmap);
    assert_eq!(finalize_cm["metadata"]["name"], generator["name"]);
    assert_eq!(
        finalize_cm["metadata"]["labels"],
        generator["options"]["labels"]
    );
    assert!(finalize_cm["data"]["config.conf"].is_string());
}
