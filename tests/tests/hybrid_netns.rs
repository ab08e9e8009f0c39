//! The hybrid plan's ipsets and admission rules load into the real ipset and iptables (legacy
//! and nft, IPv4 and IPv6) of a network namespace this test creates, on top of kube-proxy's
//! iptables-mode rules: `ipset restore` and `iptables-restore --noflush` accept them, every
//! planned member is in the kernel (admission members with their timeouts), our jumps come
//! first in the built-in chains, kube-proxy's chains are byte-for-byte unchanged, and loading
//! the chains again changes nothing.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::IpFamily;
use ipvsmig_tests::{ipvs_migrate_bin, netns_available, tool_available};

fn sh(script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "netns script failed ({}): {}\n{script}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(ipvs_migrate_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipvs-migrate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Rules per chain of one table section of a save, in order, counters stripped.
fn chains(save: &str, table: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cur = String::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            cur = t.to_owned();
        } else if cur == table {
            if let Some(c) = line.strip_prefix(':') {
                out.entry(c.split(' ').next().unwrap().to_owned())
                    .or_default();
            } else if let Some(r) = line.strip_prefix("-A ") {
                let (c, rest) = r.split_once(' ').unwrap_or((r, ""));
                out.entry(c.to_owned()).or_default().push(rest.to_owned());
            }
        }
    }
    out
}

fn members(save: &str) -> BTreeMap<String, (String, BTreeSet<String>, usize)> {
    // name -> (create line, members, members with a timeout)
    let mut out: BTreeMap<String, (String, BTreeSet<String>, usize)> = BTreeMap::new();
    for line in save.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["create", name, ..] => {
                out.entry((*name).to_owned()).or_default().0 = line.to_owned();
            }
            ["add", name, member, rest @ ..] => {
                let e = out.entry((*name).to_owned()).or_default();
                e.1.insert((*member).to_owned());
                if rest.first() == Some(&"timeout") {
                    e.2 += 1;
                }
            }
            _ => {}
        }
    }
    out
}

