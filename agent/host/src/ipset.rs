//! ipsets through the `ipset` binary, as kube-proxy does (pkg/proxy/ipvs/ipset/ipset.go runs
//! it for every operation): one `ipset restore -exist` per batch of lines on stdin, and
//! `ipset save` to read sets back. Renders the lines (create/add/del/flush/destroy, with set
//! and per-member `timeout`), parses `ipset save` output (ipset/save.rs), and offers an
//! in-memory fake (ipset/recording.rs).
//!
//! Two kernel facts the caller relies on (ipset 7.17, Debian 12; checked by
//! tests/tests/host_kernel_netns.rs):
//! - with `-exist`, adding a member that is there sets its timeout to the new value: the
//!   agent's bypass sets refresh their members this way, and a member that is not refreshed
//!   expires (the dead man's switch, DESIGN.md "hybrid data plane" step 5);
//! - `ipset restore` is not a transaction: lines before a rejected one stay applied, except
//!   that ipset sends consecutive adds to one set in a batch, and a batch still pending when
//!   ipset itself rejects a line (a syntax error, an unknown set) is dropped. The error names
//!   the line (`Error in line N: …`); the caller re-reads with `save`.
//!
//! Nothing here decides which sets exist or who owns them.

mod recording;
mod save;

use std::path::PathBuf;

use crate::iptables::find_tool;
use crate::restore::{at_line, failing_line, run_with_input, tool_message};

pub use recording::RecordingIpsets;
pub use save::{SavedMember, SavedSet, parse_save};

/// Longest set name (IPSET_MAXNAMELEN 32, with the NUL).
pub const MAX_NAME: usize = 31;
/// Longest timeout in seconds ipset accepts (`'2147484' is out of range 0-2147483`).
pub const MAX_TIMEOUT: u32 = 2_147_483;

/// Errors of the ipset layer, naming the set, member or line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpsetError {
    /// No `ipset` binary.
    #[error(
        "no ipset binary (looked in IPVS_MIGRATE_TOOLS_PATH, or PATH, /usr/sbin and /sbin; install the ipset package)"
    )]
    ToolMissing,
    /// A set name that ipset would refuse or that would break the script.
    #[error("invalid set name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A member (or set type, option) that would break the script.
    #[error("invalid {what} {value:?} for set {set}: empty or contains whitespace")]
    InvalidWord {
        /// The set.
        set: String,
        /// What it is: member, type, range.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A timeout above [`MAX_TIMEOUT`].
    #[error("timeout {timeout} for set {set} is above ipset's maximum of {MAX_TIMEOUT} s")]
    TimeoutTooLong {
        /// The set.
        set: String,
        /// The timeout.
        timeout: u32,
    },
    /// `ipset restore` rejected a line; the lines before it were applied.
    #[error("ipset restore rejected {}: {message}", at_line(*line, text.as_deref()))]
    Rejected {
        /// The script line ipset named (1-based), when it named one.
        line: Option<usize>,
        /// That line of the script.
        text: Option<String>,
        /// ipset's message.
        message: String,
    },
    /// `ipset save SET` of a set that does not exist.
    #[error("ipset set {set} does not exist")]
    NoSuchSet {
        /// The set.
        set: String,
    },
    /// ipset could not run or failed otherwise.
    #[error("{tool} failed: {message}")]
    Failed {
        /// The binary.
        tool: String,
        /// Status and stderr, or the spawn error.
        message: String,
    },
    /// `ipset save` output that does not parse.
    #[error("ipset save output, line {line}: {reason} (`{text}`)")]
    Parse {
        /// 1-based line.
        line: usize,
        /// The line.
        text: String,
        /// Why.
        reason: String,
    },
}

/// What the agent needs of ipset (real: [`IpsetCli`]; fake: [`RecordingIpsets`]).
pub trait Ipsets {
    /// Applies a script of ipset commands with `-exist` (re-creating an identical set, adding a
    /// member that is there — refreshing its timeout — and deleting one that is not are no-ops).
    fn restore(&mut self, script: &str) -> Result<(), IpsetError>;
    /// `ipset save` of one set or of all.
    fn save(&mut self, set: Option<&str>) -> Result<String, IpsetError>;
}

/// The real implementation: runs the `ipset` binary it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetCli {
    /// The binary.
    pub tool: PathBuf,
}

impl IpsetCli {
    /// Uses this binary.
    pub fn new(tool: impl Into<PathBuf>) -> IpsetCli {
        IpsetCli { tool: tool.into() }
    }

