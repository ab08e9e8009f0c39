//! The counters readers on files written from the kernel's own format strings (each fixture
//! cites the function that prints it), on a temp host root, and on this machine's /proc.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// `ip_vs_stats_show` (net/netfilter/ipvs/ip_vs_ctl.c, v4.1+): the two header `seq_puts`,
/// `"%8LX %8LX %8LX %16LX %16LX\n\n"` for conns, inpkts, outpkts, inbytes, outbytes, then the
/// rates header and line. Values: 0x1A2B conns = 6699, 0xFF00 = 65280 packets in,
/// 0xFE00 = 65024 out, 0x12345678 = 305419896 bytes in, 0x1_0000_0000 = 4294967296 out (a
/// 64-bit byte counter past 32 bits).
const IPVS_STATS_FIXTURE: &str = "   Total Incoming Outgoing         Incoming         Outgoing
   Conns  Packets  Packets            Bytes            Bytes
    1A2B     FF00     FE00         12345678        100000000

 Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
       1        2        2              100              200
";

/// `snmp_seq_show` (net/ipv4/proc.c, v6.x): Ip, Icmp (with `OutRateLimitGlobal
/// OutRateLimitHost`, v6.0+), two `IcmpMsg` pairs as `icmpmsg_put` splits them at 16 types
/// (OutType3 in the second), Tcp (MaxConn -1), Udp.
const SNMP_FIXTURE: &str = "Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 1000
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutEchoReps
Icmp: 10 0 0 4 57 0 0 0 42 15
IcmpMsg: InType0 InType1 InType2 InType3 InType4 InType5 InType6 InType7 InType8 InType9 InType10 InType11 InType12 InType13 InType14 InType15
IcmpMsg: 1 1 1 4 1 1 1 1 1 1 1 1 1 1 1 1
IcmpMsg: OutType0 OutType3
IcmpMsg: 15 42
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 940 95 741 81 0 55938 32545 0 0 822 0
Udp: InDatagrams NoPorts
Udp: 236 0
";

/// `ct_cpu_seq_show` (net/netfilter/nf_conntrack_standalone.c, v5.15+ header with `clashres`
/// and `chainlength`; rows `%08x`, two CPUs). drop 0x10 + 0x1 = 17, early_drop 0x2 + 0x3 = 5,
/// insert_failed 0xa + 0x0 = 10.
const CONNTRACK_FIXTURE: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000005  00000000 00000001 00000000 00000007 00000000 00000000 00000000 00000000 0000000a 00000010 00000002 00000000  00000000 00000000 00000000 00000000
00000005  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000003 00000000  00000000 00000000 00000000 00000000
";

/// The same file as kernels before v4.x printed it (`searched`, `delete_list`, no
/// `search_restart`, one CPU): columns found by name.
const CONNTRACK_OLD_FIXTURE: &str = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete
00000001  00000002 00000003 00000004 00000005 00000006 00000007 00000008 00000009 0000000b 0000000c 0000000d 0000000e  0000000f 00000010 00000011 
";

fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn ipvs_totals_are_read_as_hexadecimal_including_64_bit_byte_counters() {
    assert_eq!(
        parse_ipvs_stats(IPVS_STATS_FIXTURE).unwrap(),
        IpvsTotals {
            conns: 6699,
            in_packets: 65280,
            out_packets: 65024,
            in_bytes: 305_419_896,
            out_bytes: 4_294_967_296,
        }
    );
}

#[test]
fn snmp_counters_are_found_by_name_across_several_icmpmsg_pairs() {
    assert_eq!(
        parse_snmp(SNMP_FIXTURE).unwrap(),
        Snmp {
            icmp_out_dest_unreachs: Some(42),
            icmp_out_type3: Some(42),
            tcp_out_rsts: Some(822),
        }
    );
}

#[test]
fn icmpmsg_is_absent_until_a_type_is_counted_and_the_icmp_column_still_answers() {
    // icmpmsg_put prints nothing when every per-type counter is 0.
    let text = "Icmp: InMsgs OutDestUnreachs\nIcmp: 0 0\nTcp: OutRsts\nTcp: 3\n";
    let s = parse_snmp(text).unwrap();
    assert_eq!(s.icmp_out_type3, None);
    let c = Counters {
        snmp: Some(s),
        ..Counters::default()
    };
    assert_eq!(c.icmp_dest_unreachable_sent(), Some(0));
    assert_eq!(c.tcp_resets_sent(), Some(3));
}

