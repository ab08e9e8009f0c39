//! One pure function per check: `&NodeFacts` → findings.

use super::tables::{
    CNI, CONN_REUSE_STALL, CONNTRACK_MERGED, IPVS_SYSCTLS, NFTABLES_MIN, OS_SUPPORT,
    REQUIRED_MODULES,
};
use super::{Finding, NodeFacts, Severity, kernel_version as parse_kernel_version};

/// Where a module was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleState {
    /// Loaded (/proc/modules or /sys/module).
    Loaded(String),
    /// Built into the kernel.
    Builtin(String),
    /// Not loaded but in the module tree (modprobe will load it).
    Loadable(String),
    /// Configured as a module but the module tree is not visible.
    Unknown(String),
    /// Not available.
    Missing(String),
}

fn config_symbol(module: &str) -> String {
    match module {
        "ip_vs" => "CONFIG_IP_VS".into(),
        "nf_conntrack" => "CONFIG_NF_CONNTRACK".into(),
        "nf_conntrack_ipv4" => "CONFIG_NF_CONNTRACK_IPV4".into(),
        m => format!("CONFIG_{}", m.to_ascii_uppercase()),
    }
}

/// Resolves a module the way kube-proxy's old check did (loaded → built in → loadable).
pub fn module_state(f: &NodeFacts, module: &str) -> ModuleState {
    let m = &f.modules;
    if m.loaded
        .as_ref()
        .is_some_and(|l| l.iter().any(|x| x == module))
    {
        return ModuleState::Loaded("/proc/modules".into());
    }
    if m.sys_module.iter().any(|x| x == module) {
        return ModuleState::Loaded(format!("/sys/module/{module}"));
    }
    if m.builtin
        .as_ref()
        .is_some_and(|b| b.iter().any(|x| x == module))
    {
        return ModuleState::Builtin("modules.builtin".into());
    }
    let sym = config_symbol(module);
    let conf = m
        .config
        .as_ref()
        .and_then(|c| c.get(&sym))
        .map(String::as_str);
    if conf == Some("y") {
        return ModuleState::Builtin(format!("{sym}=y"));
    }
    if m.loadable
        .as_ref()
        .is_some_and(|l| l.iter().any(|x| x == module))
    {
        return ModuleState::Loadable("module tree".into());
    }
    match (conf, &m.loadable, &m.config) {
        (Some("m"), None, _) => {
            ModuleState::Unknown(format!("{sym}=m but no module tree is visible"))
        }
        (_, _, Some(_)) => ModuleState::Missing(match conf {
            Some(v) if v != "n" => format!("{sym}={v}"),
            _ => format!("{sym} is not set"),
        }),
        (_, Some(_), None) => {
            ModuleState::Missing("not loaded, not built in, not in the module tree".into())
        }
        (_, None, None) => ModuleState::Unknown(
            "not loaded, and no module tree or kernel config to tell whether it can be".into(),
        ),
    }
}

