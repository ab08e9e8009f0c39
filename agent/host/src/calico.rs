//! When calico-node (Felix) last started, read from `/proc` below a host root. Calico turns its
//! IPVS handling on only if kube-ipvs0 existed when calico-node started (Calico docs, "Use IPVS
//! kube-proxy"; kube-proxy-facts.md row 12), so the cutover waits for a start later than the
//! link's creation (`cutover::Event::CalicoStarted`). Reads only; never signals a process.
//!
//! calico-node's image runs several `calico-node -<role>` processes under runit (felix, confd,
//! allocate-tunnel-addrs, ...); runit may restart one alone. Felix is the one that detects
//! IPVS, so its start time is the answer when a Felix process is found by its command line;
//! otherwise the latest start of any calico-node process.

use std::path::{Path, PathBuf};

/// `USER_HZ`, the unit of `/proc/PID/stat` starttime. `sysconf(_SC_CLK_TCK)` would need libc
/// and `unsafe`; the kernel fixes USER_HZ at 100 for every architecture Kubernetes nodes run
/// (include/asm-generic/param.h; only alpha differs), and proc(5) says starttime is in
/// clock ticks of `sysconf(_SC_CLK_TCK)`, which glibc answers from the same constant.
pub const USER_HZ: u64 = 100;

/// The `comm` of calico-node's processes (under 16 bytes, so never truncated).
pub const COMM: &str = "calico-node";

/// A readable `/proc` that does not look like the kernel's.
#[derive(Debug, thiserror::Error)]
pub enum CalicoError {
    /// `/proc` itself or `/proc/stat` cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file without the kernel's layout.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The calico-node process whose start is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalicoStart {
    /// Start time, unix seconds (rounded down).
    pub started: u64,
    /// Its process id.
    pub pid: u32,
    /// Whether it is Felix (`-felix` on its command line).
    pub felix: bool,
}

/// calico-node's start below `root` (see the module doc for which process), or `None` when no
/// calico-node process runs. Processes that exit while being read are skipped.
pub fn calico_node_started(root: &Path) -> Result<Option<CalicoStart>, CalicoError> {
    let proc_dir = root.join("proc");
    let btime = boot_time(&proc_dir.join("stat"))?;
    let entries = std::fs::read_dir(&proc_dir).map_err(|source| CalicoError::Read {
        path: proc_dir.clone(),
        source,
    })?;
    let mut found: Vec<CalicoStart> = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        // A process may exit between readdir and these reads: not an error.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end_matches('\n') != COMM {
            continue;
        }
        let stat_path = dir.join("stat");
        let Ok(stat) = std::fs::read_to_string(&stat_path) else {
            continue;
        };
        let ticks = start_ticks(&stat).map_err(|message| CalicoError::Malformed {
            path: stat_path,
            message,
        })?;
        let felix = std::fs::read(dir.join("cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|arg| arg == b"-felix"))
            .unwrap_or(false);
        found.push(CalicoStart {
            started: btime.saturating_add(ticks / USER_HZ),
            pid,
            felix,
        });
    }
    let any_felix = found.iter().any(|c| c.felix);
    Ok(found
        .into_iter()
        .filter(|c| c.felix || !any_felix)
        .max_by_key(|c| (c.started, c.pid)))
}

/// `btime` of `/proc/stat`: boot time, unix seconds (proc(5)).
fn boot_time(path: &Path) -> Result<u64, CalicoError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalicoError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| CalicoError::Malformed {
        path: path.to_owned(),
        message,
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| bad("no `btime` line".into()))?;
    line.trim().parse().map_err(|_| {
        bad(format!(
            "btime {:?} is not a number of seconds",
            line.trim()
        ))
    })
}

