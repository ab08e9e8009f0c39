//! The node's kernel counters the rollback signal watches besides the probes (DESIGN.md
//! "Rejection-rate signal and rollback"): IPVS totals from `/proc/net/ip_vs_stats`, ICMP
//! destination-unreachables and TCP resets sent from `/proc/net/snmp`, conntrack drops from
//! `/proc/net/stat/nf_conntrack`. Every path is below a host root so tests read a temp tree.
//!
//! Reads only, decides nothing. A missing file is `None` for its counters (IPVS is not loaded
//! before the cutover, and a kernel without conntrack has no stat file); a file that does not
//! have the kernel's layout is an error naming the file and the line. `/proc/net` is the
//! network namespace of the reading process: the agent runs on the host network.
//!
//! The IPVS totals lag: the kernel sums its per-CPU counters into them from the rate
//! estimator, every 2 s (net/netfilter/ipvs/ip_vs_est.c; seen in tests/vm/node-signals.sh).
//! The snmp and conntrack counters are summed when the file is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Below the host root.
pub const IPVS_STATS: &str = "proc/net/ip_vs_stats";
/// Below the host root.
pub const SNMP: &str = "proc/net/snmp";
/// Below the host root.
pub const CONNTRACK_STATS: &str = "proc/net/stat/nf_conntrack";

/// An unreadable or malformed counters file.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// The file exists but cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not have the kernel's layout.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// IPVS totals since the module was loaded (`ip_vs_stats_show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpvsTotals {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in (client → virtual service).
    pub in_packets: u64,
    /// Packets out (real server → client).
    pub out_packets: u64,
    /// Bytes in.
    pub in_bytes: u64,
    /// Bytes out.
    pub out_bytes: u64,
}

/// The `/proc/net/snmp` counters this agent reads; each `None` when the kernel does not
/// print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snmp {
    /// `Icmp: OutDestUnreachs`.
    pub icmp_out_dest_unreachs: Option<u64>,
    /// `IcmpMsg: OutType3` (printed only once non-zero).
    pub icmp_out_type3: Option<u64>,
    /// `Tcp: OutRsts`.
    pub tcp_out_rsts: Option<u64>,
}

/// Conntrack drop counters summed over CPUs; a column the kernel does not print is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConntrackDrops {
    /// `drop`: packets dropped because no conntrack entry could be made.
    pub drop: Option<u64>,
    /// `early_drop`: entries evicted because the table was full.
    pub early_drop: Option<u64>,
    /// `insert_failed`: entries that lost an insertion race.
    pub insert_failed: Option<u64>,
}

impl ConntrackDrops {
    /// The three summed; `None` when the kernel prints none of them.
    pub fn total(&self) -> Option<u64> {
        [self.drop, self.early_drop, self.insert_failed]
            .into_iter()
            .flatten()
            .reduce(u64::wrapping_add)
    }
}

/// One reading of every counter; `None` where the file is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// `/proc/net/ip_vs_stats` (absent until IPVS is loaded).
    pub ipvs: Option<IpvsTotals>,
    /// `/proc/net/snmp`.
    pub snmp: Option<Snmp>,
    /// `/proc/net/stat/nf_conntrack`.
    pub conntrack: Option<ConntrackDrops>,
}

impl Counters {
    /// ICMP destination-unreachables sent: `Icmp: OutDestUnreachs`, else `IcmpMsg: OutType3`
    /// (the same count per RFC 1213's icmpOutDestUnreachs and type 3 of the per-type table).
    pub fn icmp_dest_unreachable_sent(&self) -> Option<u64> {
        let s = self.snmp?;
        s.icmp_out_dest_unreachs.or(s.icmp_out_type3)
    }

    /// TCP resets sent.
    pub fn tcp_resets_sent(&self) -> Option<u64> {
        self.snmp?.tcp_out_rsts
    }
}

/// Reads every counter below `root`.
pub fn read(root: &Path) -> Result<Counters, CountersError> {
    Ok(Counters {
        ipvs: read_ipvs_stats(root)?,
        snmp: read_snmp(root)?,
        conntrack: read_conntrack(root)?,
    })
}

/// `rel` below `root` parsed with `parse`; `None` when the file does not exist.
fn read_parsed<T>(
    root: &Path,
    rel: &str,
    parse: fn(&str) -> Result<T, Bad>,
) -> Result<Option<T>, CountersError> {
    let path = root.join(rel);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CountersError::Read { path, source }),
    };
    parse(&text)
        .map(Some)
        .map_err(|(line, message)| CountersError::Malformed {
            path,
            line,
            message,
        })
}

/// `/proc/net/ip_vs_stats` below `root`; `None` when IPVS is not loaded.
pub fn read_ipvs_stats(root: &Path) -> Result<Option<IpvsTotals>, CountersError> {
    read_parsed(root, IPVS_STATS, parse_ipvs_stats)
}

/// `/proc/net/snmp` below `root`.
pub fn read_snmp(root: &Path) -> Result<Option<Snmp>, CountersError> {
    read_parsed(root, SNMP, parse_snmp)
}

/// `/proc/net/stat/nf_conntrack` below `root`; `None` without conntrack.
pub fn read_conntrack(root: &Path) -> Result<Option<ConntrackDrops>, CountersError> {
    read_parsed(root, CONNTRACK_STATS, parse_conntrack)
}

/// A parse failure: 1-based line and message.
type Bad = (usize, String);

