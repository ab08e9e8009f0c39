#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! `plan --verify` on real inputs: the hand-written golden rule sets (all three forms) and
//! kpgen-generated clusters of every shape must show no mismatch, for the full plan and for
//! hybrid plans; and each deliberately corrupted plan must be caught with the right kind.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::{DumpInput, Inventory, IpFamily, SourceKind, inventory};
use ipvsmig_engine::plan::hybrid::{self, HybridOptions, HybridPlan, set_name};
use ipvsmig_engine::plan::{self, FLAG_PERSISTENT, IpvsPlan, PlanOptions};
use ipvsmig_engine::verify::{self, Dump, MismatchKind, Tolerance, Verification, VerifyOptions};

const CASES: &[&str] = &[
    "overall",
    "policies",
    "protocols",
    "ipv6",
    "large-cluster",
    "detectors",
    "detector-iface",
    "detector-bridge",
    "nodeport-addresses",
    "legacy-xlb",
    "warnings",
];
const FORMS: &[&str] = &["restore.txt", "live-legacy.txt", "live-nft.txt"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn family_of(case: &str) -> IpFamily {
    if case == "ipv6" {
        IpFamily::IPv6
    } else {
        IpFamily::IPv4
    }
}

/// The node address the fixtures were written for (kube-proxy's test convention).
fn node_ips(family: IpFamily) -> Vec<IpAddr> {
    match family {
        IpFamily::IPv4 => vec!["192.168.0.2".parse().unwrap()],
        IpFamily::IPv6 => vec!["fd00:192:168::2".parse().unwrap()],
    }
}

struct Input {
    name: String,
    family: IpFamily,
    text: Vec<u8>,
    inv: Inventory,
}

impl Input {
    fn new(name: &str, family: IpFamily, text: Vec<u8>) -> Input {
        let inv = inventory(vec![DumpInput {
            name: name.into(),
            family,
            source: SourceKind::File { path: name.into() },
            reader: &text[..],
        }])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        Input {
            name: name.into(),
            family,
            text,
            inv,
        }
    }

    fn golden(case: &str, form: &str) -> Input {
        let path = golden_dir().join(case).join(form);
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Input::new(&format!("{case}/{form}"), family_of(case), text)
    }

    fn dumps(&self) -> Vec<Dump<'_>> {
        vec![Dump {
            name: &self.name,
            family: self.family,
            text: &self.text,
        }]
    }

    fn opts(&self) -> (PlanOptions, VerifyOptions) {
        let ips = node_ips(self.family);
        (
            PlanOptions {
                scheduler: String::new(),
                node_ips: ips.clone(),
            },
            VerifyOptions { node_ips: ips },
        )
    }

    fn full_plan(&self) -> IpvsPlan {
        plan::full(&self.inv, &self.opts().0)
    }

    fn hybrid_plan(&self, namespaces: Vec<String>) -> HybridPlan {
        let full = self.full_plan();
        hybrid::hybrid(
            &self.inv,
            &full,
            &self.opts().0,
            &HybridOptions {
                namespaces,
                ..Default::default()
            },
        )
    }

    fn verify_full(&self, p: &IpvsPlan) -> Verification {
        verify::full(&self.inv, &self.dumps(), p, &self.opts().1)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    fn verify_hybrid(&self, h: &HybridPlan) -> Verification {
        verify::hybrid(&self.inv, &self.dumps(), h, &self.opts().1)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    fn all_namespaces(&self) -> Vec<String> {
        self.inv
            .namespaces()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

fn assert_clean(what: &str, v: &Verification) {
    assert!(v.cases > 0, "{what}: no cases traced");
    assert!(
        v.mismatches.is_empty(),
        "{what}: {} mismatches of {} cases:\n{}",
        v.mismatches.len(),
        v.cases,
        v.mismatches
            .iter()
            .take(12)
            .map(|m| format!(
                "  {} {} [{}]\n    iptables: {}\n    ipvs:     {}",
                m.service,
                m.case,
                m.kind.as_str(),
                m.iptables
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                m.ipvs
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_golden_fixture_matches_its_full_plan() {
    for case in CASES {
        for form in FORMS {
            let input = Input::golden(case, form);
            let v = input.verify_full(&input.full_plan());
            assert_clean(&format!("{case}/{form} full"), &v);
        }
    }
}

#[test]
fn every_golden_fixture_matches_its_hybrid_plan_for_all_namespaces() {
    for case in CASES {
        for form in FORMS {
            let input = Input::golden(case, form);
            let h = input.hybrid_plan(input.all_namespaces());
            let mut v = input.verify_hybrid(&h);
            if *case == "warnings" {
                // Anomaly (b) of the fixture: a foreign `-m limit … -j KUBE-MARK-MASQ` rule in
                // ns1/svc1's chain masquerades some pod traffic (rate-limited: both ways).
                // The hybrid does not carry it over, and the check must say so — for pod
                // sources only: remote and node sources are masqueraded anyway, and the only
                // endpoint's hairpin traffic too.
                let m = std::mem::take(&mut v.mismatches);
                assert_eq!(m.len(), 1, "{case}/{form}: {m:#?}");
                assert_eq!(m[0].service, "ns1/svc1:p80");
                assert_eq!(m[0].kind, MismatchKind::Masquerade);
                assert!(m[0].case.contains("from pod"), "{}", m[0].case);
            }
            assert_clean(&format!("{case}/{form} hybrid (all)"), &v);
            // The hybrid keeps iptables mode's eTP=Local drop and leaves localhost NodePorts on
            // iptables: the other IPVS-mode behaviours carry over (docs/hybrid.md).
            assert!(
                v.tolerated.iter().all(|t| matches!(
                    t.tolerance,
                    Tolerance::ItpLocalNoLocalEndpoints
                        | Tolerance::EtpLocalInClusterSource
                        | Tolerance::VipBoundLocally
                )),
                "{case}/{form}: {:?}",
                v.tolerated
            );
        }
    }
}

#[test]
fn the_overall_fixture_shows_exactly_the_documented_ipvs_mode_differences() {
    // Hand-derived from the fixture (tests/golden/README.md "overall"): ns2/svc2 is eTP=Local
    // and its only endpoint is remote, so its external IP, LB IP and NodePort (3001 on the
    // node) are dropped by iptables and go to all endpoints in IPVS mode; localhost NodePorts
    // are on, so svc2, svc3 and svc5 answer on 127.0.0.1 in iptables mode only.
    let input = Input::golden("overall", "restore.txt");
    let v = input.verify_full(&input.full_plan());
    let mut got: Vec<(String, Tolerance)> = v
        .tolerated
        .iter()
        .map(|t| (t.service.clone(), t.tolerance))
        .collect();
    got.sort();
    let want = vec![
        ("ns2/svc2:p80".into(), Tolerance::EtpLocalNoLocalEndpoints),
        ("ns2/svc2:p80".into(), Tolerance::EtpLocalNoLocalEndpoints),
        ("ns2/svc2:p80".into(), Tolerance::EtpLocalNoLocalEndpoints),
        ("ns2/svc2:p80".into(), Tolerance::LocalhostNodePort),
        ("ns3/svc3:p80".into(), Tolerance::LocalhostNodePort),
        ("ns5/svc5:p80".into(), Tolerance::LocalhostNodePort),
    ];
    assert_eq!(got, want);
}

#[test]
fn hybrid_plans_for_each_single_namespace_match_the_rules() {
    for case in CASES.iter().filter(|c| **c != "warnings") {
        let input = Input::golden(case, "restore.txt");
        for ns in input.all_namespaces() {
            let h = input.hybrid_plan(vec![ns.clone()]);
            assert_clean(&format!("{case} hybrid [{ns}]"), &input.verify_hybrid(&h));
        }
    }
}

fn generated(family: IpFamily, shape: Shape, services: u32, seed: u64) -> Input {
    generated_with(family, shape, services, seed, |_| {})
}

fn generated_with(
    family: IpFamily,
    shape: Shape,
    services: u32,
    seed: u64,
    node: impl FnOnce(&mut ipvsmig_clustergen::Node),
) -> Input {
    let mut cluster = generate(family, shape, services, 3, seed);
    node(&mut cluster.node);
    Input::new("generated", family, render(&cluster).into_bytes())
}

fn check_all_plans(what: &str, input: &Input) {
    let v = input.verify_full(&input.full_plan());
    assert_clean(&format!("{what} full"), &v);
    let all = input.all_namespaces();
    let v = input.verify_hybrid(&input.hybrid_plan(all.clone()));
    assert_clean(&format!("{what} hybrid (all)"), &v);
    let half: Vec<String> = all.iter().step_by(2).cloned().collect();
    let v = input.verify_hybrid(&input.hybrid_plan(half));
    assert_clean(&format!("{what} hybrid (every other namespace)"), &v);
}

/// One change to kube-proxy's node-wide settings.
type NodeSetting = dyn Fn(&mut ipvsmig_clustergen::Node);

#[test]
fn generated_clusters_with_every_node_setting_match_their_plans() {
    use ipvsmig_clustergen::Detector;
    // Below 250 services kpgen does not reuse external or LB addresses.
    for family in [IpFamily::IPv4, IpFamily::IPv6] {
        let base = ipvsmig_clustergen::Node::default_for(family);
        let node_ip = base.node_ip;
        let settings: Vec<(&str, Box<NodeSetting>)> = vec![
            ("no detector", Box::new(|n| n.detector = Detector::None)),
            (
                "interface prefix",
                Box::new(|n| n.detector = Detector::InterfacePrefix("cali".into())),
            ),
            (
                "bridge",
                Box::new(|n| n.detector = Detector::Bridge("cbr0".into())),
            ),
            ("masquerade-all", Box::new(|n| n.masquerade_all = true)),
            ("mark bit 5", Box::new(|n| n.mark_bit = 5)),
            (
                "nodePortAddresses",
                Box::new(move |n| n.node_port_addresses = Some(vec![node_ip])),
            ),
            (
                "localhost NodePorts",
                Box::new(|n| n.localhost_node_ports = n.family == IpFamily::IPv4),
            ),
            ("large cluster", Box::new(|n| n.large_cluster = true)),
        ];
        for (name, set) in &settings {
            let input = generated_with(family, Shape::Mix, 80, 21, |n| set(n));
            check_all_plans(&format!("{family:?} {name}"), &input);
        }
    }
}

#[test]
fn generated_clusters_of_every_shape_match_their_full_and_hybrid_plans() {
    for family in [IpFamily::IPv4, IpFamily::IPv6] {
        for (shape, seed) in [(Shape::Mix, 7), (Shape::Mix, 11), (Shape::ClusterIp, 3)] {
            let input = generated(family, shape, 240, seed);
            check_all_plans(&format!("{family:?} {shape:?} seed {seed}"), &input);
        }
    }
}

/// (service, kind, case) of every mismatch.
fn found(v: &Verification) -> Vec<(String, MismatchKind, String)> {
    v.mismatches
        .iter()
        .map(|m| (m.service.clone(), m.kind, m.case.clone()))
        .collect()
}

fn assert_caught(v: &Verification, service: &str, kind: MismatchKind, case_has: &str) {
    let f = found(v);
    assert!(!f.is_empty(), "the corruption was not caught");
    assert!(
        f.iter()
            .all(|(s, k, c)| s == service && *k == kind && c.contains(case_has)),
        "expected only {kind:?} on {service} ({case_has}), got {f:#?}"
    );
}

/// The members of one of the hybrid's IPv4 sets.
fn members<'a>(
    h: &'a mut HybridPlan,
    base: &str,
) -> &'a mut std::collections::BTreeSet<plan::ipsets::Member> {
    &mut h
        .ipsets
        .get_mut(&set_name(base, IpFamily::IPv4))
        .unwrap()
        .members
}

/// The rules of one of the hybrid's IPv4 chains.
fn chain_rules<'a>(h: &'a mut HybridPlan, name: &str) -> &'a mut Vec<String> {
    let fr = h
        .rules
        .iter_mut()
        .find(|r| r.family == IpFamily::IPv4)
        .unwrap();
    &mut fr.chains.iter_mut().find(|c| c.name == name).unwrap().rules
}

fn overall() -> Input {
    Input::golden("overall", "restore.txt")
}

#[test]
fn a_real_server_on_the_wrong_port_is_an_endpoints_mismatch() {
    let input = overall();
    let mut full = input.full_plan();
    for vs in full.virtual_servers.iter_mut() {
        if vs.service.name == "svc4" {
            vs.real_servers[0].port = 81;
        }
    }
    assert_caught(
        &input.verify_full(&full),
        "ns4/svc4:p80",
        MismatchKind::Endpoints,
        "",
    );
    let mut h = input.hybrid_plan(vec!["ns4".into()]);
    for vs in h.virtual_servers.iter_mut() {
        if vs.service.name == "svc4" && vs.address.to_string() == "192.168.99.33" {
            vs.real_servers[1].port = 8080;
        }
    }
    assert_caught(
        &input.verify_hybrid(&h),
        "ns4/svc4:p80",
        MismatchKind::Endpoints,
        "externalIP 192.168.99.33:80",
    );
}

#[test]
fn lost_persistence_is_an_affinity_mismatch() {
    let input = overall();
    let mut full = input.full_plan();
    for vs in full.virtual_servers.iter_mut() {
        vs.flags &= !FLAG_PERSISTENT;
    }
    assert_caught(
        &input.verify_full(&full),
        "ns5/svc5:p80",
        MismatchKind::Affinity,
        "",
    );
    let mut h = input.hybrid_plan(vec!["ns5".into()]);
    for vs in h.virtual_servers.iter_mut() {
        vs.flags &= !FLAG_PERSISTENT;
    }
    assert_caught(
        &input.verify_hybrid(&h),
        "ns5/svc5:p80",
        MismatchKind::Affinity,
        "",
    );
}

#[test]
fn a_missing_masquerade_set_member_or_mark_rule_is_a_masquerade_mismatch() {
    let input = overall();

    // The external IP's key left out of EXT-MASQ: remote clients reach svc4 unmasqueraded.
    let mut h = input.hybrid_plan(vec!["ns4".into()]);
    assert!(
        members(&mut h, hybrid::set::EXT_MASQ).remove(&"192.168.99.33,tcp:80".parse().unwrap())
    );
    assert_caught(
        &input.verify_hybrid(&h),
        "ns4/svc4:p80",
        MismatchKind::Masquerade,
        "externalIP 192.168.99.33:80",
    );

    // The ClusterIP's key left out of CLUSTER-IP: remote and node sources are not masqueraded.
    let mut h = input.hybrid_plan(vec!["ns1".into()]);
    assert!(
        members(&mut h, hybrid::set::CLUSTER_IP).remove(&"172.30.0.41,tcp:80".parse().unwrap())
    );
    let v = input.verify_hybrid(&h);
    assert_caught(&v, "ns1/svc1:p80", MismatchKind::Masquerade, "clusterIP");
    // Remote sources only: the node's own traffic to a planned key outside CLUSTER-IP is
    // marked as traffic to an external destination.
    assert_eq!(v.mismatches.len(), 1, "{:#?}", found(&v));
    assert!(v.mismatches[0].case.contains("from remote"));

    // The MARK rule for ClusterIPs dropped from IPVSMIG-ADMIT.
    let mut h = input.hybrid_plan(vec!["ns1".into()]);
    let admit = chain_rules(&mut h, hybrid::chain::ADMIT);
    let before = admit.len();
    admit.retain(|r| !r.starts_with("-m set --match-set IPVSMIG-CLUSTER-IP"));
    assert_eq!(admit.len(), before - 1);
    assert_caught(
        &input.verify_hybrid(&h),
        "ns1/svc1:p80",
        MismatchKind::Masquerade,
        "clusterIP",
    );

    // The hairpin set emptied: an endpoint calling its own service is not masqueraded.
    let mut h = input.hybrid_plan(vec!["ns1".into()]);
    members(&mut h, hybrid::set::LOOP_BACK).clear();
    assert_caught(
        &input.verify_hybrid(&h),
        "ns1/svc1:p80",
        MismatchKind::Masquerade,
        "from its own endpoint",
    );
}

#[test]
fn a_missing_source_range_filter_is_a_verdict_mismatch() {
    let input = overall();
    let fam = IpFamily::IPv4;

    // Hybrid without the LB-FW rule: allowed sources are no longer ACCEPTed before
    // kube-proxy's KUBE-PROXY-FIREWALL, which drops every undNATed packet to the LB IP.
    let mut h = input.hybrid_plan(vec!["ns5".into()]);
    chain_rules(&mut h, hybrid::chain::FILTER).retain(|r| !r.contains("LB-FW"));
    assert_caught(
        &input.verify_hybrid(&h),
        "ns5/svc5:p80",
        MismatchKind::Verdict,
        "from allowed remote",
    );

    // Hybrid without the allowed ranges: allowed sources are dropped.
    let mut h = input.hybrid_plan(vec!["ns5".into()]);
    members(&mut h, hybrid::set::LB_SRC).clear();
    assert_caught(
        &input.verify_hybrid(&h),
        "ns5/svc5:p80",
        MismatchKind::Verdict,
        "from allowed remote",
    );

    // Full plan without the LB's KUBE-LOAD-BALANCER-FW entry: denied sources get through.
    let mut full = input.full_plan();
    full.ipsets
        .get_mut(&plan::ipsets::set_name("LOAD-BALANCER-FW", fam))
        .unwrap()
        .members
        .clear();
    assert_caught(
        &input.verify_full(&full),
        "ns5/svc5:p80",
        MismatchKind::Verdict,
        "from denied remote",
    );
}

#[test]
fn a_missing_virtual_server_is_a_verdict_mismatch() {
    let input = overall();
    let mut full = input.full_plan();
    full.virtual_servers
        .retain(|vs| !(vs.service.name == "svc3" && vs.kind == plan::VsKind::NodePort));
    assert_caught(
        &input.verify_full(&full),
        "ns3/svc3:p80",
        MismatchKind::Verdict,
        "nodePort 192.168.0.2",
    );
}

#[test]
fn two_virtual_servers_for_one_key_are_reported_not_resolved() {
    // kpgen's mixed shape reuses external IPs past 250 services; by hand here: a second
    // service planned on svc4's external IP and port, without real servers.
    let input = overall();
    let mut full = input.full_plan();
    let mut twin = full
        .virtual_servers
        .iter()
        .find(|vs| vs.service.name == "svc4" && vs.kind == plan::VsKind::ExternalIp)
        .unwrap()
        .clone();
    std::sync::Arc::make_mut(&mut twin.service).name = "svc9".into();
    twin.real_servers.clear();
    full.virtual_servers.push(twin);
    let v = input.verify_full(&full);
    // From a remote client, a pod and the node.
    assert_eq!(found(&v).len(), 3, "{:#?}", found(&v));
    assert_eq!(v.mismatches[0].kind, MismatchKind::Unknown);
    assert!(
        v.mismatches[0].ipvs[0].to_string().contains("ns4/svc9:p80"),
        "{}",
        v.mismatches[0].ipvs[0]
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const SEED: &str = include_str!("golden/overall/restore.txt");

    /// The clean fixture's inventory and plans, checked against a damaged copy of its rules:
    /// the check returns a verification or an error, whatever the rules say.
    fn check(text: &[u8]) {
        let clean = Input::new("seed", IpFamily::IPv4, SEED.as_bytes().to_vec());
        let dumps = [Dump {
            name: "damaged",
            family: IpFamily::IPv4,
            text,
        }];
        let (_, vopts) = clean.opts();
        let _ = verify::full(&clean.inv, &dumps, &clean.full_plan(), &vopts);
        let h = clean.hybrid_plan(clean.all_namespaces());
        let _ = verify::hybrid(&clean.inv, &dumps, &h, &vopts);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn damaged_rules_never_panic(edits in proptest::collection::vec((0usize..SEED.len(), any::<u8>()), 1..24)) {
            let mut b = SEED.as_bytes().to_vec();
            for (i, v) in edits {
                b[i] = v;
            }
            check(&b);
        }

        #[test]
        fn reordered_rules_never_panic(a in 0usize..200, c in 0usize..200) {
            let mut lines: Vec<&str> = SEED.lines().collect();
            let n = lines.len();
            lines.swap(a % n, c % n);
            check(lines.join("\n").as_bytes());
        }
    }
}

#[test]
fn a_tolerated_difference_never_hides_a_wrong_endpoint() {
    // ns2/svc2 is eTP=Local without a local endpoint: its external traffic is a tolerated
    // difference (iptables drops, IPVS uses all endpoints) — but only towards the endpoints
    // the rules show. A real server on the wrong port there is still a mismatch.
    let input = overall();
    let mut full = input.full_plan();
    for vs in full.virtual_servers.iter_mut() {
        if vs.service.name == "svc2" && vs.kind == plan::VsKind::ExternalIp {
            vs.real_servers[0].port = 8081;
        }
    }
    let v = input.verify_full(&full);
    let f = found(&v);
    assert!(
        f.iter().any(|(s, _, c)| s == "ns2/svc2:p80"
            && c.contains("externalIP 192.168.99.22:80/tcp from remote")),
        "{f:#?}"
    );
    assert!(
        !v.tolerated.iter().any(|t| t
            .case
            .contains("externalIP 192.168.99.22:80/tcp from remote")),
        "{:#?}",
        v.tolerated
    );
}