/// `kernel-modules`: ip_vs, ip_vs_rr/wrr/sh, the scheduler's module, nf_conntrack.
pub fn kernel_modules(f: &NodeFacts, scheduler: &str) -> Vec<Finding> {
    let mut mods: Vec<String> = REQUIRED_MODULES.iter().map(|s| (*s).to_owned()).collect();
    let sched = format!(
        "ip_vs_{}",
        if scheduler.is_empty() {
            "rr"
        } else {
            scheduler
        }
    );
    if !mods.contains(&sched) {
        mods.push(sched);
    }
    let old = f
        .kernel_release
        .as_deref()
        .and_then(parse_kernel_version)
        .is_some_and(|v| v < CONNTRACK_MERGED);
    // Before 4.19 kube-proxy asked for nf_conntrack_ipv4; vendor kernels with the 4.19 merge
    // backported (RHEL 8's 4.18) only have nf_conntrack, so either satisfies the check there.
    let conntrack = if old
        && !matches!(
            module_state(f, "nf_conntrack_ipv4"),
            ModuleState::Missing(_) | ModuleState::Unknown(_)
        ) {
        "nf_conntrack_ipv4"
    } else {
        "nf_conntrack"
    };
    mods.push(conntrack.to_owned());
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    let mut evidence = Vec::new();
    for m in &mods {
        let st = module_state(f, m);
        let line = match &st {
            ModuleState::Loaded(w) => format!("{m}: loaded ({w})"),
            ModuleState::Builtin(w) => format!("{m}: built in ({w})"),
            ModuleState::Loadable(w) => format!("{m}: loadable ({w})"),
            ModuleState::Unknown(w) => {
                unknown.push(m.clone());
                format!("{m}: unknown ({w})")
            }
            ModuleState::Missing(w) => {
                missing.push(m.clone());
                format!("{m}: MISSING ({w})")
            }
        };
        evidence.push(line);
    }
    // kube-ipvs0 is a dummy link (kube-proxy's IPVS mode and the cutover's prepare step create
    // it; drivers/net/dummy.c, CONFIG_DUMMY). Without the driver the cutover fails late, at
    // prepare. A dummy link that exists proves the driver. Unknown is said, not warned about:
    // stock kernels build it as a module, and creating the link loads it (the rtnetlink core
    // requests the "rtnl-link-dummy" alias), so not being loaded yet is normal.
    let dummy = if f.kube_ipvs0 {
        ModuleState::Loaded("kube-ipvs0 exists".into())
    } else {
        module_state(f, "dummy")
    };
    evidence.push(match &dummy {
        ModuleState::Loaded(w) => format!("dummy (kube-ipvs0): loaded ({w})"),
        ModuleState::Builtin(w) => format!("dummy (kube-ipvs0): built in ({w})"),
        ModuleState::Loadable(w) => format!("dummy (kube-ipvs0): loadable ({w})"),
        ModuleState::Unknown(w) => {
            format!("dummy (kube-ipvs0): unknown ({w}); the cutover's prepare step needs it")
        }
        ModuleState::Missing(w) => {
            missing.push("dummy".into());
            format!("dummy (kube-ipvs0): MISSING ({w})")
        }
    });
    let (severity, title, remediation) = if !missing.is_empty() {
        (
            Severity::Blocker,
            format!("kernel modules missing: {}", missing.join(", ")),
            "Use a kernel built with IPVS (CONFIG_IP_VS and the schedulers as modules or built in) and dummy links (CONFIG_DUMMY, for kube-ipvs0), e.g. the distribution's stock kernel; kube-proxy's IPVS mode exits at start without them.".to_owned(),
        )
    } else if !unknown.is_empty() {
        (
            Severity::Warning,
            format!("cannot tell whether these modules are available: {}", unknown.join(", ")),
            "Mount the host's /lib/modules (and /proc) into the agent, or run `ipvs-migrate preflight --probe`, which creates a throw-away virtual server as kube-proxy does.".to_owned(),
        )
    } else {
        (
            Severity::Info,
            "all IPVS kernel modules are available".to_owned(),
            "Nothing to do.".to_owned(),
        )
    };
    vec![Finding::new(
        "kernel-modules",
        severity,
        title,
        evidence,
        remediation,
    )]
}

/// `kernel-version`, `kernel-conn-reuse-stall`, `kernel-nftables-ready`.
pub fn kernel_version(f: &NodeFacts) -> Vec<Finding> {
    let Some(rel) = f.kernel_release.as_deref() else {
        return vec![Finding::new(
            "kernel-version",
            Severity::Warning,
            "kernel release unknown",
            vec!["/proc/sys/kernel/osrelease not readable".into()],
            "Run preflight with the host's /proc mounted (--host-root).",
        )];
    };
    let Some(v) = parse_kernel_version(rel) else {
        return vec![Finding::new(
            "kernel-version",
            Severity::Warning,
            format!("kernel release {rel:?} not understood"),
            vec![format!("osrelease = {rel}")],
            "Check /proc/sys/kernel/osrelease.",
        )];
    };
    let mut out = vec![Finding::new(
        "kernel-version",
        Severity::Info,
        format!("kernel {rel}"),
        vec![format!("/proc/sys/kernel/osrelease = {rel}")],
        "Nothing to do.",
    )];
    if v >= CONN_REUSE_STALL.0 && v < CONN_REUSE_STALL.1 {
        out.push(Finding::new(
            "kernel-conn-reuse-stall",
            Severity::Warning,
            format!("kernel {}.{} has the IPVS conn_reuse_mode stall (fixed in 5.9)", v.0, v.1),
            vec![format!("kernel {rel} is in [4.1, 5.9)")],
            "kube-proxy (and ipvs-migrate) set net.ipv4.vs.conn_reuse_mode=0 here, which avoids the 1 s connect stall but can send reused source ports to removed endpoints; prefer a ≥ 5.9 kernel (kubernetes/kubernetes#93297).",
        ));
    }
    let nft = v >= NFTABLES_MIN;
    out.push(Finding::new(
        "kernel-nftables-ready",
        Severity::Info,
        if nft {
            format!("kernel {}.{} can run kube-proxy's nftables mode, upstream's recommended target", v.0, v.1)
        } else {
            format!("kernel {}.{} is too old for kube-proxy's nftables mode (needs 5.13)", v.0, v.1)
        },
        vec![format!("kernel {rel}; nftables mode needs ≥ 5.13 (KEP-3866)")],
        if nft {
            "IPVS mode is deprecated in Kubernetes 1.35, off by default in 1.40 and removed in 1.43: treat IPVS as a bridge and plan the move to nftables mode."
        } else {
            "Upstream recommends staying on iptables mode on kernels too old for nftables; migrate to IPVS only for the scale benefit, knowing it is removed in Kubernetes 1.43."
        },
    ));
    out
}

