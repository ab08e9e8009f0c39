//! End-to-end kernel suite for the `serve` daemon (issue 6), run inside the VM test bed
//! (tests/vm/cutover-e2e.sh; one boot, iptables-legacy). kube-proxy's iptables-mode rules for a
//! namespace `load` of 20 ClusterIP service ports (two endpoints each) and a namespace `other`;
//! "pods" in network namespaces run echo servers (a greeting naming the pod, then every byte
//! echoed). A load process in the client pod keeps opening new connections (25/s, round robin
//! over the 20 service ports) and holds long-lived connections that exchange a byte every
//! second. Where traffic went is proven by IPVS connection entries (/proc/net/ip_vs_conn,
//! by client port) and kube-proxy's DNAT counters. Scenarios:
//! 1. cutover under load (probe-first checked while it verifies), long-lived connections
//!    opened before (stay on iptables) and after admission (IPVS), commit, then a manual
//!    rollback with a drain longer than the measurement: no failed request, every long-lived
//!    connection keeps exchanging data;
//! 2. the same with a short drain: the IPVS-era connections end when it expires;
//! 3. two waves from a file; then a fault only the second wave's IPVS path suffers (`-m ipvs
//!    --ipvs --vaddr ... -j DROP` in filter OUTPUT): the built-in evaluator fires, that wave is
//!    rolled back within a bound by itself, the committed first wave stays;
//! 4. the dead man's switch: the daemon frozen with SIGSTOP, traffic back on iptables within
//!    the switch's timeout;
//! 5. churn while migrated: endpoints and services added and removed in kube-proxy's rules,
//!    IPVS follows within a reconcile period; a displaced or deleted admission hook is
//!    repaired; finally a rollback leaves the node as it was;
//! 6. SIGKILL at points through a cutover and a rollback, then a restart: the state converges
//!    and the kernel holds exactly what the journal owns.
//!
//! Modes: `suite` (default); `echo NAME PORT...`; `load DIR ADDR...` (see [`load`]).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "vmkit/mod.rs"]
mod vmkit;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipvsmig_clustergen::{Cluster, Node, render};
use ipvsmig_engine::inventory::{IpFamily, Protocol};
use vmkit::*;

const SERVICES: u16 = 20;
const LONG_LIVED: usize = 10;
const CLI: &str = "10.244.1.4";

fn unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Echo servers: a `NAME:PORT\n` greeting, then every byte back, until the client closes.
fn echo(name: &str, ports: &[String]) {
    let mut handles = Vec::new();
    for p in ports {
        let l = TcpListener::bind(format!("0.0.0.0:{p}")).expect("bind");
        let greeting = format!("{name}:{p}\n");
        handles.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let g = greeting.clone();
                std::thread::spawn(move || {
                    let mut s = s;
                    if s.write_all(g.as_bytes()).is_err() {
                        return;
                    }
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

fn greet(addr: SocketAddr) -> Result<(TcpStream, String), String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("pod") {
        Ok((s, line.trim().to_owned()))
    } else {
        Err(format!("greeting {line:?}"))
    }
}

/// Per long-lived connection: set, client port, exchanges, failures, last good exchange.
type ConnLog = Arc<Mutex<Vec<(String, u16, u64, u64, f64)>>>;

/// One connection to an echo server, as vmkit's `get` reports it: the client port on stderr,
/// the greeting on stdout; exit 1 refused, 2 anything else.
fn get_line(addr: &str) -> i32 {
    match greet(addr.parse().expect("ADDR")) {
        Ok((s, line)) => {
            if let Ok(l) = s.local_addr() {
                eprint!("port={}", l.port());
            }
            print!("{line}");
            0
        }
        Err(e) if e.contains("refused") => 1,
        Err(e) => {
            eprint!("{e}");
            2
        }
    }
}

/// The load process, run in the client pod: new connections at 25/s round robin over ADDRs
/// until `DIR/stop` appears; for each `DIR/open-SET` file, 10 long-lived connections (their
/// client ports written to `DIR/ports-SET`) that send a byte every second and expect it back.
/// Writes `DIR/result`: `new OK FAIL`, then per connection `conn SET PORT EXCHANGES FAILS
/// LAST_OK_UNIX`, then the failed new connections `fail UNIX ADDR ERROR`.
fn load(dir: &Path, addrs: &[SocketAddr]) -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let conns: ConnLog = Arc::default();
    let mut threads = Vec::new();
    {
        let (stop, ok, failures, addrs) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
            addrs.to_vec(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let a = addrs[i % addrs.len()];
                i += 1;
                match greet(a) {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("fail {:.3} {a} {e}", unix())),
                }
                if let Some(rest) = Duration::from_millis(40).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }));
    }
    let mut opened = BTreeSet::new();
    while !dir.join("stop").exists() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(set) = name.strip_prefix("open-") else {
                continue;
            };
            if !opened.insert(set.to_owned()) {
                continue;
            }
            let mut ports = String::new();
            for k in 0..LONG_LIVED {
                let a = addrs[(k * 2) % addrs.len()];
                let (stop, conns, set) = (Arc::clone(&stop), Arc::clone(&conns), set.to_owned());
                match greet(a) {
                    Ok((s, _)) => {
                        let port = s.local_addr().unwrap().port();
                        ports.push_str(&format!("{port}\n"));
                        threads.push(std::thread::spawn(move || {
                            let (mut n, mut fails, mut last) = (0u64, 0u64, 0.0f64);
                            let mut s = s;
                            while !stop.load(Ordering::Relaxed) {
                                let mut b = [0u8; 1];
                                let r = s.write_all(b"x").and_then(|()| s.read_exact(&mut b));
                                if r.is_ok() && b[0] == b'x' {
                                    n += 1;
                                    last = unix();
                                } else {
                                    fails += 1;
                                    break; // a broken connection stays broken
                                }
                                std::thread::sleep(Duration::from_secs(1));
                            }
                            conns.lock().unwrap().push((set, port, n, fails, last));
                        }));
                    }
                    Err(e) => {
                        ports.push_str("0\n");
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("fail {:.3} {a} long-lived: {e}", unix()));
                    }
                }
            }
            std::fs::write(dir.join(format!("ports-{set}")), ports).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let f = failures.lock().unwrap();
    let mut out = format!("new {} {}\n", ok.load(Ordering::Relaxed), f.len());
    for (set, port, n, fails, last) in conns.lock().unwrap().iter() {
        out.push_str(&format!("conn {set} {port} {n} {fails} {last:.3}\n"));
    }
    for l in f.iter() {
        out.push_str(l);
        out.push('\n');
    }
    std::fs::write(dir.join("result"), out).unwrap();
    0
}

