//! Expectations written from kube-proxy's IPVS proxier behaviour (kube-proxy-facts.md §2.1:
//! one virtual server per ClusterIP / external IP / LB IP / NodePort-per-node-IP, weight-1 NAT
//! real servers, ClientIP affinity → persistent + timeout, mh → FlagSourceHash, empty virtual
//! servers for services without endpoints, eTP=Local falling back to all endpoints when none is
//! local (PR kubernetes/kubernetes#97081)), applied by hand to the `overall` golden fixture —
//! the services of kube-proxy's TestOverallIPTablesRules.

use std::net::IpAddr;

use super::*;
use crate::inventory::inventory_from_str;

const OVERALL: &str = include_str!("../../tests/golden/overall/restore.txt");

/// (service, kind, address, port, flags, timeout, real servers)
type Row<S> = (S, VsKind, S, u16, u32, u32, Vec<S>);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn plan(scheduler: &str) -> IpvsPlan {
    let inv = inventory_from_str("overall", OVERALL).unwrap();
    full(
        &inv,
        &PlanOptions {
            scheduler: scheduler.into(),
            node_ips: vec![ip("192.168.0.2"), ip("127.0.0.1")],
        },
    )
}

#[test]
fn the_overall_services_give_kube_proxys_virtual_servers() {
    let p = plan("");
    // (service, kind, address, port, flags, timeout, real servers) — written from §2.1.
    let want: Vec<Row<&str>> = vec![
        (
            "ns2/svc2:p80",
            VsKind::LoadBalancer,
            "1.2.3.4",
            80,
            0,
            0,
            vec!["10.180.0.2:80"],
        ),
        (
            "ns5/svc5:p80",
            VsKind::LoadBalancer,
            "5.6.7.8",
            80,
            1,
            10800,
            vec!["10.180.0.3:80"],
        ),
        (
            "ns1/svc1:p80",
            VsKind::ClusterIp,
            "172.30.0.41",
            80,
            0,
            0,
            vec!["10.180.0.1:80"],
        ),
        (
            "ns2/svc2:p80",
            VsKind::ClusterIp,
            "172.30.0.42",
            80,
            0,
            0,
            vec!["10.180.0.2:80"],
        ),
        (
            "ns3/svc3:p80",
            VsKind::ClusterIp,
            "172.30.0.43",
            80,
            0,
            0,
            vec!["10.180.0.3:80"],
        ),
        (
            "ns4/svc4:p80",
            VsKind::ClusterIp,
            "172.30.0.44",
            80,
            0,
            0,
            vec!["10.180.0.4:80", "10.180.0.5:80"],
        ),
        (
            "ns5/svc5:p80",
            VsKind::ClusterIp,
            "172.30.0.45",
            80,
            1,
            10800,
            vec!["10.180.0.3:80"],
        ),
        (
            "ns6/svc6:p80",
            VsKind::ClusterIp,
            "172.30.0.46",
            80,
            0,
            0,
            vec![],
        ),
        (
            "ns2/svc2:p80",
            VsKind::NodePort,
            "192.168.0.2",
            3001,
            0,
            0,
            vec!["10.180.0.2:80"],
        ),
        (
            "ns5/svc5:p80",
            VsKind::NodePort,
            "192.168.0.2",
            3002,
            1,
            10800,
            vec!["10.180.0.3:80"],
        ),
        (
            "ns3/svc3:p80",
            VsKind::NodePort,
            "192.168.0.2",
            3003,
            0,
            0,
            vec!["10.180.0.3:80"],
        ),
        (
            "ns2/svc2:p80",
            VsKind::ExternalIp,
            "192.168.99.22",
            80,
            0,
            0,
            vec!["10.180.0.2:80"],
        ),
        (
            "ns4/svc4:p80",
            VsKind::ExternalIp,
            "192.168.99.33",
            80,
            0,
            0,
            vec!["10.180.0.4:80", "10.180.0.5:80"],
        ),
    ];
    let got: Vec<Row<String>> = p
        .virtual_servers
        .iter()
        .map(|v| {
            assert_eq!(v.protocol, Protocol::Tcp);
            assert_eq!(&*v.scheduler, "rr", "kube-proxy's default scheduler");
            assert_eq!(v.netmask, 0xffff_ffff);
            assert!(v.real_servers.iter().all(|r| r.weight == 1));
            (
                v.service.to_string(),
                v.kind,
                v.address.to_string(),
                v.port,
                v.flags,
                v.timeout,
                v.real_servers
                    .iter()
                    .map(|r| format!("{}:{}", r.address, r.port))
                    .collect(),
            )
        })
        .collect();
    let want: Vec<Row<String>> = want
        .into_iter()
        .map(|(s, k, a, p, f, t, r)| {
            (
                s.into(),
                k,
                a.into(),
                p,
                f,
                t,
                r.into_iter().map(String::from).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn vips_are_bound_and_node_ports_are_not() {
    let p = plan("");
    let want: Vec<IpAddr> = [
        "1.2.3.4",
        "5.6.7.8",
        "172.30.0.41",
        "172.30.0.42",
        "172.30.0.43",
        "172.30.0.44",
        "172.30.0.45",
        "172.30.0.46",
        "192.168.99.22",
        "192.168.99.33",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    assert_eq!(p.addresses, want);
}

#[test]
fn mh_gets_the_source_hash_port_flag() {
    let p = plan("mh");
    assert!(
        p.virtual_servers
            .iter()
            .all(|v| v.flags & FLAG_SCHED2 != 0 && &*v.scheduler == "mh")
    );
    assert!(render::ipvsadm(&p).contains("-s mh -b mh-port"));
}

#[test]
fn behaviour_differences_are_reported() {
    let p = plan("");
    assert!(
        p.findings
            .iter()
            .any(|f| f.id == "etp-local-no-local-endpoints" && f.service == "ns2/svc2:p80")
    );
    // The fixture has localhost NodePorts on (NewFakeProxier's default).
    assert_eq!(
        p.findings
            .iter()
            .filter(|f| f.id == "localhost-nodeport")
            .count(),
        3
    );
}

#[test]
fn the_ipvsadm_rendering_has_one_service_line_per_virtual_server() {
    let p = plan("");
    let text = render::ipvsadm(&p);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("-A ")).count(),
        p.virtual_servers.len()
    );
    assert!(
        text.contains(
            "-A -t 5.6.7.8:80 -s rr -p 10800\n-a -t 5.6.7.8:80 -r 10.180.0.3:80 -m -w 1\n"
        )
    );
    assert!(
        text.contains("-A -t 172.30.0.46:80 -s rr\n-A"),
        "an empty virtual server for a service without endpoints"
    );
}

#[test]
fn kube_proxys_ipsets_hold_the_overall_services() {
    // Written from kube-proxy's IPVS syncProxyRules (facts §2.4): ClusterIPs always; external
    // IPs in -LOCAL for eTP=Local; LB IPs, plus -LOCAL, -FW and -SOURCE-CIDR as the service
    // needs; NodePorts in bitmap sets; health-check node ports; the bound VIPs.
    let p = plan("");
    let set = |n: &str| -> Vec<String> {
        p.ipsets[n]
            .members
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        set("KUBE-CLUSTER-IP"),
        [
            "172.30.0.41,tcp:80",
            "172.30.0.42,tcp:80",
            "172.30.0.43,tcp:80",
            "172.30.0.44,tcp:80",
            "172.30.0.45,tcp:80",
            "172.30.0.46,tcp:80"
        ]
    );
    assert_eq!(set("KUBE-EXTERNAL-IP"), ["192.168.99.33,tcp:80"]);
    assert_eq!(set("KUBE-EXTERNAL-IP-LOCAL"), ["192.168.99.22,tcp:80"]);
    assert_eq!(
        set("KUBE-LOAD-BALANCER"),
        ["1.2.3.4,tcp:80", "5.6.7.8,tcp:80"]
    );
    assert_eq!(set("KUBE-LOAD-BALANCER-LOCAL"), ["1.2.3.4,tcp:80"]);
    assert_eq!(set("KUBE-LOAD-BALANCER-FW"), ["5.6.7.8,tcp:80"]);
    assert_eq!(
        set("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        ["5.6.7.8,tcp:80,203.0.113.0/25"]
    );
    assert!(
        set("KUBE-LOAD-BALANCER-SOURCE-IP").is_empty(),
        "203.0.113.0/25 does not contain the node IP"
    );
    assert_eq!(set("KUBE-NODE-PORT-TCP"), ["3001", "3002", "3003"]);
    assert_eq!(set("KUBE-NODE-PORT-LOCAL-TCP"), ["3001"]);
    assert_eq!(set("KUBE-HEALTH-CHECK-NODE-PORT"), ["30000"]);
    assert_eq!(set("KUBE-IPVS-IPS").len(), 10);
    // ns2/svc2's only endpoint is known not to be local; the others' locality is unknown.
    assert_eq!(
        set("KUBE-LOOP-BACK"),
        [
            "10.180.0.1,tcp:80,10.180.0.1",
            "10.180.0.3,tcp:80,10.180.0.3",
            "10.180.0.4,tcp:80,10.180.0.4",
            "10.180.0.5,tcp:80,10.180.0.5"
        ]
    );
    assert_eq!(p.ipsets["KUBE-LOOP-BACK"].set_type, "hash:ip,port,ip");
    assert_eq!(
        p.ipsets.len(),
        ipsets::SETS.len(),
        "every set exists, empty or not, as kube-proxy creates them"
    );
}

#[test]
fn two_services_claiming_one_external_ip_and_port_give_one_virtual_server_and_a_finding() {
    let mut inv = inventory_from_str("overall", OVERALL).unwrap();
    let opts = PlanOptions {
        scheduler: String::new(),
        node_ips: vec![ip("192.168.0.2")],
    };
    let before = full(&inv, &opts).virtual_servers.len();
    // ns4/svc4's external IP becomes ns2/svc2's (both port 80/TCP).
    for sp in &mut inv.service_ports {
        if sp.name.namespace == "ns4" {
            sp.external_ips = vec![ip("192.168.99.22")];
        }
    }
    let p = full(&inv, &opts);
    let at: Vec<_> = p
        .virtual_servers
        .iter()
        .filter(|v| v.address == ip("192.168.99.22"))
        .collect();
    assert_eq!(at.len(), 1, "one kernel key, one virtual server");
    assert_eq!(
        at[0].service.namespace, "ns2",
        "the first in sort order keeps it"
    );
    assert_eq!(p.virtual_servers.len(), before - 1);
    let f: Vec<_> = p
        .findings
        .iter()
        .filter(|f| f.id == "duplicate-virtual-server")
        .collect();
    assert_eq!(f.len(), 1);
    assert!(
        f[0].service.starts_with("ns4/svc4") && f[0].message.contains("ns2/svc2"),
        "{f:?}"
    );
}

// ---- the hybrid state (DESIGN.md "The hybrid data plane"), on the same fixture ----

mod hybrid_state {
    use std::collections::BTreeSet;

    use super::*;
    use crate::inventory::{LocalDetector, Masquerade};
    use crate::plan::hybrid::{HybridOptions, Stage, hybrid, set, set_name};

    fn inv() -> Inventory {
        inventory_from_str("overall", OVERALL).unwrap()
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            scheduler: String::new(),
            node_ips: vec![ip("192.168.0.2")],
        }
    }

    fn h(inv: &Inventory, ns: &[&str], exclude: &[&str]) -> hybrid::HybridPlan {
        let full = full(inv, &opts());
        hybrid(
            inv,
            &full,
            &opts(),
            &HybridOptions {
                namespaces: ns.iter().map(|s| (*s).to_owned()).collect(),
                exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
                kernel: Some((6, 1)),
                ..Default::default()
            },
        )
    }

    fn members(p: &hybrid::HybridPlan, base: &str) -> BTreeSet<String> {
        p.ipsets[&set_name(base, IpFamily::IPv4)]
            .members
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn set_of(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ns2_and_ns5_sets_follow_their_policies() {
        // ns2/svc2: ClusterIP .42, external IP 192.168.99.22, LB 1.2.3.4, NodePort 3001,
        // eTP=Local with its only endpoint on another node. ns5/svc5: ClusterIP .45, LB 5.6.7.8
        // with source range 203.0.113.0/25 (the node is not in it), NodePort 3002, eTP=Cluster.
        let p = h(&inv(), &["ns2", "ns5"], &[]);
        let vs = set_of(&[
            "172.30.0.42,tcp:80",
            "192.168.99.22,tcp:80",
            "1.2.3.4,tcp:80",
            "192.168.0.2,tcp:3001",
            "172.30.0.45,tcp:80",
            "5.6.7.8,tcp:80",
            "192.168.0.2,tcp:3002",
        ]);
        assert_eq!(members(&p, set::VS), vs);
        assert_eq!(
            members(&p, set::ADMITTED),
            vs,
            "admitted = every key, at the final stage"
        );
        assert!(members(&p, set::PROBING).is_empty());
        assert_eq!(
            members(&p, set::BOUND),
            set_of(&[
                "172.30.0.42",
                "192.168.99.22",
                "1.2.3.4",
                "172.30.0.45",
                "5.6.7.8"
            ]),
            "ClusterIPs, external and LB IPs are bound; node IPs never"
        );
        assert_eq!(
            members(&p, set::CLUSTER_IP),
            set_of(&["172.30.0.42,tcp:80", "172.30.0.45,tcp:80"])
        );
        // IPVS mode marks external traffic for masquerade unless eTP=Local (KUBE-EXTERNAL-IP,
        // KUBE-LOAD-BALANCER, KUBE-NODE-PORT with their -LOCAL RETURNs).
        assert_eq!(
            members(&p, set::EXT_MASQ),
            set_of(&["5.6.7.8,tcp:80", "192.168.0.2,tcp:3002"])
        );
        // iptables mode drops external traffic of an eTP=Local service without local endpoints.
        assert_eq!(
            members(&p, set::NO_LOCAL),
            set_of(&[
                "192.168.99.22,tcp:80",
                "1.2.3.4,tcp:80",
                "192.168.0.2,tcp:3001"
            ])
        );
        assert_eq!(members(&p, set::LB_FW), set_of(&["5.6.7.8,tcp:80"]));
        assert_eq!(
            members(&p, set::LB_SRC),
            set_of(&["5.6.7.8,tcp:80,203.0.113.0/25"])
        );
        assert_eq!(members(&p, set::NODE_DENIED), set_of(&["5.6.7.8,tcp:80"]));
        // Hairpin: endpoints not known to be elsewhere (svc2's endpoint is on another node).
        assert_eq!(
            members(&p, set::LOOP_BACK),
            set_of(&["10.180.0.3,tcp:80,10.180.0.3"])
        );
        assert_eq!(p.virtual_servers.len(), 7);
        assert!(
            p.virtual_servers
                .iter()
                .all(|v| ["ns2", "ns5"].contains(&v.service.namespace.as_str()))
        );
        let sysctls: Vec<&str> = p.sysctls.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            sysctls.contains(&"net.ipv4.conf.all.arp_ignore"),
            "LB IPs are bound"
        );
        assert!(
            !sysctls.contains(&"net.ipv4.vs.conn_reuse_mode"),
            "6.1 keeps it"
        );
    }

    #[test]
    fn a_clusterip_only_namespace_needs_no_arp_sysctls_and_old_kernels_get_conn_reuse_mode() {
        let inv = inv();
        let full = full(&inv, &opts());
        let p = hybrid(
            &inv,
            &full,
            &opts(),
            &HybridOptions {
                namespaces: vec!["ns1".into()],
                kernel: Some((5, 4)),
                ..Default::default()
            },
        );
        let sysctls: Vec<&str> = p.sysctls.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!sysctls.contains(&"net.ipv4.conf.all.arp_ignore"));
        assert!(
            sysctls.contains(&"net.ipv4.vs.conn_reuse_mode"),
            "4.1 ≤ 5.4 < 5.9"
        );
        assert!(sysctls.contains(&"net.ipv4.vs.conntrack"));
    }

    #[test]
    fn excluded_and_address_sharing_services_stay_on_iptables() {
        let p = h(&inv(), &["ns4"], &["ns4/svc4"]);
        assert!(p.virtual_servers.is_empty());
        assert_eq!(p.excluded, vec!["ns4/svc4".to_owned()]);
        assert_eq!(p.left_on_iptables[0].id, "excluded");

        // ns4's external IP becomes ns2's LB IP: moving ns2 alone would capture ns4's traffic.
        let mut i = inv();
        for sp in &mut i.service_ports {
            if sp.name.namespace == "ns4" {
                sp.external_ips = vec![ip("1.2.3.4")];
            }
        }
        let p = h(&i, &["ns2"], &[]);
        assert!(p.virtual_servers.is_empty(), "{:?}", p.virtual_servers);
        assert_eq!(p.left_on_iptables[0].id, "shared-address");
        let p = h(&i, &["ns2", "ns4"], &[]);
        assert!(
            !p.left_on_iptables.iter().any(|f| f.id == "shared-address"),
            "both move: nothing shared stays: {:?}",
            p.left_on_iptables
        );
        assert_eq!(
            p.virtual_servers.len(),
            5,
            "ns2's four and ns4's ClusterIP: 1.2.3.4:80 is one kernel key, kept by ns2 (the full plan reports the duplicate)"
        );
    }

    #[test]
    fn the_probe_stage_admits_the_same_keys_for_marked_packets_only() {
        let p = h(&inv(), &["ns5"], &[]);
        let probe = p.sets_at(Stage::Probe);
        let name = |b: &str| set_name(b, IpFamily::IPv4);
        assert!(probe[&name(set::ADMITTED)].members.is_empty());
        assert_eq!(
            probe[&name(set::PROBING)]
                .members
                .iter()
                .map(ToString::to_string)
                .collect::<BTreeSet<String>>(),
            members(&p, set::ADMITTED)
        );
        let text = p.render_ipsets(Stage::Probe);
        assert!(
            text.contains("add IPVSMIG-PROBING 5.6.7.8,tcp:80 timeout 60\n"),
            "{text}"
        );
        assert!(!text.contains("add IPVSMIG-ADMITTED"));
        let rules = p.render_iptables(IpFamily::IPv4, true);
        assert!(rules.contains(&format!(
            "-A IPVSMIG-SERVICES -m mark --mark {m:#x}/{m:#x} -m set --match-set IPVSMIG-PROBING dst,dst -j IPVSMIG-ADMIT\n",
            m = hybrid::DEFAULT_PROBE_MARK
        )));
    }

    #[test]
    fn masquerade_marking_follows_kube_proxys_ipvs_mode_for_each_detector() {
        // proxier.go writeIptablesRules: masqueradeAll → mark every ClusterIP packet; a
        // local-traffic detector → mark what it calls not local; none → mark VIP-sourced
        // (src,dst) packets only.
        let cases: Vec<(Option<LocalDetector>, bool, &str)> = vec![
            (
                None,
                true,
                "-A IPVSMIG-ADMIT -m set --match-set IPVSMIG-CLUSTER-IP dst,dst -j MARK --or-mark 0x4000\n",
            ),
            (
                Some(LocalDetector::Cidr {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                }),
                false,
                "-A IPVSMIG-ADMIT -m set --match-set IPVSMIG-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 -j MARK --or-mark 0x4000\n",
            ),
            (
                Some(LocalDetector::InterfaceNamePrefix {
                    prefix: "cali".into(),
                }),
                false,
                "-A IPVSMIG-ADMIT -m set --match-set IPVSMIG-CLUSTER-IP dst,dst ! -i cali+ -j MARK --or-mark 0x4000\n",
            ),
            (
                None,
                false,
                "-A IPVSMIG-ADMIT -m set --match-set IPVSMIG-CLUSTER-IP src,dst -j MARK --or-mark 0x4000\n",
            ),
        ];
        for (det, all, want) in cases {
            let mut i = inv();
            for f in &mut i.families {
                f.masquerade = Some(Masquerade {
                    mark: 0x4000,
                    bit: Some(14),
                    masquerade_all: all,
                    local_detector: det.clone(),
                    random_fully: false,
                });
            }
            let p = h(&i, &["ns1"], &[]);
            let text = p.render_iptables(IpFamily::IPv4, true);
            assert!(text.contains(want), "{det:?} {all}: {text}");
            assert!(text.contains("-A IPVSMIG-ADMIT -j ACCEPT\n"));
        }
        // No masquerade facts: nothing of that family moves.
        let mut i = inv();
        for f in &mut i.families {
            f.masquerade = None;
        }
        let p = h(&i, &["ns1"], &[]);
        assert!(p.virtual_servers.is_empty());
        assert_eq!(p.left_on_iptables[0].id, "no-masquerade-facts");
    }

    #[test]
    fn the_rules_never_name_a_kube_proxy_chain() {
        let p = h(&inv(), &["ns1", "ns2", "ns3", "ns4", "ns5", "ns6"], &[]);
        let text = p.render_iptables(IpFamily::IPv4, true);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.contains("KUBE-"), "{line}");
            if let Some(r) = line.strip_prefix("-A ") {
                assert!(r.starts_with("IPVSMIG-"), "{line}");
            }
            if let Some(c) = line.strip_prefix(':') {
                assert!(c.starts_with("IPVSMIG-"), "{line}");
            }
        }
    }
}
