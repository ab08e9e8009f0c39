//! Reading kube-proxy's rules from the running node: which iptables backend kube-proxy uses,
//! and a streaming `iptables-save` of it into the pure inventory.
//!
//! Backend detection follows kubelet's iptables-wrapper logic (kubernetes-sigs/iptables-wrappers,
//! `iptables-wrapper-installer.sh`): kubelet creates `KUBE-IPTABLES-HINT` (since 1.24) and
//! `KUBE-KUBELET-CANARY` (since 1.17) in the mangle table of the backend it uses; the hint wins,
//! then the canary, then whichever backend holds more KUBE-* chains. Everything here runs in the
//! caller's network namespace and only reads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipvsmig_engine::inventory::{
    Backend, DumpInput, FamilyFacts, InventoryError, IpFamily, ServicePort, SourceKind, Warning,
    read_family,
};

/// Errors from the host side.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No iptables-save binary for the needed backend.
    #[error(
        "no usable {what} binary: looked for {looked} in PATH, /usr/sbin and /sbin (install the iptables package)"
    )]
    ToolMissing {
        /// What was looked for.
        what: String,
        /// Names tried.
        looked: String,
    },
    /// The tool ran but failed.
    #[error("{tool} failed: {message}")]
    ToolFailed {
        /// Tool path.
        tool: String,
        /// Exit status and stderr.
        message: String,
    },
    /// The dump could not be read.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

/// The iptables-save binaries found on this node.
#[derive(Debug, Clone, Default)]
pub struct SaveTools {
    /// `iptables-legacy-save` (or `ip6tables-legacy-save`).
    pub legacy: Option<PathBuf>,
    /// `iptables-nft-save` (or `ip6tables-nft-save`).
    pub nft: Option<PathBuf>,
}

fn find_in_path(name: &str, path_var: Option<&str>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.push(PathBuf::from("/sbin"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds a tool as [`SaveTools::discover`] does: only in `IPVS_MIGRATE_TOOLS_PATH` when that
/// is set, else in `PATH`, /usr/sbin and /sbin.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    if let Ok(only) = std::env::var("IPVS_MIGRATE_TOOLS_PATH") {
        return std::env::split_paths(&only)
            .map(|d| d.join(name))
            .find(|p| is_executable(p));
    }
    find_in_path(name, std::env::var("PATH").ok().as_deref())
}

impl SaveTools {
    /// Finds the binaries for a family in `PATH` (plus /usr/sbin, /sbin), or only in
    /// `IPVS_MIGRATE_TOOLS_PATH` when that is set (e.g. the host's binaries mounted in a pod).
    pub fn discover(family: IpFamily) -> SaveTools {
        let prefix = match family {
            IpFamily::IPv4 => "iptables",
            IpFamily::IPv6 => "ip6tables",
        };
        SaveTools {
            legacy: find_tool(&format!("{prefix}-legacy-save")),
            nft: find_tool(&format!("{prefix}-nft-save")),
        }
    }

    fn tool(&self, backend: Backend) -> Option<&Path> {
        match backend {
            Backend::Legacy => self.legacy.as_deref(),
            Backend::Nft => self.nft.as_deref(),
        }
    }
}

/// How the backend was chosen, and what each backend holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    /// Chosen backend.
    pub backend: Backend,
    /// Why (for the report).
    pub reason: String,
    /// KUBE-* chains in the legacy backend (None: binary missing).
    pub legacy_kube_chains: Option<usize>,
    /// KUBE-* chains in the nft backend (None: binary missing).
    pub nft_kube_chains: Option<usize>,
}

/// What one backend's mangle/nat/filter dump shows, for detection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSignals {
    /// `KUBE-IPTABLES-HINT` in mangle.
    pub hint: bool,
    /// `KUBE-KUBELET-CANARY` in mangle.
    pub canary: bool,
    /// Number of `:KUBE-` chain declarations in all tables.
    pub kube_chains: usize,
}

/// Scans a dump for the detection signals (cheap: chain declaration lines only).
pub fn signals(dump: &str) -> BackendSignals {
    let mut s = BackendSignals::default();
    let mut table = "";
    for line in dump.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
        } else if let Some(c) = line.strip_prefix(":KUBE-") {
            s.kube_chains += 1;
            if table == "mangle" {
                s.hint |= c.starts_with("IPTABLES-HINT ");
                s.canary |= c.starts_with("KUBELET-CANARY ");
            }
        }
    }
    s
}