/// One long-lived connection's result.
#[derive(Debug)]
struct Conn {
    set: String,
    exchanges: u64,
    fails: u64,
    last_ok: f64,
}

struct LoadResult {
    new_ok: u64,
    new_fail: u64,
    conns: Vec<Conn>,
    failures: Vec<String>,
}

fn parse_result(text: &str) -> LoadResult {
    let mut r = LoadResult {
        new_ok: 0,
        new_fail: 0,
        conns: Vec::new(),
        failures: Vec::new(),
    };
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first() {
            Some(&"new") => {
                r.new_ok = w[1].parse().unwrap();
                r.new_fail = w[2].parse().unwrap();
            }
            Some(&"conn") => r.conns.push(Conn {
                set: w[1].to_owned(),
                exchanges: w[3].parse().unwrap(),
                fails: w[4].parse().unwrap(),
                last_ok: w[5].parse().unwrap(),
            }),
            Some(&"fail") => r.failures.push(l.to_owned()),
            _ => {}
        }
    }
    r
}

/// A running load process and its control directory.
struct Load {
    dir: PathBuf,
    child: Child,
    started: Instant,
}

impl Load {
    fn start(me: &str, dir: PathBuf, addrs: &[String]) -> Load {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", "cli", me, "load"])
            .arg(&dir)
            .args(addrs)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn load");
        Load {
            dir,
            child,
            started: Instant::now(),
        }
    }
    /// Opens a set of long-lived connections; their client ports.
    fn open(&self, set: &str) -> Vec<u16> {
        std::fs::write(self.dir.join(format!("open-{set}")), "").unwrap();
        let f = self.dir.join(format!("ports-{set}"));
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(text) = std::fs::read_to_string(&f)
                && text.lines().count() == LONG_LIVED
            {
                return text.lines().filter_map(|l| l.parse().ok()).collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("long-lived set {set} did not open");
    }
    fn stop(mut self) -> (LoadResult, Duration) {
        std::fs::write(self.dir.join("stop"), "").unwrap();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self.dir.join("result")).unwrap_or_default();
        (parse_result(&text), self.started.elapsed())
    }
}

/// IPVS connection entries' client ports whose client is `ip` (/proc/net/ip_vs_conn: hex).
fn ipvs_client_ports(ip: &str) -> BTreeSet<u16> {
    let hex: String = ip
        .split('.')
        .map(|o| format!("{:02X}", o.parse::<u8>().unwrap()))
        .collect();
    std::fs::read_to_string("/proc/net/ip_vs_conn")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (*w.get(1)? == hex).then(|| u16::from_str_radix(w.get(2)?, 16).ok())?
        })
        .collect()
}

