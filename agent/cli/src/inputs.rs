//! Turns the command line's INPUTS into an inventory: files (or stdin), the bundled demo
//! snapshot, or the live node through the host crate.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ipvsmig_engine::inventory::{
    Backend, DumpInput, Inventory, IpFamily, SourceKind, read_family, read_family_bytes,
};
use ipvsmig_host::iptables::{SaveTools, detect_backend, read_live};

use crate::cli::{BackendArg, Inputs};
use crate::exit::{CliError, ExitCode};

/// The demo node snapshot bundled in the binary (demo/node-snapshot/).
pub const DEMO_IPV4: &[u8] = include_bytes!("../../../demo/node-snapshot/iptables-save.txt");
/// IPv6 side of the demo snapshot.
pub const DEMO_IPV6: &[u8] = include_bytes!("../../../demo/node-snapshot/ip6tables-save.txt");

/// The demo node's host files (demo/node-snapshot/host/), for preflight.
const DEMO_HOST: &[(&str, &[u8])] = &[
    (
        "/etc/os-release",
        include_bytes!("../../../demo/node-snapshot/host/etc/os-release"),
    ),
    (
        "/etc/cni/net.d/10-flannel.conflist",
        include_bytes!("../../../demo/node-snapshot/host/etc/cni/net.d/10-flannel.conflist"),
    ),
    (
        "/etc/sysctl.d/99-kubernetes.conf",
        include_bytes!("../../../demo/node-snapshot/host/etc/sysctl.d/99-kubernetes.conf"),
    ),
    (
        "/proc/modules",
        include_bytes!("../../../demo/node-snapshot/host/proc/modules"),
    ),
    (
        "/proc/sys/kernel/osrelease",
        include_bytes!("../../../demo/node-snapshot/host/proc/sys/kernel/osrelease"),
    ),
    (
        "/proc/sys/net/ipv4/ip_forward",
        include_bytes!("../../../demo/node-snapshot/host/proc/sys/net/ipv4/ip_forward"),
    ),
];

/// Node facts of the demo snapshot.
pub fn demo_node_facts() -> ipvsmig_engine::preflight::NodeFacts {
    let fs = ipvsmig_host::node::MemFs {
        name: "demo/node-snapshot/host (bundled)".into(),
        files: DEMO_HOST
            .iter()
            .map(|(p, b)| ((*p).to_owned(), b.to_vec()))
            .collect(),
    };
    ipvsmig_host::node::read_facts(&fs)
}

/// Node facts below `--host-root` (default `/`).
pub fn node_facts(inputs: &Inputs) -> Result<ipvsmig_engine::preflight::NodeFacts, CliError> {
    let root = inputs
        .host_root
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    if !root.is_dir() {
        return Err(CliError::new(
            ExitCode::NoInput,
            format!("--host-root {}: not a directory", root.display()),
        ));
    }
    let mut facts = ipvsmig_host::node::read_node_facts(&root);
    if let Some(v) = &inputs.kubernetes_version {
        facts.kube_proxy_image_version = Some(kubernetes_version(v)?);
    }

    if !inputs.offline {
        // This process runs on the node (the DaemonSet mounts the host's root at --host-root
        // and shares its network): tools and kube-proxy's healthz can be asked too.
        facts.live = Some(ipvsmig_host::node::live_facts());
    }
    Ok(facts)
}

fn open(path: &Path) -> Result<Box<dyn Read>, CliError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    match File::open(path) {
        Ok(f) => {
            if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(CliError::new(
                    ExitCode::NoInput,
                    format!(
                        "{}: is a directory, not an iptables-save file",
                        path.display()
                    ),
                ));
            }
            Ok(Box::new(f))
        }
        Err(e) => {
            let mut err = CliError::new(ExitCode::NoInput, format!("{}: {e}", path.display()));
            err.input = Some(path.display().to_string());
            Err(err)
        }
    }
}

fn add(inv: &mut Inventory, input: DumpInput<impl Read>) -> Result<(), CliError> {
    inv.add_family(read_family(input)?);
    Ok(())
}

/// As [`add`] for a dump already in memory: its lines are borrowed, not copied again.
fn add_bytes(inv: &mut Inventory, input: DumpInput<&[u8]>) -> Result<(), CliError> {
    inv.add_family(read_family_bytes(input)?);
    Ok(())
}

/// One dump file read into memory. `plan --verify` reads the rules twice — into the inventory,
/// and into the equivalence check's own interpreter — so they must be the same bytes.
pub struct DumpText {
    /// File name (`-` for stdin).
    pub name: String,
    /// Family.
    pub family: IpFamily,
    /// The text.
    pub text: Vec<u8>,
}

/// Reads `--iptables-save` / `--ip6tables-save` into memory. The live node is not supported
/// yet: its rules would be read twice and could change in between (usage error).
pub fn dump_texts(inputs: &Inputs) -> Result<Vec<DumpText>, CliError> {
    if !inputs.has_files() {
        return Err(CliError::new(
            ExitCode::Usage,
            "--verify needs the rules as files for now: pass --iptables-save FILE (and --ip6tables-save FILE for IPv6), e.g. `iptables-save > rules.txt`",
        ));
    }
    both_stdin(inputs)?;
    let mut out = Vec::new();
    for (path, family) in [
        (&inputs.iptables_save, IpFamily::IPv4),
        (&inputs.ip6tables_save, IpFamily::IPv6),
    ] {
        let Some(path) = path else { continue };
        let name = path.display().to_string();
        let mut text = Vec::new();
        open(path)?.read_to_end(&mut text).map_err(|e| {
            let mut err = CliError::new(ExitCode::NoInput, format!("{name}: {e}"));
            err.input = Some(name.clone());
            err
        })?;
        out.push(DumpText { name, family, text });
    }
    Ok(out)
}

