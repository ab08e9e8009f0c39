//! The host crate's kernel layer (agent/host: ipset.rs, restore.rs, link.rs) against the real
//! ipset, iptables-restore (legacy and nft) and rtnetlink. Each test runs in a network
//! namespace of its own: the test binary runs that one test again under `unshare -n`, so the
//! code under test spawns its tools and opens its sockets exactly as on a node, in a namespace
//! nobody else uses. Nothing here touches the machine's own network namespace. The fakes are
//! checked against the same kernel answers where they model them.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::{Backend, IpFamily};
use ipvsmig_host::ipset::{
    IpsetCli, IpsetError, Ipsets, RecordingIpsets, SavedSet, SetFamily, SetSpec, add_line,
    parse_save,
};
use ipvsmig_host::link::{LinkError, Links, RtnlLinks};
use ipvsmig_host::restore::{IptablesCli, IptablesRestore, RestoreError, RestoreTools};
use ipvsmig_tests::{netns_available, tool_available};

const CHILD: &str = "IPVSMIG_HOST_KERNEL_NETNS";
const SCRIPT: &str = include_str!("../../agent/host/tests/data/ipset-restore.txt");
const CAPTURED: &str = include_str!("../../agent/host/tests/data/ipset-save.txt");

fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Runs `body` in a new network namespace: in the parent, re-runs this test under
/// `unshare -n` and checks that it ran and passed; in that child, runs `body`. The child is
/// told the parent's namespace and refuses to run in it.
fn in_netns(test: &str, tools: &[&str], body: impl FnOnce()) {
    in_namespaces(test, &["-n"], tools, body);
}

/// [`in_netns`] with more `unshare` options (e.g. a private mount namespace too).
fn in_namespaces(test: &str, unshare: &[&str], tools: &[&str], body: impl FnOnce()) {
    if let Ok(parent) = std::env::var(CHILD) {
        let own = netns_id();
        assert!(
            !own.is_empty() && own != parent,
            "{test}: refusing to change the parent's network namespace ({parent})"
        );
        body();
        return;
    }
    if !netns_available(test) || !tools.iter().all(|t| tool_available(test, t)) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(unshare)
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, netns_id())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in a new network namespace ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ipset() -> IpsetCli {
    IpsetCli::discover().unwrap()
}

fn timeouts(set: &SavedSet) -> BTreeMap<&str, Option<u32>> {
    set.members
        .iter()
        .map(|(k, m)| (k.as_str(), m.timeout))
        .collect()
}

/// Timeouts equal, or the later read at most `slack` seconds lower.
fn close(a: Option<u32>, b: Option<u32>, slack: u32) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) <= slack,
        (a, b) => a == b,
    }
}

#[test]
fn ipset_restore_then_save_gives_back_members_and_their_timeouts() {
    in_netns(
        "ipset_restore_then_save_gives_back_members_and_their_timeouts",
        &["ipset"],
        || {
            let mut cli = ipset();
            cli.restore(SCRIPT).unwrap();
            let got = parse_save(&cli.save(None).unwrap()).unwrap();
            // The checked-in capture (the unit tests' input) is what this ipset prints today.
            let want = parse_save(CAPTURED).unwrap();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (name, w) in &want {
                let g = &got[name];
                assert_eq!(g.set_type, w.set_type, "{name}");
                let no_initval = |s: &SavedSet| {
                    let mut o = s.options.clone();
                    if let Some(i) = o.iter().position(|t| t == "initval") {
                        o.drain(i..(i + 2).min(o.len()));
                    }
                    o
                };
                assert_eq!(no_initval(g), no_initval(w), "{name}");
                let (gt, wt) = (timeouts(g), timeouts(w));
                assert_eq!(gt.keys().collect::<Vec<_>>(), wt.keys().collect::<Vec<_>>());
                for (m, t) in &wt {
                    assert!(close(gt[m], *t, 2), "{name} {m}: {:?} vs {t:?}", gt[m]);
                }
            }

            // The renderers' lines: a bypass set whose members expire.
            let spec = SetSpec {
                name: "IPVSMIG-BYPASS".into(),
                set_type: "hash:ip,port".into(),
                family: Some(SetFamily::Inet6),
                timeout: Some(600),
                ..SetSpec::default()
            };
            let script = [
                spec.create_line().unwrap(),
                add_line(&spec.name, "fd00::10,tcp:443", Some(45)).unwrap(),
                add_line(&spec.name, "fd00::10,udp:53", None).unwrap(),
            ]
            .join("\n");
            cli.restore(&script).unwrap();
            let one = parse_save(&cli.save(Some("IPVSMIG-BYPASS")).unwrap()).unwrap();
            assert_eq!(one.len(), 1, "save of one set");
            let b = &one["IPVSMIG-BYPASS"];
            assert_eq!(
                (b.family(), b.timeout()),
                (Some(SetFamily::Inet6), Some(600))
            );
            let t = timeouts(b);
            assert!(close(t["fd00::10,tcp:443"], Some(45), 2), "{t:?}");
            assert!(close(t["fd00::10,udp:53"], Some(600), 2), "{t:?}");
        },
    );
}

