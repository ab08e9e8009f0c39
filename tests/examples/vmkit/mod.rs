//! What the VM kernel suites share (tests/examples/vm_*.rs include it with `#[path]`): the
//! "pod" network namespaces and their answering servers, one-connection clients that tell
//! whether IPVS carried a connection, kube-proxy's DNAT counters, node snapshots for
//! before/after comparisons, and the fixture's service builders.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipvsmig_clustergen::{EndpointSpec, ServicePortSpec};
use ipvsmig_engine::inventory::Protocol;

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