/// Chooses the backend from each backend's signals (None: that binary is missing).
pub fn choose(
    legacy: Option<&BackendSignals>,
    nft: Option<&BackendSignals>,
) -> Option<BackendChoice> {
    let choice = |backend: Backend, reason: &str| BackendChoice {
        backend,
        reason: reason.to_owned(),
        legacy_kube_chains: legacy.map(|s| s.kube_chains),
        nft_kube_chains: nft.map(|s| s.kube_chains),
    };
    let (l, n) = (
        legacy.cloned().unwrap_or_default(),
        nft.cloned().unwrap_or_default(),
    );
    if n.hint {
        return Some(choice(
            Backend::Nft,
            "KUBE-IPTABLES-HINT in the nft backend's mangle table",
        ));
    }
    if l.hint {
        return Some(choice(
            Backend::Legacy,
            "KUBE-IPTABLES-HINT in the legacy backend's mangle table",
        ));
    }
    if n.canary {
        return Some(choice(
            Backend::Nft,
            "KUBE-KUBELET-CANARY in the nft backend's mangle table",
        ));
    }
    if l.canary {
        return Some(choice(
            Backend::Legacy,
            "KUBE-KUBELET-CANARY in the legacy backend's mangle table",
        ));
    }
    match (legacy, nft) {
        (None, None) => None,
        (Some(_), None) => Some(choice(Backend::Legacy, "only iptables-legacy is installed")),
        (None, Some(_)) => Some(choice(Backend::Nft, "only iptables-nft is installed")),
        (Some(_), Some(_)) if l.kube_chains > n.kube_chains => Some(choice(
            Backend::Legacy,
            "the legacy backend holds more KUBE-* chains",
        )),
        (Some(_), Some(_)) => Some(choice(
            Backend::Nft,
            "no kubelet marker chains; nft is the default backend (or holds more KUBE-* chains)",
        )),
    }
}