/// `os-supported`, `os-unsupported`, `os-unknown`.
pub fn os_support(f: &NodeFacts) -> Vec<Finding> {
    let Some(os) = &f.os else {
        return vec![Finding::new(
            "os-unknown",
            Severity::Warning,
            "no /etc/os-release",
            vec!["/etc/os-release and /usr/lib/os-release not readable".into()],
            "Run preflight with the host's /etc mounted (--host-root).",
        )];
    };
    let row = OS_SUPPORT.iter().find(|r| r.0 == os.id).or_else(|| {
        OS_SUPPORT
            .iter()
            .find(|r| os.id_like.iter().any(|l| l == r.0) && r.0 != "fedora")
    });
    let Some((id, min, name, source)) = row else {
        return vec![Finding::new(
            "os-unknown",
            Severity::Warning,
            format!("{} is not in the support table", os.pretty_name),
            vec![format!("ID={} VERSION_ID={}", os.id, os.version_id)],
            "Check the kernel findings carefully; the support table lists the distributions this tool is tested against.",
        )];
    };
    let major: u32 = os
        .version_id
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let evidence = vec![
        format!(
            "ID={} VERSION_ID={} PRETTY_NAME={}",
            os.id, os.version_id, os.pretty_name
        ),
        format!("table: {id} ≥ {min} ({source})"),
    ];
    if *min > 0 && major < *min {
        vec![Finding::new(
            "os-unsupported",
            Severity::Blocker,
            format!(
                "{} is older than the supported {name} {min}",
                os.pretty_name
            ),
            evidence,
            format!("Upgrade the node to {name} {min} or later before migrating."),
        )]
    } else {
        vec![Finding::new(
            "os-supported",
            Severity::Info,
            format!("{} is supported", os.pretty_name),
            evidence,
            "Nothing to do.",
        )]
    }
}

/// `sysctl-nonexistent-key`: persistent settings of keys the kernel does not have.
pub fn sysctl_files(f: &NodeFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &f.sysctl_files {
        let Some(name) = s.key.strip_prefix("net.ipv4.vs.") else {
            continue;
        };
        if IPVS_SYSCTLS.contains(&name) {
            continue;
        }
        let remedy = if name == "conn_tab_size" {
            "net.ipv4.vs.conn_tab_size does not exist: the IPVS connection table is sized by the ip_vs module parameter conn_tab_bits (e.g. `options ip_vs conn_tab_bits=18` in /etc/modprobe.d/ip_vs.conf, then reload ip_vs or reboot). Remove the line.".to_owned()
        } else {
            format!(
                "net.ipv4.vs.{name} is not an IPVS sysctl (kernel Documentation/networking/ipvs-sysctl.rst); remove the line."
            )
        };
        out.push(Finding::new(
            "sysctl-nonexistent-key",
            Severity::Warning,
            format!("{} sets {}, which the kernel does not have", s.file, s.key),
            vec![format!("{}:{}: {} = {}", s.file, s.line, s.key, s.value)],
            remedy,
        ));
    }
    out
}

