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
            assert_eq!(v.scheduler, "rr", "kube-proxy's default scheduler");
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
            .all(|v| v.flags & FLAG_SCHED2 != 0 && v.scheduler == "mh")
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
    let set = |n: &str| -> Vec<String> { p.ipsets[n].members.iter().cloned().collect() };
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
