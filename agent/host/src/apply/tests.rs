//! The interpreter on recording fakes: apply, re-apply, endpoint change, rollback to nothing,
//! conflicts, a failure in the middle, a failed probe. Expectations come from DESIGN.md's
//! ownership and ordering rules, not from the code's output.

use std::collections::BTreeSet;

use ipvsmig_engine::inventory::inventory_from_str;
use ipvsmig_engine::plan::hybrid::{HybridOptions, HybridPlan, hybrid};
use ipvsmig_engine::plan::{PlanOptions, full};
use ipvsmig_ipvs::IpvsError;

use super::ipvs::{RecordingIpvs, dest, service};
use super::*;
use crate::ipset::RecordingIpsets;
use crate::link::RecordingLinks;
use crate::restore::RecordingIptables;
use crate::sysctl::RecordingSysctls;

const OVERALL: &str = include_str!("../../../engine/tests/golden/overall/restore.txt");

fn plan_for(ns: &[&str], text: &str) -> HybridPlan {
    let inv = inventory_from_str("overall", text).unwrap();
    let opts = PlanOptions {
        scheduler: String::new(),
        node_ips: vec!["192.168.0.2".parse().unwrap()],
    };
    let f = full(&inv, &opts);
    hybrid(
        &inv,
        &f,
        &opts,
        &HybridOptions {
            namespaces: ns.iter().map(|s| (*s).to_owned()).collect(),
            kernel: Some((6, 1)),
            ..Default::default()
        },
    )
}

fn plan(ns: &[&str]) -> HybridPlan {
    plan_for(ns, OVERALL)
}

/// (protocol, address, port, destinations)
type VsRow = (u16, IpAddr, u16, Vec<(IpAddr, u16)>);

#[derive(Default)]
struct TestEnv {
    drained: usize,
    probed: Vec<VsKey>,
    fail_probe: bool,
    udp: Vec<(IpAddr, u16)>,
}

impl Env for TestEnv {
    fn drain(&mut self) {
        self.drained += 1;
    }
    fn probe(&mut self, keys: &[(VsKey, Expect)]) -> Vec<(VsKey, String)> {
        self.probed.extend(keys.iter().map(|(k, _)| *k));
        if self.fail_probe {
            keys.iter()
                .take(1)
                .map(|(k, _)| (*k, "refused".into()))
                .collect()
        } else {
            Vec::new()
        }
    }
    fn flush_udp(&mut self, vips: &[(IpAddr, u16)]) -> Result<(), String> {
        self.udp.extend_from_slice(vips);
        Ok(())
    }
    fn progress(&mut self, _: &str, _: usize, _: usize) {}
}

struct Node {
    ipvs: RecordingIpvs,
    links: RecordingLinks,
    ipsets: RecordingIpsets,
    iptables: RecordingIptables,
    sysctls: RecordingSysctls,
}