/// `cni-*`: what the node's CNI means for the migration.
pub fn cni(f: &NodeFacts) -> Vec<Finding> {
    if f.cni.is_empty() {
        return vec![Finding::new(
            "cni-none",
            Severity::Warning,
            "no CNI configuration in /etc/cni/net.d",
            vec!["/etc/cni/net.d is empty or missing".into()],
            "Check that this is a Kubernetes node and that --host-root points at the host's filesystem.",
        )];
    }
    let mut out = Vec::new();
    let mut seen_known = false;
    for (typ, id, warn, what, source) in CNI {
        let files: Vec<String> = f
            .cni
            .iter()
            .filter(|c| c.types.iter().any(|t| t == typ))
            .map(|c| c.file.clone())
            .collect();
        if files.is_empty() {
            continue;
        }
        seen_known = true;
        out.push(Finding::new(
            id,
            if *warn {
                Severity::Warning
            } else {
                Severity::Info
            },
            format!("CNI {typ} ({})", files.join(", ")),
            vec![
                format!("plugin type {typ} in {}", files.join(", ")),
                format!("source: {source}"),
            ],
            *what,
        ));
    }
    if !seen_known {
        let types: Vec<String> = f
            .cni
            .iter()
            .flat_map(|c| c.types.iter().map(|t| format!("{} ({})", t, c.file)))
            .collect();
        out.push(Finding::new(
            "cni-unknown",
            Severity::Warning,
            "CNI not recognised",
            types,
            "Check whether the CNI implements Services itself (then kube-proxy, and this migration, may not apply) and whether it needs a restart when kube-ipvs0 appears.",
        ));
    }
    out
}

/// `kube-ipvs0-present`.
pub fn kube_ipvs0(f: &NodeFacts) -> Vec<Finding> {
    if !f.kube_ipvs0 {
        return Vec::new();
    }
    vec![Finding::new(
        "kube-ipvs0-present",
        Severity::Warning,
        "kube-ipvs0 already exists",
        vec!["/sys/class/net/kube-ipvs0".into()],
        "Something (an earlier IPVS-mode kube-proxy, or an interrupted migration) created kube-ipvs0: An earlier IPVS-mode kube-proxy or an interrupted migration left it: list its addresses (`ip addr show kube-ipvs0`) and remove leftovers before migrating.",
    )]
}

/// `host-file-unreadable`.
pub fn unreadable(f: &NodeFacts) -> Vec<Finding> {
    if f.unreadable.is_empty() {
        return Vec::new();
    }
    vec![Finding::new(
        "host-file-unreadable",
        Severity::Warning,
        format!("{} host files could not be read", f.unreadable.len()),
        f.unreadable.clone(),
        "Check the mounts and permissions of --host-root; findings that depend on these files may be incomplete.",
    )]
}

/// `kube-proxy-daemonset`, `kube-proxy-static-pod`, `kube-proxy-embedded-k3s`: how kube-proxy
/// runs decides how `finalize` can switch it to IPVS mode (DESIGN.md, finalize).
pub fn kube_proxy_runtime(f: &NodeFacts) -> Vec<Finding> {
    if f.k3s {
        return vec![Finding::new(
            "kube-proxy-embedded-k3s",
            Severity::Warning,
            "k3s embeds kube-proxy in its own process",
            vec!["/var/lib/rancher/k3s or /etc/rancher/k3s exists".into()],
            "finalize cannot switch kube-proxy with a second DaemonSet here: set `kube-proxy-arg: [proxy-mode=ipvs]` in /etc/rancher/k3s/config.yaml on this node and restart k3s (the k3s procedure in the finalize runbook).",
        )];
    }
    if !f.kube_proxy_manifests.is_empty() {
        return vec![Finding::new(
            "kube-proxy-static-pod",
            Severity::Warning,
            "kube-proxy runs as a static pod",
            f.kube_proxy_manifests.clone(),
            "finalize cannot switch a static pod through the API: edit the manifest's --proxy-mode / config on this node (RKE2: kube-proxy-arg in /etc/rancher/rke2/config.yaml); see docs/runbooks/preflight.md#kube-proxy-static-pod.",
        )];
    }
    vec![Finding::new(
        "kube-proxy-daemonset",
        Severity::Info,
        "kube-proxy runs as a DaemonSet (no static pod manifest, not k3s)",
        vec!["no kube-proxy manifest under /etc/kubernetes/manifests or /var/lib/rancher/rke2/agent/pod-manifests".into()],
        "finalize switches this node with a second, label-selected kube-proxy DaemonSet in IPVS mode.",
    )]
}

