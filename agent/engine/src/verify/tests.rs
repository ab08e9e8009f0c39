//! Unit tests of the interpreter on small hand-written rule sets.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::rules::Ruleset;
use super::sets::IpSet;
use super::trace::{Locals, Origin, Packet, Tracer, Vs};
use super::{MismatchKind, Outcome, compare};
use crate::inventory::Protocol;

const DUMP: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m tcp --dport 80 -j REJECT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m tcp --dport 80 -m hashlimit --hashlimit-upto 5/sec -j KUBE-SVC-A
-A KUBE-SVC-A ! -s 10.0.0.0/8 -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-A -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-1 --mask 255.255.255.255 --rsource -j KUBE-SEP-1
-A KUBE-SVC-A -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-2 --mask 255.255.255.255 --rsource -j KUBE-SEP-2
-A KUBE-SVC-A -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-1
-A KUBE-SVC-A -j KUBE-SEP-2
-A KUBE-SEP-1 -s 10.1.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-1 -p tcp -m recent --set --name KUBE-SEP-1 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.1.0.1:8080
-A KUBE-SEP-2 -s 10.1.0.2/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-2 -p tcp -m recent --set --name KUBE-SEP-2 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.1.0.2:8080
COMMIT
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pkt(src: &str, dst: &str, dport: u16) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        proto: Protocol::Tcp,
        dport,
        in_iface: "eth0".into(),
        mark: 0,
        dnat: false,
        rcheck: None,
        recent_set: false,
        masq: false,
    }
}

fn ep(a: &str, port: u16, masq: bool, aff: Option<u32>) -> Outcome {
    Outcome::Endpoint {
        ip: ip(a),
        port,
        masquerade: Some(masq),
        affinity: aff,
    }
}

fn trace_with(
    rules: &Ruleset,
    sets: &HashMap<String, IpSet>,
    ipvs: &HashMap<(Protocol, IpAddr, u16), Vs>,
    p: Packet,
    origin: Origin,
) -> BTreeSet<Outcome> {
    let locals = Locals::new(["192.168.0.2/32".parse().unwrap()]);
    Tracer {
        rules,
        sets,
        locals: &locals,
        ipvs,
    }
    .trace(p, origin)
    .unwrap()
}

fn trace(p: Packet, origin: Origin) -> BTreeSet<Outcome> {
    let rules = Ruleset::parse("t", DUMP.as_bytes()).unwrap();
    trace_with(&rules, &HashMap::new(), &HashMap::new(), p, origin)
}

#[test]
fn every_endpoint_is_reachable_with_affinity_and_remote_sources_are_masqueraded() {
    let got = trace(pkt("198.18.0.1", "10.96.0.1", 80), Origin::Arriving);
    let want = BTreeSet::from([
        ep("10.1.0.1", 8080, true, Some(10800)),
        ep("10.1.0.2", 8080, true, Some(10800)),
    ]);
    assert_eq!(got, want);
}

#[test]
fn hairpin_traffic_is_masqueraded_only_towards_the_endpoint_itself() {
    let got = trace(pkt("10.1.0.1", "10.96.0.1", 80), Origin::Arriving);
    let want = BTreeSet::from([
        ep("10.1.0.1", 8080, true, Some(10800)),
        ep("10.1.0.2", 8080, false, Some(10800)),
    ]);
    assert_eq!(got, want);
}

#[test]
fn a_service_without_endpoints_is_rejected_by_the_filter_table() {
    assert_eq!(
        trace(pkt("10.2.0.1", "10.96.0.9", 80), Origin::Arriving),
        BTreeSet::from([Outcome::Reject])
    );
    assert_eq!(
        trace(pkt("192.168.0.2", "10.96.0.9", 80), Origin::Node),
        BTreeSet::from([Outcome::Reject])
    );
}

#[test]
fn an_unmodelled_match_makes_the_path_unknown() {
    let got = trace(pkt("10.2.0.1", "10.96.0.2", 80), Origin::Arriving);
    assert_eq!(got.len(), 1);
    assert!(
        matches!(got.first(), Some(Outcome::Unknown { .. })),
        "{got:?}"
    );
    // A rule whose modelled conditions fail does not match, whatever else it says.
    let other = trace(pkt("10.2.0.1", "10.96.0.3", 80), Origin::Arriving);
    assert_eq!(other, BTreeSet::from([Outcome::NotTranslated]));
}

#[test]
fn an_accepted_packet_is_taken_by_a_matching_virtual_server() {
    let mut rules = Ruleset::parse("t", DUMP.as_bytes()).unwrap();
    rules.set_chain(
        "nat",
        "BYPASS",
        &["-m set --match-set VIPS dst,dst -j ACCEPT".to_owned()],
    );
    rules.insert_first("nat", "PREROUTING", "-j BYPASS");
    let sets = HashMap::from([(
        "VIPS".to_owned(),
        IpSet::new("hash:ip,port", &["10.96.0.1,tcp:80".to_owned()]).unwrap(),
    )]);
    let ipvs = HashMap::from([(
        (Protocol::Tcp, ip("10.96.0.1"), 80),
        Vs {
            real_servers: vec![(ip("10.1.0.1"), 8080)],
            affinity: None,
            conflict: None,
        },
    )]);
    let locals_with_vip = Locals::new([
        "192.168.0.2/32".parse().unwrap(),
        "10.96.0.1/32".parse().unwrap(),
    ]);
    let got = Tracer {
        rules: &rules,
        sets: &sets,
        locals: &locals_with_vip,
        ipvs: &ipvs,
    }
    .trace(pkt("198.18.0.1", "10.96.0.1", 80), Origin::Arriving)
    .unwrap();
    // No mark was set on this path, so KUBE-POSTROUTING does not masquerade.
    assert_eq!(got, BTreeSet::from([ep("10.1.0.1", 8080, false, None)]));
}

#[test]
fn loops_in_the_rules_are_an_error_not_a_hang() {
    let text =
        "*nat\n:PREROUTING ACCEPT [0:0]\n:A - [0:0]\n-A PREROUTING -j A\n-A A -j A\nCOMMIT\n";
    let rules = Ruleset::parse("t", text.as_bytes()).unwrap();
    let locals = Locals::default();
    let r = Tracer {
        rules: &rules,
        sets: &HashMap::new(),
        locals: &locals,
        ipvs: &HashMap::new(),
    }
    .trace(pkt("1.1.1.1", "2.2.2.2", 80), Origin::Arriving);
    assert!(r.is_err());
}

#[test]
fn differences_are_classified_by_what_differs() {
    let a = BTreeSet::from([ep("10.1.0.1", 80, true, None)]);
    let port = BTreeSet::from([ep("10.1.0.1", 81, true, None)]);
    let masq = BTreeSet::from([ep("10.1.0.1", 80, false, None)]);
    let aff = BTreeSet::from([ep("10.1.0.1", 80, true, Some(10))]);
    let drop = BTreeSet::from([Outcome::Drop]);
    assert_eq!(compare(&a, &a), None);
    assert_eq!(compare(&a, &port), Some(MismatchKind::Endpoints));
    assert_eq!(compare(&a, &masq), Some(MismatchKind::Masquerade));
    assert_eq!(compare(&a, &aff), Some(MismatchKind::Affinity));
    assert_eq!(compare(&a, &drop), Some(MismatchKind::Verdict));
}
