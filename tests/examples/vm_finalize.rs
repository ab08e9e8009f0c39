//! End-to-end kernel suite for `ipvs-migrate finalize`, run inside the VM test bed
//! (tests/vm/finalize-e2e.sh; one boot, both iptables backends). kube-proxy's iptables-mode
//! rules for a handful of service ports in two namespaces, pods in network namespaces, a
//! foreign virtual server (keepalived's would look so); `apply --no-watch` moves `shop`.
//! A stand-in answers kube-proxy's `/proxyMode` on 127.0.0.1:10249: with `iptables`, finalize
//! must refuse and change nothing. Then kube-proxy "restarts in IPVS mode": the stand-in loads
//! what IPVS-mode kube-proxy would program (the full plan's virtual servers not yet there,
//! kube-ipvs0 addresses, its KUBE- ipsets, its IPVS-mode chains and jumps — as kube-proxy's
//! restore rewrites the chains it shares with iptables mode and leaves the rest) and answers
//! `ipvs`. finalize must then leave exactly the IPVS-mode state — no iptables-mode leftovers
//! (the chain list is kube-proxy's iptables `CleanupLeftovers`, not our selector), nothing
//! named IPVSMIG, IPVS and kube-ipvs0 as the plan of the rules saved before — while a client
//! keeps connecting to the services without a single failure. On the legacy backend finalize
//! runs in the CLI; on nft the `serve` daemon runs from before the dry run (holding the
//! journal's lock, reconciling `shop` after the switch) and finalize is handed to it over its
//! socket (DESIGN.md "Who runs it"), with the same checks.
//!
//! Modes: `legacy` / `nft` (the suite), `serve`/`get` (vmkit), `loop SECS ADDR...` (connect
//! round-robin for SECS seconds; prints `ok N fail M` and the failures).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipvsmig_engine::inventory::{DumpInput, IpFamily, Protocol, SourceKind};
use ipvsmig_engine::plan::{IpvsPlan, PlanOptions, full};

#[path = "vmkit/mod.rs"]
mod vmkit;
use vmkit::*;

/// kube-proxy iptables mode's chains that its `CleanupLeftovers` deletes and IPVS mode never
/// writes (pkg/proxy/iptables/proxier.go; kube-proxy-facts.md §1.1, §2.5): none may survive.
fn leftover_decl(line: &str, table: &str) -> bool {
    let Some(name) = line.strip_prefix(':').and_then(|l| l.split(' ').next()) else {
        return false;
    };
    match table {
        "nat" => {
            [
                "KUBE-SVC-",
                "KUBE-SVL-",
                "KUBE-SEP-",
                "KUBE-EXT-",
                "KUBE-FW-",
                "KUBE-XLB-",
            ]
            .iter()
            .any(|p| name.starts_with(p))
                || name == "KUBE-NODEPORTS"
        }
        "filter" => ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"].contains(&name),
        _ => false,
    }
}

/// IPVS mode's own chains (pkg/proxy/ipvs/proxier.go `iptablesChains`, kube-proxy-facts.md
/// §2.5): their rules must be the same before and after finalize.
const IPVS_CHAINS: &[(&str, &str)] = &[
    ("nat", "KUBE-SERVICES"),
    ("nat", "KUBE-POSTROUTING"),
    ("nat", "KUBE-NODE-PORT"),
    ("nat", "KUBE-LOAD-BALANCER"),
    ("nat", "KUBE-MARK-MASQ"),
    ("filter", "KUBE-FORWARD"),
    ("filter", "KUBE-NODE-PORT"),
    ("filter", "KUBE-PROXY-FIREWALL"),
    ("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
    ("filter", "KUBE-IPVS-FILTER"),
    ("filter", "KUBE-IPVS-OUT-FILTER"),
];

fn save(fam: IpFamily, table: &str) -> String {
    let tool = match fam {
        IpFamily::IPv4 => "iptables",
        IpFamily::IPv6 => "ip6tables",
    };
    sh(&format!("{tool}-{}-save -t {table}", be())).1
}

/// The `-A CHAIN` lines of IPVS mode's chains, both families.
fn ipvs_chain_rules() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        for (table, chain) in IPVS_CHAINS {
            for l in save(fam, table).lines() {
                if l.starts_with(&format!("-A {chain} ")) {
                    out.insert(format!("{} {table} {l}", fam.as_str()));
                }
            }
        }
    }
    out
}