/// `ipvs-foreign-virtual-servers`: kube-proxy in iptables mode creates no virtual servers, so
/// any that exist belong to another program (keepalived, kube-router) or are leftovers of an
/// earlier IPVS-mode kube-proxy. IPVS-mode kube-proxy deletes every virtual server it did not
/// create unless `ipvs.excludeCIDRs` covers it (kube-proxy-facts.md §2.1, `cleanLegacyService`).
pub fn foreign_virtual_servers(f: &NodeFacts) -> Vec<Finding> {
    let Some(list) = f.ipvs_services.as_ref().filter(|l| !l.is_empty()) else {
        return Vec::new();
    };
    let mut cidrs: Vec<String> = list
        .iter()
        .filter(|s| s.protocol != "FWM")
        .map(|s| {
            if s.address.contains(':') {
                format!("{}/128", s.address)
            } else {
                format!("{}/32", s.address)
            }
        })
        .collect();
    cidrs.sort();
    cidrs.dedup();
    let evidence = list
        .iter()
        .map(|s| {
            if s.protocol == "FWM" {
                format!("{} {} {}", s.protocol, s.address, s.scheduler)
            } else {
                format!("{} {}:{} {}", s.protocol, s.address, s.port, s.scheduler)
            }
        })
        .collect();
    let leftovers = if f.kube_ipvs0 {
        " kube-ipvs0 also exists: these may be leftovers of an earlier IPVS-mode kube-proxy."
    } else {
        ""
    };
    vec![Finding::new(
        "ipvs-foreign-virtual-servers",
        Severity::Warning,
        format!(
            "{} IPVS virtual servers already exist on this node",
            list.len()
        ),
        evidence,
        format!(
            "IPVS-mode kube-proxy deletes virtual servers it did not create on every sync unless ipvs.excludeCIDRs covers them: add {} to excludeCIDRs (finalize does) or move that program off the node. ipvs-migrate never touches them.{leftovers}",
            if cidrs.is_empty() {
                "their addresses".to_owned()
            } else {
                cidrs.join(", ")
            }
        ),
    )]
}

fn version_at_least(text: &str, want: (u32, u32)) -> Option<bool> {
    // First "vX.Y" or "X.Y" in the text.
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let v = super::kernel_version(&text[start..])?;
    Some(v >= want)
}

/// `tools-ipset`, `tools-iptables`, `kube-proxy-health` (live nodes only).
pub fn live(f: &NodeFacts) -> Vec<Finding> {
    let Some(l) = &f.live else { return Vec::new() };
    let mut out = Vec::new();
    match &l.ipset_version {
        Ok(v) if version_at_least(v, (6, 0)) == Some(true) => out.push(Finding::new("tools-ipset", Severity::Info, format!("ipset: {}", v.trim()), vec![v.trim().to_owned()], "Nothing to do.")),
        Ok(v) => out.push(Finding::new(
            "tools-ipset",
            Severity::Blocker,
            format!("ipset is older than 6.0: {}", v.trim()),
            vec![v.trim().to_owned()],
            "IPVS-mode kube-proxy requires ipset ≥ 6.0 (CanUseIPVSProxier) and ipvs-migrate programs its bypass sets with it: install a current ipset.",
        )),
        Err(e) => out.push(Finding::new(
            "tools-ipset",
            Severity::Blocker,
            "ipset is not available",
            vec![e.clone()],
            "ipvs-migrate programs its bypass sets with ipset (≥ 6.0): install the ipset package, or ship it in the agent image.",
        )),
    }
    match &l.iptables_version {
        Ok(v) => out.push(Finding::new(
            "tools-iptables",
            Severity::Info,
            format!("iptables: {}", v.trim()),
            vec![v.trim().to_owned()],
            "ipvs-migrate must use the same iptables version and backend as kube-proxy (kube-proxy's image ships its own; compare with `kubectl -n kube-system exec ds/kube-proxy -- iptables --version`).",
        )),
        Err(e) => out.push(Finding::new(
            "tools-iptables",
            Severity::Blocker,
            "iptables is not available",
            vec![e.clone()],
            "Install iptables (both iptables-legacy and iptables-nft), or mount the host's binaries and set IPVS_MIGRATE_TOOLS_PATH.",
        )),
    }
    match &l.kube_proxy_healthz {
        Ok(v) if v.starts_with("200") => out.push(Finding::new("kube-proxy-health", Severity::Info, "kube-proxy's /healthz answers 200", vec![v.clone()], "Nothing to do.")),
        Ok(v) => out.push(Finding::new(
            "kube-proxy-health",
            Severity::Warning,
            "kube-proxy's /healthz reports a problem",
            vec![v.clone()],
            "kube-proxy is not syncing its rules (503 means its last sync is too old): fix kube-proxy before migrating; the inventory reads what it wrote.",
        )),
        Err(e) => out.push(Finding::new(
            "kube-proxy-health",
            Severity::Warning,
            "kube-proxy's /healthz is not reachable on 127.0.0.1:10256",
            vec![e.clone()],
            "Check that kube-proxy runs on this node and where healthzBindAddress points; the migration follows kube-proxy's endpoints and needs it healthy.",
        )),
    }
    out
}

