//! hand_over on the recording fakes: the order of steps in the journal, exactly our objects and
//! kube-proxy's iptables-mode leftovers removed, nothing of IPVS mode's touched, the journal
//! ending with nothing owned and `finalized`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvsmig_engine::inventory::{IpFamily, Protocol};
use ipvsmig_engine::plan::diff::{Owner, VsState};

use super::*;
use crate::ipset::RecordingIpsets;
use crate::restore::RecordingIptables;

/// nat of a hybrid node after IPVS-mode kube-proxy started: our hook first, IPVS mode's
/// KUBE-SERVICES, iptables mode's orphaned service chains (kube-proxy-facts.md §1.1, §2.5).
const NAT: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IPVSMIG-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SEP-AAAA - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-BBBB - [0:0]\n-A PREROUTING -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-SERVICES\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A IPVSMIG-SERVICES -m set --match-set IPVSMIG-ADMITTED dst,dst -j ACCEPT\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-SEP-AAAA -p tcp -j DNAT --to-destination 10.244.1.2:8080\n-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n-A KUBE-SVC-BBBB -j KUBE-SEP-AAAA\nCOMMIT\n";
const FILTER: &str = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:IPVSMIG-FILTER - [0:0]\n:KUBE-IPVS-FILTER - [0:0]\n:KUBE-SERVICES - [0:0]\n-A INPUT -m comment --comment \"ipvs-migrate hybrid data plane\" -j IPVSMIG-FILTER\n-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER\n-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A IPVSMIG-FILTER -j RETURN\n-A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n";

fn fakes() -> (RecordingIptables, RecordingIpsets, Owned) {
    let mut ipt = RecordingIptables::default();
    ipt.tables
        .insert((IpFamily::IPv4, "nat".into()), NAT.into());
    ipt.tables
        .insert((IpFamily::IPv4, "filter".into()), FILTER.into());
    let mut sets = RecordingIpsets::new();
    sets.restore(
        "create IPVSMIG-ADMITTED hash:ip,port family inet hashsize 1024 maxelem 65536\ncreate KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n",
    )
    .unwrap();
    let key = (Protocol::Tcp, "10.96.0.10".parse::<IpAddr>().unwrap(), 80);
    let owned = Owned {
        namespaces: vec!["shop".into()],
        services: vec![(
            key,
            VsState {
                scheduler: "rr".into(),
                flags: 0,
                timeout: 0,
                netmask: 0xffff_ffff,
                dests: BTreeMap::new(),
                owner: Owner::Us,
            },
        )],
        addresses: vec![key.1],
        created_link: true,
        rules: vec![IpFamily::IPv4],
        sysctl_prior: vec![("net.ipv4.vs.conntrack".into(), Some("0".into()))],
        rollbacks: vec![crate::apply::RollbackEntry {
            at: 1,
            namespaces: vec!["other".into()],
            reason: "requested with `ipvs-migrate rollback`".into(),
            source: "operator".into(),
        }],
        ..Owned::default()
    };
    (ipt, sets, owned)
}

fn steps(log: &[Record]) -> Vec<String> {
    log.iter()
        .map(|r| match r {
            Record::Intent { step, .. } => format!("intent {step}"),
            Record::State { step, .. } => format!("state {step}"),
            Record::Failed { step, .. } => format!("failed {step}"),
        })
        .collect()
}

