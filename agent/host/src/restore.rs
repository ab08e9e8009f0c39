//! Writing rules: `iptables-restore --noflush` / `ip6tables-restore --noflush` of the backend
//! kube-proxy uses (found and detected by iptables.rs), and `iptables-save -t TABLE` to read a
//! table back. Also the runner both this module and ipset.rs use to feed a restore script on
//! stdin and to name the line a tool rejected.
//!
//! `--noflush` keeps every chain and rule the input does not mention, so the agent's rules go
//! in next to kube-proxy's without touching them; each table of the input is committed at once
//! or not at all (legacy replaces the table blob, nft commits one transaction), so a rejected
//! input changes nothing. `-w 5` waits up to five seconds for the xtables lock kube-proxy also
//! takes (legacy; nft accepts and ignores it). This module never decides what to write.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ipvsmig_engine::inventory::{Backend, IpFamily};

use crate::iptables::{HostError, SaveTools, detect_backend, find_tool};

/// Errors of restore and save, naming the tool (and the rejected line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// No binary for this family and backend.
    #[error(
        "no {tool} binary (looked in IPVS_MIGRATE_TOOLS_PATH, or PATH, /usr/sbin and /sbin; install the iptables package)"
    )]
    ToolMissing {
        /// The binary's name.
        tool: String,
    },
    /// The family has no tools configured (e.g. IPv6 on a node without ip6tables).
    #[error("no iptables tools for {family:?}")]
    NoFamily {
        /// The family.
        family: IpFamily,
    },
    /// Not one of the iptables tables.
    #[error("unknown iptables table {table:?} (filter, nat, mangle, raw or security)")]
    UnknownTable {
        /// The name given.
        table: String,
    },
    /// The restore input was rejected; nothing of it was committed.
    #[error("{tool} rejected {}: {message}", at_line(*line, text.as_deref()))]
    Rejected {
        /// The tool.
        tool: String,
        /// The input line the tool named (1-based), when it named one.
        line: Option<usize>,
        /// That line of the input.
        text: Option<String>,
        /// The tool's message (stderr without usage hints).
        message: String,
    },
    /// The tool could not run, or failed other than by rejecting input.
    #[error("{tool} failed: {message}")]
    Failed {
        /// The tool.
        tool: String,
        /// Exit status and stderr, or the spawn error.
        message: String,
    },
    /// Backend detection failed.
    #[error("iptables backend detection: {0}")]
    Detect(String),
}

/// "line N (`text`)", "line N" or "the input".
pub(crate) fn at_line(line: Option<usize>, text: Option<&str>) -> String {
    match (line, text) {
        (Some(n), Some(t)) => format!("line {n} (`{t}`)"),
        (Some(n), None) => format!("line {n}"),
        _ => "the input".into(),
    }
}

/// The line number a restore tool names in its error output: `Error in line N:` (ipset),
/// `line N failed`, `Error occurred at line: N`, `COMMIT expected at line N` (iptables).
pub(crate) fn failing_line(stderr: &str) -> Option<usize> {
    let mut rest = stderr;
    while let Some(i) = rest.find("line") {
        rest = rest.get(i + 4..).unwrap_or_default();
        let digits: String = rest
            .trim_start_matches([':', ' '])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
    }
    None
}

/// The tool's stderr without the usage hint iptables appends (`Try \`… -h' …`).
pub(crate) fn tool_message(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("Try `") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `tool args` with `input` on stdin and collects its output. The input is written from
/// a second thread so a tool that fails early (and stops reading) cannot block us; its broken
/// pipe is expected then and not an error.
pub(crate) fn run_with_input(tool: &Path, args: &[&str], input: &str) -> std::io::Result<Output> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take();
    std::thread::scope(|s| {
        let writer = s.spawn(move || match stdin {
            Some(mut w) => match w.write_all(input.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r,
            },
            None => Ok(()),
        });
        let out = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stdin writer thread panicked")));
        let out = out?;
        written.map(|()| out)
    })
}

/// The tables `save_table` accepts.
pub const TABLES: &[&str] = &["filter", "nat", "mangle", "raw", "security"];

/// Restoring and saving rules of one node (real: [`IptablesCli`]).
pub trait IptablesRestore {
    /// Applies restore input with `--noflush`: chains and rules it does not mention stay.
    fn restore_noflush(&mut self, family: IpFamily, text: &str) -> Result<(), RestoreError>;
    /// `iptables-save -t TABLE` of the family's backend.
    fn save_table(&mut self, family: IpFamily, table: &str) -> Result<String, RestoreError>;
}

