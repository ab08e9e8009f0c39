//! What the VM kernel suites share (tests/examples/vm_*.rs include it with `#[path]`): the
//! "pod" network namespaces and their answering servers, one-connection clients that tell
//! whether IPVS carried a connection, kube-proxy's DNAT counters, node snapshots for
//! before/after comparisons, the fixture's service builders and shared services, the suite's
//! start and finish (node0, pods, tables and sets emptied between backends).
#![allow(dead_code)] // each suite uses its own subset

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipvsmig_clustergen::{Cluster, EndpointSpec, Node, ServicePortSpec, render};
use ipvsmig_engine::inventory::{IpFamily, Protocol};

pub fn serve(name: &str, ports: &[String]) {
    let mut handles = Vec::new();
    for p in ports {
        let l = TcpListener::bind(format!("[::]:{p}")).expect("bind");
        let answer = format!("{name}:{p}");
        handles.push(std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(answer.as_bytes());
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

pub fn serve_udp(name: &str, port: &str) {
    let s = UdpSocket::bind(format!("0.0.0.0:{port}")).expect("bind udp");
    let mut buf = [0u8; 512];
    let answer = format!("{name}:{port}");
    while let Ok((_, from)) = s.recv_from(&mut buf) {
        let _ = s.send_to(answer.as_bytes(), from);
    }
}

pub fn get(addr: &str) -> i32 {
    let a: SocketAddr = addr.parse().expect("ADDR");
    match TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
        Ok(mut s) => {
            if let Ok(local) = s.local_addr() {
                eprint!("port={}", local.port());
            }
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

pub fn udp_flow(addr: &str, secs: u64) -> i32 {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(40))).unwrap();
    let start = Instant::now();
    let mut per_sec = vec![0u32; secs as usize];
    let mut buf = [0u8; 64];
    while start.elapsed() < Duration::from_secs(secs) {
        let _ = s.send(b"q");
        let t = Instant::now();
        if s.recv(&mut buf).is_ok() {
            let i = (start.elapsed().as_secs() as usize).min(per_sec.len() - 1);
            per_sec[i] += 1;
        }
        if let Some(rest) = Duration::from_millis(50).checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    println!(
        "{}",
        per_sec
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    0
}

/// A self-signed CA certificate (PEM, base64) for the kubeconfigs of the suites that talk to
/// a stand-in API server (kube-client's rustls wants a root even for http://; the key was
/// discarded).
pub const TEST_CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ2RENDQVdPZ0F3SUJBZ0lVQmUvdHNxcjBFVFZNYXZodGdudVdwK3drQ29Nd0NnWUlLb1pJemowRUF3SXcKTXpFeE1DOEdBMVVFQXd3b2FYQjJjeTF0YVdkeVlYUmxJSFJsYzNRZ1EwRWdLRzV2SUhObGNuWmxjaUIxYzJWegpJR2wwS1RBZ0Z3MHlOakV4TWpVd01qSXlNREphR0E4eU1USTJNVEV3TVRBeU1qSXdNbG93TXpFeE1DOEdBMVVFCkF3d29hWEIyY3kxdGFXZHlZWFJsSUhSbGMzUWdRMEVnS0c1dklITmxjblpsY2lCMWMyVnpJR2wwS1RCWk1CTUcKQnlxR1NNNDlBZ0VHQ0NxR1NNNDlBd0VIQTBJQUJHd1ZHSUpHOWFZMURkWld5MEFvRS9xaUw1TDRUSHNmc0xVbQpKd3NlaDZJT2NGeXdjckNKcWl0alByMnBETGpRN0lGK0hsc0h5c24yWGc0Y0VvREF3d2lqVXpCUk1CMEdBMVVkCkRnUVdCQlM3Q2xuS3VDVmVaMlZDRHhZNjBTczd5eGRyeFRBZkJnTlZIU01FR0RBV2dCUzdDbG5LdUNWZVoyVkMKRHhZNjBTczd5eGRyeFRBUEJnTlZIUk1CQWY4RUJUQURBUUgvTUFvR0NDcUdTTTQ5QkFNQ0EwY0FNRVFDSUJTdgplc1Q5WU1rSEQ2S2RoRUtRWERRc2s5WE11SVpHc2o3WkIxZ3R3eCtwQWlBdlc2dTYvbXdMUGRWOXUyREo1QnkyCmlCcDlZRW5TM2Zkem9hc3ZabVBQbVE9PQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==";

pub static BACKEND: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The iptables backend this run uses (`legacy` or `nft`).
pub fn be() -> &'static str {
    BACKEND.get().map_or("legacy", String::as_str)
}

pub fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

pub fn must(cmd: &str) -> String {
    let (rc, out) = sh(cmd);
    assert_eq!(rc, 0, "{cmd}: {out}");
    out
}

pub struct Suite {
    pub me: String,
    pub bin: String,
    pub state: String,
    pub pass: usize,
    pub fail: usize,
    pub children: Vec<Child>,
    /// Network namespaces made by `pod`, deleted by `finish`.
    pub pods: Vec<String>,
}

/// A service port for the fixture, with its endpoints' answers.
pub struct Svc {
    pub spec: ServicePortSpec,
    pub answers: BTreeSet<String>,
}

pub const POD1: &str = "10.244.1.2";
pub const POD2: &str = "10.244.1.3";
pub const POD1_V6: &str = "fd00:10::2";

impl Suite {
    /// A run of suite `name` on the current backend: its scratch directory (under the temp
    /// dir, per backend) and the node's network — node0 with the node IPs 192.168.0.2 and
    /// fd00:192:168::2, default routes through it, forwarding on.
    pub fn start(name: &str) -> (Suite, std::path::PathBuf) {
        let me = std::env::current_exe().unwrap().display().to_string();
        let bin = std::env::var("IPVS_MIGRATE").expect("IPVS_MIGRATE: path of ipvs-migrate");
        let dir = std::env::temp_dir().join(format!("{name}-{}", be()));
        let _ = std::fs::create_dir_all(&dir);
        let s = Suite {
            me,
            bin,
            state: dir.join("state").display().to_string(),
            pass: 0,
            fail: 0,
            children: Vec::new(),
            pods: Vec::new(),
        };
        must(
            "ip link add node0 type dummy && ip addr add 192.168.0.2/24 dev node0 && \
             ip -6 addr add fd00:192:168::2/64 dev node0 nodad && ip link set node0 up && \
             ip route add default via 192.168.0.1 dev node0 onlink && \
             ip -6 route add default via fd00:192:168::1 dev node0 onlink && \
             echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        );
        (s, dir)
    }

    /// The pods every suite has: the endpoints pod1 (IPv4 and IPv6) and pod2, and the client
    /// `cli` (IPv4 and IPv6).
    pub fn standard_pods(&mut self) {
        self.pod("pod1", POD1, Some(POD1_V6));
        self.pod("pod2", POD2, None);
        self.pod("cli", "10.244.1.4", Some("fd00:10::4"));
    }

    /// Ends the run: stops the pods' servers, runs `first` (the suite's own cleanup), deletes
    /// the pods and node0, empties both families' tables and every set — the VM as the next
    /// backend's run needs it (the VM is ours alone) — and prints the TAP-style tally.
    pub fn finish(&mut self, name: &str, first: &str) -> i32 {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let b = be();
        let _ = sh(&format!(
            "{first}; for n in {}; do ip netns del $n; done; ip link del node0; \
             for t in nat filter mangle; do iptables-{b} -t $t -F; iptables-{b} -t $t -X; ip6tables-{b} -t $t -F; ip6tables-{b} -t $t -X; done; \
             ipset destroy",
            self.pods.join(" ")
        ));
        println!("{name} ({b}): {} passed, {} failed", self.pass, self.fail);
        i32::from(self.fail > 0)
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: &str) {
        if ok {
            println!("ok - {name}");
            self.pass += 1;
        } else {
            println!("not ok - {name}\n#   {}", detail.replace('\n', "\n#   "));
            self.fail += 1;
        }
    }
    pub fn get(&self, netns: &str, addr: &str) -> (i32, String) {
        let (rc, answer, _) = self.route(netns, addr);
        (rc, answer)
    }
    /// One connection; whether IPVS carried it: its client port has an IPVS connection
    /// entry right after it (entries outlive the connection by IPVS's TCP state timeouts).
    pub fn route(&self, netns: &str, addr: &str) -> (i32, String, bool) {
        // IPVS connection entries by client port (the third column of /proc/net/ip_vs_conn).
        fn entries() -> BTreeSet<(String, String)> {
            std::fs::read_to_string("/proc/net/ip_vs_conn")
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Some((w.get(2)?.to_string(), w[..w.len().min(7)].join(" ")))
                })
                .collect()
        }
        let cmd = if netns.is_empty() {
            format!("{} get {addr}", self.me)
        } else {
            format!("ip netns exec {netns} {} get {addr}", self.me)
        };
        // A client port still named by an older entry (TIME_WAIT lasts minutes) cannot tell:
        // try again with a fresh port, a few times.
        let mut last = (0, String::new(), false);
        for _ in 0..4 {
            let before = entries();
            let out = Command::new("sh").args(["-c", &cmd]).output().expect("sh");
            let answer = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let rc = out.status.code().unwrap_or(-1);
            let Some(port) = err
                .split("port=")
                .nth(1)
                .and_then(|p| p.trim().parse::<u16>().ok())
            else {
                return (rc, answer, false); // no connection: nothing to attribute
            };
            let hex = format!("{port:04X}");
            let reused = before.iter().any(|(p, _)| *p == hex);
            let via = entries().iter().any(|e| e.0 == hex && !before.contains(e));
            last = (rc, answer, via);
            if via || !reused {
                break;
            }
        }
        last
    }
    pub fn migrate(&self, args: &str) -> (i32, String) {
        sh(&format!(
            "{} {args} --state-dir {} 2>&1",
            self.bin, self.state
        ))
    }
    pub fn pod(&mut self, name: &str, ip: &str, ip6: Option<&str>) {
        self.pods.push(name.to_owned());
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
        if let Some(v6) = ip6 {
            must(&format!(
                "ip addr add fe80::1/64 dev {host} nodad && ip -6 route add {v6}/128 dev {host} && \
                 ip -n {name} addr add {v6}/128 dev eth0 nodad && \
                 ip -n {name} -6 route add default via fe80::1 dev eth0"
            ));
        }
    }
    pub fn spawn(&mut self, netns: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, &self.me])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        self.children.push(child);
    }
    /// The answers of `n` connections to `addr` from `netns`.
    pub fn answers(&self, netns: &str, addr: &str, n: usize) -> (usize, BTreeSet<String>) {
        let mut ok = 0;
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            let (rc, out) = self.get(netns, addr);
            if rc == 0 {
                ok += 1;
                seen.insert(out);
            }
        }
        (ok, seen)
    }
}