#[test]
fn ours_go_first_then_the_journal_hands_over_then_the_leftovers_go() {
    let (mut ipt, mut sets, mut owned) = fakes();
    let mut log: Vec<Record> = Vec::new();
    let done = hand_over(&mut ipt, &mut sets, &mut owned, &mut log).unwrap();
    assert_eq!(
        steps(&log),
        [
            "intent finalize-admission",
            "state finalize-admission",
            "intent finalize-sets",
            "state finalize-sets",
            "intent finalize-handover",
            "state finalize-handover",
            "intent finalize-leftovers",
            "intent finalize-leftovers",
            "state finalize-leftovers",
            "state finalized",
        ]
    );
    // Restores: our nat and filter removals, then the leftovers of nat and filter.
    let texts: Vec<&str> = ipt.restores.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 4);
    assert!(texts[0].contains("-X IPVSMIG-") && texts[1].contains("-X IPVSMIG-"));
    assert!(!texts[0].contains("KUBE-") || !texts[0].contains("-X KUBE-"));
    assert!(texts[2].contains("-X KUBE-SVC-BBBB") && texts[2].contains("-X KUBE-SEP-AAAA"));
    assert!(texts[3].contains("-D OUTPUT") && texts[3].contains("-X KUBE-SERVICES"));
    for kept in ["KUBE-MARK-MASQ", "KUBE-IPVS-FILTER"] {
        assert!(
            !texts.iter().any(|t| t.contains(&format!("-X {kept}"))),
            "{kept}"
        );
    }
    // Only our set is destroyed; kube-proxy's stays.
    assert_eq!(done.sets, ["IPVSMIG-ADMITTED"]);
    assert!(
        sets.sets.contains_key("KUBE-CLUSTER-IP") && !sets.sets.contains_key("IPVSMIG-ADMITTED")
    );
    assert_eq!(done.handed_over, (1, 1));
    // Nothing owned, finalized; the last record says so.
    assert!(owned.is_empty() && owned.namespaces.is_empty() && owned.finalized);
    // The rollback history is not ownership: status keeps showing it.
    assert_eq!(owned.rollbacks.len(), 1);
    match log.last() {
        Some(Record::State { owned: o, .. }) => assert!(o.finalized && o.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restore_rejected_because_kube_proxy_rewrote_a_chain_is_retried_on_a_fresh_save() {
    let (mut ipt, mut sets, mut owned) = fakes();
    owned.rules.clear();
    ipt.tables
        .insert((IpFamily::IPv4, "filter".into()), String::new());
    ipt.tables.insert(
        (IpFamily::IPv4, "nat".into()),
        NAT.lines()
            .filter(|l| !l.contains("IPVSMIG"))
            .map(|l| format!("{l}\n"))
            .collect(),
    );
    ipt.fail.push_back(RestoreError::Rejected {
        tool: "iptables-restore".into(),
        line: Some(2),
        text: None,
        message: "Bad rule (does a matching rule exist in that chain?)".into(),
    });
    let mut log: Vec<Record> = Vec::new();
    let done = hand_over(&mut ipt, &mut sets, &mut owned, &mut log).unwrap();
    assert_eq!(ipt.restores.len(), 2, "{:?}", ipt.restores);
    assert_eq!(done.leftovers.len(), 1);
}

#[test]
fn a_failing_step_is_journaled_and_stops_before_the_hand_over() {
    let (mut ipt, mut sets, mut owned) = fakes();
    ipt.fail.push_back(RestoreError::Failed {
        tool: "iptables-restore".into(),
        message: "exit 4".into(),
    });
    let mut log: Vec<Record> = Vec::new();
    let err = hand_over(&mut ipt, &mut sets, &mut owned, &mut log).unwrap_err();
    assert!(matches!(err, FinalizeError::Step { ref step, .. } if step == "finalize-admission"));
    assert!(matches!(log.last(), Some(Record::Failed { .. })));
    // Still ours: a later finalize (or rollback) finds them in the journal.
    assert_eq!(owned.services.len(), 1);
    assert!(!owned.finalized);
}

#[test]
fn the_survey_reads_and_changes_nothing() {
    let (mut ipt, mut sets, _) = fakes();
    let s = survey(&mut ipt, &mut sets);
    assert!(ipt.restores.is_empty());
    assert_eq!(s.ours.len(), 2);
    assert_eq!(s.sets, ["IPVSMIG-ADMITTED"]);
    let chains: Vec<&str> = s
        .leftovers
        .iter()
        .flat_map(|(_, c)| c.chains.iter().map(String::as_str))
        .collect();
    assert_eq!(
        chains,
        [
            "KUBE-NODEPORTS",
            "KUBE-SEP-AAAA",
            "KUBE-SVC-BBBB",
            "KUBE-SERVICES"
        ]
    );
}

#[test]
fn a_finalize_that_failed_after_the_hand_over_is_finished_by_running_it_again() {
    let (mut ipt, mut sets, mut owned) = fakes();
    // Our two tables go through; the first leftover table's restore fails.
    let mut log: Vec<Record> = Vec::new();
    let mut failing = FailNth {
        inner: &mut ipt,
        n: 3,
    };
    let err = hand_over(&mut failing, &mut sets, &mut owned, &mut log).unwrap_err();
    assert!(matches!(err, FinalizeError::Step { ref step, .. } if step == "finalize-leftovers"));
    // Handed over already: the journal owns nothing, says finalized, and the run failed.
    let r = crate::apply::replay(log.clone());
    assert!(r.owned.finalized && r.owned.is_empty());
    assert!(r.last_failure.is_some());
    // Run again from what the journal says: the leftovers go, the run ends "finalized".
    let mut owned = r.owned;
    let done = hand_over(&mut ipt, &mut sets, &mut owned, &mut log).unwrap();
    assert_eq!(done.leftovers.len(), 2);
    assert_eq!(done.handed_over, (0, 0));
    let r = crate::apply::replay(log);
    assert!(r.owned.finalized && r.last_failure.is_none() && !r.interrupted);
}

/// Fails the `n`th restore (1-based) as the tool would, passing the rest to `inner`.
struct FailNth<'a> {
    inner: &'a mut RecordingIptables,
    n: usize,
}

impl IptablesRestore for FailNth<'_> {
    fn restore_noflush(&mut self, family: IpFamily, text: &str) -> Result<(), RestoreError> {
        self.n -= 1;
        if self.n == 0 {
            return Err(RestoreError::Failed {
                tool: "iptables-restore".into(),
                message: "exit status 4".into(),
            });
        }
        self.inner.restore_noflush(family, text)
    }
    fn save_table(&mut self, family: IpFamily, table: &str) -> Result<String, RestoreError> {
        self.inner.save_table(family, table)
    }
}