    /// Finds `ipset` as iptables.rs finds iptables-save (`IPVS_MIGRATE_TOOLS_PATH` only, when
    /// set; else `PATH`, /usr/sbin, /sbin).
    pub fn discover() -> Result<IpsetCli, IpsetError> {
        find_tool("ipset")
            .map(IpsetCli::new)
            .ok_or(IpsetError::ToolMissing)
    }

    fn failed(&self, message: String) -> IpsetError {
        IpsetError::Failed {
            tool: self.tool.display().to_string(),
            message,
        }
    }
}

impl Ipsets for IpsetCli {
    fn restore(&mut self, script: &str) -> Result<(), IpsetError> {
        let out = run_with_input(&self.tool, &["restore", "-exist"], script)
            .map_err(|e| self.failed(e.to_string()))?;
        if out.status.success() {
            return Ok(());
        }
        let raw = tool_message(&out.stderr);
        let line = failing_line(&raw);
        // "ipset v7.17: Error in line 3: Syntax error: …" → "Syntax error: …"
        let message = raw
            .split_once("Error in line ")
            .and_then(|(_, rest)| rest.split_once(": "))
            .map_or(raw.as_str(), |(_, m)| m)
            .to_owned();
        Err(IpsetError::Rejected {
            line,
            text: line
                .and_then(|n| script.lines().nth(n.checked_sub(1)?))
                .map(str::to_owned),
            message,
        })
    }

    fn save(&mut self, set: Option<&str>) -> Result<String, IpsetError> {
        let mut cmd = std::process::Command::new(&self.tool);
        cmd.arg("save");
        if let Some(s) = set {
            check_name(s)?;
            cmd.arg(s);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| self.failed(e.to_string()))?;
        if !out.status.success() {
            let message = tool_message(&out.stderr);
            return Err(match set {
                Some(s) if message.contains("does not exist") => {
                    IpsetError::NoSuchSet { set: s.to_owned() }
                }
                _ => self.failed(format!("{}: {message}", out.status)),
            });
        }
        String::from_utf8(out.stdout).map_err(|e| self.failed(format!("output is not UTF-8: {e}")))
    }
}

/// Address family of a hash set (`family inet|inet6`; bitmap sets have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetFamily {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
}

impl SetFamily {
    /// The keyword ipset uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SetFamily::Inet => "inet",
            SetFamily::Inet6 => "inet6",
        }
    }
}

/// How to create one set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetSpec {
    /// Name (at most 31 bytes).
    pub name: String,
    /// Type: `hash:ip,port`, `hash:ip`, `bitmap:port`, …
    pub set_type: String,
    /// `family` (hash types).
    pub family: Option<SetFamily>,
    /// `range` (bitmap types), e.g. `0-65535`.
    pub range: Option<String>,
    /// `hashsize`.
    pub hashsize: Option<u32>,
    /// `maxelem`.
    pub maxelem: Option<u32>,
    /// Default member timeout in seconds; a set needs one for members to have timeouts.
    pub timeout: Option<u32>,
}

