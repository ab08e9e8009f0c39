//! Kernel check of `ipvsmig_host::counters` and `calico` (tests/vm/node-signals.sh): run as
//! root in the VM, where IPVS and conntrack are real. Reads the counters, makes the kernel
//! count known events, and checks that the readers see exactly those deltas:
//! - 3 connections to a virtual service → IPVS "Total Conns" +3, packets and bytes in and out
//!   grow (`ip_vs_stats_show`), once the estimator has summed the per-CPU counters (≤ 2 s);
//! - 4 TCP connects to a closed loopback port → `Tcp: OutRsts` +4 (tcp_v4_send_reset);
//! - 5 UDP datagrams to a closed loopback port → `Icmp: OutDestUnreachs` +5 and `IcmpMsg:
//!   OutType3` +5 (icmp_send; loopback is exempt from ICMP rate limiting, icmpv4_xrlim_allow).
//!
//! The VM has no network device: every packet stays on its loopback. Exit 0 = all checks hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipvsmig_host::counters::{self, Counters};

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}: {st}");
}

fn read() -> Counters {
    counters::read(Path::new("/")).unwrap()
}

fn main() {
    sh(&["ip", "link", "set", "lo", "up"]);
    let before = read();
    println!("before: {before:?}");
    let ipvs0 = before
        .ipvs
        .expect("ip_vs is loaded: /proc/net/ip_vs_stats must exist");
    let ct = before
        .conntrack
        .expect("nf_conntrack is loaded: /proc/net/stat/nf_conntrack must exist");
    assert!(
        ct.drop.is_some() && ct.early_drop.is_some() && ct.insert_failed.is_some(),
        "{ct:?}"
    );

    // A virtual service on a VIP of lo, masquerading to a listener on another address of lo.
    sh(&["ip", "addr", "add", "10.96.0.10/32", "dev", "lo"]);
    sh(&["ip", "addr", "add", "10.244.0.5/32", "dev", "lo"]);
    let server = TcpListener::bind("10.244.0.5:8080").unwrap();
    sh(&["ipvsadm", "-A", "-t", "10.96.0.10:80", "-s", "rr"]);
    sh(&[
        "ipvsadm",
        "-a",
        "-t",
        "10.96.0.10:80",
        "-r",
        "10.244.0.5:8080",
        "-m",
    ]);
    let accepter = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = server.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"pong\n").unwrap();
        }
    });
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    for _ in 0..3 {
        let mut c = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping\n").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong\n");
    }
    accepter.join().unwrap();

    // RSTs and port-unreachables from closed loopback ports.
    for _ in 0..4 {
        let e = TcpStream::connect_timeout(&"127.0.0.1:9".parse().unwrap(), Duration::from_secs(2));
        assert!(e.is_err(), "port 9 must be closed in the VM");
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        udp.send_to(b"x", "127.0.0.1:9").unwrap();
        // Let the error arrive (and be consumed) before the next send.
        std::thread::sleep(Duration::from_millis(20));
        let _ = udp.take_error();
    }
    std::thread::sleep(Duration::from_millis(200));

    // IPVS sums its per-CPU counters into the totals from its rate estimator, every 2 s
    // (net/netfilter/ipvs/ip_vs_est.c): the file lags by up to that much.
    let mut after = read();
    for _ in 0..50 {
        if after.ipvs.unwrap().conns - ipvs0.conns >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = read();
    }
    println!("after:  {after:?}");
    let ipvs1 = after.ipvs.unwrap();
    assert_eq!(ipvs1.conns - ipvs0.conns, 3, "IPVS Total Conns");
    assert!(
        ipvs1.in_packets >= ipvs0.in_packets + 3 * 3,
        "{ipvs0:?} -> {ipvs1:?}"
    );
    assert!(
        ipvs1.out_packets >= ipvs0.out_packets + 3 * 2,
        "{ipvs0:?} -> {ipvs1:?}"
    );
    assert!(ipvs1.in_bytes > ipvs0.in_bytes && ipvs1.out_bytes > ipvs0.out_bytes);
    let d = |a: Option<u64>, b: Option<u64>| b.unwrap_or(0) - a.unwrap_or(0);
    assert_eq!(
        d(before.tcp_resets_sent(), after.tcp_resets_sent()),
        4,
        "Tcp OutRsts"
    );
    assert_eq!(
        d(
            before.icmp_dest_unreachable_sent(),
            after.icmp_dest_unreachable_sent()
        ),
        5,
        "Icmp OutDestUnreachs"
    );
    let t3 = |c: &Counters| c.snmp.and_then(|s| s.icmp_out_type3);
    assert_eq!(d(t3(&before), t3(&after)), 5, "IcmpMsg OutType3");

    // No calico-node in the VM; our own process is found by the same /proc reading.
    assert_eq!(
        ipvsmig_host::calico::calico_node_started(Path::new("/")).unwrap(),
        None
    );
    sh(&["ipvsadm", "-C"]);
    println!("node_signals: all checks passed");
}
