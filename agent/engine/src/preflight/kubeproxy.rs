//! kube-proxy's configuration (KubeProxyConfiguration, the ConfigMap's `config.conf`) and the
//! checks on it. Field names follow kube-proxy's v1alpha1 API (`strictARP`, `clusterCIDR` —
//! acronyms are not camel-cased, so each is renamed explicitly). Unknown fields are kept out
//! of the way, not rejected: the config has many fields the checks do not need.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Finding, Severity};

/// The parts of KubeProxyConfiguration the checks read.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct KubeProxyConfig {
    /// `kind` (KubeProxyConfiguration).
    #[serde(default)]
    pub kind: Option<String>,
    /// `mode`: "" (iptables on Linux), iptables, ipvs, nftables.
    #[serde(default)]
    pub mode: Option<String>,
    /// `ipvs`.
    #[serde(default)]
    pub ipvs: Option<IpvsConfig>,
    /// `iptables`.
    #[serde(default)]
    pub iptables: Option<IptablesConfig>,
    /// `nodePortAddresses`.
    #[serde(default, rename = "nodePortAddresses")]
    pub node_port_addresses: Option<Vec<String>>,
    /// `clusterCIDR`.
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// `detectLocalMode`.
    #[serde(default, rename = "detectLocalMode")]
    pub detect_local_mode: Option<String>,
    /// `featureGates`.
    #[serde(default, rename = "featureGates")]
    pub feature_gates: Option<BTreeMap<String, bool>>,
}

/// `ipvs:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct IpvsConfig {
    /// Scheduler ("" means rr).
    #[serde(default)]
    pub scheduler: Option<String>,
    /// strictARP.
    #[serde(default, rename = "strictARP")]
    pub strict_arp: Option<bool>,
    /// excludeCIDRs.
    #[serde(default, rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    /// tcpTimeout (a Go duration, "0s" keeps the kernel's 900 s).
    #[serde(default, rename = "tcpTimeout")]
    pub tcp_timeout: Option<String>,
    /// tcpFinTimeout.
    #[serde(default, rename = "tcpFinTimeout")]
    pub tcp_fin_timeout: Option<String>,
    /// udpTimeout.
    #[serde(default, rename = "udpTimeout")]
    pub udp_timeout: Option<String>,
}

/// `iptables:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct IptablesConfig {
    /// masqueradeAll.
    #[serde(default, rename = "masqueradeAll")]
    pub masquerade_all: Option<bool>,
    /// masqueradeBit.
    #[serde(default, rename = "masqueradeBit")]
    pub masquerade_bit: Option<i64>,
    /// localhostNodePorts (default true since 1.26).
    #[serde(default, rename = "localhostNodePorts")]
    pub localhost_node_ports: Option<bool>,
}

#[derive(Deserialize)]
struct ConfigMap {
    kind: Option<String>,
    data: Option<BTreeMap<String, String>>,
}

/// Parses a KubeProxyConfiguration, or a ConfigMap holding one under `config.conf`
/// (kubeadm's kube-system/kube-proxy). Errors say what is wrong, with the YAML position.
pub fn parse(text: &str) -> Result<KubeProxyConfig, String> {
    if let Ok(cm) = serde_saphyr::from_str::<ConfigMap>(text)
        && cm.kind.as_deref() == Some("ConfigMap")
    {
        let data = cm.data.unwrap_or_default();
        let Some(conf) = data
            .get("config.conf")
            .or_else(|| data.values().find(|v| v.contains("KubeProxyConfiguration")))
        else {
            return Err("a ConfigMap without a config.conf key".into());
        };
        return parse(conf);
    }
    let c: KubeProxyConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    match c.kind.as_deref() {
        Some("KubeProxyConfiguration") | None => Ok(c),
        Some(k) => Err(format!("kind {k}, not KubeProxyConfiguration")),
    }
}

/// IPVS schedulers kube-proxy documents (virtual-ips.md; kube-proxy-facts.md §2.2) plus the
/// other kernel schedulers (Kconfig IP_VS_FO/OVF/TWOS).
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh", "fo", "ovf", "twos",
];

impl KubeProxyConfig {
    /// The configured scheduler ("rr" when empty).
    pub fn scheduler(&self) -> &str {
        match self.ipvs.as_ref().and_then(|i| i.scheduler.as_deref()) {
            Some(s) if !s.is_empty() => s,
            _ => "rr",
        }
    }
}