/// `/proc/net/ip_vs_stats` as `ip_vs_stats_show` (net/netfilter/ipvs/ip_vs_ctl.c) prints it:
/// two header lines (`Total Incoming Outgoing ...`, `Conns Packets Packets Bytes Bytes`),
/// then the totals as `%8LX %8LX %8LX %16LX %16LX` (hexadecimal, no prefix), then the rates.
/// The header is checked by its words so that another layout is refused, not misread.
pub fn parse_ipvs_stats(text: &str) -> Result<IpvsTotals, Bad> {
    let lines: Vec<&str> = text.lines().collect();
    let words = |i: usize| -> Vec<&str> {
        lines
            .get(i)
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default()
    };
    if words(0) != ["Total", "Incoming", "Outgoing", "Incoming", "Outgoing"] {
        return Err((1, "not the `Total Incoming Outgoing ...` header".into()));
    }
    if words(1) != ["Conns", "Packets", "Packets", "Bytes", "Bytes"] {
        return Err((
            2,
            "not the `Conns Packets Packets Bytes Bytes` header".into(),
        ));
    }
    let v = words(2);
    if v.len() != 5 {
        return Err((3, format!("{} values, want 5 hexadecimal totals", v.len())));
    }
    let mut n = [0u64; 5];
    for (slot, w) in n.iter_mut().zip(&v) {
        *slot = u64::from_str_radix(w, 16)
            .map_err(|_| (3, format!("{w:?} is not a hexadecimal counter")))?;
    }
    Ok(IpvsTotals {
        conns: n[0],
        in_packets: n[1],
        out_packets: n[2],
        in_bytes: n[3],
        out_bytes: n[4],
    })
}

/// `/proc/net/snmp` (net/ipv4/proc.c `snmp_seq_show`): pairs of lines with the same `Proto:`
/// prefix, names then values. `IcmpMsg` pairs appear only for non-zero ICMP types, up to 16 per
/// pair (`icmpmsg_put`), so there may be none or several. Values are read by name, never by
/// position (columns were added over the years: `InCsumErrors`, `OutRateLimitGlobal`, ...).
pub fn parse_snmp(text: &str) -> Result<Snmp, Bad> {
    let mut values: BTreeMap<(String, String), u64> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // Line numbers count the blank lines too, for the message.
    let numbers: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let (hn, vn) = (
            numbers[i],
            numbers.get(i + 1).copied().unwrap_or(numbers[i] + 1),
        );
        let (hp, names) = split_proto(lines[i]).ok_or((hn, "no `Proto:` prefix".to_owned()))?;
        let Some(vline) = lines.get(i + 1) else {
            return Err((vn, format!("{hp}: names without a line of values")));
        };
        let (vp, vals) = split_proto(vline).ok_or((vn, "no `Proto:` prefix".to_owned()))?;
        if vp != hp {
            return Err((vn, format!("{vp}: values after {hp}'s names")));
        }
        let (names, vals): (Vec<&str>, Vec<&str>) = (
            names.split_whitespace().collect(),
            vals.split_whitespace().collect(),
        );
        if names.len() != vals.len() {
            return Err((
                vn,
                format!("{hp}: {} names but {} values", names.len(), vals.len()),
            ));
        }
        for (name, val) in names.iter().zip(&vals) {
            // Tcp MaxConn is -1 (signed): only the counters read below must be unsigned.
            if let Ok(v) = val.parse::<u64>() {
                values.insert((hp.to_owned(), (*name).to_owned()), v);
            } else if val.parse::<i64>().is_err() {
                return Err((vn, format!("{hp} {name}: {val:?} is not a number")));
            }
        }
        i += 2;
    }
    let get = |p: &str, n: &str| values.get(&(p.to_owned(), n.to_owned())).copied();
    Ok(Snmp {
        icmp_out_dest_unreachs: get("Icmp", "OutDestUnreachs"),
        icmp_out_type3: get("IcmpMsg", "OutType3"),
        tcp_out_rsts: get("Tcp", "OutRsts"),
    })
}

fn split_proto(line: &str) -> Option<(&str, &str)> {
    let (p, rest) = line.split_once(':')?;
    (!p.is_empty() && !p.contains(char::is_whitespace)).then_some((p, rest))
}

/// `/proc/net/stat/nf_conntrack` (net/netfilter/nf_conntrack_standalone.c `ct_cpu_seq_show`):
/// a header of column names, then one row per possible CPU of `%08x` values. Columns differ
/// between kernels (`searched` became `clashres`, `delete_list` became `chainlength`,
/// `search_restart` was added), so they are found by the header's names.
pub fn parse_conntrack(text: &str) -> Result<ConntrackDrops, Bad> {
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err((1, "empty: no header line".into()));
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    if names.first() != Some(&"entries") {
        return Err((1, "not the `entries ...` header".into()));
    }
    let col = |n: &str| names.iter().position(|c| *c == n);
    let cols = [col("drop"), col("early_drop"), col("insert_failed")];
    let mut sums: [Option<u64>; 3] = cols.map(|c| c.map(|_| 0));
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let vals: Vec<&str> = line.split_whitespace().collect();
        if vals.len() != names.len() {
            return Err((
                i + 1,
                format!("{} values under {} column names", vals.len(), names.len()),
            ));
        }
        for (sum, c) in sums.iter_mut().zip(cols) {
            let (Some(s), Some(c)) = (sum.as_mut(), c) else {
                continue;
            };
            let w = vals[c];
            let v = u64::from_str_radix(w, 16)
                .map_err(|_| (i + 1, format!("{w:?} is not a hexadecimal counter")))?;
            *s = s.wrapping_add(v);
        }
    }
    Ok(ConntrackDrops {
        drop: sums[0],
        early_drop: sums[1],
        insert_failed: sums[2],
    })
}

#[cfg(test)]
mod tests;