/// kube-proxy's own sets and members (`ipset save`, KUBE- only), sorted.
fn kube_sets() -> Vec<String> {
    let mut v: Vec<String> = sh("ipset save")
        .1
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|n| n.starts_with("KUBE-"))
        })
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Prints a command's output when `IPVSMIG_VM_SHOW` is set (to read what a passing check saw).
fn show(what: &str, out: &str) {
    if std::env::var_os("IPVSMIG_VM_SHOW").is_some() {
        println!("# --- {what}\n{out}");
    }
}

fn sorted_lines(s: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = s.lines().filter(|l| keep(l)).map(str::to_owned).collect();
    v.sort();
    v
}

/// The stand-in for kube-proxy's `/proxyMode` on 127.0.0.1:10249: answers the current mode.
fn proxy_mode_server(mode: Arc<Mutex<String>>) {
    let l = TcpListener::bind("127.0.0.1:10249").expect("bind 10249");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut req = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut req);
            let body = mode.lock().map(|m| m.clone()).unwrap_or_default();
            let _ = s.write_all(
                format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").as_bytes(),
            );
        }
    });
}

/// Connects round-robin to `addrs` for `secs` seconds (each with a 2 s timeout, 20 ms apart).
fn client_loop(secs: u64, addrs: &[String]) -> i32 {
    let start = Instant::now();
    let (mut ok, mut fail) = (0u32, Vec::new());
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let a: SocketAddr = addrs[i % addrs.len()].parse().unwrap();
        i += 1;
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut out = String::new();
                match s.read_to_string(&mut out) {
                    Ok(_) if !out.is_empty() => ok += 1,
                    r => fail.push(format!("{a}: read {r:?}")),
                }
            }
            Err(e) => fail.push(format!("{a}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ok {ok} fail {}", fail.len());
    for f in fail.iter().take(5) {
        println!("{f}");
    }
    0
}

/// What kube-proxy in IPVS mode programs, loaded the way it would: virtual servers not there
/// yet (it adopts existing ones), missing kube-ipvs0 addresses, its sets, its chains (the
/// restore declares them, so the chains it shares with iptables mode are rewritten) and its
/// jumps where missing, prepended (EnsureRule with Prepend).
fn load_ipvs_mode(plan: &IpvsPlan, ipvsadm: &str, dir: &std::path::Path) {
    let existing = sh("ipvsadm -Sn").1;
    let have: BTreeSet<&str> = existing.lines().filter(|l| l.starts_with("-A ")).collect();
    let mut skip = false;
    let mut input = String::new();
    for l in ipvsadm.lines() {
        if l.starts_with("-A ") {
            skip = have.contains(l);
        }
        if !skip {
            input.push_str(l);
            input.push('\n');
        }
    }
    std::fs::write(dir.join("standin.ipvsadm"), &input).unwrap();
    must(&format!(
        "ipvsadm -R < {}",
        dir.join("standin.ipvsadm").display()
    ));
    let _ = sh("ip link add kube-ipvs0 type dummy");
    for a in &plan.addresses {
        let plen = if a.is_ipv4() { 32 } else { 128 };
        let _ = sh(&format!("ip addr add {a}/{plen} dev kube-ipvs0"));
    }
    let mut sets = String::new();
    for (name, s) in &plan.ipsets {
        let fam = if name.starts_with("KUBE-6-") {
            "inet6"
        } else {
            "inet"
        };
        if s.set_type == "bitmap:port" {
            sets.push_str(&format!("create {name} bitmap:port range 0-65535\n"));
        } else {
            sets.push_str(&format!("create {name} {} family {fam}\n", s.set_type));
        }
        for m in &s.members {
            sets.push_str(&format!("add {name} {m}\n"));
        }
    }
    std::fs::write(dir.join("standin.ipset"), &sets).unwrap();
    must(&format!(
        "ipset restore -exist < {}",
        dir.join("standin.ipset").display()
    ));
    for fr in &plan.iptables {
        let tool = match fr.family {
            IpFamily::IPv4 => "iptables",
            IpFamily::IPv6 => "ip6tables",
        };
        let mut text = String::new();
        for table in ["nat", "filter"] {
            text.push_str(&format!("*{table}\n"));
            for c in fr.chains.iter().filter(|c| c.table == table) {
                text.push_str(&format!(":{} - [0:0]\n", c.name));
            }
            for c in fr.chains.iter().filter(|c| c.table == table) {
                for r in &c.rules {
                    text.push_str(&format!("-A {} {r}\n", c.name));
                }
            }
            text.push_str("COMMIT\n");
        }
        let f = dir.join(format!("standin.{}", fr.family.as_str()));
        std::fs::write(&f, &text).unwrap();
        must(&format!(
            "{tool}-{}-restore --noflush < {}",
            be(),
            f.display()
        ));
        for h in &fr.hooks {
            let b = be();
            must(&format!(
                "{tool}-{b} -t {t} -C {c} {r} 2>/dev/null || {tool}-{b} -t {t} -I {c} 1 {r}",
                t = h.table,
                c = h.chain,
                r = h.rule
            ));
        }
    }
}

