//! Preflight: node facts in, findings out. One small pure function per check; the report,
//! the metrics and the cutover gate all read the same findings.
//!
//! Facts are gathered by the host crate (relative to a host root); nothing here reads files.
//! Knowledge that is data (kernel thresholds, OS support) lives in [`tables`], each row
//! citing its source. Every check id has a section in docs/runbooks/preflight.md (a test
//! enforces it).

pub mod checks;
pub mod kubeproxy;
pub mod tables;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How much a finding matters for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The node cannot migrate until this is fixed.
    Blocker,
    /// Migration can proceed; behaviour or risk the operator must know about.
    Warning,
    /// Context.
    Info,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable check id (also the runbook anchor).
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// One line: what was found.
    pub title: String,
    /// What the check saw (file, value), so the operator can verify it.
    pub evidence: Vec<String>,
    /// What to do.
    pub remediation: String,
    /// Runbook link (docs/runbooks/preflight.md#<id>).
    pub runbook: String,
}

impl Finding {
    /// A finding with its runbook link derived from the id.
    pub fn new(
        id: &str,
        severity: Severity,
        title: impl Into<String>,
        evidence: Vec<String>,
        remediation: impl Into<String>,
    ) -> Finding {
        Finding {
            id: id.to_owned(),
            severity,
            title: title.into(),
            evidence,
            remediation: remediation.into(),
            runbook: format!("docs/runbooks/preflight.md#{id}"),
        }
    }
}

/// `/etc/os-release` fields the checks use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID`
    pub id: String,
    /// `ID_LIKE`
    pub id_like: Vec<String>,
    /// `VERSION_ID`
    pub version_id: String,
    /// `PRETTY_NAME`
    pub pretty_name: String,
}

impl OsRelease {
    /// Parses os-release(5) text: `KEY=value`, values optionally quoted.
    pub fn parse(text: &str) -> OsRelease {
        let mut o = OsRelease::default();
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            match k.trim() {
                "ID" => o.id = v.to_ascii_lowercase(),
                "ID_LIKE" => {
                    o.id_like = v.split_whitespace().map(str::to_ascii_lowercase).collect()
                }
                "VERSION_ID" => o.version_id = v,
                "PRETTY_NAME" => o.pretty_name = v,
                _ => {}
            }
        }
        o
    }
}

/// What the node says about kernel modules, from every source kube-proxy's own check used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleFacts {
    /// First column of /proc/modules; `None` if the file does not exist (no module support).
    pub loaded: Option<Vec<String>>,
    /// Names under /sys/module (loaded modules and built-ins with parameters).
    pub sys_module: Vec<String>,
    /// Module names from /lib/modules/<release>/modules.builtin.
    pub builtin: Option<Vec<String>>,
    /// Module names that can be loaded (files under /lib/modules/<release>/kernel).
    pub loadable: Option<Vec<String>>,
    /// Kernel config (`CONFIG_X` → `y`/`m`/…), from /proc/config.gz or /boot/config-<release>.
    pub config: Option<BTreeMap<String, String>>,
}

/// A `key = value` line of a persistent sysctl file (sysctl.d(5)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlSetting {
    /// File (relative to the host root).
    pub file: String,
    /// Line.
    pub line: u32,
    /// Key, dotted (`net.ipv4.vs.conntrack`).
    pub key: String,
    /// Value.
    pub value: String,
}

/// A CNI network configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniConf {
    /// Path of the file (/etc/cni/net.d/…, or k3s' own CNI directory).
    pub file: String,
    /// Plugin types it lists (`calico`, `flannel`, `portmap`, …).
    pub types: Vec<String>,
}