/// The save and restore binaries of one family and backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTools {
    /// The backend they belong to.
    pub backend: Backend,
    /// `iptables-{legacy,nft}-save` (or ip6tables-…).
    pub save: PathBuf,
    /// `iptables-{legacy,nft}-restore` (or ip6tables-…).
    pub restore: PathBuf,
}

impl RestoreTools {
    /// Finds the binaries of a family and backend as iptables.rs finds iptables-save.
    pub fn find(family: IpFamily, backend: Backend) -> Result<RestoreTools, RestoreError> {
        let prefix = match family {
            IpFamily::IPv4 => "iptables",
            IpFamily::IPv6 => "ip6tables",
        };
        let b = match backend {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        };
        let find = |what: &str| {
            let tool = format!("{prefix}-{b}-{what}");
            find_tool(&tool).ok_or(RestoreError::ToolMissing { tool })
        };
        Ok(RestoreTools {
            backend,
            save: find("save")?,
            restore: find("restore")?,
        })
    }
}

/// The real implementation: runs the binaries it was given for each family.
#[derive(Debug, Clone, Default)]
pub struct IptablesCli {
    /// IPv4 tools (None: IPv4 is not handled).
    pub v4: Option<RestoreTools>,
    /// IPv6 tools.
    pub v6: Option<RestoreTools>,
}

impl IptablesCli {
    /// The tools of the backend kube-proxy uses, per family, detected as the inventory does
    /// (kubelet's marker chains, then KUBE-* chain counts; `forced` overrides). A family
    /// without any iptables-save binary is left out.
    pub fn detect(forced: Option<Backend>) -> Result<IptablesCli, RestoreError> {
        let mut cli = IptablesCli::default();
        for family in [IpFamily::IPv4, IpFamily::IPv6] {
            let save = SaveTools::discover(family);
            if save.legacy.is_none() && save.nft.is_none() {
                continue;
            }
            let choice = detect_backend(&save, family, forced)
                .map_err(|e: HostError| RestoreError::Detect(e.to_string()))?;
            let tools = RestoreTools::find(family, choice.backend)?;
            match family {
                IpFamily::IPv4 => cli.v4 = Some(tools),
                IpFamily::IPv6 => cli.v6 = Some(tools),
            }
        }
        Ok(cli)
    }

    fn tools(&self, family: IpFamily) -> Result<&RestoreTools, RestoreError> {
        match family {
            IpFamily::IPv4 => self.v4.as_ref(),
            IpFamily::IPv6 => self.v6.as_ref(),
        }
        .ok_or(RestoreError::NoFamily { family })
    }
}

impl IptablesRestore for IptablesCli {
    fn restore_noflush(&mut self, family: IpFamily, text: &str) -> Result<(), RestoreError> {
        let tool = &self.tools(family)?.restore;
        let name = tool.display().to_string();
        let out = run_with_input(tool, &["--noflush", "-w", "5"], text).map_err(|e| {
            RestoreError::Failed {
                tool: name.clone(),
                message: e.to_string(),
            }
        })?;
        if out.status.success() {
            return Ok(());
        }
        let message = tool_message(&out.stderr);
        // Exit status 4 is iptables' RESOURCE_PROBLEM: the xtables lock was not free within
        // the wait, or the kernel refused; the input itself was not judged.
        if out.status.code() == Some(4) {
            return Err(RestoreError::Failed {
                tool: name,
                message: format!("{message} ({})", out.status),
            });
        }
        let line = failing_line(&message);
        Err(RestoreError::Rejected {
            tool: name,
            line,
            text: line
                .and_then(|n| text.lines().nth(n.checked_sub(1)?))
                .map(str::to_owned),
            message: format!("{message} ({})", out.status),
        })
    }

    fn save_table(&mut self, family: IpFamily, table: &str) -> Result<String, RestoreError> {
        if !TABLES.contains(&table) {
            return Err(RestoreError::UnknownTable {
                table: table.to_owned(),
            });
        }
        let tool = &self.tools(family)?.save;
        let failed = |message: String| RestoreError::Failed {
            tool: tool.display().to_string(),
            message,
        };
        let out = Command::new(tool)
            .args(["-t", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}: {}",
                out.status,
                tool_message(&out.stderr)
            )));
        }
        String::from_utf8(out.stdout).map_err(|e| failed(format!("output is not UTF-8: {e}")))
    }
}