/// The inventory of dumps already in memory.
pub fn inventory_of(dumps: &[DumpText]) -> Result<Inventory, CliError> {
    let mut inv = Inventory::default();
    for d in dumps {
        add_bytes(
            &mut inv,
            DumpInput {
                name: d.name.clone(),
                family: d.family,
                source: SourceKind::File {
                    path: d.name.clone(),
                },
                reader: &d.text[..],
            },
        )?;
    }
    inv.normalize();
    Ok(inv)
}

fn both_stdin(inputs: &Inputs) -> Result<(), CliError> {
    let stdin = |p: &Option<std::path::PathBuf>| p.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if stdin(&inputs.iptables_save) && stdin(&inputs.ip6tables_save) {
        return Err(CliError::new(
            ExitCode::Usage,
            "only one of --iptables-save and --ip6tables-save can read stdin",
        ));
    }
    Ok(())
}

/// The bundled demo snapshot.
pub fn demo_inventory() -> Result<Inventory, CliError> {
    let mut inv = Inventory::default();
    for (name, family, bytes) in [
        (
            "demo/node-snapshot/iptables-save.txt (bundled)",
            IpFamily::IPv4,
            DEMO_IPV4,
        ),
        (
            "demo/node-snapshot/ip6tables-save.txt (bundled)",
            IpFamily::IPv6,
            DEMO_IPV6,
        ),
    ] {
        add_bytes(
            &mut inv,
            DumpInput {
                name: name.into(),
                family,
                source: SourceKind::File { path: name.into() },
                reader: bytes,
            },
        )?;
    }
    inv.normalize();
    Ok(inv)
}

/// Reads the inventory the inputs describe.
pub fn inventory(inputs: &Inputs, backend: BackendArg) -> Result<Inventory, CliError> {
    let mut inv = Inventory::default();
    if inputs.has_files() {
        both_stdin(inputs)?;
        for (path, family) in [
            (&inputs.iptables_save, IpFamily::IPv4),
            (&inputs.ip6tables_save, IpFamily::IPv6),
        ] {
            let Some(path) = path else { continue };
            let name = path.display().to_string();
            let reader = open(path)?;
            add(
                &mut inv,
                DumpInput {
                    name: name.clone(),
                    family,
                    source: SourceKind::File { path: name },
                    reader,
                },
            )?;
        }
        inv.normalize();
        return Ok(inv);
    }
    let forced = match backend {
        BackendArg::Auto => None,
        BackendArg::Legacy => Some(Backend::Legacy),
        BackendArg::Nft => Some(Backend::Nft),
    };
    // IPv4 always; IPv6 when its tools exist and kube-proxy wrote rules there.
    let tools4 = SaveTools::discover(IpFamily::IPv4);
    let choice = detect_backend(&tools4, IpFamily::IPv4, forced)?;
    tracing::info!(backend = ?choice.backend, reason = %choice.reason, "reading live IPv4 rules");
    inv.add_family(read_live(&tools4, IpFamily::IPv4, &choice)?);
    let tools6 = SaveTools::discover(IpFamily::IPv6);
    if tools6.legacy.is_some() || tools6.nft.is_some() {
        match detect_backend(&tools6, IpFamily::IPv6, forced) {
            Ok(c6)
                if c6.legacy_kube_chains.unwrap_or(0) + c6.nft_kube_chains.unwrap_or(0) > 0
                    || forced.is_some() =>
            {
                let read = read_live(&tools6, IpFamily::IPv6, &c6)?;
                if read.0.kube_chains > 0 {
                    inv.add_family(read);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "IPv6 rules not read"),
        }
    }
    inv.normalize();
    Ok(inv)
}

/// kube-proxy's configuration text and where it came from: `--kube-proxy-config`, else its
/// ConfigMap through the API when that was asked for (`--kubeconfig`/`--kube-api`); `None`
/// otherwise.
pub fn kube_proxy_config_text(inputs: &Inputs) -> Result<Option<(String, String)>, CliError> {
    let Some(path) = &inputs.kube_proxy_config else {
        return crate::kube_api::kube_proxy_config_text(inputs);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut err = CliError::new(ExitCode::NoInput, format!("{}: {e}", path.display()));
        err.input = Some(path.display().to_string());
        err
    })?;
    Ok(Some((path.display().to_string(), text)))
}

/// kube-proxy's configuration (a KubeProxyConfiguration or the kube-proxy ConfigMap) from
/// [`kube_proxy_config_text`]; `None` without either source.
pub fn kube_proxy_config(
    inputs: &Inputs,
) -> Result<Option<ipvsmig_engine::preflight::kubeproxy::KubeProxyConfig>, CliError> {
    let Some((source, text)) = kube_proxy_config_text(inputs)? else {
        return Ok(None);
    };
    ipvsmig_engine::preflight::kubeproxy::parse(&text)
        .map(Some)
        .map_err(|e| {
            let mut err = CliError::new(
                ExitCode::DataErr,
                format!("{source}: not a KubeProxyConfiguration: {e}"),
            );
            err.input = Some(source.clone());
            err
        })
}

/// Validates `--kubernetes-version` (MAJOR.MINOR[.PATCH], an optional leading v).
pub fn kubernetes_version(v: &str) -> Result<String, CliError> {
    if ipvsmig_engine::preflight::kernel_version(v.trim_start_matches('v')).is_none() {
        return Err(CliError::new(
            ExitCode::Usage,
            format!("--kubernetes-version {v:?}: expected MAJOR.MINOR[.PATCH], e.g. 1.34"),
        ));
    }
    Ok(format!("v{}", v.trim_start_matches('v')))
}
