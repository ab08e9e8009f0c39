//! The manifests parse back as YAML and carry what the switch needs: the IPVS-mode
//! configuration under config.conf, a DaemonSet selected by the node label and mounting it, a
//! patch whose nodeAffinity keeps the original off labelled nodes (field names from the
//! Kubernetes API reference: apps/v1 DaemonSet, core/v1 NodeAffinity).

use serde_json::Value;

use super::*;

const IPVS_CONF: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nmode: ipvs\nipvs:\n  strictARP: true\n  excludeCIDRs:\n  - 192.0.2.1/32\n";

fn opts() -> SwitchOptions {
    SwitchOptions {
        node: "worker-1".into(),
        image: "registry.k8s.io/kube-proxy:v1.34.2".into(),
        ..SwitchOptions::default()
    }
}

fn parse(s: &str) -> Value {
    serde_saphyr::from_str(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
}

#[test]
fn the_configmap_holds_the_ipvs_configuration_verbatim() {
    let m = manifests(IPVS_CONF, &opts()).unwrap();
    let cm = parse(&m.configmap);
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "kube-proxy-ipvs");
    assert_eq!(cm["metadata"]["namespace"], "kube-system");
    assert_eq!(cm["data"]["config.conf"], IPVS_CONF);
    // …and that text is still a KubeProxyConfiguration in IPVS mode.
    let conf =
        crate::preflight::kubeproxy::parse(cm["data"]["config.conf"].as_str().unwrap()).unwrap();
    assert_eq!(conf.mode.as_deref(), Some("ipvs"));
}

#[test]
fn the_daemonset_runs_only_on_labelled_nodes_with_the_new_configuration() {
    let m = manifests(IPVS_CONF, &opts()).unwrap();
    let ds = parse(&m.daemonset);
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["metadata"]["name"], "kube-proxy-ipvs");
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];
    // The selector matches the template's labels (the API server rejects it otherwise) and is
    // not the original's `k8s-app: kube-proxy`.
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&spec["template"]["metadata"]["labels"][k], v);
    }
    assert_ne!(spec["selector"]["matchLabels"]["k8s-app"], "kube-proxy");
    assert_eq!(pod["nodeSelector"][LABEL_KEY], LABEL_VALUE);
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.k8s.io/kube-proxy:v1.34.2");
    assert_eq!(c["securityContext"]["privileged"], true);
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let config_arg = cmd.iter().find(|a| a.starts_with("--config=")).unwrap();
    // The --config file lies in a mount of the new ConfigMap.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            config_arg
                .trim_start_matches("--config=")
                .starts_with(v["mountPath"].as_str().unwrap())
                && v["mountPath"] != "/var/lib/kube-proxy"
        })
        .unwrap();
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(vol["configMap"]["name"], "kube-proxy-ipvs");
    // kubeconfig.conf still comes from the original ConfigMap at kubeadm's path.
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == "kube-proxy")
    );
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["mountPath"] == "/run/xtables.lock")
    );
}

#[test]
fn the_patch_keeps_the_original_daemonset_off_labelled_nodes() {
    let m = manifests(IPVS_CONF, &opts()).unwrap();
    let p = parse(&m.patch);
    let term = &p["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], LABEL_KEY);
    assert_eq!(term["operator"], "NotIn");
    assert_eq!(term["values"], serde_json::json!([LABEL_VALUE]));
    assert_eq!(
        m.commands.last().unwrap(),
        "kubectl label node worker-1 ipvs-migrate.io/kube-proxy-mode=ipvs"
    );
    assert!(m.commands[1].contains("patch daemonset kube-proxy"));
}

#[test]
fn names_kubernetes_would_refuse_are_errors() {
    for node in ["", "Worker_1", "-a", "a..b", "node 1"] {
        let o = SwitchOptions {
            node: node.into(),
            ..opts()
        };
        assert!(
            matches!(
                manifests(IPVS_CONF, &o),
                Err(SwitchError::Name { what: "node", .. })
            ),
            "{node:?}"
        );
    }
    let o = SwitchOptions {
        node: "ip-10-0-0-1.ec2.internal".into(),
        ..opts()
    };
    assert!(manifests(IPVS_CONF, &o).is_ok());
}