/// `deprecation-timeline`: where the cluster's Kubernetes version stands against KEP-5495
/// (IPVS deprecated in 1.35, off by default in 1.40, removed in 1.43; kube-proxy-facts.md §0).
pub fn deprecation(f: &NodeFacts) -> Vec<Finding> {
    let version = f.kube_proxy_image_version.as_deref();
    let v = version.and_then(|s| super::kernel_version(s.trim_start_matches('v')));
    let (sev, title, rem) = match v {
        Some(v) if v >= (1, 43) => (Severity::Blocker, "IPVS mode was removed from kube-proxy in Kubernetes 1.43".to_owned(), "Migrate to nftables mode instead."),
        Some(v) if v >= (1, 40) => (
            Severity::Warning,
            format!("Kubernetes {}.{}: IPVS mode is disabled by default; kube-proxy exits unless the KubeProxyIPVS feature gate is set", v.0, v.1),
            "Prefer nftables mode. IPVS mode needs featureGates: {KubeProxyIPVS: true} in kube-proxy's configuration (plan -o kube-proxy-config writes it) and is removed in 1.43.",
        ),
        Some(v) if v >= (1, 35) => (
            Severity::Warning,
            format!("Kubernetes {}.{}: IPVS mode is deprecated (KEP-5495)", v.0, v.1),
            "IPVS mode is off by default in 1.40 and removed in 1.43: treat it as a bridge and plan nftables mode (kernel ≥ 5.13).",
        ),
        Some(v) => (
            Severity::Info,
            format!("Kubernetes {}.{}: IPVS mode is supported, deprecated from 1.35", v.0, v.1),
            "IPVS mode is deprecated in 1.35, off by default in 1.40, removed in 1.43 (KEP-5495); nftables mode (GA in 1.33) is upstream's recommended target.",
        ),
        None => (
            Severity::Info,
            "Kubernetes version unknown: IPVS mode is deprecated in 1.35, off by default in 1.40, removed in 1.43".to_owned(),
            "Check the cluster's version against the timeline; nftables mode (GA in 1.33, kernel ≥ 5.13) is upstream's recommended target.",
        ),
    };
    let evidence = vec![match version {
        Some(s) => format!(
            "Kubernetes version {s} (--kubernetes-version or the kube-proxy static pod's image)"
        ),
        None => "no kube-proxy static pod image to read the version from".to_owned(),
    }];
    vec![Finding::new(
        "deprecation-timeline",
        sev,
        title,
        evidence,
        rem,
    )]
}

/// `scale-decision`: the runbook's decision tree on the measured inventory (services > 1000 →
/// IPVS pays off; below, iptables' per-connection cost is negligible — Tigera's measurements,
/// performance-facts.md §1.3).
pub fn scale(
    service_ports: usize,
    kube_rules: usize,
    nftables_ready: bool,
    read_millis: Option<u64>,
) -> Finding {
    let big = service_ports > 1000;
    let target = if nftables_ready {
        "nftables mode (upstream's recommendation) or IPVS as a bridge"
    } else {
        "IPVS"
    };
    Finding::new(
        "scale-decision",
        Severity::Info,
        if big {
            format!(
                "{service_ports} service ports: past ~1000 services iptables' linear chains cost CPU and latency; switching to {target} pays off"
            )
        } else {
            format!(
                "{service_ports} service ports: below ~1000 services iptables' per-connection cost is negligible"
            )
        },
        {
            // Restore throughput measured at 220k–340k kube-proxy rules: legacy 42–92k rules/s,
            // nft 22–50k rules/s (performance-facts.md §2.2); a full sync rewrites them all.
            let r = kube_rules as f64;
            let mut ev = vec![
                format!("{service_ports} service ports, {kube_rules} KUBE-* rules"),
                format!(
                    "a full iptables-restore of {kube_rules} rules takes about {:.1}–{:.1} s (legacy) or {:.1}–{:.1} s (nft)",
                    r / 92_000.0,
                    r / 42_000.0,
                    r / 50_000.0,
                    r / 22_000.0
                ),
            ];
            if let Some(ms) = read_millis {
                ev.push(format!(
                    "reading the rules (iptables-save and parsing) took {ms} ms"
                ));
            }
            ev
        },
        if big {
            "Migrate namespace by namespace; the busiest namespaces gain most. The runbook's other rules: more than 5000 new connections/s per node or more than 500 nodes also favour switching, and long-lived connections prefer IPVS (check them against the IPVS idle timeout)."
        } else {
            "A migration is optional at this size unless the runbook's other rules apply: more than 5000 new connections/s per node, more than 500 nodes, or many long-lived connections. Otherwise consider staying on iptables until nftables mode is possible."
        },
    )
}