/// Field 22 (`starttime`, clock ticks after boot) of a `/proc/PID/stat` line. Field 2 is the
/// command in parentheses and may itself hold spaces and parentheses, so the fields are
/// counted after the line's *last* `)` (proc(5); fs/proc/array.c `do_task_stat`).
pub fn start_ticks(stat: &str) -> Result<u64, String> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| "no `(comm)` field".to_owned())?;
    // After `)`: field 3 (state) is the first word, so field 22 is the 20th.
    let w = rest
        .split_whitespace()
        .nth(22 - 3)
        .ok_or_else(|| "fewer than 22 fields".to_owned())?;
    w.parse()
        .map_err(|_| format!("starttime {w:?} is not a number of clock ticks"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A `/proc/PID/stat` line as `do_task_stat` prints it, with `comm` and `starttime`.
    fn stat_line(pid: u32, comm: &str, starttime: u64) -> String {
        // pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize ...
        format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 {starttime} 123456 789 18446744073709551615\n"
        )
    }

    struct Proc(tempfile::TempDir);

    impl Proc {
        fn new(btime: &str) -> Proc {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("proc")).unwrap();
            std::fs::write(
                d.path().join("proc/stat"),
                format!("cpu  1 2 3 4\nintr 5\nctxt 6\nbtime {btime}\nprocesses 7\n"),
            )
            .unwrap();
            Proc(d)
        }

        fn process(&self, pid: u32, comm: &str, args: &[&str], starttime: u64) -> &Proc {
            let dir = self.0.path().join(format!("proc/{pid}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("stat"), stat_line(pid, comm, starttime)).unwrap();
            let mut cmdline = args.join("\0").into_bytes();
            cmdline.push(0);
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            self
        }

        fn started(&self) -> Result<Option<CalicoStart>, CalicoError> {
            calico_node_started(self.0.path())
        }
    }

    #[test]
    fn starttime_is_counted_after_the_last_parenthesis_of_a_hostile_comm() {
        assert_eq!(start_ticks(&stat_line(7, "a) b (c", 4242)).unwrap(), 4242);
        assert_eq!(start_ticks(&stat_line(7, ") ) )", 1)).unwrap(), 1);
        assert!(
            start_ticks("7 (x) S 1 2")
                .unwrap_err()
                .contains("fewer than 22")
        );
        assert!(start_ticks("7 x S").unwrap_err().contains("(comm)"));
        let bad = stat_line(7, "x", 0).replace(" 0 123456", " soon 123456");
        assert!(start_ticks(&bad).unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn felix_start_is_boot_time_plus_its_ticks() {
        // btime 1_700_000_000; Felix started 12_345 ticks = 123.45 s after boot.
        let p = Proc::new("1700000000");
        p.process(1, "systemd", &["/sbin/init"], 1)
            .process(
                40,
                "calico-node",
                &["calico-node", "-confd"],
                99_900, // later, but confd: not the one that detects IPVS
            )
            .process(41, "calico-node", &["calico-node", "-felix"], 12_345)
            .process(42, "a) b (c", &["calico-node", "-felix"], 99_999);
        assert_eq!(
            p.started().unwrap(),
            Some(CalicoStart {
                started: 1_700_000_123,
                pid: 41,
                felix: true
            })
        );
    }

    #[test]
    fn without_felix_the_latest_calico_node_start_counts() {
        let p = Proc::new("1000");
        p.process(10, "calico-node", &["calico-node", "-confd"], 500)
            .process(11, "calico-node", &["calico-node"], 900);
        assert_eq!(
            p.started().unwrap(),
            Some(CalicoStart {
                started: 1009,
                pid: 11,
                felix: false
            })
        );
    }

    #[test]
    fn no_calico_node_process_is_none() {
        let p = Proc::new("1000");
        p.process(1, "calico-nodex", &["calico-nodex"], 5)
            .process(2, "bird", &["bird"], 5);
        assert_eq!(p.started().unwrap(), None);
    }

    #[test]
    fn a_malformed_proc_is_an_error_naming_the_file() {
        let p = Proc::new("yesterday");
        let e = p.started().unwrap_err().to_string();
        assert!(
            e.contains("proc/stat") && e.contains("\"yesterday\""),
            "{e}"
        );
        let p = Proc::new("1000");
        p.process(5, "calico-node", &["calico-node", "-felix"], 1);
        std::fs::write(p.0.path().join("proc/5/stat"), "5 (calico-node) S\n").unwrap();
        let e = p.started().unwrap_err().to_string();
        assert!(
            e.contains("proc/5/stat") && e.contains("fewer than 22"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            calico_node_started(empty.path()),
            Err(CalicoError::Read { .. })
        ));
    }

    #[test]
    fn this_machines_proc_parses_and_our_own_start_is_before_now() {
        // The real /proc: this test process started moments ago, so our own stat line read
        // with USER_HZ must give a start within minutes of now (a wrong tick rate would put it
        // hours away).
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let btime = boot_time(Path::new("/proc/stat")).unwrap();
        let started = btime + start_ticks(&stat).unwrap() / USER_HZ;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(started <= now + 1 && now - started < 600, "{started} {now}");
        assert!(calico_node_started(Path::new("/")).is_ok());
    }
}
