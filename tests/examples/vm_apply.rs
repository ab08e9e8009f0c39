//! End-to-end kernel suite for `ipvs-migrate apply / status / rollback`, run inside the VM
//! test bed (tests/vm/apply-e2e.sh; one boot). kube-proxy's iptables-mode rules for ~20
//! service ports (ClusterIP, NodePort, ClientIP affinity, multi-port, UDP DNS-like, no
//! endpoints, an LB IP with source ranges, a dual-stack service) in three namespaces; "pods" in
//! network namespaces answer `NAME:PORT` on every port a service targets, so each answer names
//! the endpoint. Namespaces `shop` and `many` move to IPVS, `other` stays. Where traffic went is
//! proven by IPVS connection entries (/proc/net/ip_vs_conn) and by kube-proxy's DNAT counters.
//! Faults: an unknown scheduler, an address already bound, an apply killed with SIGKILL.
//! Last, the emergency manual rollback and the lost-journal recovery of
//! docs/runbooks/emergency-rollback.md, their commands taken from the markdown (runbook.rs).
//!
//! Modes: `legacy` or `nft` (default legacy) = the suite on that iptables backend; `serve NAME PORT...` (TCP, v4+v6), `serve-udp NAME PORT`,
//! `get ADDR` (one connection, prints the answer; exit 1 refused, 2 timeout/other),
//! `udp-flow ADDR SECS` (a datagram every 50 ms from one socket; prints per-second replies).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvsmig_clustergen::{Cluster, Node, ServicePortSpec, render};
use ipvsmig_engine::inventory::{IpFamily, Protocol};

#[path = "vmkit/mod.rs"]
mod vmkit;
use vmkit::*;
#[path = "vmkit/runbook.rs"]
mod runbook;