/// The services whose ClusterIP did not answer from its own endpoints through IPVS (a new
/// IPVS connection entry for the client's port), from the `cli` pod.
fn not_through_ipvs(s: &Suite, tcp: &[&Svc]) -> Vec<String> {
    let mut bad = Vec::new();
    for x in tcp {
        let (rc, out, via) = s.route("cli", &addr(&x.spec.cluster_ip, x.spec.port));
        if rc != 0 || !x.answers.contains(&out) || !via {
            bad.push(format!("{}: {rc} {out:?} via IPVS {via}", x.spec.spn()));
        }
    }
    bad
}

#[allow(clippy::too_many_lines)]
fn suite() -> i32 {
    let (mut s, dir) = Suite::start("vm-finalize");
    let p = |n: &str| dir.join(n).display().to_string();
    s.standard_pods();
    for pod in ["pod1", "pod2"] {
        s.spawn(pod, &["serve", pod, "8080", "8081", "8082", "8084", "8090"]);
    }

    let mut v4: Vec<Svc> = shop_core();
    let (dns, lb, api) = shop_dns_lb_other();
    v4.extend([lb, dns, api]);
    let v6 = vec![svc(
        spec("shop", "web", "", "fd00:96::10", 80, Protocol::Tcp),
        &[("pod1", POD1_V6, 8082)],
    )];
    let (rules4, rules6) = load_kube_proxy_rules(&dir, &v4, &v6);
    must(FOREIGN_VS);
    std::fs::write(
        p("kube-proxy.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\nipvs:\n  excludeCIDRs: null\n  strictARP: false\n",
    )
    .unwrap();
    let nodeips = "--node-ip 192.168.0.2 --node-ip fd00:192:168::2";
    let common = format!("{nodeips} --iptables-backend {}", be());
    // The full IPVS-mode plan of the rules as saved now: what kube-proxy will program.
    let expected_ipvsadm = must(&format!(
        "{} plan -o ipvsadm --iptables-save {} --ip6tables-save {} {nodeips}",
        s.bin,
        p("rules4"),
        p("rules6")
    ));
    let dumps = vec![
        DumpInput {
            name: "rules4".into(),
            family: IpFamily::IPv4,
            source: SourceKind::File { path: p("rules4") },
            reader: rules4.as_bytes(),
        },
        DumpInput {
            name: "rules6".into(),
            family: IpFamily::IPv6,
            source: SourceKind::File { path: p("rules6") },
            reader: rules6.as_bytes(),
        },
    ];
    let inv = ipvsmig_engine::inventory::inventory(dumps).unwrap();
    let plan = full(
        &inv,
        &PlanOptions {
            scheduler: String::new(),
            node_ips: vec![
                "192.168.0.2".parse().unwrap(),
                "fd00:192:168::2".parse().unwrap(),
            ],
        },
    );

    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    s.check("apply --namespace shop --no-watch succeeds", rc == 0, &out);

    let mode = Arc::new(Mutex::new(String::from("iptables")));
    let (rc, out) = s.migrate(&format!(
        "finalize --kube-proxy-metrics http://127.0.0.1:10249 {common}"
    ));
    s.check(
        "no listener on kube-proxy's metrics port: finalize refuses (exit 1)",
        rc == 1 && out.contains("no answer"),
        &out,
    );
    proxy_mode_server(mode.clone());
    let before = node_state();
    let (rc, out) = s.migrate(&format!(
        "finalize --manifests {} --kube-proxy-config {} --node-name vm-node {common}",
        p("manifests"),
        p("kube-proxy.yaml")
    ));
    s.check(
        "kube-proxy answers `iptables`: finalize refuses (exit 1), says to label the node and apply the manifests",
        rc == 1 && out.contains("\"iptables\" mode") && out.contains("kubectl label node vm-node ipvs-migrate.io/kube-proxy-mode=ipvs"),
        &out,
    );
    let now = node_state();
    s.check(
        "…and nothing changed (iptables, ipsets, IPVS, links, addresses, sysctls)",
        now == before,
        &first_diff(&before, &now),
    );
    let cm = std::fs::read_to_string(dir.join("manifests/kube-proxy-ipvs-configmap.yaml"))
        .unwrap_or_default();
    let ds = std::fs::read_to_string(dir.join("manifests/kube-proxy-ipvs-daemonset.yaml"))
        .unwrap_or_default();
    let patch = std::fs::read_to_string(dir.join("manifests/kube-proxy-original-patch.yaml"))
        .unwrap_or_default();
    s.check(
        "the manifests: IPVS mode, the foreign virtual server excluded, a DaemonSet for labelled nodes, the original kept off them",
        cm.contains("mode: ipvs") && cm.contains("192.0.2.1/32") && !cm.contains("10.96.0.10")
            && ds.contains("ipvs-migrate.io/kube-proxy-mode: ipvs") && patch.contains("NotIn"),
        &format!("{cm}\n{ds}\n{patch}"),
    );

    // The same switch through the Kubernetes API (docs/finalize.md "--apply-switch"). No API
    // server runs in the VM: the dry run prints the requests without connecting; the real run
    // meets a loopback port nothing listens on and must stop before any request, naming it.
    // The guest has no system CA certificates and kube-client's TLS stack refuses to start
    // without any root (even for an http:// server), as in a pod the service account's ca.crt
    // supplies one: the kubeconfig carries a throw-away self-signed CA (its key was discarded;
    // nothing serves with it).
    let kubeconfig = p("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: none\n  cluster:\n    server: http://127.0.0.1:9\n    certificate-authority-data: {TEST_CA}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: none\n  context: {{cluster: none, user: u}}\ncurrent-context: none\n"),
    )
    .unwrap_or_default();
    let switch_args = format!(
        "--apply-switch --kubeconfig {kubeconfig} --kube-proxy-config {} --node-name vm-node --kube-api-timeout 3 {common}",
        p("kube-proxy.yaml")
    );
    let (rc, out) = s.migrate(&format!("finalize --dry-run -o json {switch_args}"));
    // stderr is merged in (warnings): the document is from the first `{` to the last `}`.
    let json_text = match (out.find('{'), out.rfind('}')) {
        (Some(a), Some(b)) if a < b => &out[a..=b],
        _ => "",
    };
    let doc: serde_json::Value = serde_json::from_str(json_text).unwrap_or_default();
    let requests: Vec<String> = doc["requests"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|q| format!("{} {} {}", q["verb"], q["resource"], q["patchType"]))
                .collect()
        })
        .unwrap_or_default();
    s.check(
        "finalize --apply-switch --dry-run lists the switch's five requests in order",
        rc == 0
            && doc["kind"] == "FinalizeSwitch"
            && requests
                == [
                    "\"get\" \"daemonsets.apps\" \"\"",
                    "\"patch\" \"configmaps\" \"apply\"",
                    "\"patch\" \"daemonsets.apps\" \"apply\"",
                    "\"patch\" \"daemonsets.apps\" \"strategic\"",
                    "\"patch\" \"nodes\" \"merge\"",
                ],
        &out,
    );
    let (rc, out) = s.migrate(&format!("finalize {switch_args}"));
    let now = node_state();
    s.check(
        "finalize --apply-switch with the API unreachable exits 69 naming the server, and the node is unchanged",
        rc == 69 && out.contains("127.0.0.1:9") && out.contains("done before it: nothing") && now == before,
        &format!("{out}\n{}", first_diff(&before, &now)),
    );

    // On nft the daemon runs from here on, holding the journal's lock: finalize is handed to
    // it. It reconciles every 2 s; once kube-proxy's /proxyMode leaves `iptables` it must stop
    // following kube-proxy's rules (IPVS mode's no longer describe the services, and following
    // them would delete the virtual servers kube-proxy adopted).
    let via_daemon = be() == "nft";
    let mut daemon = None;
    if via_daemon {
        let d = start_daemon(&s, &p("serve.yaml"), "2s", "6s", &p("serve.log"));
        s.check(
            "the daemon starts and listens on its socket",
            d.is_some(),
            &sh(&format!("tail -30 {}", p("serve.log"))).1,
        );
        daemon = d;
    }

    // kube-proxy restarts in IPVS mode on this node.
    // (Mode first, then rules: kube-proxy switches both at its restart; a pass in between
    // would see IPVS mode's rules under an `iptables` answer.)
    *mode.lock().unwrap() = "ipvs".into();
    load_ipvs_mode(&plan, &expected_ipvsadm, &dir);
    if via_daemon {
        // Three reconcile periods, and the switch's timeout: the paused daemon stops refreshing.
        std::thread::sleep(Duration::from_secs(8));
        let (_, ipvs) = sh("ipvsadm -Sn");
        s.check(
            "after kube-proxy's switch the daemon stops following its rules: the adopted virtual servers stay",
            expected_ipvsadm
                .lines()
                .filter(|l| l.starts_with('-'))
                .all(|l| ipvs.lines().any(|k| k == l)),
            &format!("{}\n{}", ipvs, sh(&format!("tail -20 {}", p("serve.log"))).1),
        );
    }
    let tcp = answering_tcp(&v4, &v6);
    let bad = not_through_ipvs(&s, &tcp);
    s.check(
        "with kube-proxy's IPVS-mode state loaded, every TCP VIP answers through IPVS",
        bad.is_empty(),
        &bad.join("\n"),
    );
    // With the daemon, finalize takes no input options: it plans from its configuration and
    // the rules kept before the switch.
    let common_real = if via_daemon {
        format!("--iptables-backend {}", be())
    } else {
        common.clone()
    };
    // Admission entries' remaining timeouts count down (the daemon gave them one): not a change.
    let standin = without_timeouts(&node_state());
    let ipvs_rules_before = ipvs_chain_rules();
    let sets_before = kube_sets();

    let (rc, out) = s.migrate(&format!("finalize --dry-run {common}"));
    show("finalize --dry-run", &out);
    let now = without_timeouts(&node_state());
    s.check(
        "finalize --dry-run lists our chains and sets, the hand-over and the leftovers, and changes nothing",
        rc == 0 && out.contains("IPVSMIG-ADMITTED") && out.contains("KUBE-SVC-") && out.contains("KUBE-EXTERNAL-SERVICES")
            && out.contains("hand over")
            && out.contains("(ipvs.excludeCIDRs): 192.0.2.1/32\n")
            && now == standin,
        &format!("{out}\n{}", first_diff(&standin, &now)),
    );

    // finalize while a client keeps connecting to shop's and other's services.
    let addrs = [
        "10.96.0.10:80",
        "10.96.0.12:80",
        "10.96.0.20:80",
        "192.168.0.2:30080",
        "[fd00:96::10]:80",
    ];
    let mut args = vec!["netns", "exec", "cli", s.me.as_str(), "loop", "8"];
    args.extend(addrs);
    let client = Command::new("ip")
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (rc, out) = s.migrate(&format!("finalize {common_real}"));
    show("finalize", &out);
    s.check(
        &format!(
            "kube-proxy answers `ipvs` and IPVS holds the plan: finalize succeeds{}",
            if via_daemon {
                ", run by the daemon"
            } else {
                ""
            }
        ),
        rc == 0
            && out.contains("Finalized")
            && out.contains("handing the request to the daemon") == via_daemon,
        &out,
    );
    let loop_out = String::from_utf8_lossy(&client.wait_with_output().unwrap().stdout).into_owned();
    show("client loop", &loop_out);
    show(
        "iptables-save after finalize",
        &sh(&format!("iptables-{}-save", be())).1,
    );
    let counts: Vec<u32> = loop_out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    s.check(
        "a client connecting throughout finalize never failed",
        counts.len() >= 2 && counts[0] > 20 && counts[1] == 0,
        &loop_out,
    );

    let mut left = Vec::new();
    let mut ours = Vec::new();
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        for table in ["nat", "filter", "mangle"] {
            let t = save(fam, table);
            left.extend(
                t.lines()
                    .filter(|l| leftover_decl(l, table))
                    .map(|l| format!("{} {table} {l}", fam.as_str())),
            );
            // iptables mode's jumps (kube-proxy-facts.md §1.1) that IPVS mode does not share.
            left.extend(
                t.lines()
                    .filter(|l| {
                        l.contains("\"kubernetes load balancer firewall\"")
                            || l.contains("\"kubernetes externally-visible service portals\"")
                            || l.contains("\"kubernetes health check service ports\"")
                    })
                    .map(|l| format!("{} {table} {l}", fam.as_str())),
            );
            ours.extend(
                t.lines()
                    .filter(|l| l.contains("IPVSMIG"))
                    .map(|l| format!("{} {table} {l}", fam.as_str())),
            );
        }
    }
    s.check(
        "no kube-proxy iptables-mode chain or jump is left",
        left.is_empty(),
        &left.join("\n"),
    );
    let (_, sets) = sh("ipset save");
    ours.extend(
        sets.lines()
            .filter(|l| l.contains("IPVSMIG"))
            .map(str::to_owned),
    );
    s.check(
        "nothing named IPVSMIG is left (rules, chains, sets)",
        ours.is_empty(),
        &ours.join("\n"),
    );
    let rules_after = ipvs_chain_rules();
    s.check(
        "kube-proxy's IPVS-mode chains and their rules are untouched",
        rules_after == ipvs_rules_before && !rules_after.is_empty(),
        &format!(
            "{:?}",
            rules_after
                .symmetric_difference(&ipvs_rules_before)
                .collect::<Vec<_>>()
        ),
    );
    s.check(
        "kube-proxy's ipsets are untouched",
        kube_sets() == sets_before && !sets_before.is_empty(),
        "",
    );
    let ipvs_now = sh("ipvsadm -Sn").1;
    let got = sorted_lines(&ipvs_now, |l| !l.contains("192.0.2.1:80"));
    let want = sorted_lines(&expected_ipvsadm, |l| l.starts_with('-'));
    s.check(
        "IPVS equals the full plan (the foreign virtual server aside)",
        got == want,
        &format!("got:\n{}\nwant:\n{}", got.join("\n"), want.join("\n")),
    );
    s.check(
        "the foreign virtual server is untouched",
        ipvs_now.contains("-a -t 192.0.2.1:80 -r 10.244.1.3:8091 -m -w 3"),
        &ipvs_now,
    );
    let addrs_now: BTreeSet<IpAddr> = sh("ip -o addr show dev kube-ipvs0")
        .1
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .collect();
    let addrs_want: BTreeSet<IpAddr> = plan.addresses.iter().copied().collect();
    s.check(
        "kube-ipvs0 holds exactly the plan's addresses",
        addrs_now == addrs_want,
        &format!("{addrs_now:?} vs {addrs_want:?}"),
    );
    let bad = not_through_ipvs(&s, &tcp);
    let (rc_empty, _) = s.get("cli", "10.96.0.11:80");
    s.check(
        "after finalize every TCP VIP answers from its endpoints through IPVS, the one without endpoints refuses",
        bad.is_empty() && rc_empty == 1,
        &bad.join("\n"),
    );
    let (_, st) = s.migrate("status");
    let (_, stj) = s.migrate("status -o json");
    s.check(
        "status says the node is finalized",
        st.contains("Finalized") && stj.contains("\"finalized\": true"),
        &format!("{st}\n{stj}"),
    );
    let apply = if via_daemon {
        format!("apply --namespace other {common_real}")
    } else {
        format!("apply --namespace other --no-watch {common}")
    };
    let (rc, out) = s.migrate(&apply);
    s.check(
        "apply on a finalized node is refused (exit 2)",
        rc == 2 && out.contains("finalized"),
        &out,
    );
    let (rc, out) = s.migrate(&format!("finalize {common_real}"));
    s.check(
        "finalize again: already finalized (exit 0), nothing to do",
        rc == 0 && out.contains("Finalized"),
        &out,
    );
    if let Some(mut d) = daemon {
        // Restarted with a short period: finalized, the daemon owns nothing, so its start and
        // the reconcile passes after it change nothing.
        let _ = d.kill();
        let _ = d.wait();
        let now = node_state();
        let d = start_daemon(&s, &p("serve2.yaml"), "2s", "6s", &p("serve2.log"));
        std::thread::sleep(Duration::from_secs(5));
        let later = node_state();
        s.check(
            "a daemon started on the finalized node reconciles nothing (the node unchanged 5 s later)",
            d.is_some() && later == now,
            &format!(
                "{}\n{}",
                first_diff(&now, &later),
                sh(&format!("tail -30 {}", p("serve2.log"))).1
            ),
        );
        if let Some(mut d) = d {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    s.finish("vm-finalize", "ipvsadm -C; ip link del kube-ipvs0")
}

/// `state` with the remaining time of ipset entries (`... timeout N`) cut off.
fn without_timeouts(state: &str) -> String {
    state
        .lines()
        .map(|l| l.split(" timeout ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `serve` on the nft backend with `config` (this suite's node IPs, the given reconcile period
/// and switch timeout), logging to `log`; `None` when its socket did not come up in 20 s.
fn start_daemon(
    s: &Suite,
    config: &str,
    period: &str,
    switch: &str,
    log: &str,
) -> Option<std::process::Child> {
    std::fs::write(
        config,
        format!(
            "listen: 127.0.0.1:9964\nnodeName: vm-node\nreconcilePeriod: {period}\nswitchTimeout: {switch}\n\
             nodeIPs: [192.168.0.2, \"fd00:192:168::2\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(&s.bin)
        .args(["serve", "--config", config, "--state-dir", &s.state])
        .args(["--iptables-backend", "nft", "-v"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("serve");
    let sock = std::path::Path::new(&s.state).join("agent.sock");
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    if up {
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = helper_mode(&args).unwrap_or_else(|| match args.get(1).map(String::as_str) {
        Some("loop") => client_loop(args[2].parse().unwrap(), &args[3..]),
        _ => suite(),
    });
    std::process::exit(code);
}