/// `sysctl-values`: the sysctls an IPVS data plane changes, with their current values
/// (kube-proxy's IPVS proxier `NewProxier`; kube-proxy-facts.md §2.9). Informational, except
/// ip_forward=0 (forwarded pod traffic depends on it) which is a warning.
pub fn sysctl_values(f: &NodeFacts) -> Vec<Finding> {
    let get = |k: &str| f.sysctls.get(k).map(String::as_str);
    let v = f.kernel_release.as_deref().and_then(parse_kernel_version);
    let mut changes = Vec::new();
    let mut want = |key: &str, value: &str| {
        let now = get(key);
        if now != Some(value) {
            let absent = if key.starts_with("net.ipv4.vs.") {
                "(absent until ip_vs is loaded)"
            } else {
                "(not read)"
            };
            changes.push(format!("{key}: {} → {value}", now.unwrap_or(absent)));
        }
    };
    want("net.ipv4.vs.conntrack", "1");
    want("net.ipv4.vs.expire_nodest_conn", "1");
    want("net.ipv4.vs.expire_quiescent_template", "1");
    if v.is_some_and(|v| v >= CONN_REUSE_STALL.0 && v < CONN_REUSE_STALL.1) {
        want("net.ipv4.vs.conn_reuse_mode", "0");
    }
    want("net.ipv4.conf.all.arp_ignore", "1");
    want("net.ipv4.conf.all.arp_announce", "2");
    let mut out = Vec::new();
    if get("net.ipv4.ip_forward") == Some("0") {
        out.push(Finding::new(
            "sysctl-values",
            Severity::Warning,
            "net.ipv4.ip_forward is 0",
            vec!["/proc/sys/net/ipv4/ip_forward = 0".into()],
            "Pods' traffic through Services is forwarded; kube-proxy sets ip_forward=1 in IPVS mode. Find out what turned it off (a hardening profile?) before migrating.",
        ));
    } else if !changes.is_empty() {
        out.push(Finding::new(
            "sysctl-values",
            Severity::Info,
            "sysctls the IPVS data plane sets on this node",
            changes,
            "ipvs-migrate records the previous values and restores them on a full rollback; arp_ignore/arp_announce are set only before LoadBalancer or external IPs are bound (they stop the node answering ARP for VIPs on kube-ipvs0).",
        ));
    }
    out
}

/// `behaviour-change`: what the plan found behaves differently under IPVS (the plan is the one
/// source; preflight only shows it), one finding per kind of difference.
pub fn behaviour(plan_findings: &[crate::plan::PlanFinding]) -> Vec<Finding> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<&crate::plan::PlanFinding>> =
        std::collections::BTreeMap::new();
    for f in plan_findings {
        by_id.entry(f.id.as_str()).or_default().push(f);
    }
    by_id
        .into_iter()
        .map(|(id, fs)| {
            Finding::new(
                "behaviour-change",
                Severity::Warning,
                format!(
                    "{} service port{} behave{} differently under IPVS ({id})",
                    fs.len(),
                    if fs.len() == 1 { "" } else { "s" },
                    if fs.len() == 1 { "s" } else { "" }
                ),
                {
                    // What differs once, then the services (bounded, so reports stay readable).
                    let mut ev = vec![fs[0].message.clone()];
                    let names: Vec<&str> = fs.iter().map(|f| f.service.as_str()).collect();
                    let shown = names.len().min(12);
                    let more = if names.len() > shown { format!(" … and {} more", names.len() - shown) } else { String::new() };
                    ev.push(format!("services: {}{more}", names[..shown].join(", ")));
                    ev
                },
                "Review them before the namespace moves; `ipvs-migrate plan` lists them all and docs/runbooks/preflight.md#behaviour-change explains each kind.".to_owned(),
            )
        })
        .collect()
}

