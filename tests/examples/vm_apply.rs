//! End-to-end kernel suite for `ipvs-migrate apply / status / rollback`, run inside the VM
//! test bed (tests/vm/apply-e2e.sh; one boot): kube-proxy's iptables-mode rules for two
//! namespaces, "pods" in network namespaces answering with their name, then namespace `shop`
//! moved to IPVS while `other` stays on iptables. Real connections prove where traffic goes
//! (IPVS connection counters), hairpin, the access filter, the dead man's switch expiring back
//! to iptables, a conflict with a foreign virtual server, and a rollback that leaves nothing.
//!
//! Modes: no arguments = the suite; `serve ADDR NAME` = a pod's server (answers NAME to every
//! connection); `get ADDR` = one connection, prints the answer, exit 1 refused, 2 other error.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipvsmig_clustergen::{Cluster, EndpointSpec, Node, ServicePortSpec, render};
use ipvsmig_engine::inventory::{IpFamily, Protocol};

fn serve(addr: &str, name: &str) {
    let l = TcpListener::bind(addr).expect("bind");
    for s in l.incoming().flatten() {
        let mut s = s;
        let _ = s.write_all(name.as_bytes());
    }
}

fn get(addr: &str) -> i32 {
    let a: SocketAddr = addr.parse().expect("ADDR");
    match TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            print!("{out}");
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 1,
        Err(e) => {
            eprint!("{e}");
            2
        }
    }
}

struct Suite {
    me: String,
    bin: String,
    dump: String,
    state: String,
    pass: usize,
    fail: usize,
    children: Vec<Child>,
}

fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

fn must(cmd: &str) -> String {
    let (rc, out) = sh(cmd);
    assert_eq!(rc, 0, "{cmd}: {out}");
    out
}

impl Suite {
    fn check(&mut self, name: &str, ok: bool, detail: &str) {
        if ok {
            println!("ok - {name}");
            self.pass += 1;
        } else {
            println!("not ok - {name}\n#   {}", detail.replace('\n', "\n#   "));
            self.fail += 1;
        }
    }
    /// One connection from `netns` ("" = the node itself).
    fn get(&self, netns: &str, addr: &str) -> (i32, String) {
        if netns.is_empty() {
            sh(&format!("{} get {addr}", self.me))
        } else {
            sh(&format!("ip netns exec {netns} {} get {addr}", self.me))
        }
    }
    fn migrate(&self, args: &str) -> (i32, String) {
        sh(&format!(
            "{} {args} --state-dir {} 2>&1",
            self.bin, self.state
        ))
    }
    /// IPVS connection entries (/proc/net/ip_vs_conn; they appear at once and stay for the
    /// TCP TIME_WAIT of minutes — the per-service counters lag by the 2 s estimator).
    fn ipvs_conns(&self) -> u64 {
        let s = std::fs::read_to_string("/proc/net/ip_vs_conn").unwrap_or_default();
        s.lines().skip(1).filter(|l| !l.trim().is_empty()).count() as u64
    }
    fn pod(&mut self, name: &str, ip: &str, serve_on: Option<u16>) {
        let host = format!("v{name}");
        must(&format!(
            "ip netns add {name} && ip link add {host} type veth peer name eth0 netns {name} && \
             ip link set {host} up && ip route add {ip}/32 dev {host} && \
             echo 1 > /proc/sys/net/ipv4/conf/{host}/proxy_arp && \
             ip -n {name} link set lo up && ip -n {name} link set eth0 up && \
             ip -n {name} addr add {ip}/32 dev eth0 && \
             ip -n {name} route add 169.254.1.1 dev eth0 && \
             ip -n {name} route add default via 169.254.1.1 dev eth0"
        ));
        if let Some(port) = serve_on {
            let child = Command::new("ip")
                .args(["netns", "exec", name, &self.me, "serve"])
                .arg(format!("{ip}:{port}"))
                .arg(name)
                .stdout(Stdio::null())
                .spawn()
                .expect("server");
            self.children.push(child);
        }
    }
}

fn sp(ns: &str, name: &str, vip: &str, node_port: Option<u16>, eps: &[&str]) -> ServicePortSpec {
    ServicePortSpec {
        namespace: ns.into(),
        name: name.into(),
        port_name: String::new(),
        protocol: Protocol::Tcp,
        cluster_ip: vip.parse().unwrap(),
        port: 80,
        node_port,
        external_ips: vec![],
        lb_ips: vec![],
        source_ranges: vec![],
        affinity: None,
        itp_local: false,
        etp_local: false,
        hc_node_port: None,
        endpoints: eps
            .iter()
            .map(|e| EndpointSpec {
                ip: e.parse::<IpAddr>().unwrap(),
                port: 8080,
                local: true,
            })
            .collect(),
    }
}