#[test]
fn a_rejected_ipset_line_is_named_and_the_lines_before_it_stay() {
    in_netns(
        "a_rejected_ipset_line_is_named_and_the_lines_before_it_stay",
        &["ipset"],
        || {
            let script =
                "create E hash:ip family inet\nadd E 10.0.0.1\nadd E bogus\nadd E 10.0.0.2\n";
            let mut cli = ipset();
            let e = cli.restore(script).unwrap_err();
            match &e {
                IpsetError::Rejected {
                    line: Some(3),
                    text: Some(t),
                    message,
                } => {
                    assert_eq!(t, "add E bogus");
                    assert!(message.starts_with("Syntax error"), "{message}");
                }
                e => panic!("{e:?}"),
            }
            assert!(e.to_string().contains("line 3 (`add E bogus`)"), "{e}");
            let sets = parse_save(&cli.save(None).unwrap()).unwrap();
            assert!(sets.contains_key("E"), "ipset restore is not a transaction");

            // Rejected by the kernel (not by ipset's parser): the earlier lines stay, in the
            // kernel and in the fake alike, and both give the same message.
            let script = "create F hash:ip family inet\nadd F 10.0.0.1\nadd F 10.0.0.3\nadd F 10.0.0.2 timeout 5\n";
            let mut fake = RecordingIpsets::new();
            let (ke, fe) = (
                cli.restore(script).unwrap_err(),
                fake.restore(script).unwrap_err(),
            );
            assert_eq!(ke, fe);
            assert!(
                matches!(ke, IpsetError::Rejected { line: Some(4), .. }),
                "{ke:?}"
            );
            let k = parse_save(&cli.save(Some("F")).unwrap()).unwrap();
            let f = parse_save(&fake.save(Some("F")).unwrap()).unwrap();
            assert_eq!(
                k["F"].members.keys().collect::<Vec<_>>(),
                f["F"].members.keys().collect::<Vec<_>>()
            );
            assert_eq!(k["F"].members.len(), 2);
            assert_eq!(
                cli.save(Some("NOPE")),
                Err(IpsetError::NoSuchSet { set: "NOPE".into() })
            );
        },
    );
}

#[test]
fn exist_makes_re_adding_harmless_and_refreshes_the_member_timeout() {
    in_netns(
        "exist_makes_re_adding_harmless_and_refreshes_the_member_timeout",
        &["ipset"],
        || {
            let mut cli = ipset();
            let mut fake = RecordingIpsets::new();
            let steps = [
                "create B hash:ip,port family inet timeout 600\nadd B 10.96.0.10,tcp:53 timeout 30\n",
                // the same again: identical create, existing member
                "create B hash:ip,port family inet timeout 600\nadd B 10.96.0.10,tcp:53 timeout 30\n",
                // refresh (the dead man's switch): the timeout is set anew
                "add B 10.96.0.10,tcp:53 timeout 900\ndel B 10.1.1.1,tcp:1\ndestroy NOPE\n",
            ];
            for s in steps {
                cli.restore(s).unwrap();
                fake.restore(s).unwrap();
            }
            let k = parse_save(&cli.save(Some("B")).unwrap()).unwrap();
            let f = parse_save(&fake.save(Some("B")).unwrap()).unwrap();
            let (kt, ft) = (timeouts(&k["B"]), timeouts(&f["B"]));
            assert_eq!(kt.keys().collect::<Vec<_>>(), ft.keys().collect::<Vec<_>>());
            assert!(close(kt["10.96.0.10,tcp:53"], Some(900), 2), "{kt:?}");
            assert_eq!(ft["10.96.0.10,tcp:53"], Some(900));
            // Re-creating with another timeout is refused by both.
            let other = "create B hash:ip,port family inet timeout 60\n";
            assert!(matches!(
                cli.restore(other),
                Err(IpsetError::Rejected { line: Some(1), .. })
            ));
            assert!(fake.restore(other).is_err());
        },
    );
}

