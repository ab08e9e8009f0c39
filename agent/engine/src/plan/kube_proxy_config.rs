//! `plan -o kube-proxy-config`: the KubeProxyConfiguration (config.conf) kube-proxy needs to
//! take over in IPVS mode — `mode: ipvs`, an `ipvs:` section (strictARP on, excludeCIDRs
//! covering every foreign virtual server on the node), the `KubeProxyIPVS` feature gate where
//! the version has it — with every other field of the input kept. Comments are not kept.

use serde_json::{Map, Value};

/// kube-proxy ≥ 1.37 has the `KubeProxyIPVS` gate (default true until 1.40, false from 1.40;
/// KEP-5495). Older kube-proxies refuse unknown gates, so it is set only when the version is
/// known to have it.
pub const IPVS_GATE_SINCE: (u32, u32) = (1, 37);

/// The result: the YAML and notes on what was changed or could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsKubeProxyConfig {
    /// KubeProxyConfiguration YAML.
    pub yaml: String,
    /// What was changed, and why.
    pub notes: Vec<String>,
}

fn config_text(original: &str, notes: &mut Vec<String>) -> Result<String, String> {
    let v: Value = serde_saphyr::from_str(original).map_err(|e| e.to_string())?;
    if v.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        let data = v
            .get("data")
            .and_then(Value::as_object)
            .ok_or("a ConfigMap without data")?;
        let conf = data
            .get("config.conf")
            .or_else(|| {
                data.values().find(|x| {
                    x.as_str()
                        .is_some_and(|s| s.contains("KubeProxyConfiguration"))
                })
            })
            .and_then(Value::as_str)
            .ok_or("a ConfigMap without a KubeProxyConfiguration")?;
        notes.push("input was the kube-proxy ConfigMap: this is its KubeProxyConfiguration (put it back under the same key)".into());
        return Ok(conf.to_owned());
    }
    Ok(original.to_owned())
}

/// Builds the IPVS-mode configuration from kube-proxy's current one.
pub fn ipvs_config(
    original: &str,
    foreign_cidrs: &[String],
    version: Option<(u32, u32)>,
) -> Result<IpvsKubeProxyConfig, String> {
    let mut notes = Vec::new();
    let text = config_text(original, &mut notes)?;
    let mut v: Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
    let Some(obj) = v.as_object_mut() else {
        return Err("the configuration is not a mapping".into());
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("KubeProxyConfiguration") | None => {}
        Some(k) => return Err(format!("kind {k}, not KubeProxyConfiguration")),
    }
    let old_mode = obj
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    obj.insert("mode".into(), Value::from("ipvs"));
    if old_mode == "ipvs" {
        notes.push("mode was already \"ipvs\": kube-proxy runs in IPVS mode on the nodes using this configuration".into());
    } else {
        notes.push(format!("mode: {old_mode:?} → \"ipvs\""));
    }
    let ipvs = obj
        .entry("ipvs")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ipvs.is_object() {
        *ipvs = Value::Object(Map::new());
    }
    if let Some(ipvs) = ipvs.as_object_mut() {
        if let Some(s) = ipvs
            .get("scheduler")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && !crate::preflight::kubeproxy::SCHEDULERS.contains(s))
        {
            notes.push(format!("WARNING: ipvs.scheduler {s:?} is not an IPVS scheduler; kube-proxy would exit at start — fix it before using this configuration"));
        }
        if ipvs.get("strictARP").and_then(Value::as_bool) != Some(true) {
            ipvs.insert("strictARP".into(), Value::from(true));
            notes.push("ipvs.strictARP: true (the node must not answer ARP for VIPs bound on kube-ipvs0; MetalLB L2 needs it)".into());
        }
        let mut cidrs: Vec<String> = ipvs
            .get("excludeCIDRs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for c in foreign_cidrs {
            if !cidrs.contains(c) {
                cidrs.push(c.clone());
                notes.push(format!("ipvs.excludeCIDRs += {c} (a virtual server kube-proxy did not create; IPVS mode would delete it)"));
            }
        }
        if !cidrs.is_empty() {
            ipvs.insert("excludeCIDRs".into(), Value::from(cidrs));
        }
    }
    match version {
        Some(ver) if ver >= IPVS_GATE_SINCE => {
            let gates = obj.entry("featureGates").or_insert_with(|| Value::Object(Map::new()));
            if let Some(g) = gates.as_object_mut() {
                g.insert("KubeProxyIPVS".into(), Value::from(true));
                notes.push(format!("featureGates.KubeProxyIPVS: true (Kubernetes {}.{}; IPVS mode is off by default from 1.40)", ver.0, ver.1));
            }
        }
        Some(_) => {}
        None => notes.push("Kubernetes version unknown: featureGates.KubeProxyIPVS not set (needed from 1.40, rejected before 1.37); pass --kubernetes-version".into()),
    }
    let yaml = serde_saphyr::to_string(&v).map_err(|e| e.to_string())?;
    Ok(IpvsKubeProxyConfig { yaml, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\nclusterCIDR: 10.244.0.0/16\nconntrack:\n  maxPerCore: 32768\nipvs:\n  excludeCIDRs: null\n  scheduler: \"\"\n  strictARP: false\n  tcpTimeout: 0s\nmode: \"\"\nnodePortAddresses: null\n";

    #[test]
    fn mode_strict_arp_and_exclusions_change_and_everything_else_is_kept() {
        let out = ipvs_config(KUBEADM, &["192.168.10.100/32".into()], Some((1, 34))).unwrap();
        let v: Value = serde_saphyr::from_str(&out.yaml).unwrap();
        assert_eq!(v["mode"], "ipvs");
        assert_eq!(v["ipvs"]["strictARP"], true);
        assert_eq!(
            v["ipvs"]["excludeCIDRs"],
            serde_json::json!(["192.168.10.100/32"])
        );
        assert_eq!(v["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(v["conntrack"]["maxPerCore"], 32768);
        assert_eq!(v["ipvs"]["tcpTimeout"], "0s");
        assert!(
            v.get("featureGates").is_none(),
            "1.34 has no KubeProxyIPVS gate"
        );
        // The result is a configuration the preflight parser reads as IPVS mode.
        let c = crate::preflight::kubeproxy::parse(&out.yaml).unwrap();
        assert_eq!(c.mode.as_deref(), Some("ipvs"));
    }

    #[test]
    fn the_feature_gate_is_set_from_1_37() {
        let out = ipvs_config(KUBEADM, &[], Some((1, 40))).unwrap();
        let v: Value = serde_saphyr::from_str(&out.yaml).unwrap();
        assert_eq!(v["featureGates"]["KubeProxyIPVS"], true);
        let out = ipvs_config(KUBEADM, &[], None).unwrap();
        assert!(out.notes.iter().any(|n| n.contains("version unknown")));
    }

    #[test]
    fn a_configmap_gives_its_config_conf() {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-proxy\ndata:\n  config.conf: |\n{}",
            KUBEADM
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let out = ipvs_config(&cm, &[], Some((1, 30))).unwrap();
        let v: Value = serde_saphyr::from_str(&out.yaml).unwrap();
        assert_eq!(v["kind"], "KubeProxyConfiguration");
        assert_eq!(v["mode"], "ipvs");
    }
}