/// Packets counted by kube-proxy's DNAT rules of a namespace (`iptables-save -c`).
pub fn dnat_packets(ns: &str) -> u64 {
    let (_, save) = sh(&format!("iptables-{}-save -c -t nat", be()));
    save.lines()
        .filter(|l| {
            l.contains("-j DNAT") && l.contains(&format!("\"{ns}/"))
                || (l.contains("-j DNAT") && l.contains(&format!(" {ns}/")))
        })
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}

/// Everything the agent could have touched, for before/after comparisons.
pub fn node_state() -> String {
    let mut out = String::new();
    let v4 = format!(
        "iptables-{}-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'",
        be()
    );
    let v6 = format!(
        "ip6tables-{}-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'",
        be()
    );
    for cmd in [
        "ipvsadm -Sn",
        "ip -o link show | sed 's/^[0-9]*: //' | cut -d' ' -f1 | sort",
        "ip -o addr show | awk '{print $2, $4}' | sort",
        "ipset save | sort",
        v4.as_str(),
        v6.as_str(),
        "for k in vs/conntrack vs/expire_nodest_conn vs/expire_quiescent_template ip_forward conf/all/arp_ignore conf/all/arp_announce; do echo $k=$(cat /proc/sys/net/ipv4/$k); done",
    ] {
        out.push_str(&format!("## {cmd}\n{}\n", sh(cmd).1));
    }
    out
}