/// Loads kube-proxy's rules (with kubelet's hint chain) into `backend`, both families.
fn kube_proxy_rules(backend: Backend) -> IptablesCli {
    let mut cli = IptablesCli {
        v4: Some(RestoreTools::find(IpFamily::IPv4, backend).unwrap()),
        v6: Some(RestoreTools::find(IpFamily::IPv6, backend).unwrap()),
    };
    for (fam, seed) in [(IpFamily::IPv4, 1), (IpFamily::IPv6, 2)] {
        let rules = render(&generate(fam, Shape::ClusterIp, 5, 2, seed));
        cli.restore_noflush(fam, &rules).unwrap();
    }
    cli
}

/// A dump without its `#` comment lines (they carry the time).
fn body(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| !l.starts_with('#')).collect()
}

const OURS: &str = "*nat
:IPVSMIG-TEST - [0:0]
-I PREROUTING 1 -j IPVSMIG-TEST
-A IPVSMIG-TEST -m comment --comment \"ipvs-migrate test\" -j RETURN
COMMIT
";

fn noflush_keeps_kube_proxy_rules(backend: Backend) {
    kube_proxy_rules(backend);
    // Detection picks the backend that holds kubelet's hint, as the inventory does.
    let mut cli = IptablesCli::detect(None).unwrap();
    for fam in [IpFamily::IPv4, IpFamily::IPv6] {
        let tools = match fam {
            IpFamily::IPv4 => cli.v4.clone(),
            IpFamily::IPv6 => cli.v6.clone(),
        };
        assert_eq!(tools.map(|t| t.backend), Some(backend), "{fam:?}");
        let nat_before = cli.save_table(fam, "nat").unwrap();
        let filter_before = cli.save_table(fam, "filter").unwrap();
        assert!(nat_before.contains("-A KUBE-SERVICES "), "{nat_before}");
        cli.restore_noflush(fam, OURS).unwrap();
        let nat_after = cli.save_table(fam, "nat").unwrap();
        let prerouting: Vec<&str> = body(&nat_after)
            .into_iter()
            .filter(|l| l.starts_with("-A PREROUTING "))
            .collect();
        assert_eq!(prerouting[0], "-A PREROUTING -j IPVSMIG-TEST", "{fam:?}");
        assert!(prerouting.iter().any(|l| l.contains("-j KUBE-SERVICES")));
        let without_ours: Vec<&str> = body(&nat_after)
            .into_iter()
            .filter(|l| !l.contains("IPVSMIG-TEST"))
            .collect();
        assert_eq!(
            without_ours,
            body(&nat_before),
            "{fam:?}: kube-proxy's nat rules"
        );
        assert_eq!(
            body(&cli.save_table(fam, "filter").unwrap()),
            body(&filter_before),
            "{fam:?}: filter"
        );

        // A rejected input names its line and changes nothing.
        let bad =
            "*nat\n:IPVSMIG-X - [0:0]\n-A IPVSMIG-X -j RETURN\n-A IPVSMIG-X --bogus\nCOMMIT\n";
        match cli.restore_noflush(fam, bad) {
            Err(RestoreError::Rejected {
                line: Some(4),
                text: Some(t),
                ..
            }) => assert_eq!(t, "-A IPVSMIG-X --bogus"),
            r => panic!("{fam:?}: {r:?}"),
        }
        let missing_commit = "*nat\n-A IPVSMIG-TEST -j RETURN\n";
        assert!(matches!(
            cli.restore_noflush(fam, missing_commit),
            Err(RestoreError::Rejected { line: Some(3), .. })
        ));
        assert_eq!(
            body(&cli.save_table(fam, "nat").unwrap()),
            body(&nat_after),
            "{fam:?}: a rejected input left nat as it was"
        );
    }
}

#[test]
fn noflush_restore_on_legacy_leaves_kube_proxy_rules_untouched() {
    in_netns(
        "noflush_restore_on_legacy_leaves_kube_proxy_rules_untouched",
        &["iptables-legacy-restore", "ip6tables-legacy-restore"],
        || noflush_keeps_kube_proxy_rules(Backend::Legacy),
    );
}

#[test]
fn noflush_restore_on_nft_leaves_kube_proxy_rules_untouched() {
    in_netns(
        "noflush_restore_on_nft_leaves_kube_proxy_rules_untouched",
        &["iptables-nft-restore", "ip6tables-nft-restore"],
        || noflush_keeps_kube_proxy_rules(Backend::Nft),
    );
}