fn run(test: &str, backend: &str) {
    if !netns_available(test)
        || !tool_available(test, &format!("iptables-{backend}-restore"))
        || !tool_available(test, "ipset")
        || !tool_available(test, "nfacct")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let c4 = generate(IpFamily::IPv4, Shape::Mix, 300, 3, 7);
    let c6 = generate(IpFamily::IPv6, Shape::Mix, 120, 2, 8);
    std::fs::write(p("kube4"), render(&c4)).unwrap();
    std::fs::write(p("kube6"), render(&c6)).unwrap();
    let inv: serde_json::Value = serde_json::from_str(&cli(&[
        "inventory",
        "--iptables-save",
        &p("kube4"),
        "--ip6tables-save",
        &p("kube6"),
        "-o",
        "json",
    ]))
    .unwrap();
    let mut nss: Vec<String> = inv["servicePorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"]["namespace"].as_str().unwrap().to_owned())
        .collect();
    nss.sort();
    nss.dedup();
    assert!(nss.len() >= 4, "{nss:?}");
    // Half the namespaces move, one service of them stays.
    let moving: Vec<String> = nss.iter().step_by(2).cloned().collect();
    let ns_arg = moving.join(",");
    let common = [
        "plan",
        "--iptables-save",
        &p("kube4"),
        "--ip6tables-save",
        &p("kube6"),
        "--namespace",
        &ns_arg,
        "--node-ip",
        "192.168.0.2",
        "--node-ip",
        "fd00::2",
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = common.to_vec();
        v.extend_from_slice(extra);
        cli(&v)
    };
    let plan: serde_json::Value = serde_json::from_str(&with(&["-o", "json"])).unwrap();
    let plan = &plan["plan"];
    assert!(
        plan["virtualServers"].as_array().unwrap().len() > 20,
        "too small a plan to mean anything"
    );
    for (fam, tool, v) in [("ipv4", "iptables", "4"), ("ipv6", "ip6tables", "6")] {
        std::fs::write(
            p(&format!("sets{v}")),
            with(&["-o", "ipset", "--family", fam]),
        )
        .unwrap();
        std::fs::write(
            p(&format!("ours{v}")),
            with(&["-o", "iptables", "--family", fam]),
        )
        .unwrap();
        // The same chains without the -I hook lines: what a re-assert loads.
        let again: String = with(&["-o", "iptables", "--family", fam])
            .lines()
            .filter(|l| !l.starts_with("-I "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(p(&format!("again{v}")), again).unwrap();
        let _ = tool;
    }
    let script = format!(
        "set -e; nfacct add localhost_nps_accepted_pkts >/dev/null
         iptables-{b}-restore < {k4}; ip6tables-{b}-restore < {k6}
         ipset restore -exist < {s4}; ipset restore -exist < {s6}
         iptables-{b}-save > {b4}; ip6tables-{b}-save > {b6}
         iptables-{b}-restore --noflush < {o4}; ip6tables-{b}-restore --noflush < {o6}
         iptables-{b}-save > {a4}; ip6tables-{b}-save > {a6}
         iptables-{b}-restore --noflush < {g4}; ip6tables-{b}-restore --noflush < {g6}
         iptables-{b}-save > {r4}; ip6tables-{b}-save > {r6}
         ipset save",
        b = backend,
        k4 = p("kube4"),
        k6 = p("kube6"),
        s4 = p("sets4"),
        s6 = p("sets6"),
        b4 = p("before4"),
        b6 = p("before6"),
        o4 = p("ours4"),
        o6 = p("ours6"),
        a4 = p("after4"),
        a6 = p("after6"),
        g4 = p("again4"),
        g6 = p("again6"),
        r4 = p("re4"),
        r6 = p("re6"),
    );
    let sets = members(&sh(&script));

    // Every planned member is in the kernel; admission members carry timeouts.
    let planned = plan["ipsets"].as_object().unwrap();
    assert_eq!(planned.len(), 22, "11 sets per family");
    for (name, s) in planned {
        let (create, got, timed) = sets
            .get(name)
            .unwrap_or_else(|| panic!("set {name} missing from the kernel"));
        let want: BTreeSet<String> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, &want, "members of {name}");
        if s["timeout"].as_bool().unwrap() {
            assert!(create.contains("timeout"), "{create}");
            assert_eq!(*timed, want.len(), "every {name} member has a timeout");
        } else {
            assert_eq!(*timed, 0, "{name} members are permanent");
        }
    }
    assert!(
        !planned["IPVSMIG-ADMITTED"]["members"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    for v in ["4", "6"] {
        let before = std::fs::read_to_string(p(&format!("before{v}"))).unwrap();
        let after = std::fs::read_to_string(p(&format!("after{v}"))).unwrap();
        let re = std::fs::read_to_string(p(&format!("re{v}"))).unwrap();
        for table in ["mangle", "nat", "filter"] {
            let b = chains(&before, table);
            let a = chains(&after, table);
            let r = chains(&re, table);
            assert_eq!(
                a, r,
                "IPv{v} {table}: loading the chains again changed something"
            );
            for (name, rules) in &b {
                let mut got = a.get(name).cloned().unwrap_or_default();
                let builtin = name.chars().all(|c| c.is_ascii_uppercase());
                if builtin {
                    let ours: Vec<usize> = got
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.contains("-j IPVSMIG-"))
                        .map(|(i, _)| i)
                        .collect();
                    let expect_hook = matches!(
                        (table, name.as_str()),
                        ("nat", "PREROUTING" | "OUTPUT" | "POSTROUTING")
                            | ("filter", "INPUT")
                            | ("mangle", "OUTPUT")
                    );
                    if expect_hook {
                        assert_eq!(ours, vec![0], "IPv{v} {table} {name}: our jump first, once");
                        got.remove(0);
                    } else {
                        assert!(ours.is_empty(), "IPv{v} {table} {name}: no jump of ours");
                    }
                }
                assert_eq!(&got, rules, "IPv{v} {table} {name} changed");
            }
            let new: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
            assert!(
                new.iter().all(|k| k.starts_with("IPVSMIG-")),
                "IPv{v} {table}: only IPVSMIG- chains are new: {new:?}"
            );
            let planned_rules: usize = plan["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["family"] == format!("IPv{v}"))
                .flat_map(|f| f["chains"].as_array().unwrap())
                .filter(|c| c["table"] == table)
                .map(|c| c["rules"].as_array().unwrap().len())
                .sum();
            let loaded: usize = a
                .iter()
                .filter(|(k, _)| k.starts_with("IPVSMIG-"))
                .map(|(_, r)| r.len())
                .sum();
            assert_eq!(
                loaded, planned_rules,
                "IPv{v} {table}: every planned rule loaded"
            );
        }
    }
}

#[test]
fn hybrid_rules_and_sets_load_beside_kube_proxy_legacy() {
    run("hybrid_netns legacy", "legacy");
}

#[test]
fn hybrid_rules_and_sets_load_beside_kube_proxy_nft() {
    run("hybrid_netns nft", "nft");
}