pub fn first_diff(a: &str, b: &str) -> String {
    for (x, y) in a.lines().zip(b.lines()) {
        if x != y {
            return format!("- {x}\n+ {y}");
        }
    }
    format!("lengths {} vs {}", a.lines().count(), b.lines().count())
}

pub fn spec(
    ns: &str,
    name: &str,
    port_name: &str,
    vip: &str,
    port: u16,
    proto: Protocol,
) -> ServicePortSpec {
    ServicePortSpec {
        namespace: ns.into(),
        name: name.into(),
        port_name: port_name.into(),
        protocol: proto,
        cluster_ip: vip.parse().unwrap(),
        port,
        node_port: None,
        external_ips: vec![],
        lb_ips: vec![],
        source_ranges: vec![],
        affinity: None,
        itp_local: false,
        etp_local: false,
        hc_node_port: None,
        endpoints: vec![],
    }
}

pub fn svc(mut s: ServicePortSpec, eps: &[(&str, &str, u16)]) -> Svc {
    let mut answers = BTreeSet::new();
    for (pod, ip, port) in eps {
        s.endpoints.push(EndpointSpec {
            ip: ip.parse::<IpAddr>().unwrap(),
            port: *port,
            local: true,
        });
        answers.insert(format!("{pod}:{port}"));
    }
    Svc { spec: s, answers }
}