/// `ipvs-probe`: kube-proxy's own test (CanUseIPVSProxier): a throw-away virtual server
/// 198.51.100.0:20000/TCP created with the scheduler, read back and deleted.
pub fn probe(f: &NodeFacts) -> Vec<Finding> {
    use super::ProbeResult;
    let Some(p) = &f.ipvs_probe else {
        return Vec::new();
    };
    let (sev, title, detail, rem) = match p {
        ProbeResult::Ok { detail } => (
            Severity::Info,
            "the IPVS probe succeeded",
            detail,
            "Nothing to do.",
        ),
        ProbeResult::Unavailable { detail } => (
            Severity::Blocker,
            "the IPVS probe failed: no IPVS or no such scheduler in this kernel",
            detail,
            "kube-proxy's IPVS mode runs the same probe at start and exits when it fails: load ip_vs and the scheduler's module (modprobe ip_vs ip_vs_rr) or use a kernel that has them.",
        ),
        ProbeResult::Denied { detail } => (
            Severity::Warning,
            "the IPVS probe was not allowed",
            detail,
            "Run preflight --probe as root (CAP_NET_ADMIN), as the agent's DaemonSet does.",
        ),
        ProbeResult::Failed { detail } => (
            Severity::Blocker,
            "the IPVS probe failed",
            detail,
            "See the error; IPVS-mode kube-proxy would fail the same way.",
        ),
    };
    vec![Finding::new(
        "ipvs-probe",
        sev,
        title,
        vec![detail.clone()],
        rem,
    )]
}

/// `lb-strict-arp`: LoadBalancer IPs will be bound on kube-ipvs0 while kube-proxy's
/// `ipvs.strictARP` is off. With MetalLB in L2 mode every node would then answer ARP for every
/// LB IP (MetalLB installation docs: "strictARP: true" is required with IPVS).
pub fn lb_strict_arp(
    lb_ips: usize,
    kube_proxy: Option<&super::kubeproxy::KubeProxyConfig>,
) -> Vec<Finding> {
    let strict = kube_proxy
        .and_then(|k| k.ipvs.as_ref())
        .and_then(|i| i.strict_arp)
        .unwrap_or(false);
    if lb_ips == 0 || strict {
        return Vec::new();
    }
    vec![Finding::new(
        "lb-strict-arp",
        Severity::Warning,
        format!(
            "{lb_ips} LoadBalancer/external IPs will be bound on kube-ipvs0 and ipvs.strictARP is off"
        ),
        vec![format!(
            "{lb_ips} LoadBalancer or external IPs in the plan; ipvs.strictARP: false or unknown"
        )],
        "If MetalLB (L2 mode) or another ARP-based announcer serves these IPs, set ipvs.strictARP: true before kube-proxy takes over (plan -o kube-proxy-config does); during the migration ipvs-migrate sets arp_ignore=1/arp_announce=2 itself before binding them.",
    )]
}

/// `iptables-skew`: the iptables ipvs-migrate runs (live `iptables --version`) against the one in
/// kube-proxy's image. Rules written by one iptables version and read or rewritten by another
/// can differ in how they print, and iptables-nft versions have differed in which rules they can
/// show (the reason kube-proxy ships its own iptables).
pub fn iptables_skew(f: &NodeFacts) -> Vec<Finding> {
    let Some(kp) = f.kube_proxy_iptables.as_deref() else {
        return Vec::new();
    };
    let Some(Ok(ours)) = f.live.as_ref().map(|l| &l.iptables_version) else {
        return Vec::new();
    };
    let num = |s: &str| -> Option<String> {
        let start = s.find(|c: char| c.is_ascii_digit())?;
        let v: String = s[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        Some(v.trim_end_matches('.').to_owned())
    };
    let (Some(a), Some(b)) = (num(ours), num(kp)) else {
        return Vec::new();
    };
    let evidence = vec![
        format!("ipvs-migrate uses {}", ours.trim()),
        format!("kube-proxy's image has iptables {kp}"),
    ];
    if a == b {
        vec![Finding::new(
            "iptables-skew",
            Severity::Info,
            format!("iptables {a} on both sides"),
            evidence,
            "Nothing to do.",
        )]
    } else {
        vec![Finding::new(
            "iptables-skew",
            Severity::Warning,
            format!("iptables version skew: ipvs-migrate {a}, kube-proxy {b}"),
            evidence,
            "Run ipvs-migrate with the same iptables version as kube-proxy (mount the binaries of the kube-proxy image, or use an agent image with that version) so both read and write rules the same way.",
        )]
    }
}