#[test]
fn a_held_xtables_lock_is_a_failure_not_a_rejected_input() {
    // A private /run (own mount namespace) gives this test its own xtables lock to hold.
    in_namespaces(
        "a_held_xtables_lock_is_a_failure_not_a_rejected_input",
        &["-n", "-m", "--propagation", "private"],
        &["iptables-legacy-restore", "mount"],
        || {
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "ipvsmig-run", "/run"])
                .status()
                .unwrap();
            assert!(st.success());
            // flock(2) on the lock file, as iptables-legacy takes it (File::lock is flock).
            let lock = std::fs::File::create("/run/xtables.lock").unwrap();
            lock.lock().unwrap();
            let mut cli = IptablesCli {
                v4: Some(RestoreTools::find(IpFamily::IPv4, Backend::Legacy).unwrap()),
                v6: None,
            };
            let started = std::time::Instant::now();
            let r = cli.restore_noflush(IpFamily::IPv4, "*filter\nCOMMIT\n");
            let waited = started.elapsed();
            lock.unlock().unwrap();
            match r {
                Err(RestoreError::Failed { message, .. }) => {
                    assert!(message.contains("xtables lock"), "{message}");
                }
                r => panic!("{r:?}"),
            }
            assert!(waited.as_secs_f64() >= 4.5, "waited {waited:?} (-w 5)");
            cli.restore_noflush(IpFamily::IPv4, "*filter\nCOMMIT\n")
                .unwrap();
        },
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn addresses_come_and_go_over_rtnetlink_on_a_veth() {
    // This kernel has no dummy driver (the VM suite tests/vm/host-kernel.sh covers
    // kube-ipvs0 itself); a veth takes addresses the same way.
    in_netns(
        "addresses_come_and_go_over_rtnetlink_on_a_veth",
        &["ip"],
        || {
            let st = Command::new("ip")
                .args([
                    "link",
                    "add",
                    "ipvsmig-a",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "ipvsmig-b",
                ])
                .status()
                .unwrap();
            assert!(st.success());
            let mut l = RtnlLinks::open().unwrap();
            let veth = l.link("ipvsmig-a").unwrap().unwrap();
            assert_eq!((veth.up, veth.kind.as_deref()), (false, Some("veth")));
            let lo = l.link("lo").unwrap().unwrap();
            assert_eq!((lo.index, lo.kind), (1, None));
            assert_eq!(l.link("ipvsmig-zz").unwrap(), None);

            let (v4, v6) = (ip("10.96.0.10"), ip("fd00::10"));
            l.add_address("ipvsmig-a", v4).unwrap();
            l.add_address("ipvsmig-a", v6).unwrap();
            for a in [v4, v6] {
                assert_eq!(
                    l.add_address("ipvsmig-a", a),
                    Err(LinkError::AddressExists {
                        link: "ipvsmig-a".into(),
                        address: a
                    })
                );
            }
            let listed: Vec<String> = l
                .addresses("ipvsmig-a")
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(listed, ["10.96.0.10/32", "fd00::10/128"]);
            let shown = Command::new("ip")
                .args(["-o", "address", "show", "dev", "ipvsmig-a"])
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(
                shown.contains("inet 10.96.0.10/32") && shown.contains("inet6 fd00::10/128"),
                "{shown}"
            );
            assert!(l.addresses("ipvsmig-b").unwrap().is_empty());

            l.del_address("ipvsmig-a", v4).unwrap();
            assert_eq!(
                l.del_address("ipvsmig-a", v4),
                Err(LinkError::AddressNotFound {
                    link: "ipvsmig-a".into(),
                    address: v4
                })
            );
            assert_eq!(l.addresses("ipvsmig-a").unwrap().len(), 1);
            assert_eq!(
                l.addresses("ipvsmig-zz"),
                Err(LinkError::LinkNotFound {
                    link: "ipvsmig-zz".into()
                })
            );
            assert!(matches!(
                l.add_address("ipvsmig-zz", v4),
                Err(LinkError::LinkNotFound { .. })
            ));

            l.delete_link("ipvsmig-a").unwrap();
            assert_eq!(l.link("ipvsmig-a").unwrap(), None);
            assert_eq!(
                l.link("ipvsmig-b").unwrap(),
                None,
                "a veth goes with its peer"
            );
            assert_eq!(
                l.delete_link("ipvsmig-a"),
                Err(LinkError::LinkNotFound {
                    link: "ipvsmig-a".into()
                })
            );

            // No dummy driver here: a typed refusal naming the link and the kernel's reason.
            match l.create_dummy("kube-ipvs0") {
                Err(e @ LinkError::Unsupported { .. }) => {
                    let s = e.to_string();
                    assert!(
                        s.contains("kube-ipvs0") && s.contains("Unknown device type"),
                        "{s}"
                    );
                }
                Ok(()) => {
                    let k = l.link("kube-ipvs0").unwrap().unwrap();
                    assert_eq!((k.up, k.kind.as_deref()), (false, Some("dummy")));
                    l.delete_link("kube-ipvs0").unwrap();
                }
                Err(e) => panic!("{e:?}"),
            }
        },
    );
}
