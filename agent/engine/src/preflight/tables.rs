//! Knowledge as data. Each row cites its source; change a row, change its citation.

/// Operating systems kube-proxy IPVS migrations are supported on: (os-release `ID`, minimum
/// `VERSION_ID` major, display name, source). A lower version is a blocker.
pub const OS_SUPPORT: &[(&str, u32, &str, &str)] = &[
    (
        "rhel",
        8,
        "Red Hat Enterprise Linux",
        "RHEL 7 ended maintenance 2024-06 (Red Hat life cycle); its 3.10 kernel predates the IPVS fixes kube-proxy relies on",
    ),
    ("centos", 8, "CentOS", "as RHEL"),
    ("rocky", 8, "Rocky Linux", "as RHEL (Rocky starts at 8)"),
    (
        "almalinux",
        8,
        "AlmaLinux",
        "as RHEL (AlmaLinux starts at 8)",
    ),
    (
        "ubuntu",
        20,
        "Ubuntu",
        "Ubuntu 18.04 standard support ended 2023-05 (Ubuntu release cycle)",
    ),
    (
        "debian",
        11,
        "Debian",
        "Debian 10 LTS ended 2024-06 (Debian LTS)",
    ),
    (
        "amzn",
        2,
        "Amazon Linux",
        "Amazon Linux 2 and 2023 (EKS-optimized AMIs)",
    ),
    ("flatcar", 0, "Flatcar Container Linux", "rolling release"),
    (
        "fedora",
        0,
        "Fedora CoreOS",
        "rolling release (VARIANT_ID=coreos)",
    ),
    (
        "sles",
        15,
        "SUSE Linux Enterprise Server",
        "SLES 12 general support ended 2024-10 (SUSE life cycle)",
    ),
    (
        "sle-micro",
        5,
        "SUSE Linux Enterprise Micro",
        "SUSE life cycle",
    ),
    ("opensuse-leap", 15, "openSUSE Leap", "openSUSE life cycle"),
];

/// Kernel modules kube-proxy's IPVS mode needed before it replaced the module check with a
/// probe (pkg/proxy/ipvs/proxier.go ≤ v1.26 `ipvsModules`; shared/reference/kube-proxy-facts.md
/// §2.8), plus the configured scheduler's module (PR kubernetes/kubernetes#93040).
pub const REQUIRED_MODULES: &[&str] = &["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"];

/// nf_conntrack_ipv4 was merged into nf_conntrack in Linux 4.19.
pub const CONNTRACK_MERGED: (u32, u32) = (4, 19);

/// Kernels with the conn_reuse_mode=1 one-second stall on port reuse: ≥ 4.1 and < 5.9
/// (kubernetes/kubernetes#93297; kube-proxy sets conn_reuse_mode=0 only on these).
pub const CONN_REUSE_STALL: ((u32, u32), (u32, u32)) = ((4, 1), (5, 9));

/// kube-proxy's nftables mode needs Linux ≥ 5.13 (KEP-3866).
pub const NFTABLES_MIN: (u32, u32) = (5, 13);

/// The sysctls that exist under net.ipv4.vs (kernel Documentation/networking/ipvs-sysctl.rst).
/// A persistent setting of any other key there is silently ignored by the kernel.
pub const IPVS_SYSCTLS: &[&str] = &[
    "am_droprate",
    "amemthresh",
    "backup_only",
    "cache_bypass",
    "conn_reuse_mode",
    "conntrack",
    "debug_level",
    "drop_entry",
    "drop_packet",
    "est_cpulist",
    "est_nice",
    "expire_nodest_conn",
    "expire_quiescent_template",
    "ignore_tunneled",
    "lblc_expiration",
    "lblcr_expiration",
    "nat_icmp_send",
    "pmtu_disc",
    "run_estimation",
    "schedule_icmp",
    "secure_tcp",
    "sloppy_sctp",
    "sloppy_tcp",
    "snat_reroute",
    "sync_persist_mode",
    "sync_ports",
    "sync_qlen_max",
    "sync_refresh_period",
    "sync_retries",
    "sync_sock_size",
    "sync_threshold",
    "sync_version",
];

/// CNI plugin types and what they mean for an IPVS migration: (type, check id, severity is
/// warning?, what to know, source).
pub const CNI: &[(&str, &str, bool, &str, &str)] = &[
    (
        "calico",
        "cni-calico",
        true,
        "Calico turns on its IPVS handling only if kube-ipvs0 exists when calico-node starts: restart calico-node after kube-ipvs0 is created (cutover's prepare step does); a custom NodePort range also needs Felix's kubeNodePortRanges",
        "docs.tigera.io/calico/latest/networking/configuring/use-ipvs (kube-proxy-facts.md §4 #12)",
    ),
    (
        "cilium-cni",
        "cni-cilium",
        true,
        "with kube-proxy replacement Cilium, not kube-proxy, implements Services and this migration does not apply; without it Cilium works with IPVS-mode kube-proxy",
        "docs.cilium.io kubeproxy-free (kube-proxy-facts.md §5)",
    ),
    (
        "kube-router",
        "cni-kube-router",
        true,
        "kube-router's service proxy programs IPVS itself and deletes virtual servers it does not own (kube-router#770); make sure it runs with --run-service-proxy=false",
        "cloudnativelabs/kube-router docs/user-guide.md",
    ),
    (
        "antrea",
        "cni-antrea",
        true,
        "AntreaProxy implements Services in OVS; with proxyAll it replaces kube-proxy entirely and the migration does not apply",
        "antrea-io/antrea docs/antrea-proxy.md",
    ),
    (
        "flannel",
        "cni-flannel",
        false,
        "Flannel does not implement Services; it works with IPVS-mode kube-proxy",
        "flannel-io/flannel docs (no service proxy)",
    ),
    (
        "weave-net",
        "cni-other-known",
        false,
        "Weave Net does not implement Services",
        "weaveworks/weave docs",
    ),
    (
        "ovn-k8s-cni-overlay",
        "cni-other-known",
        true,
        "OVN-Kubernetes implements Services in OVN and normally runs without kube-proxy",
        "ovn-org/ovn-kubernetes docs",
    ),
    (
        "aws-cni",
        "cni-other-known",
        false,
        "Amazon VPC CNI does not implement Services; EKS supports IPVS-mode kube-proxy",
        "aws/amazon-vpc-cni-k8s; EKS docs (kube-proxy IPVS mode)",
    ),
];
