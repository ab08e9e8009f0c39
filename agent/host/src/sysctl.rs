//! Kernel parameters through /proc/sys below a host root (`/` on the node, `/host` in a pod
//! with the host's /proc mounted, a temp tree in tests). A key is sysctl(8)'s dotted name;
//! dots become slashes (`net.ipv4.vs.conntrack` → `proc/sys/net/ipv4/vs/conntrack`). Keys
//! that could leave /proc/sys (`..`, `/`, empty parts) are refused, so interface names with
//! dots (VLANs such as `eth0.100`) cannot be addressed here; the agent only sets `all`,
//! `default` and `vs` keys.
//!
//! Values are written as kube-proxy writes them (component-helpers `sysctl.SetSysctl`: the
//! bare value, no newline) and read back trimmed. /proc/sys files are only ever opened, never
//! created: setting a key the kernel does not have is an error, in a temp tree too. This
//! module records nothing and decides nothing; prior values are the journal's business.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors naming the key and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    /// Not a usable key.
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The kernel has no such parameter (no file), e.g. `net.ipv4.vs.*` before ip_vs loads.
    #[error("sysctl {key} does not exist ({path})")]
    NotFound {
        /// The key.
        key: String,
        /// The file.
        path: String,
    },
    /// EACCES / EPERM (read-only /proc/sys in a container, or not root).
    #[error("sysctl {key}: permission denied ({path})")]
    Permission {
        /// The key.
        key: String,
        /// The file.
        path: String,
    },
    /// Another I/O error (EINVAL for a value the kernel refuses, …).
    #[error("sysctl {key} ({path}): {message}")]
    Io {
        /// The key.
        key: String,
        /// The file.
        path: String,
        /// The error.
        message: String,
    },
}