/// Everything the preflight checks look at, gathered by the host crate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFacts {
    /// Root the files were read under.
    pub host_root: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel_release: Option<String>,
    /// /etc/os-release (or /usr/lib/os-release).
    pub os: Option<OsRelease>,
    /// Modules.
    pub modules: ModuleFacts,
    /// Current sysctl values under /proc/sys (dotted keys) the checks need; absent keys are
    /// absent from the map.
    pub sysctls: BTreeMap<String, String>,
    /// Persistent sysctl settings (/etc/sysctl.conf, /etc/sysctl.d, /run/sysctl.d,
    /// /usr/lib/sysctl.d).
    pub sysctl_files: Vec<SysctlSetting>,
    /// /etc/cni/net.d contents.
    pub cni: Vec<CniConf>,
    /// `kube-ipvs0` exists (/sys/class/net/kube-ipvs0).
    pub kube_ipvs0: bool,
    /// How kube-proxy runs, from host files: static pod manifests found (kubeadm
    /// /etc/kubernetes/manifests, RKE2 /var/lib/rancher/rke2/agent/pod-manifests).
    pub kube_proxy_manifests: Vec<String>,
    /// k3s is installed (/var/lib/rancher/k3s or /etc/rancher/k3s): kube-proxy is embedded.
    pub k3s: bool,
    /// Virtual servers in /proc/net/ip_vs (`None`: the file does not exist, IPVS not loaded).
    pub ipvs_services: Option<Vec<IpvsService>>,
    /// Kubernetes version from `--kubernetes-version`, or a kube-proxy static pod's image tag
    /// (`v1.29.3`), if any.
    pub kube_proxy_image_version: Option<String>,
    /// Facts only a live node has (tools, kube-proxy's healthz); `None` for a --host-root.
    pub live: Option<LiveFacts>,
    /// The iptables package version inside the running kube-proxy's filesystem
    /// (/proc/<pid>/root/var/lib/dpkg/status[.d]), when its process is visible.
    pub kube_proxy_iptables: Option<String>,
    /// Result of `--probe` (a throw-away virtual server created and deleted in this network
    /// namespace): what happened, or why it failed and whether that means "no IPVS".
    pub ipvs_probe: Option<ProbeResult>,
    /// Files that exist but could not be read or parsed (path: reason).
    pub unreadable: Vec<String>,
}

/// A virtual server as /proc/net/ip_vs lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvsService {
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub protocol: String,
    /// Address (or the firewall mark for FWM).
    pub address: String,
    /// Port (0 for FWM).
    pub port: u16,
    /// Scheduler.
    pub scheduler: String,
}

/// Parses /proc/net/ip_vs (net/netfilter/ipvs/ip_vs_ctl.c `ip_vs_info_seq_show`): service lines
/// are `PROT HEXADDR:HEXPORT SCHED [flags]`, IPv6 addresses in brackets; destination lines
/// start with `->`.
pub fn parse_proc_ip_vs(text: &str) -> Vec<IpvsService> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(proto), Some(addr)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !matches!(proto, "TCP" | "UDP" | "SCTP" | "FWM") {
            continue;
        }
        let scheduler = parts.next().unwrap_or("").to_owned();
        if proto == "FWM" {
            let mark = u32::from_str_radix(addr, 16)
                .map(|m| m.to_string())
                .unwrap_or_else(|_| addr.to_owned());
            out.push(IpvsService {
                protocol: proto.into(),
                address: format!("fwmark {mark}"),
                port: 0,
                scheduler,
            });
            continue;
        }
        let Some((a, p)) = addr.rsplit_once(':') else {
            continue;
        };
        let port = u16::from_str_radix(p, 16).unwrap_or(0);
        let address = if let Some(v6) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map(|x| x.to_string())
                .unwrap_or_else(|_| v6.to_owned())
        } else {
            u32::from_str_radix(a, 16)
                .map(|n| std::net::Ipv4Addr::from(n).to_string())
                .unwrap_or_else(|_| a.to_owned())
        };
        out.push(IpvsService {
            protocol: proto.into(),
            address,
            port,
            scheduler,
        });
    }
    out
}

/// The outcome of the IPVS probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum ProbeResult {
    /// The virtual server was created, read back and deleted.
    Ok {
        /// What was done.
        detail: String,
    },
    /// The kernel has no IPVS, or the scheduler does not exist.
    Unavailable {
        /// The error.
        detail: String,
    },
    /// Not allowed (no CAP_NET_ADMIN).
    Denied {
        /// The error.
        detail: String,
    },
    /// Anything else.
    Failed {
        /// The error.
        detail: String,
    },
}

/// What only a live node can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveFacts {
    /// `ipset --version` output, or why it failed.
    pub ipset_version: Result<String, String>,
    /// `iptables --version` output, or why it failed.
    pub iptables_version: Result<String, String>,
    /// kube-proxy's /healthz answer (status line and body), or why it failed.
    pub kube_proxy_healthz: Result<String, String>,
}