#[allow(clippy::too_many_lines)]
fn suite() -> i32 {
    let (mut s, dir) = Suite::start("vm-apply");
    let p = |n: &str| dir.join(n).display().to_string();
    s.standard_pods();
    s.pod("bad", "10.244.1.5", None);
    let ports: Vec<String> = (8080..8092)
        .chain(8100..8112)
        .map(|p| p.to_string())
        .collect();
    let pr: Vec<&str> = ports.iter().map(String::as_str).collect();
    for pod in ["pod1", "pod2"] {
        let mut args = vec!["serve", pod];
        args.extend(&pr);
        s.spawn(pod, &args);
    }
    s.spawn("pod1", &["serve-udp", "pod1", "5353"]);

    // The services.
    let mut v4: Vec<Svc> = shop_core();
    let (dns, lb, api) = shop_dns_lb_other();
    v4.push(svc(
        spec("shop", "multi", "http", "10.96.0.13", 80, Protocol::Tcp),
        &[("pod1", POD1, 8082)],
    ));
    v4.push(svc(
        spec("shop", "multi", "https", "10.96.0.13", 443, Protocol::Tcp),
        &[("pod2", POD2, 8083)],
    ));
    v4.push(dns);
    v4.push(lb);
    for i in 0..12u16 {
        let (pod, ip) = if i % 2 == 0 {
            ("pod1", POD1)
        } else {
            ("pod2", POD2)
        };
        v4.push(svc(
            spec(
                "many",
                &format!("svc{i}"),
                "",
                &format!("10.96.1.{}", i + 1),
                80,
                Protocol::Tcp,
            ),
            &[(pod, ip, 8100 + i)],
        ));
    }
    v4.push(api);
    let v6 = vec![svc(
        spec("shop", "web", "", "fd00:96::10", 80, Protocol::Tcp),
        &[("pod1", POD1_V6, 8085)],
    )];
    load_kube_proxy_rules(&dir, &v4, &v6);
    // A virtual server of another program (keepalived would do this).
    must(FOREIGN_VS);
    std::thread::sleep(Duration::from_millis(500));
    let s0 = node_state();
    // apply and rollback read kube-proxy's rules live from this node, as on a real one.
    let common = format!(
        "--node-ip 192.168.0.2 --node-ip fd00:192:168::2 --iptables-backend {}",
        be()
    );

    // Baseline through iptables: each VIP reaches exactly its service's endpoints.
    let tcp = answering_tcp(&v4, &v6);
    let mut bad = Vec::new();
    for x in &tcp {
        let (ok, seen) = s.answers("cli", &addr(&x.spec.cluster_ip, x.spec.port), 2);
        if ok != 2 || !seen.is_subset(&x.answers) {
            bad.push(format!("{}: {ok} {seen:?}", x.spec.spn()));
        }
    }
    s.check(
        "baseline: every TCP VIP answers from its own endpoints only, through iptables",
        bad.is_empty(),
        &bad.join("\n"),
    );
    let d0 = dnat_packets("shop");
    s.check(
        "baseline: kube-proxy's DNAT rules counted shop's connections",
        d0 > 0,
        &format!("{d0}"),
    );

    // Faults before a successful apply.
    std::fs::write(
        p("kp-nosuch.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nipvs:\n  scheduler: nosuch\n",
    )
    .unwrap();
    let (rc, out) = s.migrate(&format!(
        "apply --namespace shop --no-watch --kube-proxy-config {} {common}",
        p("kp-nosuch.yaml")
    ));
    let (_, ipvs) = sh("ipvsadm -Sn");
    s.check(
        "a scheduler the kernel lacks: the preflight gate refuses (exit 1, its module named), nothing created",
        rc == 1 && out.contains("ip_vs_nosuch") && !ipvs.contains("10.96.0.10"),
        &out,
    );
    let (rc, out) = s.migrate(&format!("rollback --all --drain 0s {common}"));
    let now = node_state();
    s.check(
        "rollback after the failed apply converges to the node as it was",
        rc == 0 && now == s0,
        &format!("{out}\n{}", first_diff(&s0, &now)),
    );
    must("ip link add kube-ipvs0 type dummy && ip addr add 10.96.0.10/32 dev kube-ipvs0");
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let (_, ipvs) = sh("ipvsadm -Sn");
    s.check(
        "an address already bound by someone else: exit 1, nothing created",
        rc == 1 && out.contains("10.96.0.10") && !ipvs.contains("10.96.0.10"),
        &out,
    );
    must("ip link del kube-ipvs0");
    let (rc, out) = s.migrate(&format!("apply --namespace shop {common}"));
    s.check(
        "apply without a daemon or --no-watch is refused (exit 2)",
        rc == 2,
        &out,
    );

    // Dry run: reads the kernel, changes nothing.
    let before = node_state();
    let (rc, out) = s.migrate(&format!("apply --namespace shop,many --dry-run {common}"));
    s.check(
        "apply --dry-run counts the changes against the kernel and changes nothing",
        rc == 0
            && out.contains("virtual server(s) to add")
            && !out.contains("CONFLICT")
            && node_state() == before,
        &out,
    );

    // Apply.
    let (rc, out) = s.migrate(&format!("apply --namespace shop,many --no-watch {common}"));
    s.check(
        "apply --namespace shop,many --no-watch succeeds",
        rc == 0,
        &out,
    );
    let (_, ipvs) = sh("ipvsadm -Sn");
    s.check(
        "IPVS: shop's and many's virtual servers, affinity as persistence, the foreign one untouched, other's absent",
        ipvs.contains("-A -t 10.96.0.12:80 -s rr -p 10800")
            && ipvs.contains("-A -u 10.96.0.14:53 -s rr")
            && ipvs.contains("-A -t [fd00:96::10]:80 -s rr")
            && ipvs.contains("-A -t 192.168.0.2:30080 -s rr")
            && ipvs.contains("-A -t 203.0.113.10:80 -s rr")
            && ipvs.contains("-A -t 10.96.1.12:80 -s rr")
            && ipvs.contains("-a -t 192.0.2.1:80 -r 10.244.1.3:8091 -m -w 3")
            && !ipvs.contains("10.96.0.20"),
        &ipvs,
    );
    let (_, st) = s.migrate("status -o json");
    s.check(
        "status: shop and many migrated, unwatched",
        st.contains("\"shop\"") && st.contains("\"many\"") && st.contains("\"watched\": false"),
        &st,
    );

    // Through IPVS.
    let d1 = dnat_packets("shop") + dnat_packets("many");
    let mut bad = Vec::new();
    let (mut n, mut via_ipvs) = (0, 0);
    for x in tcp.iter().filter(|x| x.spec.namespace != "other") {
        for _ in 0..2 {
            let (rc, out, via) = s.route("cli", &addr(&x.spec.cluster_ip, x.spec.port));
            n += 1;
            via_ipvs += usize::from(via);
            if rc != 0 || !x.answers.contains(&out) {
                bad.push(format!("{}: {rc} {out:?}", x.spec.spn()));
            }
        }
    }
    let d2 = dnat_packets("shop") + dnat_packets("many");
    s.check(
        "every migrated TCP VIP answers from its own endpoints only",
        bad.is_empty(),
        &bad.join("\n"),
    );
    s.check(
        "…through IPVS: a connection entry each, kube-proxy's DNAT counters still",
        via_ipvs == n && d2 == d1,
        &format!("{via_ipvs} of {n} via IPVS; dnat {d1}->{d2}"),
    );
    let (_, seen) = s.answers("cli", "10.96.0.12:80", 5);
    s.check(
        "ClientIP affinity keeps a client on one backend",
        seen.len() == 1,
        &format!("{seen:?}"),
    );
    let (ok, seen) = s.answers("cli", "10.96.0.10:80", 6);
    s.check(
        "rr spreads shop/web over both endpoints",
        ok == 6 && seen.len() == 2,
        &format!("{seen:?}"),
    );
    let (rc, out, via) = s.route("", "10.96.0.10:80");
    s.check("node -> ClusterIP goes through IPVS", rc == 0 && via, &out);
    let (rc, out, via) = s.route("cli", "192.168.0.2:30080");
    s.check(
        "pod -> NodePort on the node IP goes through IPVS",
        rc == 0 && via,
        &out,
    );
    let hairpin = (0..4)
        .filter(|_| s.get("pod1", "10.96.0.10:80").1 == "pod1:8080")
        .count();
    s.check(
        "hairpin: pod1 reaches itself through its service",
        hairpin >= 1,
        &format!("{hairpin}"),
    );
    let (rc, out) = s.get("cli", "203.0.113.10:80");
    s.check(
        "an allowed source reaches the LB IP",
        rc == 0 && out == "pod2:8084",
        &out,
    );
    let (rc, out) = s.get("bad", "203.0.113.10:80");
    s.check("a denied source does not reach the LB IP", rc != 0, &out);
    let (rc, out) = s.get("", "203.0.113.10:80");
    s.check(
        "the node itself, outside the LB's source ranges, does not reach it either",
        rc != 0,
        &out,
    );
    let (rc, _) = s.get("cli", "10.96.0.11:80");
    s.check(
        "a virtual server without real servers refuses, as iptables' REJECT did",
        rc == 1,
        "",
    );
    let (rc, out, via) = s.route("cli", "10.96.0.20:80");
    s.check(
        "other/api (not migrated) answers through iptables",
        rc == 0 && out == "pod2:8090" && !via,
        &out,
    );
    let host_listener = TcpListener::bind("0.0.0.0:9999").unwrap();
    let (rc, _) = s.get("cli", "10.96.0.10:9999");
    s.check(
        "a host listener is not reachable on a migrated VIP's other ports",
        rc == 1,
        "",
    );
    drop(host_listener);

    // kube-proxy re-inserting its jump ahead of ours (as it does when it finds its own
    // missing): the next apply puts ours first again.
    must(&format!(
        "iptables-{b} -t nat -D PREROUTING -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES && iptables-{b} -t nat -I PREROUTING 1 -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES",
        b = be()
    ));
    let (_, out, via_behind) = s.route("cli", "10.96.0.10:80");
    let behind = !via_behind;
    let (rc, _) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let (_, nat) = sh(&format!("iptables-{} -t nat -S PREROUTING", be()));
    let (rc2, _, via) = s.route("cli", "10.96.0.10:80");
    s.check(
        "behind kube-proxy's jump traffic takes iptables; apply puts our jump first again",
        behind
            && rc == 0
            && rc2 == 0
            && nat
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("IPVSMIG-SERVICES"))
            && via,
        &format!("{out}\n{nat}"),
    );

    // The dead man's switch.
    must("ipset add -exist IPVSMIG-ADMITTED 10.96.0.10,tcp:80 timeout 1");
    std::thread::sleep(Duration::from_millis(2500));
    let (rc, out, via) = s.route("cli", "10.96.0.10:80");
    s.check(
        "an expired admission entry sends new connections back through iptables",
        rc == 0 && !via,
        &out,
    );
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let (rc2, _, via) = s.route("cli", "10.96.0.10:80");
    s.check("apply again re-admits", rc == 0 && rc2 == 0 && via, &out);

    // A continuous UDP flow through the rollback.
    let flow = Command::new("ip")
        .args([
            "netns",
            "exec",
            "cli",
            &s.me,
            "udp-flow",
            "10.96.0.14:53",
            "6",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let (rc, out) = s.migrate(&format!("rollback --all --drain 0s {common}"));
    s.check("rollback --all succeeds", rc == 0, &out);
    let flow = flow.wait_with_output().unwrap();
    let per_sec: Vec<u32> = String::from_utf8_lossy(&flow.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    s.check(
        "a continuous UDP flow through a VIP survives the rollback (answers in every second)",
        per_sec.len() == 6 && per_sec.iter().all(|n| *n > 0),
        &format!("{per_sec:?}"),
    );
    let now = node_state();
    s.check(
        "after rollback the node is exactly as before apply (IPVS incl. the foreign server, links, addresses, ipsets, rules, sysctls)",
        now == s0,
        &first_diff(&s0, &now),
    );
    let (rc, out, via) = s.route("cli", "10.96.0.13:443");
    s.check(
        "after rollback services answer through iptables again",
        rc == 0 && out == "pod2:8083" && !via,
        &out,
    );

    // SIGKILL in the middle of a large apply; re-running converges, rollback cleans.
    let mut bulk = Vec::new();
    for i in 0..1500u32 {
        let vip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
        bulk.push(
            svc(
                spec("bulk", &format!("b{i}"), "", &vip, 80, Protocol::Tcp),
                &[("pod1", POD1, 8086)],
            )
            .spec,
        );
    }
    let mut all4: Vec<ServicePortSpec> = v4.iter().map(|x| x.spec.clone()).collect();
    all4.extend(bulk);
    std::fs::write(
        p("rules4"),
        render(&Cluster {
            node: Node::default_for(IpFamily::IPv4),
            ports: all4,
        }),
    )
    .unwrap();
    must(&format!("iptables-{}-restore < {}", be(), p("rules4")));
    let s1 = node_state();
    let mut child = Command::new(&s.bin)
        .args([
            "apply",
            "--namespace",
            "bulk",
            "--no-watch",
            "--state-dir",
            &s.state,
        ])
        .args(common.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has started programming IPVS.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if sh("ipvsadm -Ln | grep -c 10.97")
            .1
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let partial = sh("ipvsadm -Sn | grep -c '^-A -t 10.97'")
        .1
        .trim()
        .parse::<u32>()
        .unwrap_or(0);
    let (rc, out) = s.migrate(&format!("apply --namespace bulk --no-watch {common}"));
    let full = sh("ipvsadm -Sn | grep -c '^-A -t 10.97'")
        .1
        .trim()
        .parse::<u32>()
        .unwrap_or(0);
    s.check(
        "an apply killed with SIGKILL mid-way: running apply again converges",
        rc == 0 && full == 1500,
        &format!("partial {partial}, then {full}; {out}"),
    );
    let (rc, out) = s.migrate(&format!("rollback --all --drain 0s {common}"));
    let now = node_state();
    s.check(
        "…and rollback leaves the node as before",
        rc == 0 && now == s1,
        &format!("{out}\n{}", first_diff(&s1, &now)),
    );
    let (_, st) = s.migrate("status");
    s.check(
        "status: nothing migrated",
        st.contains("Nothing migrated"),
        &st,
    );

    // docs/runbooks/emergency-rollback.md, its commands run literally.
    let s2 = node_state();
    runbook::emergency_rollback(&mut s, &common, &s2);

    s.finish("vm-apply", "ipvsadm -D -t 192.0.2.1:80")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = helper_mode(&args).unwrap_or_else(|| match args.get(1).map(String::as_str) {
        Some("udp-flow") => udp_flow(&args[2], args[3].parse().unwrap()),
        _ => suite(),
    });
    std::process::exit(code);
}