impl Node {
    fn new() -> Node {
        Node {
            ipvs: RecordingIpvs::default(),
            links: RecordingLinks::new(),
            ipsets: RecordingIpsets::new(),
            iptables: RecordingIptables::default(),
            sysctls: RecordingSysctls::with(&[
                ("net.ipv4.vs.conntrack", "0"),
                ("net.ipv4.vs.expire_nodest_conn", "0"),
                ("net.ipv4.vs.expire_quiescent_template", "0"),
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.arp_ignore", "0"),
                ("net.ipv4.conf.all.arp_announce", "0"),
            ]),
        }
    }
    fn run(
        &mut self,
        owned: &mut Owned,
        p: Option<&HybridPlan>,
        env: &mut TestEnv,
        log: &mut Vec<Record>,
    ) -> Result<Report, ApplyError> {
        self.run_with(owned, p, env, log, Options::default())
    }
    fn run_with(
        &mut self,
        owned: &mut Owned,
        p: Option<&HybridPlan>,
        env: &mut TestEnv,
        log: &mut Vec<Record>,
        opts: Options,
    ) -> Result<Report, ApplyError> {
        let mut k = Kernel {
            ipvs: &mut self.ipvs,
            links: &mut self.links,
            ipsets: &mut self.ipsets,
            iptables: &mut self.iptables,
            sysctls: &mut self.sysctls,
        };
        converge(&mut k, owned, p, env, log, opts)
    }
    fn set_members(&self, name: &str) -> BTreeSet<String> {
        self.ipsets
            .sets
            .get(name)
            .map(|s| s.members.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[test]
fn apply_programs_the_plan_probes_then_admits_and_rollback_removes_exactly_that() {
    let p = plan(&["ns2", "ns5"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    let r = node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();

    // Every planned virtual server with its real servers, nothing else.
    let want: BTreeSet<VsRow> = p
        .virtual_servers
        .iter()
        .map(|v| {
            (
                ipvs::proto_number(v.protocol),
                v.address,
                v.port,
                v.real_servers.iter().map(|r| (r.address, r.port)).collect(),
            )
        })
        .collect();
    let got: BTreeSet<VsRow> = node
        .ipvs
        .table
        .iter()
        .map(|((pr, a, po), (_, ds))| (*pr, *a, *po, ds.keys().copied().collect()))
        .collect();
    assert_eq!(got, want);
    // Services are added before their destinations.
    let first_dest = node
        .ipvs
        .requests
        .iter()
        .position(|r| matches!(r, Request::AddDest(..)));
    let last_svc = node
        .ipvs
        .requests
        .iter()
        .rposition(|r| matches!(r, Request::AddService(..)));
    assert!(
        first_dest.is_none() || last_svc < first_dest || {
            // per service: each AddDest comes after its own AddService
            node.ipvs.requests.iter().enumerate().all(|(i, r)| match r {
                Request::AddDest(s, _) => node.ipvs.requests[..i]
                    .iter()
                    .any(|q| matches!(q, Request::AddService(t) if t == s)),
                _ => true,
            })
        }
    );
    // kube-ipvs0 created down with exactly the plan's addresses.
    let link = &node.links.links[KUBE_IPVS0];
    assert!(!link.info.up);
    let addrs: BTreeSet<IpAddr> = link.addresses.iter().map(|n| n.addr()).collect();
    assert_eq!(addrs, p.addresses.iter().copied().collect());
    // Every new key was probed before admission; admitted now, probing empty.
    assert_eq!(env.probed.len(), p.virtual_servers.len());
    let adm = node.set_members("IPVSMIG-ADMITTED");
    assert_eq!(adm.len(), p.virtual_servers.len());
    assert!(node.set_members("IPVSMIG-PROBING").is_empty());
    assert_eq!(r.admitted, p.virtual_servers.len());
    // ARP sysctls set (LB IPs are bound) and their prior values journaled.
    assert_eq!(node.sysctls.values["net.ipv4.conf.all.arp_ignore"], "1");
    assert!(
        owned
            .sysctl_prior
            .iter()
            .any(|(k, v)| k == "net.ipv4.conf.all.arp_ignore" && v.as_deref() == Some("0"))
    );
    // Every step has an intent before its state.
    for (i, rec) in log.iter().enumerate() {
        // "converged" and "reconciled" record what is, not a kernel change.
        if let Record::State { step, .. } = rec
            && step != "converged"
            && step != "reconciled"
        {
            assert!(
                log[..i]
                    .iter()
                    .any(|r| matches!(r, Record::Intent { step: s, .. } if s == step)),
                "state of {step} without an intent"
            );
        }
    }
    // The probe step's intent comes before the admit step's.
    let pos = |s: &str| {
        log.iter()
            .position(|r| matches!(r, Record::Intent { step, .. } if step == s))
    };
    assert!(pos("probe") < pos("admit"));
    assert!(
        pos("ipvs") < pos("addresses"),
        "virtual servers before addresses"
    );
    assert!(
        pos("ipsets") < pos("rules") && pos("rules") < pos("addresses"),
        "VIPs are bound only once the access filter and bound-VIP rules exist"
    );
    assert!(pos("addresses") < pos("probe"));

    // Re-apply: nothing to do in IPVS; the admission timeouts are refreshed.
    let before = node.ipvs.requests.len();
    let r2 = node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    assert_eq!(node.ipvs.requests.len(), before, "idempotent");
    assert_eq!(r2.admitted, 0);
    assert!(
        node.ipsets
            .scripts
            .last()
            .unwrap()
            .contains("add IPVSMIG-ADMITTED")
    );

    // Full rollback: admission off first, drain, then virtual servers, addresses, sets,
    // rules, link, sysctls. The fake records restores without applying them: give its saves
    // what the kernel would now hold (our chain and hook beside kube-proxy's).
    node.iptables.tables.insert(
        (IpFamily::IPv4, "nat".into()),
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:IPVSMIG-SERVICES - [0:0]\n-A PREROUTING {}\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n",
            p.rules[0].hooks.iter().find(|h| h.chain == "PREROUTING").unwrap().rule
        ),
    );
    let restores_before = node.iptables.restores.len();
    let r3 = node.run(&mut owned, None, &mut env, &mut log).unwrap();
    let teardown: Vec<&String> = node.iptables.restores[restores_before..]
        .iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        teardown.len(),
        1,
        "only the table holding ours: {teardown:?}"
    );
    assert!(
        teardown[0].contains("-D PREROUTING -m comment")
            && teardown[0].contains("-X IPVSMIG-SERVICES"),
        "{}",
        teardown[0]
    );
    assert_eq!(r3.withdrawn, p.virtual_servers.len());
    assert_eq!(env.drained, 1);
    assert!(node.ipvs.table.is_empty());
    assert!(
        !node.links.links.contains_key(KUBE_IPVS0),
        "we created it, it is empty: gone"
    );
    assert!(node.ipsets.sets.is_empty());
    assert_eq!(node.sysctls.values["net.ipv4.conf.all.arp_ignore"], "0");
    assert!(owned.is_empty(), "{owned:?}");
    let steps = r3.steps;
    let at = |s: &str| steps.iter().position(|x| x == s).unwrap();
    assert!(at("admission-off") < at("ipvs"));
    assert!(at("ipvs") < at("addresses"));
    assert!(
        at("teardown-rules") < at("teardown-sets"),
        "sets only after the rules using them"
    );
}

#[test]
fn a_foreign_virtual_server_on_a_planned_key_is_a_conflict_and_nothing_changes() {
    let p = plan(&["ns1"]);
    let vs = &p.virtual_servers[0];
    let mut node = Node::new();
    node.ipvs = RecordingIpvs::default().with_service(
        service(&vs.key(), "wrr", 0, 0, 0xffff_ffff),
        &[dest("10.9.9.9".parse().unwrap(), 80, 1)],
    );
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    let e = node
        .run(&mut owned, Some(&p), &mut env, &mut log)
        .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict { count: 1, .. }), "{e}");
    assert!(node.ipvs.requests.is_empty());
    assert!(node.ipsets.scripts.is_empty());
    assert!(node.sysctls.sets.is_empty());
    assert!(log.is_empty());
    // A rollback never touches it either.
    node.run(&mut owned, None, &mut env, &mut log).unwrap();
    assert_eq!(node.ipvs.table.len(), 1, "the foreign service stays");
}

#[test]
fn a_failure_in_the_middle_stops_and_the_journal_owns_exactly_what_the_kernel_holds() {
    let p = plan(&["ns1", "ns2", "ns3", "ns4", "ns5", "ns6"]);
    let mut node = Node::new();
    node.ipvs.fail_at = Some(5);
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    let e = node
        .run(&mut owned, Some(&p), &mut env, &mut log)
        .unwrap_err();
    assert!(
        matches!(&e, ApplyError::Step { step, .. } if step == "ipvs"),
        "{e}"
    );
    assert!(matches!(log.last(), Some(Record::Failed { step, .. }) if step == "ipvs"));
    // Every service in the kernel is owned, with the same destinations; nothing admitted.
    let owned_keys: BTreeMap<VsKey, BTreeSet<(IpAddr, u16)>> = owned
        .services
        .iter()
        .map(|(k, v)| (*k, v.dests.keys().copied().collect()))
        .collect();
    let kernel: BTreeMap<VsKey, BTreeSet<(IpAddr, u16)>> = node
        .ipvs
        .table
        .values()
        .map(|(s, ds)| (ipvs::key_of(s).unwrap(), ds.keys().copied().collect()))
        .collect();
    assert_eq!(owned_keys, kernel);
    assert!(node.set_members("IPVSMIG-ADMITTED").is_empty());
    assert!(
        owned.addresses.is_empty(),
        "addresses come after the services"
    );
    // Running again completes from there.
    node.ipvs.fail_at = None;
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    assert_eq!(node.ipvs.table.len(), p.virtual_servers.len());
}

#[test]
fn a_failed_probe_admits_nothing() {
    let p = plan(&["ns1"]);
    let mut node = Node::new();
    let (mut owned, mut log) = (Owned::default(), Vec::new());
    let mut env = TestEnv {
        fail_probe: true,
        ..TestEnv::default()
    };
    let e = node
        .run(&mut owned, Some(&p), &mut env, &mut log)
        .unwrap_err();
    assert!(matches!(e, ApplyError::Probe { count: 1, .. }), "{e}");
    assert!(node.set_members("IPVSMIG-ADMITTED").is_empty());
    assert_eq!(
        node.set_members("IPVSMIG-PROBING").len(),
        p.virtual_servers.len()
    );
}

#[test]
fn an_endpoint_change_is_two_requests_and_a_removed_udp_service_flushes_conntrack() {
    let p = plan(&["ns1", "ns4"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    let before = node.ipvs.requests.len();
    // ns4/svc4's second endpoint moves from 10.180.0.5 to 10.180.0.9.
    let text = OVERALL.replace("10.180.0.5", "10.180.0.9");
    assert_ne!(text, OVERALL);
    let p2 = plan_for(&["ns1", "ns4"], &text);
    node.run(&mut owned, Some(&p2), &mut env, &mut log).unwrap();
    let new: Vec<&Request> = node.ipvs.requests[before..].iter().collect();
    let adds = new
        .iter()
        .filter(|r| matches!(r, Request::AddDest(..)))
        .count();
    let dels = new
        .iter()
        .filter(|r| matches!(r, Request::DelDest(..)))
        .count();
    // ns4 has a ClusterIP and an external IP virtual server: one out and one in for each.
    assert_eq!((adds, dels, new.len()), (2, 2, 4), "{new:?}");
    assert!(env.udp.is_empty());
    let r = node.run(&mut owned, None, &mut env, &mut log).unwrap();
    assert!(r.withdrawn > 0);
    assert!(node.ipvs.table.is_empty());
    let _ = IpvsError::NotFound;
}

#[test]
fn every_record_survives_json_and_a_run_cut_short_is_replayed_with_its_claims() {
    let p = plan(&["ns2", "ns5"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    // What the journal writes must read back identically.
    let back: Vec<Record> = log
        .iter()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect();
    assert_eq!(back, log);
    assert_eq!(replay(back).owned, owned);

    // Cut the log right after the ipvs step's intent: the kernel may hold its services, so
    // the replay owns the claimed keys and asks for a re-read.
    let cut = log
        .iter()
        .position(|r| matches!(r, Record::Intent { step, .. } if step == "ipvs"))
        .unwrap();
    let r = replay(log[..=cut].iter().cloned());
    assert!(r.interrupted);
    let claimed: BTreeSet<VsKey> = r.owned.services.iter().map(|(k, _)| *k).collect();
    let planned: BTreeSet<VsKey> = p.virtual_servers.iter().map(|v| v.key()).collect();
    assert_eq!(claimed, planned);
    // From that replay a rollback on the real (fully applied) node removes everything ours.
    let mut owned2 = r.owned;
    owned2.sets = owned.sets.clone();
    owned2.rules = owned.rules.clone();
    owned2.addresses = owned.addresses.clone();
    owned2.created_link = owned.created_link;
    let mut k = Kernel {
        ipvs: &mut node.ipvs,
        links: &mut node.links,
        ipsets: &mut node.ipsets,
        iptables: &mut node.iptables,
        sysctls: &mut node.sysctls,
    };
    converge(
        &mut k,
        &mut owned2,
        None,
        &mut env,
        &mut log,
        Options {
            reread: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(node.ipvs.table.is_empty());
}

#[test]
fn our_hooks_are_put_back_first_when_kube_proxy_got_ahead_of_them() {
    let p = plan(&["ns1"]);
    let mut node = Node::new();
    // kube-proxy re-inserted its jump at position 1 after ours.
    node.iptables.tables.insert(
        (IpFamily::IPv4, "nat".into()),
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A PREROUTING -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\n-A OUTPUT -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\nCOMMIT\n".into(),
    );
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    let nat: Vec<&String> = node
        .iptables
        .restores
        .iter()
        .filter(|(f, t)| *f == IpFamily::IPv4 && t.starts_with("*nat\n-"))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(nat.len(), 1, "{nat:?}");
    let t = nat[0];
    assert!(
        t.contains("-D PREROUTING -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\n-I PREROUTING 1 "),
        "moved to the front: {t}"
    );
    assert!(!t.contains("OUTPUT"), "OUTPUT's jump is already first: {t}");
    assert!(
        t.contains("-I POSTROUTING 1 "),
        "a missing hook is inserted: {t}"
    );
}

#[test]
fn a_full_rollback_removes_every_ipvsmig_chain_and_set_even_ones_the_journal_missed() {
    let mut node = Node::new();
    // A crash right after the rules step wrote them: the journal does not know them.
    node.iptables.tables.insert(
        (IpFamily::IPv4, "nat".into()),
        "*nat\n:PREROUTING ACCEPT [0:0]\n:IPVSMIG-SERVICES - [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n".into(),
    );
    node.ipsets
        .restore("create IPVSMIG-VS hash:ip,port family inet\ncreate KUBE-CLUSTER-IP hash:ip,port family inet\n")
        .unwrap();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, None, &mut env, &mut log).unwrap();
    let nat: Vec<&String> = node.iptables.restores.iter().map(|(_, t)| t).collect();
    assert_eq!(
        nat.len(),
        1,
        "only the table holding ours is touched: {nat:?}"
    );
    let t = nat[0];
    assert!(t.contains("-D PREROUTING -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\n"), "{t}");
    assert!(
        t.contains("-X IPVSMIG-SERVICES\n") && !t.contains("KUBE-SERVICES\n-X"),
        "{t}"
    );
    assert!(
        !t.contains("-D PREROUTING -j KUBE-SERVICES"),
        "kube-proxy's jump stays: {t}"
    );
    let names: Vec<&String> = node.ipsets.sets.keys().collect();
    assert_eq!(
        names,
        ["KUBE-CLUSTER-IP"],
        "ours destroyed, kube-proxy's kept"
    );
}

#[test]
fn a_crash_after_creating_kube_ipvs0_leaves_it_owned() {
    let p = plan(&["ns1"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    let cut = log
        .iter()
        .position(|r| matches!(r, Record::Intent { step, .. } if step == "link"))
        .unwrap();
    let r = replay(log[..=cut].iter().cloned());
    assert!(r.interrupted && r.owned.created_link);
}

#[test]
fn withdrawal_deletes_from_both_admission_sets_whatever_the_journal_says() {
    let p = plan(&["ns1"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    // An admit step cut short: the kernel holds the key in ADMITTED, the journal in PROBING.
    for (name, s) in owned.sets.iter_mut() {
        if name == "IPVSMIG-ADMITTED" {
            s.members.clear();
        }
    }
    for (name, s) in owned.sets.iter_mut() {
        if name == "IPVSMIG-PROBING" {
            s.members = p.ipsets["IPVSMIG-ADMITTED"].members.clone();
        }
    }
    node.run(&mut owned, None, &mut env, &mut log).unwrap();
    assert!(node.ipsets.sets.is_empty(), "{:?}", node.ipsets.sets.keys());
    let first = node
        .ipsets
        .scripts
        .iter()
        .rev()
        .find(|s| s.starts_with("del "))
        .unwrap();
    assert!(
        first.contains("del IPVSMIG-ADMITTED ") && first.contains("del IPVSMIG-PROBING "),
        "{first}"
    );
}

#[test]
fn objects_the_kernel_lost_are_forgotten_and_a_later_foreign_one_is_not_adopted() {
    let p = plan(&["ns1"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    let key = p.virtual_servers[0].key();
    // Someone flushed IPVS, then another program created the same key.
    node.ipvs.table.clear();
    node.ipvs =
        std::mem::take(&mut node.ipvs).with_service(service(&key, "wrr", 0, 0, 0xffff_ffff), &[]);
    let e = node
        .run(&mut owned, Some(&p), &mut env, &mut log)
        .unwrap_err();
    assert!(matches!(e, ApplyError::Conflict { .. }), "{e}");
    node.run(&mut owned, None, &mut env, &mut log).unwrap();
    assert_eq!(
        node.ipvs.table.len(),
        1,
        "the other program's virtual server survives rollback"
    );
}

#[test]
fn destinations_never_go_into_a_service_whose_add_failed() {
    let p = plan(&["ns4"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    // The first AddService fails (as if another program took the key after observe).
    node.ipvs.fail_at = Some(0);
    let _ = node
        .run(&mut owned, Some(&p), &mut env, &mut log)
        .unwrap_err();
    let failed = match &node.ipvs.requests[0] {
        Request::AddService(s) => s.clone(),
        r => panic!("{r:?}"),
    };
    assert!(
        !node
            .ipvs
            .requests
            .iter()
            .any(|r| matches!(r, Request::AddDest(s, _) if *s == failed)),
        "no AddDest for the failed service"
    );
}

#[test]
fn held_admission_leaves_new_keys_to_the_probes_until_a_full_run_probes_and_admits_them() {
    let p = plan(&["ns2"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    let hold = Options {
        hold_admission: true,
        ..Options::default()
    };
    let r = node
        .run_with(&mut owned, Some(&p), &mut env, &mut log, hold)
        .unwrap();
    let (admitted, probing) = owned.admission();
    assert!(admitted.is_empty(), "nothing admitted for all traffic yet");
    assert!(!probing.is_empty());
    assert_eq!(r.probing, probing.len());
    assert!(env.probed.is_empty(), "held: not probed either");
    assert!(node.set_members("IPVSMIG-ADMITTED").is_empty());
    // Every virtual server is programmed already: the probes can go through IPVS.
    assert_eq!(node.ipvs.table.len(), p.virtual_servers.len());
    // The cutover's admit step: probes first, then the same keys move to admitted.
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    let (admitted2, probing2) = owned.admission();
    assert_eq!(admitted2, probing);
    assert!(probing2.is_empty());
    assert!(!env.probed.is_empty());
}

#[test]
fn a_graceful_pass_keeps_a_leaving_tcp_endpoint_at_weight_zero_until_its_connections_end() {
    let p = plan(&["ns4"]);
    let mut node = Node::new();
    let (mut owned, mut env, mut log) = (Owned::default(), TestEnv::default(), Vec::new());
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    // kube-proxy removed one endpoint of a TCP virtual server with two or more.
    let mut p2 = p.clone();
    let vs = p2
        .virtual_servers
        .iter_mut()
        .find(|v| v.protocol == Protocol::Tcp && v.real_servers.len() >= 2)
        .expect("the golden cluster has a TCP service with two endpoints");
    let gone = vs.real_servers.pop().unwrap();
    let key = (ipvs::proto_number(vs.protocol), vs.address, vs.port);
    let kernel_dest = |node: &Node| {
        node.ipvs
            .table
            .get(&key)
            .and_then(|(_, ds)| ds.get(&(gone.address, gone.port)))
            .map(|d| d.weight)
    };
    node.ipvs
        .connections
        .insert((key, (gone.address, gone.port)), 2);
    let graceful = Options {
        graceful: true,
        ..Options::default()
    };
    let r = node
        .run_with(&mut owned, Some(&p2), &mut env, &mut log, graceful)
        .unwrap();
    assert_eq!(kernel_dest(&node), Some(0), "weight 0, still there");
    assert_eq!(r.terminating, 1);
    // Connections remain: still there on the next pass.
    node.run_with(&mut owned, Some(&p2), &mut env, &mut log, graceful)
        .unwrap();
    assert_eq!(kernel_dest(&node), Some(0));
    // They ended: deleted.
    node.ipvs.connections.clear();
    let r = node
        .run_with(&mut owned, Some(&p2), &mut env, &mut log, graceful)
        .unwrap();
    assert_eq!(kernel_dest(&node), None);
    assert_eq!(r.terminating, 0);
    // The endpoint came back meanwhile in another run: weight 1 again, never deleted.
    node.run(&mut owned, Some(&p), &mut env, &mut log).unwrap();
    assert_eq!(kernel_dest(&node), Some(gone.weight));
}