#[test]
fn conntrack_drops_are_summed_over_cpus_by_column_name() {
    let d = parse_conntrack(CONNTRACK_FIXTURE).unwrap();
    assert_eq!(
        d,
        ConntrackDrops {
            drop: Some(17),
            early_drop: Some(5),
            insert_failed: Some(10),
        }
    );
    assert_eq!(d.total(), Some(32));
    let old = parse_conntrack(CONNTRACK_OLD_FIXTURE).unwrap();
    assert_eq!(
        old,
        ConntrackDrops {
            drop: Some(0xc),
            early_drop: Some(0xd),
            insert_failed: Some(0xb),
        }
    );
}

#[test]
fn a_conntrack_header_without_drop_columns_gives_none() {
    let d = parse_conntrack("entries found\n00000001 00000002\n").unwrap();
    assert_eq!(d, ConntrackDrops::default());
    assert_eq!(d.total(), None);
}

#[test]
fn read_finds_every_file_below_the_host_root() {
    let root = root_with(&[
        (IPVS_STATS, IPVS_STATS_FIXTURE),
        (SNMP, SNMP_FIXTURE),
        (CONNTRACK_STATS, CONNTRACK_FIXTURE),
    ]);
    let c = read(root.path()).unwrap();
    assert_eq!(c.ipvs.map(|i| i.conns), Some(6699));
    assert_eq!(c.icmp_dest_unreachable_sent(), Some(42));
    assert_eq!(c.tcp_resets_sent(), Some(822));
    assert_eq!(c.conntrack.and_then(|d| d.total()), Some(32));
}

#[test]
fn missing_files_are_none_not_errors() {
    // Before the cutover IPVS is not loaded: no ip_vs_stats, the rest present.
    let root = root_with(&[(SNMP, SNMP_FIXTURE)]);
    let c = read(root.path()).unwrap();
    assert_eq!(c.ipvs, None);
    assert_eq!(c.conntrack, None);
    assert_eq!(c.tcp_resets_sent(), Some(822));
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(read(empty.path()).unwrap(), Counters::default());
}

/// One table of malformed files: the error names the file and the line.
fn check(rel: &str, text: &str, line: usize, needle: &str) {
    let root = root_with(&[(rel, text)]);
    let e = read(root.path()).expect_err(text);
    let msg = e.to_string();
    let want = format!("{}:{line}: ", root.path().join(rel).display());
    assert!(msg.starts_with(&want), "{msg} (want {want})");
    assert!(msg.contains(needle), "{msg} (want {needle})");
}

#[test]
fn malformed_files_are_errors_naming_file_and_line() {
    check(IPVS_STATS, "", 1, "header");
    check(
        IPVS_STATS,
        "Total Incoming Outgoing Incoming Outgoing\n",
        2,
        "header",
    );
    check(
        IPVS_STATS,
        "Total Incoming Outgoing Incoming Outgoing\nConns Packets Packets Bytes Bytes\n1 2 3\n",
        3,
        "3 values",
    );
    check(
        IPVS_STATS,
        "Total Incoming Outgoing Incoming Outgoing\nConns Packets Packets Bytes Bytes\n1 2 3 4 XYZ\n",
        3,
        "\"XYZ\"",
    );
    check(SNMP, "Ip: a b\n", 2, "without a line of values");
    check(SNMP, "Ip: a b\nTcp: 1 2\n", 2, "after Ip's names");
    check(SNMP, "Ip: a b\nIp: 1\n", 2, "2 names but 1 values");
    check(SNMP, "Ip: a\nIp: 1\nno prefix here\n", 3, "Proto:");
    check(SNMP, "Tcp: OutRsts\nTcp: many\n", 2, "\"many\"");
    check(CONNTRACK_STATS, "", 1, "empty");
    check(CONNTRACK_STATS, "cpu drop\n", 1, "entries");
    check(
        CONNTRACK_STATS,
        "entries drop\n00000001 00000002\n00000001\n",
        3,
        "1 values under 2",
    );
    check(
        CONNTRACK_STATS,
        "entries drop\n00000001 0000zz02\n",
        2,
        "hexadecimal",
    );
}

#[test]
fn this_machines_proc_files_parse() {
    // The real kernel's files where this machine has them (ip_vs_stats only with IPVS loaded).
    let c = read(Path::new("/")).unwrap();
    if Path::new("/proc/net/snmp").exists() {
        assert!(c.tcp_resets_sent().is_some(), "{c:?}");
        assert!(c.icmp_dest_unreachable_sent().is_some(), "{c:?}");
    } else {
        eprintln!("SKIP: no /proc/net/snmp on this machine");
    }
    if Path::new("/proc/net/stat/nf_conntrack").exists() {
        let d = c.conntrack.unwrap();
        assert!(d.drop.is_some() && d.early_drop.is_some() && d.insert_failed.is_some());
    } else {
        eprintln!("SKIP: no /proc/net/stat/nf_conntrack on this machine");
    }
}