/// The recording fake: keeps every restore input, answers saves from `tables`, and fails
/// restores on demand. It does not apply the input to `tables` (the interpreter's tests check
/// the inputs it wrote; the netns tests check what the kernel makes of them).
#[derive(Debug, Clone, Default)]
pub struct RecordingIptables {
    /// Every `restore_noflush` call, in order (rejected ones included).
    pub restores: Vec<(IpFamily, String)>,
    /// What `save_table` returns, by family and table (missing: an empty string).
    pub tables: std::collections::BTreeMap<(IpFamily, String), String>,
    /// Errors for the next restores, first one first.
    pub fail: std::collections::VecDeque<RestoreError>,
}

impl IptablesRestore for RecordingIptables {
    fn restore_noflush(&mut self, family: IpFamily, text: &str) -> Result<(), RestoreError> {
        self.restores.push((family, text.to_owned()));
        self.fail.pop_front().map_or(Ok(()), Err)
    }

    fn save_table(&mut self, family: IpFamily, table: &str) -> Result<String, RestoreError> {
        if !TABLES.contains(&table) {
            return Err(RestoreError::UnknownTable {
                table: table.to_owned(),
            });
        }
        Ok(self
            .tables
            .get(&(family, table.to_owned()))
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stderr: &str, line: Option<usize>) {
        assert_eq!(failing_line(stderr), line, "{stderr}");
    }

    #[test]
    fn the_failing_line_is_found_in_every_tool_s_wording() {
        // Each as the tool printed it (Debian 12: ipset 7.17, iptables 1.8.9), in a netns.
        check(
            "ipset v7.17: Error in line 3: Syntax error: cannot parse bogus: resolving to IPv4 address failed",
            Some(3),
        );
        check("iptables-restore: line 4 failed", Some(4));
        check(
            "iptables-nft-restore: line 4 failed: No chain/target/match by that name.",
            Some(4),
        );
        check(
            "iptables-restore v1.8.9 (legacy): unknown option \"--bogus\"\nError occurred at line: 4",
            Some(4),
        );
        check("iptables-restore: COMMIT expected at line 3", Some(3));
        check(
            "iptables-nft-restore v1.8.9 (nf_tables): iptables-nft-restore: line 1 table name 'bogus' invalid",
            Some(1),
        );
        check(
            "ipset v7.17: The set with the given name does not exist",
            None,
        );
        check("a pipeline of lines", None);
    }

    #[test]
    fn usage_hints_are_dropped_from_the_message() {
        let m = tool_message(
            b"iptables-restore v1.8.9 (legacy): unknown option \"--bogus\"\nError occurred at line: 4\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
        );
        assert_eq!(
            m,
            "iptables-restore v1.8.9 (legacy): unknown option \"--bogus\"; Error occurred at line: 4"
        );
    }

    #[test]
    fn only_known_tables_are_saved() {
        let mut cli = IptablesCli::default();
        assert_eq!(
            cli.save_table(IpFamily::IPv4, "-F"),
            Err(RestoreError::UnknownTable { table: "-F".into() })
        );
        assert_eq!(
            cli.save_table(IpFamily::IPv4, "nat"),
            Err(RestoreError::NoFamily {
                family: IpFamily::IPv4
            })
        );
    }

    #[test]
    fn the_fake_records_inputs_and_fails_on_demand() {
        let mut f = RecordingIptables::default();
        f.fail.push_back(RestoreError::Rejected {
            tool: "fake".into(),
            line: Some(1),
            text: None,
            message: "no".into(),
        });
        assert!(f.restore_noflush(IpFamily::IPv4, "*nat\nCOMMIT\n").is_err());
        assert!(
            f.restore_noflush(IpFamily::IPv6, "*filter\nCOMMIT\n")
                .is_ok()
        );
        assert_eq!(f.restores.len(), 2);
        assert_eq!(f.restores[1].0, IpFamily::IPv6);
        f.tables
            .insert((IpFamily::IPv4, "nat".into()), "*nat\nCOMMIT\n".into());
        assert_eq!(
            f.save_table(IpFamily::IPv4, "nat").unwrap(),
            "*nat\nCOMMIT\n"
        );
        assert_eq!(f.save_table(IpFamily::IPv6, "nat").unwrap(), "");
    }

    #[test]
    fn a_rejection_names_the_line_and_its_text() {
        let e = RestoreError::Rejected {
            tool: "iptables-nft-restore".into(),
            line: Some(4),
            text: Some("-A IPVSMIG-X --bogus".into()),
            message: "unknown option".into(),
        };
        assert_eq!(
            e.to_string(),
            "iptables-nft-restore rejected line 4 (`-A IPVSMIG-X --bogus`): unknown option"
        );
    }
}