/// Kernel release → (major, minor), e.g. `6.1.0-27-amd64` → (6, 1).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Runs every check. `kube_proxy` is kube-proxy's configuration when one was given.
pub fn run(facts: &NodeFacts, kube_proxy: Option<&kubeproxy::KubeProxyConfig>) -> Vec<Finding> {
    let scheduler = kube_proxy.map_or("rr", |k| k.scheduler());
    let mut out = Vec::new();
    out.extend(kubeproxy::checks(kube_proxy));
    out.extend(checks::kube_proxy_runtime(facts));
    out.extend(checks::kernel_modules(facts, scheduler));
    out.extend(checks::kernel_version(facts));
    out.extend(checks::os_support(facts));
    out.extend(checks::sysctl_files(facts));
    out.extend(checks::sysctl_values(facts));
    out.extend(checks::cni(facts));
    out.extend(checks::kube_ipvs0(facts));
    out.extend(checks::foreign_virtual_servers(facts));
    out.extend(checks::live(facts));
    out.extend(checks::deprecation(facts));
    out.extend(checks::probe(facts));
    out.extend(checks::iptables_skew(facts));
    out.extend(checks::unreadable(facts));
    out.sort_by(|a, b| (a.severity, &a.id).cmp(&(b.severity, &b.id)));
    out
}

/// Every check id, for the runbook test and the docs.
pub const CHECK_IDS: &[&str] = &[
    "kernel-modules",
    "kernel-conn-reuse-stall",
    "kernel-version",
    "kernel-nftables-ready",
    "os-unknown",
    "os-unsupported",
    "os-supported",
    "sysctl-nonexistent-key",
    "cni-calico",
    "cni-cilium",
    "cni-kube-router",
    "cni-antrea",
    "cni-flannel",
    "cni-other-known",
    "cni-unknown",
    "cni-none",
    "kube-ipvs0-present",
    "host-file-unreadable",
    "kube-proxy-config-missing",
    "kube-proxy-mode",
    "kube-proxy-scheduler",
    "kube-proxy-strict-arp",
    "kube-proxy-localhost-nodeports",
    "kube-proxy-exclude-cidrs",
    "kube-proxy-ipvs-timeouts",
    "kube-proxy-daemonset",
    "kube-proxy-static-pod",
    "kube-proxy-embedded-k3s",
    "ipvs-foreign-virtual-servers",
    "tools-ipset",
    "tools-iptables",
    "kube-proxy-health",
    "deprecation-timeline",
    "scale-decision",
    "sysctl-values",
    "behaviour-change",
    "behaviour-not-evaluated",
    "ipvs-probe",
    "lb-strict-arp",
    "iptables-skew",
    "api-drift",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_id_has_a_runbook_section() {
        let runbook = include_str!("../../../docs/runbooks/preflight.md");
        for id in CHECK_IDS {
            assert!(
                runbook.contains(&format!("\n## {id}\n")),
                "docs/runbooks/preflight.md has no section for {id}"
            );
        }
    }

    #[test]
    fn every_id_the_checks_emit_is_listed() {
        let sources = [
            include_str!("preflight/checks.rs"),
            include_str!("preflight/tables.rs"),
        ];
        for src in sources {
            for part in src.split("Finding::new(").skip(1) {
                let lit = part.trim_start();
                if let Some(rest) = lit.strip_prefix('"') {
                    let id = rest.split('"').next().unwrap_or("");
                    assert!(CHECK_IDS.contains(&id), "check id {id} is not in CHECK_IDS");
                }
            }
        }
        for (_, id, _, _, _) in tables::CNI {
            assert!(CHECK_IDS.contains(id), "CNI id {id} is not in CHECK_IDS");
        }
    }

    #[test]
    fn proc_net_ip_vs_is_parsed() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  0A600001:01BB rr\n  -> AC120002:1A0A      Masq    1      0          0\nUDP  [fd00:0030:0000:0000:0000:0000:0000:000a]:0035 sh persistent 10800\nFWM  00000010 wlc\n";
        let v = parse_proc_ip_vs(text);
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0].address.as_str(), v[0].port, v[0].scheduler.as_str()),
            ("10.96.0.1", 443, "rr")
        );
        assert_eq!((v[1].address.as_str(), v[1].port), ("fd00:30::a", 53));
        assert_eq!(v[2].address, "fwmark 16");
    }

    #[test]
    fn an_iptables_version_skew_is_a_warning() {
        let mut f = NodeFacts {
            kube_proxy_iptables: Some("1.8.7-1".into()),
            live: Some(LiveFacts {
                ipset_version: Ok("ipset v7.17".into()),
                iptables_version: Ok("iptables v1.8.9 (nf_tables)".into()),
                kube_proxy_healthz: Err("no".into()),
            }),
            ..NodeFacts::default()
        };
        let w = checks::iptables_skew(&f);
        assert_eq!(
            (w[0].id.as_str(), w[0].severity),
            ("iptables-skew", Severity::Warning)
        );
        f.kube_proxy_iptables = Some("1.8.9-2".into());
        assert_eq!(checks::iptables_skew(&f)[0].severity, Severity::Info);
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.1.0-27-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("4.18.0-513.5.1.el8_9.x86_64"), Some((4, 18)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