fn run_to_string(tool: &Path, args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostError::ToolFailed {
            tool: tool.display().to_string(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HostError::ToolFailed {
            tool: tool.display().to_string(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Counts `:KUBE-` chain declarations in a backend's full dump, streaming.
fn count_kube_chains(tool: &Path) -> Result<usize, HostError> {
    use std::io::BufRead;
    let failed = |m: String| HostError::ToolFailed {
        tool: tool.display().to_string(),
        message: m,
    };
    let mut child = Command::new(tool)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let mut n = 0;
    if let Some(out) = child.stdout.take() {
        let mut r = std::io::BufReader::with_capacity(1 << 16, out);
        let mut line = Vec::new();
        while r
            .read_until(b'\n', &mut line)
            .map_err(|e| failed(e.to_string()))?
            > 0
        {
            if line.starts_with(b":KUBE-") {
                n += 1;
            }
            line.clear();
        }
    }
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    if !status.success() {
        return Err(failed(status.to_string()));
    }
    Ok(n)
}

/// Detects the backend kube-proxy uses for a family (or honours `forced`).
pub fn detect_backend(
    tools: &SaveTools,
    family: IpFamily,
    forced: Option<Backend>,
) -> Result<BackendChoice, HostError> {
    let name = match family {
        IpFamily::IPv4 => "iptables",
        IpFamily::IPv6 => "ip6tables",
    };
    if let Some(b) = forced {
        if tools.tool(b).is_none() {
            let n = match b {
                Backend::Legacy => format!("{name}-legacy-save"),
                Backend::Nft => format!("{name}-nft-save"),
            };
            return Err(HostError::ToolMissing {
                what: n.clone(),
                looked: n,
            });
        }
        return Ok(BackendChoice {
            backend: b,
            reason: "--iptables-backend".into(),
            legacy_kube_chains: None,
            nft_kube_chains: None,
        });
    }
    // The mangle table is small and holds kubelet's markers; only without markers is a whole
    // dump scanned (streamed, counting chain declarations) to compare the backends.
    let scan = |p: &Option<PathBuf>| -> Result<Option<BackendSignals>, HostError> {
        match p {
            None => Ok(None),
            Some(p) => Ok(Some(signals(&run_to_string(p, &["-t", "mangle"])?))),
        }
    };
    let (mut l, mut n) = (scan(&tools.legacy)?, scan(&tools.nft)?);
    let markers = |s: &Option<BackendSignals>| s.as_ref().is_some_and(|s| s.hint || s.canary);
    if !markers(&l) && !markers(&n) {
        for (sig, p) in [(&mut l, &tools.legacy), (&mut n, &tools.nft)] {
            if let (Some(sig), Some(p)) = (sig.as_mut(), p) {
                sig.kube_chains = count_kube_chains(p)?;
            }
        }
    }
    let mut choice = choose(l.as_ref(), n.as_ref()).ok_or_else(|| HostError::ToolMissing {
        what: format!("{name}-save"),
        looked: format!("{name}-legacy-save, {name}-nft-save"),
    })?;
    // The other backend is dumped in full (normally empty, so cheap) to see whether it still
    // holds KUBE-* chains; the chosen one is counted when it is read.
    match choice.backend {
        Backend::Legacy => {
            choice.nft_kube_chains = tools.nft.as_deref().map(count_kube_chains).transpose()?
        }
        Backend::Nft => {
            choice.legacy_kube_chains =
                tools.legacy.as_deref().map(count_kube_chains).transpose()?
        }
    }
    Ok(choice)
}

/// Streams `iptables-save` of the chosen backend into the inventory.
pub fn read_live(
    tools: &SaveTools,
    family: IpFamily,
    choice: &BackendChoice,
) -> Result<(FamilyFacts, Vec<ServicePort>, Vec<Warning>), HostError> {
    let Some(tool) = tools.tool(choice.backend) else {
        return Err(HostError::ToolMissing {
            what: "iptables-save".into(),
            looked: "iptables-legacy-save, iptables-nft-save".into(),
        });
    };
    let started = std::time::Instant::now();
    let mut child = Command::new(tool)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HostError::ToolFailed {
            tool: tool.display().to_string(),
            message: e.to_string(),
        })?;
    let name = format!("{} (live)", tool.display());
    let Some(stdout) = child.stdout.take() else {
        return Err(HostError::ToolFailed {
            tool: tool.display().to_string(),
            message: "no stdout".into(),
        });
    };
    let result = read_family(DumpInput {
        name,
        family,
        source: SourceKind::Live {
            backend: choice.backend,
        },
        reader: stdout,
    });
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(|e| HostError::ToolFailed {
        tool: tool.display().to_string(),
        message: e.to_string(),
    })?;
    if !status.success() {
        return Err(HostError::ToolFailed {
            tool: tool.display().to_string(),
            message: format!("{status}: {}", err.trim()),
        });
    }
    let (mut facts, ports, mut warnings) = result?;
    facts.read_millis = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut choice = choice.clone();
    match choice.backend {
        Backend::Legacy => choice.legacy_kube_chains = Some(facts.kube_chains),
        Backend::Nft => choice.nft_kube_chains = Some(facts.kube_chains),
    }
    if let (Some(l), Some(n)) = (choice.legacy_kube_chains, choice.nft_kube_chains)
        && l > 0
        && n > 0
    {
        warnings.push(Warning {
                code: "both-backends".into(),
                family,
                line: 0,
                table: String::new(),
                chain: String::new(),
                message: format!(
                    "both iptables backends hold KUBE-* chains (legacy: {l}, nft: {n}); read {:?} because {}. \
                     The other backend's rules still filter traffic: clean them up (see the runbook section \
                     inventory/both-backends)",
                    choice.backend, choice.reason
                ),
            });
    }
    Ok((facts, ports, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(hint: bool, canary: bool, kube_chains: usize) -> BackendSignals {
        BackendSignals {
            hint,
            canary,
            kube_chains,
        }
    }

    #[test]
    fn the_hint_chain_wins_over_chain_counts() {
        let c = choose(Some(&sig(false, true, 900)), Some(&sig(true, true, 3))).unwrap();
        assert_eq!(c.backend, Backend::Nft);
        let c = choose(Some(&sig(true, true, 3)), Some(&sig(false, false, 900))).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
    }

    #[test]
    fn the_canary_decides_when_there_is_no_hint() {
        let c = choose(Some(&sig(false, true, 1)), Some(&sig(false, false, 100))).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
    }

    #[test]
    fn without_markers_the_fuller_backend_wins() {
        let c = choose(Some(&sig(false, false, 10)), Some(&sig(false, false, 2))).unwrap();
        assert_eq!(c.backend, Backend::Legacy);
        assert_eq!(choose(None, None), None);
    }

    #[test]
    fn signals_are_read_from_mangle_only() {
        let s = signals(
            "*nat\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n",
        );
        assert_eq!(s, sig(true, false, 2));
    }
}