/// Checks a set name: ipset's length limit, and nothing that would split a script line.
pub fn check_name(name: &str) -> Result<(), IpsetError> {
    let bad = |reason| {
        Err(IpsetError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME {
        return bad("longer than 31 bytes");
    }
    if name.starts_with('-') || name.chars().any(|c| c.is_whitespace() || c == '"') {
        return bad("starts with '-' or contains whitespace or '\"'");
    }
    Ok(())
}

fn check_word(set: &str, what: &'static str, value: &str) -> Result<(), IpsetError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '"') {
        return Err(IpsetError::InvalidWord {
            set: set.to_owned(),
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_timeout(set: &str, timeout: u32) -> Result<(), IpsetError> {
    if timeout > MAX_TIMEOUT {
        return Err(IpsetError::TimeoutTooLong {
            set: set.to_owned(),
            timeout,
        });
    }
    Ok(())
}

impl SetSpec {
    /// `create NAME TYPE [family F] [range R] [hashsize N] [maxelem N] [timeout N]`.
    pub fn create_line(&self) -> Result<String, IpsetError> {
        check_name(&self.name)?;
        check_word(&self.name, "type", &self.set_type)?;
        let mut l = format!("create {} {}", self.name, self.set_type);
        if let Some(f) = self.family {
            l.push_str(" family ");
            l.push_str(f.as_str());
        }
        if let Some(r) = &self.range {
            check_word(&self.name, "range", r)?;
            l.push_str(" range ");
            l.push_str(r);
        }
        for (k, v) in [("hashsize", self.hashsize), ("maxelem", self.maxelem)] {
            if let Some(v) = v {
                l.push_str(&format!(" {k} {v}"));
            }
        }
        if let Some(t) = self.timeout {
            check_timeout(&self.name, t)?;
            l.push_str(&format!(" timeout {t}"));
        }
        Ok(l)
    }
}

/// `add SET MEMBER [timeout N]` (N = 0: the member never expires, in a set with timeouts).
pub fn add_line(set: &str, member: &str, timeout: Option<u32>) -> Result<String, IpsetError> {
    check_name(set)?;
    check_word(set, "member", member)?;
    match timeout {
        Some(t) => {
            check_timeout(set, t)?;
            Ok(format!("add {set} {member} timeout {t}"))
        }
        None => Ok(format!("add {set} {member}")),
    }
}

/// `del SET MEMBER`.
pub fn del_line(set: &str, member: &str) -> Result<String, IpsetError> {
    check_name(set)?;
    check_word(set, "member", member)?;
    Ok(format!("del {set} {member}"))
}

/// `flush SET`.
pub fn flush_line(set: &str) -> Result<String, IpsetError> {
    check_name(set)?;
    Ok(format!("flush {set}"))
}

/// `destroy SET`.
pub fn destroy_line(set: &str) -> Result<String, IpsetError> {
    check_name(set)?;
    Ok(format!("destroy {set}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass() -> SetSpec {
        SetSpec {
            name: "IPVSMIG-BYPASS".into(),
            set_type: "hash:ip,port".into(),
            family: Some(SetFamily::Inet),
            hashsize: Some(1024),
            maxelem: Some(65536),
            timeout: Some(600),
            ..SetSpec::default()
        }
    }

    #[test]
    fn lines_render_as_ipset_restore_reads_them() {
        assert_eq!(
            bypass().create_line().unwrap(),
            "create IPVSMIG-BYPASS hash:ip,port family inet hashsize 1024 maxelem 65536 timeout 600"
        );
        let np = SetSpec {
            name: "IPVSMIG-NP".into(),
            set_type: "bitmap:port".into(),
            range: Some("0-65535".into()),
            ..SetSpec::default()
        };
        assert_eq!(
            np.create_line().unwrap(),
            "create IPVSMIG-NP bitmap:port range 0-65535"
        );
        assert_eq!(
            add_line("IPVSMIG-BYPASS", "10.96.0.10,tcp:53", Some(300)).unwrap(),
            "add IPVSMIG-BYPASS 10.96.0.10,tcp:53 timeout 300"
        );
        assert_eq!(
            add_line("S", "fd00::1,udp:53", None).unwrap(),
            "add S fd00::1,udp:53"
        );
        assert_eq!(del_line("S", "30080").unwrap(), "del S 30080");
        assert_eq!(flush_line("S").unwrap(), "flush S");
        assert_eq!(destroy_line("S").unwrap(), "destroy S");
    }

    #[test]
    fn words_that_would_break_the_script_are_errors() {
        assert!(matches!(
            add_line("S", "10.0.0.1\ndestroy KUBE-CLUSTER-IP", None),
            Err(IpsetError::InvalidWord { .. })
        ));
        assert!(matches!(
            add_line("S", "", None),
            Err(IpsetError::InvalidWord { .. })
        ));
        assert!(matches!(
            flush_line(&"X".repeat(32)),
            Err(IpsetError::InvalidName { .. })
        ));
        assert!(flush_line(&"X".repeat(31)).is_ok());
        assert!(matches!(
            destroy_line("-exist"),
            Err(IpsetError::InvalidName { .. })
        ));
        assert!(matches!(
            add_line("S", "1.2.3.4", Some(MAX_TIMEOUT + 1)),
            Err(IpsetError::TimeoutTooLong { .. })
        ));
        let mut s = bypass();
        s.timeout = Some(MAX_TIMEOUT + 1);
        assert!(s.create_line().is_err());
    }

    #[test]
    fn a_missing_binary_is_a_spawn_failure_naming_it() {
        let mut cli = IpsetCli::new("/nonexistent/ipset");
        let e = cli.restore("flush S\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/ipset failed"),
            "{e}"
        );
    }
}