/// Reading and setting kernel parameters (real: [`ProcSysctls`]; fake: [`RecordingSysctls`]).
pub trait Sysctls {
    /// The value (trimmed); `None` when the kernel has no such parameter.
    fn get(&self, key: &str) -> Result<Option<String>, SysctlError>;
    /// Sets the value.
    fn set(&mut self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// The relative path of a key below a host root: `proc/sys/a/b/c` for `a.b.c`.
pub fn key_path(key: &str) -> Result<PathBuf, SysctlError> {
    let bad = |reason| {
        Err(SysctlError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.contains("..") {
        return bad("contains '..'");
    }
    if key.contains('/') {
        return bad("contains '/' (use the dotted form)");
    }
    let mut p = PathBuf::from("proc/sys");
    for part in key.split('.') {
        if part.is_empty() {
            return bad("has an empty part");
        }
        if part.contains('\0') {
            return bad("contains NUL");
        }
        p.push(part);
    }
    Ok(p)
}

/// The real implementation: files under `root/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSysctls {
    root: PathBuf,
}

impl ProcSysctls {
    /// Parameters of the host whose root is `root` (`/` on the node).
    pub fn new(root: impl Into<PathBuf>) -> ProcSysctls {
        ProcSysctls { root: root.into() }
    }

    /// The host root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io_error(key: &str, path: &Path, e: &std::io::Error) -> SysctlError {
    let (key, path) = (key.to_owned(), path.display().to_string());
    match e.kind() {
        std::io::ErrorKind::NotFound => SysctlError::NotFound { key, path },
        std::io::ErrorKind::PermissionDenied => SysctlError::Permission { key, path },
        _ => SysctlError::Io {
            key,
            path,
            message: e.to_string(),
        },
    }
}

impl Sysctls for ProcSysctls {
    fn get(&self, key: &str) -> Result<Option<String>, SysctlError> {
        let path = self.root.join(key_path(key)?);
        match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(key, &path, &e)),
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.root.join(key_path(key)?);
        if value.is_empty() || value.contains('\n') {
            return Err(SysctlError::Io {
                key: key.to_owned(),
                path: path.display().to_string(),
                message: format!("refusing to write {value:?} (empty or several lines)"),
            });
        }
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| io_error(key, &path, &e))
    }
}

/// The recording fake: values by key and every `set`, in order.
#[derive(Debug, Clone, Default)]
pub struct RecordingSysctls {
    /// Current values; a key not here does not exist (its `set` fails with NotFound).
    pub values: BTreeMap<String, String>,
    /// Every successful `set` (key, value), in order.
    pub sets: Vec<(String, String)>,
    /// Errors for the next `set` calls, first one first.
    pub fail: std::collections::VecDeque<SysctlError>,
}

impl RecordingSysctls {
    /// A fake with these parameters.
    pub fn with(values: &[(&str, &str)]) -> RecordingSysctls {
        RecordingSysctls {
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..RecordingSysctls::default()
        }
    }
}

impl Sysctls for RecordingSysctls {
    fn get(&self, key: &str) -> Result<Option<String>, SysctlError> {
        key_path(key)?;
        Ok(self.values.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = key_path(key)?;
        if let Some(e) = self.fail.pop_front() {
            return Err(e);
        }
        let Some(v) = self.values.get_mut(key) else {
            return Err(SysctlError::NotFound {
                key: key.to_owned(),
                path: path.display().to_string(),
            });
        };
        value.clone_into(v);
        self.sets.push((key.to_owned(), value.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, want: Result<&str, &str>) {
        let got = key_path(key);
        match (got, want) {
            (Ok(p), Ok(w)) => assert_eq!(p, Path::new(w), "{key}"),
            (Err(SysctlError::InvalidKey { reason, .. }), Err(w)) => {
                assert_eq!(reason, w, "{key}");
            }
            (g, w) => panic!("{key}: got {g:?}, want {w:?}"),
        }
    }

    #[test]
    fn keys_map_to_files_below_proc_sys_and_cannot_escape_it() {
        check(
            "net.ipv4.vs.conntrack",
            Ok("proc/sys/net/ipv4/vs/conntrack"),
        );
        check(
            "net.ipv4.conf.all.arp_ignore",
            Ok("proc/sys/net/ipv4/conf/all/arp_ignore"),
        );
        check("kernel", Ok("proc/sys/kernel"));
        check("net..ipv4", Err("contains '..'"));
        check("..", Err("contains '..'"));
        check(
            "net/ipv4/ip_forward",
            Err("contains '/' (use the dotted form)"),
        );
        check("/etc/passwd", Err("contains '/' (use the dotted form)"));
        check("", Err("has an empty part"));
        check(".net.ipv4", Err("has an empty part"));
        check("net.ipv4.", Err("has an empty part"));
        check("net.a\0b", Err("contains NUL"));
    }

    fn tree() -> (tempfile::TempDir, ProcSysctls) {
        let dir = tempfile::tempdir().unwrap();
        let vs = dir.path().join("proc/sys/net/ipv4/vs");
        std::fs::create_dir_all(&vs).unwrap();
        std::fs::write(vs.join("conntrack"), "0\n").unwrap();
        std::fs::write(dir.path().join("proc/sys/net/ipv4/ip_forward"), "1\n").unwrap();
        let s = ProcSysctls::new(dir.path());
        (dir, s)
    }

    #[test]
    fn values_are_read_trimmed_and_written_bare() {
        let (dir, mut s) = tree();
        assert_eq!(
            s.get("net.ipv4.vs.conntrack").unwrap().as_deref(),
            Some("0")
        );
        s.set("net.ipv4.vs.conntrack", "1").unwrap();
        let raw = std::fs::read_to_string(dir.path().join("proc/sys/net/ipv4/vs/conntrack"));
        assert_eq!(raw.unwrap(), "1");
        assert_eq!(
            s.get("net.ipv4.vs.conntrack").unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(s.get("net.ipv4.ip_forward").unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn a_missing_parameter_reads_as_none_and_is_never_created() {
        let (dir, mut s) = tree();
        assert_eq!(s.get("net.ipv4.vs.expire_nodest_conn").unwrap(), None);
        let e = s.set("net.ipv4.vs.expire_nodest_conn", "1").unwrap_err();
        assert!(
            matches!(e, SysctlError::NotFound { ref key, .. } if key == "net.ipv4.vs.expire_nodest_conn")
        );
        assert!(
            !dir.path()
                .join("proc/sys/net/ipv4/vs/expire_nodest_conn")
                .exists()
        );
        assert!(
            e.to_string()
                .contains("proc/sys/net/ipv4/vs/expire_nodest_conn"),
            "{e}"
        );
    }

    #[test]
    fn invalid_keys_and_values_are_refused_before_any_file_is_touched() {
        let (_dir, mut s) = tree();
        assert!(matches!(
            s.get("../etc"),
            Err(SysctlError::InvalidKey { .. })
        ));
        assert!(matches!(
            s.set("net..x", "1"),
            Err(SysctlError::InvalidKey { .. })
        ));
        assert!(matches!(
            s.set("net.ipv4.ip_forward", "1\n0"),
            Err(SysctlError::Io { .. })
        ));
        assert!(matches!(
            s.set("net.ipv4.ip_forward", ""),
            Err(SysctlError::Io { .. })
        ));
    }

    #[test]
    fn a_directory_is_not_a_parameter() {
        let (_dir, s) = tree();
        assert!(matches!(s.get("net.ipv4.vs"), Err(SysctlError::Io { .. })));
    }

    #[test]
    fn the_fake_records_sets_and_answers_like_the_real_one() {
        let mut f = RecordingSysctls::with(&[("net.ipv4.vs.conntrack", "0")]);
        f.set("net.ipv4.vs.conntrack", "1").unwrap();
        assert_eq!(
            f.get("net.ipv4.vs.conntrack").unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(f.get("net.ipv4.ip_forward").unwrap(), None);
        assert!(matches!(
            f.set("net.ipv4.ip_forward", "1"),
            Err(SysctlError::NotFound { .. })
        ));
        assert!(matches!(f.get("a..b"), Err(SysctlError::InvalidKey { .. })));
        f.fail.push_back(SysctlError::Permission {
            key: "net.ipv4.vs.conntrack".into(),
            path: "/proc/sys/net/ipv4/vs/conntrack".into(),
        });
        assert!(f.set("net.ipv4.vs.conntrack", "0").is_err());
        assert_eq!(
            f.sets,
            [("net.ipv4.vs.conntrack".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn the_real_proc_sys_is_read_below_root() {
        // Read-only: /proc/sys of this machine (its namespace's values) through root "/".
        let s = ProcSysctls::new("/");
        let v = s.get("kernel.osrelease").unwrap();
        assert!(v.is_some_and(|v| !v.is_empty()));
        assert_eq!(s.get("net.ipv4.no_such_parameter").unwrap(), None);
    }
}