/// Checks on kube-proxy's configuration; `None` when none was given.
pub fn checks(config: Option<&KubeProxyConfig>) -> Vec<Finding> {
    let Some(c) = config else {
        return vec![Finding::new(
            "kube-proxy-config-missing",
            Severity::Info,
            "kube-proxy's configuration was not read",
            vec!["no --kube-proxy-config".into()],
            "Pass --kube-proxy-config with kube-proxy's config.conf (kubectl -n kube-system get cm kube-proxy -o yaml > kube-proxy.yaml works too) to check mode, scheduler, strictARP, excludeCIDRs and localhost NodePorts.",
        )];
    };
    let mut out = Vec::new();
    let mode = c.mode.as_deref().unwrap_or("");
    let (sev, title, rem) = match mode {
        "" | "iptables" => (
            Severity::Info,
            format!("kube-proxy runs in iptables mode (mode: {mode:?})"),
            "This is the migration's starting point.",
        ),
        "ipvs" => (
            Severity::Warning,
            "kube-proxy already runs in IPVS mode".to_owned(),
            "Nothing to migrate: check for iptables-mode leftovers instead (stale KUBE-SVC/KUBE-SEP chains and filter REJECT rules: `ipvs-migrate inventory` lists them).",
        ),
        "nftables" => (
            Severity::Warning,
            "kube-proxy runs in nftables mode".to_owned(),
            "nftables mode is upstream's recommended mode; moving to the deprecated IPVS mode would be a step back.",
        ),
        _ => (
            Severity::Warning,
            format!("unknown kube-proxy mode {mode:?}"),
            "Check kube-proxy's configuration.",
        ),
    };
    out.push(Finding::new(
        "kube-proxy-mode",
        sev,
        title,
        vec![format!("mode: {mode:?}")],
        rem,
    ));
    let sched = c.scheduler();
    if !SCHEDULERS.contains(&sched) {
        out.push(Finding::new(
            "kube-proxy-scheduler",
            Severity::Warning,
            format!("scheduler {sched:?} is not a known IPVS scheduler"),
            vec![format!("ipvs.scheduler: {sched:?}")],
            "kube-proxy accepts any name and tries it in the kernel (kubernetes/kubernetes#114878); a typo makes IPVS-mode kube-proxy exit at start. Use rr unless you need another.",
        ));
    }
    if !c.ipvs.as_ref().and_then(|i| i.strict_arp).unwrap_or(false) {
        out.push(Finding::new(
            "kube-proxy-strict-arp",
            Severity::Info,
            "ipvs.strictARP is off",
            vec!["ipvs.strictARP: false (or unset)".into()],
            "With VIPs bound on kube-ipvs0 every node answers ARP for LoadBalancer and external IPs unless arp_ignore=1/arp_announce=2; ipvs-migrate sets them before binding such IPs, but kube-proxy in IPVS mode only does with strictARP: true. MetalLB in L2 mode requires strictARP: true (MetalLB installation docs).",
        ));
    }
    let localhost = c
        .iptables
        .as_ref()
        .and_then(|i| i.localhost_node_ports)
        .unwrap_or(true);
    // `primary` (kube-proxy ≥ 1.29) means the node's primary IPs: loopback is excluded too.
    let loopback_excluded = c
        .node_port_addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty() && !a.iter().any(|n| n.starts_with("127.")));
    if localhost && !loopback_excluded {
        out.push(Finding::new(
            "kube-proxy-localhost-nodeports",
            Severity::Warning,
            "NodePorts answer on localhost in iptables mode, not in IPVS mode",
            vec![format!(
                "iptables.localhostNodePorts: {} (default true); nodePortAddresses: {:?}",
                localhost,
                c.node_port_addresses.clone().unwrap_or_default()
            )],
            "Clients reaching NodePorts on 127.0.0.1 lose them in IPVS mode (virtual-ips.md). Check the counter kubeproxy_iptables_localhost_nodeports_accepted_packets_total (or nfacct localhost_nps_accepted_pkts) is not moving before migrating.",
        ));
    }
    if let Some(ex) = c
        .ipvs
        .as_ref()
        .and_then(|i| i.exclude_cidrs.clone())
        .filter(|e| !e.is_empty())
    {
        out.push(Finding::new(
            "kube-proxy-exclude-cidrs",
            Severity::Info,
            format!("ipvs.excludeCIDRs: {}", ex.join(", ")),
            ex.iter().map(|e| format!("excludeCIDRs: {e}")).collect(),
            "IPVS-mode kube-proxy leaves virtual servers in these CIDRs alone; finalize keeps them and adds any foreign virtual servers it finds.",
        ));
    }
    let tcp = c
        .ipvs
        .as_ref()
        .and_then(|i| i.tcp_timeout.clone())
        .unwrap_or_default();
    if tcp.is_empty() || tcp == "0s" || tcp == "0" {
        out.push(Finding::new(
            "kube-proxy-ipvs-timeouts",
            Severity::Info,
            "IPVS drops TCP connections idle for 15 minutes (the kernel's default)",
            vec![format!("ipvs.tcpTimeout: {tcp:?} (0 keeps the kernel's 900 s)")],
            "iptables mode keeps idle established connections for conntrack's 5 days; long-lived idle connections (databases, websockets without keepalive) break after 15 minutes in IPVS mode unless ipvs.tcpTimeout is raised or the clients send keepalives (kubernetes/kubernetes#71358).",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acronym_keys_are_read() {
        let c = parse("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: true\n  excludeCIDRs: [10.200.0.0/16]\n  scheduler: lc\nclusterCIDR: 10.244.0.0/16\n").unwrap();
        assert_eq!(c.mode.as_deref(), Some("ipvs"));
        assert_eq!(c.ipvs.as_ref().unwrap().strict_arp, Some(true));
        assert_eq!(c.scheduler(), "lc");
        assert_eq!(c.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
    }

    #[test]
    fn a_configmap_is_unwrapped() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-proxy\n  namespace: kube-system\ndata:\n  config.conf: |-\n    apiVersion: kubeproxy.config.k8s.io/v1alpha1\n    kind: KubeProxyConfiguration\n    mode: \"\"\n";
        assert_eq!(parse(cm).unwrap().mode.as_deref(), Some(""));
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        assert!(parse("mode: [unclosed\n").is_err());
        assert!(parse("kind: Deployment\n").is_err());
        assert!(parse("ipvs:\n  strictARP: maybe\n").is_err());
    }
}