fn suite() -> i32 {
    let me = std::env::current_exe().unwrap().display().to_string();
    let bin = std::env::var("IPVS_MIGRATE").expect("IPVS_MIGRATE: path of ipvs-migrate");
    let dir = std::env::temp_dir().join("vm-apply");
    let _ = std::fs::create_dir_all(&dir);
    let dump = dir.join("kube-proxy.rules").display().to_string();
    let mut s = Suite {
        me,
        bin,
        dump: dump.clone(),
        state: dir.join("state").display().to_string(),
        pass: 0,
        fail: 0,
        children: Vec::new(),
    };
    // The node: an address, a default route (host-originated ClusterIP traffic needs one in
    // either mode), forwarding on.
    must(
        "ip link add node0 type dummy && ip addr add 192.168.0.2/24 dev node0 && ip link set node0 up && \
         ip route add default via 192.168.0.1 dev node0 onlink && echo 1 > /proc/sys/net/ipv4/ip_forward",
    );
    s.pod("pod1", "10.244.1.2", Some(8080));
    s.pod("pod2", "10.244.1.3", Some(8080));
    s.pod("cli", "10.244.1.4", None);
    let cluster = Cluster {
        node: Node::default_for(IpFamily::IPv4),
        ports: vec![
            sp(
                "shop",
                "web",
                "10.96.0.10",
                Some(30080),
                &["10.244.1.2", "10.244.1.3"],
            ),
            sp("shop", "empty", "10.96.0.11", None, &[]),
            sp("other", "api", "10.96.0.20", None, &["10.244.1.3"]),
        ],
    };
    std::fs::write(&dump, render(&cluster)).unwrap();
    must(&format!("iptables-legacy-restore < {dump}"));
    std::thread::sleep(Duration::from_millis(300));

    // Baseline: kube-proxy's iptables rules carry everything; IPVS is empty.
    let (rc, out) = s.get("cli", "10.96.0.10:80");
    s.check(
        "baseline: pod -> shop/web ClusterIP answers through iptables",
        rc == 0 && out.starts_with("pod"),
        &out,
    );
    let (rc, _) = s.get("", "10.96.0.11:80");
    s.check(
        "baseline: a service without endpoints is refused (REJECT)",
        rc == 1,
        "",
    );
    let (_, out) = sh("ipvsadm -Ln");
    s.check(
        "baseline: IPVS holds no virtual server",
        !out.contains("TCP"),
        &out,
    );

    // Apply without --no-watch: no daemon, refused.
    let common = format!(
        "--iptables-save {} --node-ip 192.168.0.2 --iptables-backend legacy",
        s.dump
    );
    let (rc, out) = s.migrate(&format!("apply --namespace shop {common}"));
    s.check(
        "apply without a daemon or --no-watch is refused (exit 2)",
        rc == 2,
        &out,
    );

    // A foreign virtual server on a planned key: conflict, nothing changed.
    must("ipvsadm -A -t 10.96.0.10:80 -s wrr");
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let (_, ipvs) = sh("ipvsadm -Sn");
    s.check(
        "a foreign virtual server on a planned key: exit 1, it stays, nothing else is created",
        rc == 1
            && ipvs.trim() == "-A -t 10.96.0.10:80 -s wrr"
            && sh("ip link show kube-ipvs0").0 != 0,
        &format!("{out}\n{ipvs}"),
    );
    must("ipvsadm -D -t 10.96.0.10:80");

    // Apply.
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch -v {common}"));
    s.check("apply --namespace shop --no-watch succeeds", rc == 0, &out);
    let (_, ipvs) = sh("ipvsadm -Sn");
    let want = [
        "-A -t 10.96.0.10:80 -s rr",
        "-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1",
        "-A -t 10.96.0.11:80 -s rr",
        "-A -t 192.168.0.2:30080 -s rr",
    ];
    s.check(
        "IPVS holds shop's virtual servers (ClusterIPs, NodePort on the node IP) and not other's",
        want.iter().all(|w| ipvs.lines().any(|l| l == *w)) && !ipvs.contains("10.96.0.20"),
        &ipvs,
    );
    let (_, link) = sh("ip -d addr show kube-ipvs0");
    s.check(
        "kube-ipvs0 is a down dummy link holding shop's ClusterIPs",
        link.contains("dummy")
            && !link.contains("state UP")
            && link.contains("10.96.0.10/32")
            && link.contains("10.96.0.11/32")
            && !link.contains("10.96.0.20"),
        &link,
    );
    let (_, st) = s.migrate("status -o json");
    s.check(
        "status: shop migrated, unwatched",
        st.contains("\"shop\"") && st.contains("\"watched\": false"),
        &st,
    );

    // Traffic through IPVS.
    let before = s.ipvs_conns();
    let mut seen = std::collections::BTreeSet::new();
    let mut ok = 0;
    for _ in 0..6 {
        let (rc, out) = s.get("cli", "10.96.0.10:80");
        if rc == 0 {
            ok += 1;
            seen.insert(out);
        }
    }
    let after = s.ipvs_conns();
    s.check(
        "pod -> ClusterIP: 6/6 connections answered, by both pods, all scheduled by IPVS",
        ok == 6 && seen.len() == 2 && after >= before + 6,
        &format!("ok {ok} seen {seen:?} conns {before}->{after}"),
    );
    let before = s.ipvs_conns();
    let (rc, out) = s.get("", "10.96.0.10:80");
    s.check(
        "node -> ClusterIP goes through IPVS (LOCAL_OUT)",
        rc == 0 && s.ipvs_conns() > before,
        &out,
    );
    let before = s.ipvs_conns();
    let (rc, out) = s.get("cli", "192.168.0.2:30080");
    s.check(
        "pod -> NodePort on the node IP goes through IPVS",
        rc == 0 && s.ipvs_conns() > before,
        &out,
    );
    let mut hairpin = 0;
    for _ in 0..4 {
        if s.get("pod1", "10.96.0.10:80").1 == "pod1" {
            hairpin += 1;
        }
    }
    s.check(
        "hairpin: pod1 reaches itself through its service (LOOP-BACK masquerade)",
        hairpin >= 1,
        &format!("{hairpin}"),
    );
    let (rc, _) = s.get("cli", "10.96.0.11:80");
    s.check(
        "a virtual server without real servers refuses, as iptables' REJECT did",
        rc == 1,
        "",
    );
    let before = s.ipvs_conns();
    let (rc, out) = s.get("cli", "10.96.0.20:80");
    s.check(
        "other/api (not migrated) still answers, through iptables",
        rc == 0 && out == "pod2" && s.ipvs_conns() == before,
        &out,
    );
    // Access filter: a host listener is not reachable on VIP:any-port.
    let host_listener = TcpListener::bind("0.0.0.0:9999").unwrap();
    let (rc, _) = s.get("cli", "10.96.0.10:9999");
    s.check(
        "a host listener is not reachable on a bound VIP's other ports (REJECT)",
        rc == 1,
        "",
    );
    drop(host_listener);
    let (_, nat) = sh("iptables-legacy -t nat -S PREROUTING");
    s.check(
        "our jump is first in nat PREROUTING, kube-proxy's follows",
        nat.lines()
            .nth(1)
            .is_some_and(|l| l.contains("IPVSMIG-SERVICES"))
            && nat.contains("KUBE-SERVICES"),
        &nat,
    );

    // The dead man's switch: an admission entry that is not refreshed expires, and traffic
    // falls back to kube-proxy's iptables rules by itself.
    must("ipset add -exist IPVSMIG-ADMITTED 10.96.0.10,tcp:80 timeout 1");
    std::thread::sleep(Duration::from_millis(2500));
    let before = s.ipvs_conns();
    let (rc, out) = s.get("cli", "10.96.0.10:80");
    s.check(
        "an expired admission entry sends new connections back through iptables",
        rc == 0 && out.starts_with("pod") && s.ipvs_conns() == before,
        &format!("{rc} {out} {before} {}", s.ipvs_conns()),
    );
    // Re-applying restores the admission.
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let before = s.ipvs_conns();
    let (rc2, _) = s.get("cli", "10.96.0.10:80");
    s.check(
        "apply again re-admits (idempotent otherwise)",
        rc == 0 && rc2 == 0 && s.ipvs_conns() > before,
        &out,
    );

    // Rollback.
    let (rc, out) = s.migrate(&format!("rollback --all --drain 0s {common}"));
    s.check("rollback --all succeeds", rc == 0, &out);
    let (_, ipvs) = sh("ipvsadm -Sn");
    let (_, save) = sh("iptables-legacy-save");
    let (_, sets) = sh("ipset list -n");
    s.check(
        "after rollback: no virtual server, no kube-ipvs0, no IPVSMIG- chain or set",
        ipvs.trim().is_empty()
            && sh("ip link show kube-ipvs0").0 != 0
            && !save.contains("IPVSMIG")
            && !sets.contains("IPVSMIG"),
        &format!("{ipvs}\n{sets}"),
    );
    s.check(
        "kube-proxy's rules are untouched by apply + rollback",
        save.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        ) && save.matches("KUBE-SEP-").count() > 3,
        &save,
    );
    let before = s.ipvs_conns();
    let (rc, out) = s.get("cli", "10.96.0.10:80");
    s.check(
        "after rollback shop answers through iptables again",
        rc == 0 && out.starts_with("pod") && s.ipvs_conns() == before,
        &out,
    );
    let (_, st) = s.migrate("status");
    s.check(
        "status: nothing migrated",
        st.contains("Nothing migrated"),
        &st,
    );

    for c in &mut s.children {
        let _ = c.kill();
    }
    println!("vm-apply: {} passed, {} failed", s.pass, s.fail);
    i32::from(s.fail > 0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("serve") => {
            serve(&args[2], &args[3]);
            0
        }
        Some("get") => get(&args[2]),
        _ => suite(),
    };
    std::process::exit(code);
}