pub fn addr(ip: &IpAddr, port: u16) -> String {
    SocketAddr::new(*ip, port).to_string()
}

/// The helper modes every suite binary has (`serve NAME PORT...`, `serve-udp NAME PORT`,
/// `get ADDR`); a backend name (`legacy`, `nft`) selects the backend and returns `None`, as
/// does anything else: the caller runs its own mode or the suite.
pub fn helper_mode(args: &[String]) -> Option<i32> {
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            serve(&args[2], &args[3..]);
            Some(0)
        }
        Some("serve-udp") => {
            serve_udp(&args[2], &args[3]);
            Some(0)
        }
        Some("get") => Some(get(&args[2])),
        Some(b @ ("legacy" | "nft")) => {
            let _ = BACKEND.set(b.to_owned());
            None
        }
        _ => None,
    }
}

/// shop's first services: `web` (two endpoints, NodePort 30080), `empty` (no endpoints),
/// `sticky` (ClientIP affinity, 10800 s).
pub fn shop_core() -> Vec<Svc> {
    let mut web = svc(
        spec("shop", "web", "", "10.96.0.10", 80, Protocol::Tcp),
        &[("pod1", POD1, 8080), ("pod2", POD2, 8080)],
    );
    web.spec.node_port = Some(30080);
    let mut sticky = svc(
        spec("shop", "sticky", "", "10.96.0.12", 80, Protocol::Tcp),
        &[("pod1", POD1, 8081), ("pod2", POD2, 8081)],
    );
    sticky.spec.affinity = Some(10800);
    vec![
        web,
        svc(
            spec("shop", "empty", "", "10.96.0.11", 80, Protocol::Tcp),
            &[],
        ),
        sticky,
    ]
}

/// shop/dns (UDP 53 → pod1:5353), shop/lb (LB IP 203.0.113.10 open to the `cli` pod only) and
/// other/api (pod2:8090).
pub fn shop_dns_lb_other() -> (Svc, Svc, Svc) {
    let dns = svc(
        spec("shop", "dns", "", "10.96.0.14", 53, Protocol::Udp),
        &[("pod1", POD1, 5353)],
    );
    let mut lb = svc(
        spec("shop", "lb", "", "10.96.0.15", 80, Protocol::Tcp),
        &[("pod2", POD2, 8084)],
    );
    lb.spec.lb_ips = vec!["203.0.113.10".parse().unwrap()];
    lb.spec.source_ranges = vec!["10.244.1.4/32".parse().unwrap()];
    let api = svc(
        spec("other", "api", "", "10.96.0.20", 80, Protocol::Tcp),
        &[("pod2", POD2, 8090)],
    );
    (dns, lb, api)
}

/// A virtual server of another program (keepalived would do this): never ours to touch.
pub const FOREIGN_VS: &str =
    "ipvsadm -A -t 192.0.2.1:80 -s wrr && ipvsadm -a -t 192.0.2.1:80 -r 10.244.1.3:8091 -m -w 3";

/// kube-proxy's iptables-mode rules for the services, written to `dir`/rules4 and rules6 and
/// loaded on the current backend; returns the two texts.
pub fn load_kube_proxy_rules(dir: &std::path::Path, v4: &[Svc], v6: &[Svc]) -> (String, String) {
    let render_all = |fam: IpFamily, svcs: &[Svc]| {
        render(&Cluster {
            node: Node::default_for(fam),
            ports: svcs.iter().map(|x| x.spec.clone()).collect(),
        })
    };
    let (r4, r6) = (
        render_all(IpFamily::IPv4, v4),
        render_all(IpFamily::IPv6, v6),
    );
    let (p4, p6) = (dir.join("rules4"), dir.join("rules6"));
    std::fs::write(&p4, &r4).unwrap();
    std::fs::write(&p6, &r6).unwrap();
    must(&format!(
        "iptables-{b}-restore < {} && ip6tables-{b}-restore < {}",
        p4.display(),
        p6.display(),
        b = be()
    ));
    (r4, r6)
}

/// The TCP services with endpoints: the ones a connection must reach.
pub fn answering_tcp<'a>(v4: &'a [Svc], v6: &'a [Svc]) -> Vec<&'a Svc> {
    v4.iter()
        .chain(v6)
        .filter(|x| x.spec.protocol == Protocol::Tcp && !x.answers.is_empty())
        .collect()
}