/// `GET path` from the daemon's HTTP server.
fn http_get(path: &str) -> String {
    let Ok(mut s) = TcpStream::connect("127.0.0.1:9964") else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `status -o json`, parsed.
fn status(s: &Suite) -> serde_json::Value {
    let (_, out) = sh(&format!(
        "{} status -o json --state-dir {} 2>/dev/null",
        s.bin, s.state
    ));
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}

fn phase(s: &Suite) -> String {
    status(s)["owned"]["cutover"]["phase"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits up to `secs` for `f`; whether it held.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

fn admitted_members() -> usize {
    sh("ipset list IPVSMIG-ADMITTED 2>/dev/null | sed -n '/^Members:/,$p' | tail -n +2 | grep -c .")
        .1
        .trim()
        .parse()
        .unwrap_or(0)
}

/// kube-proxy's own way of changing its rules: the nat table's KUBE chains restored with
/// --noflush (declared chains are flushed and rewritten, chains that went away declared and
/// deleted); built-in chains and other programs' chains untouched.
fn kube_proxy_sync(old: &str, new: &str) -> String {
    let nat = |text: &str| -> String {
        let mut out = String::new();
        let mut on = false;
        for l in text.lines() {
            if l == "*nat" {
                on = true;
            } else if on && l == "COMMIT" {
                break;
            } else if on {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    };
    let chains = |t: &str| -> BTreeSet<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| c.starts_with("KUBE-"))
            .map(str::to_owned)
            .collect()
    };
    let (o, n) = (nat(old), nat(new));
    let gone: Vec<String> = chains(&o).difference(&chains(&n)).cloned().collect();
    let mut out = String::from("*nat\n");
    for l in n.lines() {
        let builtin = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
            .iter()
            .any(|c| l.starts_with(&format!(":{c} ")) || l.starts_with(&format!("-A {c} ")));
        if !builtin {
            out.push_str(l);
            out.push('\n');
        }
    }
    for c in &gone {
        out.push_str(&format!(":{c} - [0:0]\n"));
    }
    for c in &gone {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

fn service(i: u16) -> Svc {
    svc(
        spec(
            "load",
            &format!("svc{i}"),
            "",
            &format!("10.96.2.{}", i + 1),
            80,
            Protocol::Tcp,
        ),
        &[("pod1", POD1, 9000 + i), ("pod2", POD2, 9000 + i)],
    )
}

fn rules(svcs: &[Svc]) -> String {
    render(&Cluster {
        node: Node::default_for(IpFamily::IPv4),
        ports: svcs.iter().map(|x| x.spec.clone()).collect(),
    })
}

fn vips(svcs: &[Svc]) -> Vec<String> {
    svcs.iter()
        .filter(|x| x.spec.namespace == "load")
        .map(|x| addr(&x.spec.cluster_ip, x.spec.port))
        .collect()
}

/// The node: its address, the pods with their echo servers, kube-proxy's rules for `load`
/// (20 service ports) and `other`, IPVS's shortened timeouts. Returns the services and the
/// rules text.
fn setup(s: &mut Suite, dir: &Path) -> (Vec<Svc>, String) {
    must(
        "ip link add node0 type dummy && ip addr add 192.168.0.2/24 dev node0 && ip link set node0 up && \
         { ip route show default | grep -q . || ip route add default via 192.168.0.1 dev node0 onlink; } && \
         echo 1 > /proc/sys/net/ipv4/ip_forward",
    );
    s.pod("pod1", POD1, None);
    s.pod("pod2", POD2, None);
    s.pod("cli", CLI, None);
    let ports: Vec<String> = (9000..9000 + SERVICES + 2).map(|p| p.to_string()).collect();
    for pod in ["pod1", "pod2"] {
        let child = Command::new("ip")
            .args(["netns", "exec", pod, &s.me, "echo", pod])
            .args(&ports)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn echo");
        s.children.push(child);
    }
    let mut svcs: Vec<Svc> = (0..SERVICES).map(service).collect();
    svcs.push(svc(
        spec("other", "api", "", "10.96.3.1", 80, Protocol::Tcp),
        &[("pod1", POD1, 9000)],
    ));
    let current = rules(&svcs);
    let file = dir.join("rules");
    std::fs::write(&file, &current).unwrap();
    must(&format!("iptables-legacy-restore < {}", file.display()));
    // IPVS's own timeouts, shortened for the suite (tcp 900 s, tcpfin 10 s, udp 300 s): an
    // inactive (TIME_WAIT) connection entry keeps a leaving real server for tcpfin.
    must("ipvsadm --set 900 10 300");
    (svcs, current)
}

/// `setup` mode, for suites that run their own daemon (tests/vm/alerting-e2e.sh): the node of
/// this suite, left running (the echo servers outlive this process).
fn setup_only() -> i32 {
    let _ = BACKEND.set("legacy".into());
    let dir = std::env::temp_dir().join("vm-setup");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = Suite {
        me: std::env::current_exe().unwrap().display().to_string(),
        bin: String::new(),
        state: String::new(),
        pass: 0,
        fail: 0,
        children: Vec::new(),
        pods: Vec::new(),
    };
    let (svcs, _) = setup(&mut s, &dir);
    let bad: Vec<String> = vips(&svcs)
        .iter()
        .filter(|a| s.get("cli", a).0 != 0)
        .cloned()
        .collect();
    if bad.is_empty() {
        println!(
            "setup: {} service ports of `load` answer through iptables",
            vips(&svcs).len()
        );
        0
    } else {
        eprintln!("setup: no answer from {bad:?}");
        1
    }
}

/// The journal's last record's step (what had just been done or was about to be).
fn last_step(state: &str) -> String {
    let text = std::fs::read_to_string(Path::new(state).join("journal.jsonl")).unwrap_or_default();
    let last = text.lines().last().unwrap_or("");
    let kind = [
        "\"record\":\"intent\"",
        "\"record\":\"state\"",
        "\"record\":\"failed\"",
    ]
    .iter()
    .find(|k| last.contains(*k))
    .map_or("?", |k| {
        k.split(':').nth(1).unwrap_or("?").trim_matches('"')
    });
    let step = last
        .split("\"step\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("-");
    format!("{kind}:{step}")
}

/// What the kernel holds of the agent's kinds of objects: virtual servers, `IPVSMIG-` sets,
/// kube-ipvs0's addresses, whether `IPVSMIG-` chains exist.
fn kernel_objects() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>, bool) {
    let vs = sh("ipvsadm -Sn")
        .1
        .lines()
        .filter_map(|l| l.strip_prefix("-A -t "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let sets = sh("ipset list -n")
        .1
        .lines()
        .filter(|l| l.starts_with("IPVSMIG"))
        .map(str::to_owned)
        .collect();
    let addrs = sh("ip -o addr show dev kube-ipvs0 2>/dev/null | awk '{print $4}'")
        .1
        .lines()
        .filter_map(|l| l.split('/').next())
        .map(str::to_owned)
        .collect();
    let chains = sh("iptables-legacy-save | grep -c '^:IPVSMIG'").1.trim() != "0";
    (vs, sets, addrs, chains)
}

/// The same, as the journal says the agent owns them.
fn owned_objects(s: &Suite) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>, bool) {
    let st = status(s);
    let o = &st["owned"];
    let vs = o["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}:{}", e[0][1].as_str().unwrap_or(""), e[0][2]))
                .collect()
        })
        .unwrap_or_default();
    let sets = o["sets"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let addrs = o["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let rules = o["rules"].as_array().is_some_and(|a| !a.is_empty());
    (vs, sets, addrs, rules)
}

/// Kills the daemon at points all through a cutover (every 300 ms) and a rollback (every
/// 200 ms) of namespace `load`, restarts it, waits for it to settle and compares the kernel with
/// the journal; then rolls everything back and compares the node with `s0`. Returns the
/// journal's last step at each kill (how many kills hit it) and the failures.
fn kill_test(
    s: &mut Suite,
    daemon: &mut Child,
    start: &dyn Fn(&Suite) -> Child,
    s0: &str,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (what, points, step_ms) in [("cutover", 12u64, 300u64), ("rollback", 6, 200)] {
        for k in 0..points {
            if what == "rollback" {
                let (rc, out) = s.migrate("apply --namespace load");
                if rc != 0 {
                    bad.push(format!("{what} #{k}: apply before the kill: {out}"));
                    continue;
                }
            }
            let cmd = if what == "cutover" {
                format!(
                    "{} cutover --namespace load --soak 1s --state-dir {} 2>&1",
                    s.bin, s.state
                )
            } else {
                format!(
                    "{} rollback --namespace load --drain 0s --state-dir {} 2>&1",
                    s.bin, s.state
                )
            };
            let cli = std::thread::spawn(move || sh(&cmd));
            std::thread::sleep(Duration::from_millis(50 + k * step_ms));
            let _ = daemon.kill();
            let _ = daemon.wait();
            *hits.entry(last_step(&s.state)).or_default() += 1;
            let _ = cli.join();
            *daemon = start(s);
            // Settled: no cutover in flight, and two reconcile passes for the rest.
            let settled = wait_for(30, || {
                let p = phase(s);
                !matches!(
                    p.as_str(),
                    "preflight" | "prepare" | "apply" | "probe" | "admit" | "soak" | "rolling-back"
                )
            });
            std::thread::sleep(Duration::from_secs(2));
            let (k_vs, k_sets, k_addrs, k_rules) = kernel_objects();
            let (o_vs, o_sets, o_addrs, o_rules) = owned_objects(s);
            let p = phase(s);
            let migrated = status(s)["owned"]["namespaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == "load"));
            // A wave killed before its soak ended is rolled back; one killed after its commit
            // stays; a rollback killed after its decision was journaled is finished.
            let as_stated = match what {
                "cutover" => match p.as_str() {
                    "committed" => migrated && k_vs.len() == SERVICES as usize,
                    "rolled-back" | "failed" | "" => !migrated,
                    _ => false,
                },
                // Killed before its decision was journaled it never happened (all still there);
                // after, the restarted daemon finishes it (nothing left).
                _ => {
                    (migrated && k_vs.len() == SERVICES as usize) || (!migrated && k_vs.is_empty())
                }
            };
            if !settled
                || !as_stated
                || k_vs != o_vs
                || k_sets != o_sets
                || k_addrs != o_addrs
                || k_rules != o_rules
            {
                bad.push(format!(
                    "{what} kill #{k} (after {}): settled {settled}, phase {p:?}, migrated {migrated}; kernel vs journal: {} vs {} virtual servers, sets {k_sets:?} vs {o_sets:?}, {} vs {} addresses, chains {k_rules} vs {o_rules}",
                    last_step(&s.state),
                    k_vs.len(),
                    o_vs.len(),
                    k_addrs.len(),
                    o_addrs.len()
                ));
            }
            let (rc, out) = s.migrate("rollback --all --drain 0s");
            let now = node_state();
            if (rc != 0 && !out.contains("not migrated")) || now != s0 {
                bad.push(format!(
                    "{what} kill #{k}: the rollback after it left: {out}\n{}",
                    first_diff(s0, &now)
                ));
            }
        }
    }
    (hits, bad)
}

#[allow(clippy::too_many_lines)]
fn suite() -> i32 {
    let _ = BACKEND.set("legacy".into());
    let me = std::env::current_exe().unwrap().display().to_string();
    let bin = std::env::var("IPVS_MIGRATE").expect("IPVS_MIGRATE: path of ipvs-migrate");
    let dir = std::env::temp_dir().join("vm-cutover");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    let mut s = Suite {
        me: me.clone(),
        bin,
        state: p("state"),
        pass: 0,
        fail: 0,
        children: Vec::new(),
        pods: Vec::new(),
    };
    let (mut svcs, mut current) = setup(&mut s, &dir);
    // Reading ip6tables (as the agent does, and as kube-proxy would) instantiates the empty
    // IPv6 tables: read them once before the baseline so that the comparison is about objects.
    must("for t in filter nat mangle; do ip6tables-legacy -t $t -S >/dev/null; done");
    std::thread::sleep(Duration::from_millis(300));
    let s0 = node_state();
    let targets = vips(&svcs);

    // The daemon.
    std::fs::write(p("token"), "s3cret\n").unwrap();
    std::fs::write(
        p("serve.yaml"),
        format!(
            "listen: 127.0.0.1:9964\nnodeName: vm\ntokenFile: {}\nreconcilePeriod: 2s\nswitchTimeout: 6s\n\
             probeInterval: 1s\nverify: 8s\ndrain: 2s\nsoak: 4s\nnodeIPs: [192.168.0.2]\n\
             thresholds:\n  window: 20s\n  for: 2s\n",
            p("token")
        ),
    )
    .unwrap();
    let start_daemon = |s: &Suite| -> Child {
        let log = std::fs::File::create(p("serve.log")).unwrap();
        let child = Command::new(&s.bin)
            .args([
                "serve",
                "--config",
                &p("serve.yaml"),
                "--state-dir",
                &s.state,
            ])
            .args(["--iptables-backend", "legacy", "-v"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serve");
        let sock = Path::new(&s.state).join("agent.sock");
        assert!(
            wait_for(20, || std::os::unix::net::UnixStream::connect(&sock)
                .is_ok()),
            "the daemon did not come up: {}",
            std::fs::read_to_string(p("serve.log")).unwrap_or_default()
        );
        child
    };
    let mut daemon = start_daemon(&s);

    // Baseline.
    let mut bad = Vec::new();
    for a in &targets {
        let (rc, out) = s.get("cli", a);
        if rc != 0 || !out.starts_with("pod") {
            bad.push(format!("{a}: {rc} {out}"));
        }
    }
    s.check(
        "baseline: all 20 service ports of `load` answer through iptables",
        bad.is_empty(),
        &bad.join("\n"),
    );

    // 1. Cutover under load, then a manual rollback with a long drain.
    let load = Load::start(&me, dir.join("load1"), &targets);
    let set_a = load.open("a");
    let cutover = {
        let cmd = format!(
            "{} cutover --namespace load --soak 4s --state-dir {} 2>&1",
            s.bin, s.state
        );
        std::thread::spawn(move || sh(&cmd))
    };
    let saw_probe = wait_for(30, || phase(&s) == "probe");
    let (dnat0, ipvs0) = (dnat_packets("load"), ipvs_client_ports(CLI));
    std::thread::sleep(Duration::from_millis(2000));
    let still = phase(&s) == "probe";
    let (dnat1, ipvs1) = (dnat_packets("load"), ipvs_client_ports(CLI));
    s.check(
        "probe-first: while the wave is verified, clients still take kube-proxy's DNAT (its counters move) and make no IPVS connection",
        saw_probe && still && dnat1 > dnat0 && ipvs1.is_subset(&ipvs0),
        &format!(
            "probe phase seen {saw_probe}, still {still}; DNAT {dnat0} -> {dnat1}; new IPVS client ports {:?}",
            ipvs1.difference(&ipvs0).collect::<Vec<_>>()
        ),
    );
    let (rc, out) = cutover.join().unwrap();
    s.check(
        "cutover --namespace load: verified through IPVS, admitted, soaking (exit 0)",
        rc == 0 && out.contains("admitted") && phase(&s) == "soak",
        &out,
    );
    let set_b = load.open("b");
    std::thread::sleep(Duration::from_millis(300));
    let on_ipvs = ipvs_client_ports(CLI);
    s.check(
        "long-lived connections opened before the cutover stay on their iptables DNAT; those opened after admission are IPVS connections",
        set_a.iter().all(|p| !on_ipvs.contains(p)) && set_b.iter().all(|p| on_ipvs.contains(p)),
        &format!("a {set_a:?}\nb {set_b:?}\nIPVS {on_ipvs:?}"),
    );
    s.check(
        "the soak ends: committed",
        wait_for(15, || phase(&s) == "committed"),
        &phase(&s),
    );
    let (_, via_ipvs) = {
        let (rc, _, via) = s.route("cli", &targets[3]);
        (rc, via)
    };
    s.check(
        "committed: a new client connection is an IPVS connection",
        via_ipvs,
        "",
    );
    let rollback = {
        let cmd = format!(
            "{} rollback --namespace load --drain 25s --state-dir {} 2>&1",
            s.bin, s.state
        );
        std::thread::spawn(move || sh(&cmd))
    };
    let off = wait_for(10, || admitted_members() == 0);
    let d0 = dnat_packets("load");
    let (rc, _, via) = s.route("cli", &targets[5]);
    s.check(
        "rollback: admission goes off at once, new connections take iptables again during the drain",
        off && rc == 0 && !via && dnat_packets("load") > d0,
        &format!("admission off {off}, rc {rc}, via IPVS {via}"),
    );
    std::thread::sleep(Duration::from_secs(12));
    let stopped_at = unix();
    let (r, took) = load.stop();
    let rate = r.new_ok as f64 / took.as_secs_f64();
    println!(
        "# load 1: {} new connections in {:.1} s ({rate:.1}/s), {} failed; {} long-lived connections: {:?}",
        r.new_ok,
        took.as_secs_f64(),
        r.new_fail,
        r.conns.len(),
        r.conns
            .iter()
            .map(|c| format!("{}:{}/{}", c.set, c.exchanges, c.fails))
            .collect::<Vec<_>>()
    );
    let alive = r
        .conns
        .iter()
        .filter(|c| c.fails == 0 && c.last_ok > stopped_at - 2.5)
        .count();
    s.check(
        "under load (>= 20 new connections/s over 20 service ports): zero failed requests through cutover and rollback",
        r.new_fail == 0 && rate >= 20.0,
        &r.failures.join("\n"),
    );
    s.check(
        "every long-lived connection of both sets (10 on iptables, 10 on IPVS) kept exchanging data through both moves",
        r.conns.len() == 2 * LONG_LIVED && alive == 2 * LONG_LIVED,
        &format!("{:?}", r.conns),
    );
    let (rc, out) = rollback.join().unwrap();
    s.check(
        "…and the rollback completes when the drain ends (exit 0)",
        rc == 0 && out.contains("Rolled back"),
        &out,
    );

    // 2. A short drain: the IPVS-era connections end when it expires.
    let load = Load::start(&me, dir.join("load2"), &targets);
    let (rc, out) = sh(&format!(
        "{} cutover --namespace load --soak 2s --state-dir {} 2>&1",
        s.bin, s.state
    ));
    assert_eq!(rc, 0, "{out}");
    let set_c = load.open("c");
    let c_on_ipvs = ipvs_client_ports(CLI);
    wait_for(10, || phase(&s) == "committed");
    let t_rb = unix();
    let (rc, out) = sh(&format!(
        "{} rollback --namespace load --drain 3s --state-dir {} 2>&1",
        s.bin, s.state
    ));
    let t_done = unix();
    std::thread::sleep(Duration::from_secs(4));
    let after = ipvs_client_ports(CLI);
    let (r, _) = load.stop();
    // When the drain ends the virtual servers go, and with expire_nodest_conn=1 each IPVS
    // connection ends at its next packet. With the kernel's default nf_conntrack_tcp_loose=1,
    // conntrack then picks the flow up mid-stream as new and kube-proxy's DNAT sends it to a
    // random endpoint: a connection carries on only where that is the endpoint IPVS had chosen
    // (docs/serve.md). So: every one leaves IPVS, the others end within a second or two.
    let ended = r
        .conns
        .iter()
        .filter(|c| c.set == "c" && c.fails > 0 && c.last_ok < t_done + 1.5)
        .count();
    let carried_on = r
        .conns
        .iter()
        .filter(|c| c.set == "c" && c.fails == 0 && c.last_ok > t_done + 2.0)
        .count();
    s.check(
        "with a short drain (3 s) the IPVS-era long-lived connections lose IPVS when it expires and end, unless kube-proxy's DNAT picks their very endpoint; new connections never fail",
        rc == 0
            && set_c.iter().all(|p| c_on_ipvs.contains(p))
            && set_c.iter().all(|p| !after.contains(p))
            && ended >= 1
            && ended + carried_on == LONG_LIVED
            && r.new_fail == 0
            && t_done - t_rb >= 3.0,
        &format!("{out}\n{:?}\n{}", r.conns, r.failures.join("\n")),
    );
    println!(
        "# load 2: {} new connections, {} failed; of the 10 IPVS-era connections {ended} ended when the 3 s drain expired, {carried_on} carried on through kube-proxy's DNAT to the same endpoint",
        r.new_ok, r.new_fail,
    );

    // 3. Two waves from a file (`other`, then `load`), each gated on the previous one's soak;
    // then a fault only load's IPVS path suffers: the built-in evaluator rolls `load` back by
    // itself and the committed first wave stays.
    std::fs::write(
        p("waves.yaml"),
        "waves:\n  - namespaces: [other]\n  - namespaces: [load]\n",
    )
    .unwrap();
    let (rc, out) = sh(&format!(
        "{} cutover --waves {} --soak 3s --state-dir {} 2>&1",
        s.bin,
        p("waves.yaml"),
        s.state
    ));
    let wave = |s: &Suite| status(s)["owned"]["cutover"]["wave"].as_u64().unwrap_or(0);
    let migrated = |s: &Suite, ns: &str| {
        status(s)["owned"]["namespaces"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == ns))
    };
    let second = wait_for(60, || {
        wave(&s) == 1 && matches!(phase(&s).as_str(), "soak" | "committed")
    });
    s.check(
        "cutover --waves: wave 1 (other) verified, admitted and soaked before wave 2 (load) goes through the gate and is admitted",
        rc == 0 && out.contains("wave 1 of 2 (other)") && second && migrated(&s, "other") && migrated(&s, "load"),
        &format!("{out}\nphase {} wave {}", phase(&s), wave(&s)),
    );
    let rollbacks_before = status(&s)["owned"]["rollbacks"]
        .as_array()
        .map_or(0, Vec::len);
    let t0 = Instant::now();
    must("iptables-legacy -A OUTPUT -m ipvs --ipvs --vaddr 10.96.2.0/24 -j DROP");
    let rolled = wait_for(60, || phase(&s) == "rolled-back");
    let took = t0.elapsed();
    let st = status(&s);
    let last = st["owned"]["rollbacks"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or_default();
    let metrics = http_get("/metrics");
    let fired = metrics.lines().any(|l| {
        l.starts_with("ipvs_migrate_rollback_triggers_total{")
            && l.contains("source=\"builtin\"")
            && !l.ends_with(" 0")
    });
    println!(
        "# fault: rolled back {:.1} s after the fault rule went in",
        took.as_secs_f64()
    );
    s.check(
        "a fault on load's IPVS path: the built-in evaluator fires and load is rolled back by itself within 30 s; the committed wave (other) stays on IPVS",
        rolled
            && took < Duration::from_secs(30)
            && st["owned"]["rollbacks"].as_array().map_or(0, Vec::len) == rollbacks_before + 1
            && !migrated(&s, "load")
            && migrated(&s, "other"),
        &format!("{st}"),
    );
    s.check(
        "the reason is in status (the alert, source builtin) and in the metrics",
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("IPVSMigrate"))
            && last["source"] == "builtin"
            && fired,
        &format!(
            "{last}\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("trigger"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let (rc, out) = s.get("", &targets[0]);
    s.check(
        "traffic recovers through iptables (the node's own request passes the fault rule)",
        rc == 0 && out.starts_with("pod"),
        &out,
    );
    must("iptables-legacy -D OUTPUT -m ipvs --ipvs --vaddr 10.96.2.0/24 -j DROP");

    // 4. The dead man's switch.
    let (rc, out) = s.migrate("apply --namespace load");
    s.check(
        "apply is handed to the daemon (watched)",
        rc == 0 && out.contains("daemon") && admitted_members() >= SERVICES as usize,
        &out,
    );
    let pid = daemon.id();
    must(&format!("kill -STOP {pid}"));
    let t0 = Instant::now();
    let expired = wait_for(12, || admitted_members() == 0);
    let took = t0.elapsed();
    let d0 = dnat_packets("load");
    let (rc, _, via) = s.route("cli", &targets[7]);
    s.check(
        "the daemon frozen (SIGSTOP): within the switch's timeout (6 s) the admission entries expire and traffic is back on iptables",
        expired && took <= Duration::from_secs(9) && rc == 0 && !via && dnat_packets("load") > d0,
        &format!("expired {expired} after {:.1} s; rc {rc} via IPVS {via}", took.as_secs_f64()),
    );
    println!(
        "# switch: admission expired {:.1} s after SIGSTOP",
        took.as_secs_f64()
    );
    must(&format!("kill -CONT {pid}"));
    s.check(
        "thawed, the daemon refreshes the admission again",
        wait_for(10, || admitted_members() >= SERVICES as usize),
        "",
    );

    // 5. Churn while migrated.
    let period = Duration::from_secs(2);
    let within = (period * 2).as_secs() + 1;
    let sync = |s: &Suite, current: &mut String, svcs: &[Svc]| {
        let next = rules(svcs);
        std::fs::write(p("sync"), kube_proxy_sync(current, &next)).unwrap();
        let (rc, out) = sh(&format!(
            "iptables-legacy-restore --noflush < {}",
            p("sync")
        ));
        assert_eq!(rc, 0, "{out}");
        let _ = s;
        *current = next;
    };
    let dests = |vip: &str| -> BTreeMap<String, String> {
        sh(&format!("ipvsadm -Ln -t {vip}"))
            .1
            .lines()
            .filter(|l| l.contains("->") && !l.contains("RemoteAddress"))
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some((w.get(1)?.to_string(), w.get(3)?.to_string()))
            })
            .collect()
    };
    // An endpoint added to svc0.
    svcs[0]
        .spec
        .endpoints
        .push(ipvsmig_clustergen::EndpointSpec {
            ip: POD1.parse().unwrap(),
            port: 9020,
            local: true,
        });
    sync(&s, &mut current, &svcs);
    let vip0 = addr(&svcs[0].spec.cluster_ip, 80);
    s.check(
        "an endpoint kube-proxy added: IPVS has the real server within one reconcile period",
        wait_for(within, || {
            dests(&vip0).contains_key(&format!("{POD1}:9020"))
        }),
        &format!("{:?}", dests(&vip0)),
    );
    // An endpoint removed from svc1: weight 0 first (no connections: deleted the pass after).
    let gone = format!("{POD2}:9001");
    svcs[1].spec.endpoints.retain(|e| e.ip.to_string() != POD2);
    sync(&s, &mut current, &svcs);
    let vip1 = addr(&svcs[1].spec.cluster_ip, 80);
    // kube-proxy's graceful termination waits for active *and* inactive connections (TIME_WAIT
    // entries count as inactive for IPVS's tcpfin timeout, set to 10 s at the start).
    let weight0 = wait_for(within, || {
        dests(&vip1).get(&gone).is_some_and(|w| w == "0") || !dests(&vip1).contains_key(&gone)
    });
    let deleted = wait_for(30, || !dests(&vip1).contains_key(&gone));
    s.check(
        "an endpoint kube-proxy removed: weight 0 within one reconcile period, deleted once IPVS counts no connection on it",
        weight0 && deleted,
        &format!("weight 0: {weight0}, deleted: {deleted}; {:?}", dests(&vip1)),
    );
    // A service added and one deleted in the migrated namespace.
    svcs.insert(SERVICES as usize, {
        let mut x = service(SERVICES);
        x.spec.endpoints.truncate(1);
        x
    });
    let removed = svcs.remove(19);
    sync(&s, &mut current, &svcs);
    let new_vip = format!("10.96.2.{}:80", SERVICES + 1);
    let old_vip = addr(&removed.spec.cluster_ip, 80);
    let member = format!("10.96.2.{},tcp:80", SERVICES + 1);
    let followed = wait_for(within + 3, || {
        let ipvs = sh("ipvsadm -Sn").1;
        ipvs.contains(&format!("-A -t {new_vip}"))
            && !ipvs.contains(&format!("-A -t {old_vip}"))
            && sh(&format!("ipset test IPVSMIG-ADMITTED {member}")).0 == 0
    });
    let (rc, out, via) = s.route("cli", &new_vip);
    s.check(
        "a service created in the migrated namespace is followed (probed, admitted, carried by IPVS); a deleted one is removed",
        followed && rc == 0 && via && out.starts_with("pod1"),
        &format!("followed {followed}; {rc} {out} via {via}\n{}", sh("ipvsadm -Sn").1),
    );
    // Admission hooks displaced and deleted.
    let first_nat = || sh("iptables-legacy -t nat -S PREROUTING | sed -n 2p").1;
    must(
        "iptables-legacy -t nat -I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    );
    let repaired = wait_for(within, || first_nat().contains("IPVSMIG"));
    must(
        "iptables-legacy -t nat -D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    );
    let ours = first_nat();
    must(&format!(
        "iptables-legacy -t nat -D {}",
        ours.trim().trim_start_matches("-A ")
    ));
    let restored = wait_for(within, || first_nat().contains("IPVSMIG"));
    s.check(
        "an admission hook pushed behind kube-proxy's jump, or deleted, is put back first within one reconcile period",
        repaired && restored,
        &format!("{repaired} {restored}: {}", sh("iptables-legacy -t nat -S PREROUTING").1),
    );

    // Back to where we started.
    let (rc, out) = s.migrate("rollback --all --drain 0s");
    svcs = (0..SERVICES).map(service).collect();
    svcs.push(svc(
        spec("other", "api", "", "10.96.3.1", 80, Protocol::Tcp),
        &[("pod1", POD1, 9000)],
    ));
    sync(&s, &mut current, &svcs);
    std::thread::sleep(Duration::from_millis(300));
    let now = node_state();
    std::fs::write(p("s0"), &s0).unwrap();
    std::fs::write(p("s1"), &now).unwrap();
    s.check(
        "rollback --all through the daemon leaves the node exactly as before (no leaked kernel objects)",
        rc == 0 && now == s0,
        &format!(
            "{out}\n{}",
            sh(&format!("diff {} {} | head -40", p("s0"), p("s1"))).1
        ),
    );

    // 6. SIGKILL at points all through a cutover and a rollback, then a restart.
    let _ = daemon.kill();
    let _ = daemon.wait();
    std::fs::write(
        p("serve.yaml"),
        format!(
            "listen: 127.0.0.1:9964\nnodeName: vm\ntokenFile: {}\nreconcilePeriod: 2s\nswitchTimeout: 6s\n\
             probeInterval: 1s\nverify: 1s\ndrain: 0s\nsoak: 1s\nnodeIPs: [192.168.0.2]\n",
            p("token")
        ),
    )
    .unwrap();
    daemon = start_daemon(&s);
    let (hits, bad) = kill_test(&mut s, &mut daemon, &start_daemon, &s0);
    println!(
        "# kill test: {} kills; the journal's last step at a kill: {}",
        hits.values().sum::<usize>(),
        hits.iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.check(
        "SIGKILL after the ops of a cutover and of a rollback of 20 service ports, then a restart: the state converges (unfinished wave rolled back, committed wave kept) and the kernel holds exactly what the journal owns, nothing leaked",
        bad.is_empty() && hits.len() >= 4,
        &bad.join("\n"),
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
    for c in &mut s.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if s.fail > 0 {
        println!(
            "# serve.log (tail):\n{}",
            sh(&format!("tail -40 {}", p("serve.log"))).1
        );
    }
    println!("vm-cutover (legacy): {} passed, {} failed", s.pass, s.fail);
    i32::from(s.fail > 0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("echo") => {
            echo(&args[2], &args[3..]);
            0
        }
        Some("load") => {
            let addrs: Vec<SocketAddr> = args[3..].iter().map(|a| a.parse().unwrap()).collect();
            load(Path::new(&args[2]), &addrs)
        }
        Some("get") => get_line(&args[2]),
        Some("setup") => setup_only(),
        _ => suite(),
    };
    std::process::exit(code);
}
