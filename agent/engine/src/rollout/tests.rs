#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const T0: u64 = 1_795_572_000; // 2026-11-25T02:00:00Z

fn plan(spec: Value) -> Plan {
    serde_json::from_value::<Spec>(spec)
        .unwrap()
        .validate()
        .unwrap()
}

/// Two waves, canaries labelled `canary=yes`, `max` slots, halt at `halt`.
fn two_waves(max: u32, halt: u32, state: &str) -> Plan {
    plan(json!({
        "waves": [{"namespaces": ["shop"]}, {"namespaces": ["auth", "cart"], "exclude": ["cart/udp"]}],
        "nodeSelector": {"matchLabels": {"role": "worker"}},
        "canaryNodeSelector": {"matchLabels": {"canary": "yes"}},
        "maxNodesInParallel": max, "haltAfterRollbacks": halt, "state": state, "slotTimeout": "10m"
    }))
}

fn fleet(nodes: &[(&str, bool)]) -> BTreeMap<String, Labels> {
    nodes
        .iter()
        .map(|(n, canary)| {
            let mut l = Labels::new();
            l.insert("role".into(), "worker".into());
            if *canary {
                l.insert("canary".into(), "yes".into());
            }
            ((*n).to_owned(), l)
        })
        .collect()
}

/// A status from `"node=Phase/wave ..."` (every entry written at `T0`) and a rollback count.
fn with(entries: &str, rollbacks: u32) -> Status {
    let entry = |e: &str| {
        let (node, rest) = e.split_once('=').unwrap();
        let (phase, wave) = rest.split_once('/').unwrap();
        let e = NodeEntry {
            phase: serde_json::from_value(json!(phase)).unwrap(),
            wave: wave.parse().unwrap(),
            since: time::format_time(T0),
            heartbeat: time::format_time(T0),
            message: None,
        };
        (node.to_owned(), e)
    };
    Status {
        rollbacks,
        nodes: entries.split_whitespace().map(entry).collect(),
        ..Status::default()
    }
}

/// This node's state: migrated namespaces (comma-separated) and the last cutover,
/// `"NAMESPACES PHASE"` or `""`.
fn local(migrated: &str, cutover: &str) -> Local {
    let set = |s: &str| {
        s.split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let cutover = cutover.split_once(' ').map(|(ns, p)| {
        let phase = match p {
            "InFlight" => LocalPhase::InFlight,
            "Committed" => LocalPhase::Committed,
            "RolledBack" => LocalPhase::RolledBack,
            "Aborted" => LocalPhase::Aborted,
            _ => LocalPhase::Failed,
        };
        (set(ns), phase)
    });
    Local {
        migrated: set(migrated),
        cutover,
    }
}

fn run(
    plan: &Plan,
    st: &Status,
    node: &str,
    nodes: &BTreeMap<String, Labels>,
    l: &Local,
    now: u64,
) -> Decision {
    decide(&Input {
        plan,
        name: "m",
        generation: Some(3),
        status: st,
        node,
        nodes,
        local: l,
        now,
    })
}

#[test]
fn the_example_object_reads_with_its_durations_and_selectors() {
    #[derive(serde::Deserialize)]
    struct Obj {
        spec: Spec,
    }
    let text = include_str!("../../../../deploy/examples/ipvsmigration.yaml");
    let p = serde_saphyr::from_str::<Obj>(text)
        .unwrap()
        .spec
        .validate()
        .unwrap();
    assert_eq!(p.waves.len(), 2);
    assert_eq!(p.waves[1].exclude, ["cart/legacy-udp"]);
    assert_eq!(p.soak.as_secs(), 1800);
    assert_eq!((p.thresholds.window, p.thresholds.for_secs), (300.0, 60.0));
    assert_eq!((p.max_nodes_in_parallel, p.halt_after_rollbacks), (2, 2));
}

/// The defaults of an empty spec are the CRD's `default:`s (read from deploy/crd.yaml).
#[test]
fn an_omitted_field_takes_the_default_the_crd_declares() {
    let crd: Value = serde_saphyr::from_str(include_str!("../../../../deploy/crd.yaml")).unwrap();
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let ours = serde_json::to_value(
        serde_json::from_value::<Spec>(json!({"waves": [{"namespaces": ["a"]}]})).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (k, v) in props.as_object().unwrap() {
        if let Some(d) = v.get("default") {
            assert_eq!(&ours[k], d, "spec.{k}");
            checked += 1;
        }
        for (t, tv) in v
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(d) = tv.get("default") {
                assert_eq!(
                    ours[k][t]
                        .as_f64()
                        .map(Value::from)
                        .unwrap_or(ours[k][t].clone()),
                    d.as_f64().map(Value::from).unwrap_or(d.clone()),
                    "spec.{k}.{t}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 9, "only {checked} defaults found in crd.yaml");
}

#[test]
fn invalid_specs_are_refused_naming_the_field() {
    let check = |patch: Value, field: &str| {
        let mut s = json!({"waves": [{"namespaces": ["shop"]}, {"namespaces": ["auth"]}]});
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        let e = serde_json::from_value::<Spec>(s)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with(field), "{patch}: {e}");
    };
    check(json!({"waves": []}), "spec.waves:");
    check(
        json!({"waves": [{"namespaces": []}]}),
        "spec.waves[0].namespaces:",
    );
    check(
        json!({"waves": [{"namespaces": ["Shop"]}]}),
        "spec.waves[0].namespaces[0]:",
    );
    check(
        json!({"waves": [{"namespaces": ["a"]}, {"namespaces": ["b", "a"]}]}),
        "spec.waves[1].namespaces[1]:",
    );
    check(
        json!({"waves": [{"namespaces": ["a"], "exclude": ["b/svc"]}]}),
        "spec.waves[0].exclude[0]:",
    );
    check(
        json!({"waves": [{"namespaces": ["a"], "exclude": ["svc"]}]}),
        "spec.waves[0].exclude[0]:",
    );
    check(json!({"soak": "30 minutes"}), "spec.soak:");
    check(json!({"slotTimeout": "0s"}), "spec.slotTimeout:");
    check(
        json!({"thresholds": {"window": "5x"}}),
        "spec.thresholds.window:",
    );
    check(json!({"thresholds": {"for": "1"}}), "spec.thresholds.for:");
    check(json!({"thresholds": {"rate": 0}}), "spec.thresholds.rate:");
    check(
        json!({"thresholds": {"ratio": 1.5}}),
        "spec.thresholds.ratio:",
    );
    check(json!({"maxNodesInParallel": 0}), "spec.maxNodesInParallel:");
    check(json!({"haltAfterRollbacks": 0}), "spec.haltAfterRollbacks:");
    check(
        json!({"canaryNodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        "spec.canaryNodeSelector.matchExpressions[0].values:",
    );
    // A state outside the enum is a serde error (the API server refuses it first).
    assert!(
        serde_json::from_value::<Spec>(
            json!({"waves": [{"namespaces": ["a"]}], "state": "Stopped"})
        )
        .is_err()
    );
}

#[test]
fn the_first_node_claims_wave_one_in_the_status_and_starts_it() {
    let p = two_waves(1, 1, "Running");
    let d = run(
        &p,
        &Status::default(),
        "c1",
        &fleet(&[("c1", true), ("w1", false)]),
        &local("", ""),
        T0,
    );
    assert_eq!(d.verdict, Verdict::Starting(0));
    assert_eq!(
        d.action,
        Action::Start {
            wave: 0,
            namespaces: vec!["shop".into()],
            exclude: vec![]
        }
    );
    let st = d.status.unwrap();
    let e = &st.nodes["c1"];
    assert_eq!(
        (e.phase, e.wave, e.since.as_str()),
        (NodePhase::InProgress, 1, "2026-11-25T02:00:00Z")
    );
    assert_eq!(
        (st.phase, st.current_wave, st.observed_generation),
        (Some(FleetPhase::Progressing), Some(1), Some(3))
    );
}

#[test]
fn a_node_waits_while_every_slot_is_held() {
    let p = two_waves(2, 5, "Running");
    let nodes = fleet(&[("a", false), ("b", false), ("c", false)]);
    let st = with("a=InProgress/1 b=InProgress/1", 0);
    let d = run(&p, &st, "c", &nodes, &local("", ""), T0 + 60);
    assert_eq!(
        d.verdict,
        Verdict::Waiting(0, Wait::Slots(vec!["a".into(), "b".into()]))
    );
    assert_eq!((d.action, d.status.is_some()), (Action::None, true)); // summary only
}

#[test]
fn non_canaries_wait_until_every_canary_finished_the_wave() {
    let p = two_waves(3, 5, "Running");
    let nodes = fleet(&[("c1", true), ("c2", true), ("w1", false)]);
    let st = with("c1=Completed/1 c2=InProgress/1", 0);
    let d = run(&p, &st, "w1", &nodes, &local("", ""), T0);
    assert_eq!(
        d.verdict,
        Verdict::Waiting(0, Wait::Canaries(vec!["c2".into()]))
    );
    let st = with("c1=Completed/1 c2=RolledBack/1", 1);
    let d = run(&p, &st, "w1", &nodes, &local("", ""), T0);
    assert_eq!(
        d.verdict,
        Verdict::Starting(0),
        "a rolled-back canary is through (the halt decides)"
    );
}

#[test]
fn the_next_wave_waits_for_every_selected_node_to_finish_the_previous_one() {
    let p = two_waves(3, 5, "Running");
    let nodes = fleet(&[("c1", true), ("w1", false), ("w2", false)]);
    let st = with("c1=Completed/1 w1=Completed/1", 0);
    let d = run(&p, &st, "c1", &nodes, &local("shop", "shop Committed"), T0);
    assert_eq!(
        d.verdict,
        Verdict::Waiting(1, Wait::PreviousWave(vec!["w2".into()]))
    );
    let st = with("c1=Completed/1 w1=Completed/1 w2=Completed/1", 0);
    let d = run(&p, &st, "c1", &nodes, &local("shop", "shop Committed"), T0);
    assert_eq!(
        d.action,
        Action::Start {
            wave: 1,
            namespaces: vec!["auth".into(), "cart".into()],
            exclude: vec!["cart/udp".into()]
        }
    );
}

#[test]
fn a_node_reports_its_wave_done_or_rolled_back_and_a_rollback_is_counted_once() {
    let p = two_waves(1, 2, "Running");
    let nodes = fleet(&[("a", false), ("b", false)]);
    let st = with("a=InProgress/1", 0);
    let d = run(
        &p,
        &st,
        "a",
        &nodes,
        &local("shop", "shop Committed"),
        T0 + 30,
    );
    assert_eq!(d.verdict, Verdict::WaveDone(0));
    assert_eq!(d.status.unwrap().nodes["a"].phase, NodePhase::Completed);
    let d = run(&p, &st, "a", &nodes, &local("", "shop RolledBack"), T0 + 30);
    let st2 = d.status.unwrap();
    assert_eq!(
        (d.verdict, st2.rollbacks),
        (Verdict::Stopped(NodePhase::RolledBack, 1), 1)
    );
    // Deciding again on the written status counts nothing more, and starts nothing.
    let d = run(
        &p,
        &st2,
        "a",
        &nodes,
        &local("", "shop RolledBack"),
        T0 + 60,
    );
    assert_eq!((d.action, d.status), (Action::None, None));
}

#[test]
fn halted_fleets_start_nothing_but_waves_in_flight_keep_reporting() {
    let p = two_waves(2, 1, "Running");
    let nodes = fleet(&[("a", false), ("b", false), ("c", false)]);
    let st = with("a=RolledBack/1 b=InProgress/1", 1);
    let d = run(&p, &st, "c", &nodes, &local("", ""), T0);
    assert_eq!((d.verdict, d.action), (Verdict::Halted, Action::None));
    assert_eq!(d.status.unwrap().phase, Some(FleetPhase::Halted));
    let d = run(&p, &st, "b", &nodes, &local("shop", "shop Committed"), T0);
    assert_eq!(d.status.unwrap().nodes["b"].phase, NodePhase::Completed);
}

#[test]
fn paused_starts_nothing_and_gives_back_a_claim_not_yet_started() {
    let p = two_waves(2, 5, "Paused");
    let nodes = fleet(&[("a", false), ("b", false)]);
    let d = run(&p, &Status::default(), "a", &nodes, &local("", ""), T0);
    assert_eq!((d.verdict, d.action), (Verdict::Paused, Action::None));
    // a claimed wave 1 but had not started it: the slot is returned.
    let st = with("a=InProgress/1 b=InProgress/1", 0);
    let d = run(&p, &st, "a", &nodes, &local("", ""), T0);
    assert_eq!(d.verdict, Verdict::Paused);
    assert!(!d.status.unwrap().nodes.contains_key("a"));
    // b's wave is in flight: it goes on (its heartbeat is refreshed after slotTimeout / 4).
    let d = run(
        &p,
        &st,
        "b",
        &nodes,
        &local("shop", "shop InFlight"),
        T0 + 200,
    );
    assert_eq!(d.verdict, Verdict::InProgress(0));
    assert_eq!(
        d.status.unwrap().nodes["b"].heartbeat,
        time::format_time(T0 + 200)
    );
}

#[test]
fn aborted_rolls_back_the_wave_in_flight_and_the_committed_waves_of_the_plan() {
    let p = two_waves(2, 5, "Aborted");
    let nodes = fleet(&[("a", false)]);
    let st = with("a=InProgress/2", 0);
    let l = local("shop,auth,cart,manual", "auth,cart InFlight");
    let d = run(&p, &st, "a", &nodes, &l, T0);
    assert_eq!(d.verdict, Verdict::Aborting);
    let Action::RollBack { namespaces, .. } = d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(
        namespaces,
        ["auth", "cart", "shop"],
        "a namespace migrated by hand stays"
    );
    let d = run(&p, &st, "a", &nodes, &local("manual", ""), T0);
    let st = d.status.unwrap();
    assert_eq!(
        (d.verdict, st.nodes["a"].phase, st.phase),
        (
            Verdict::Aborted,
            NodePhase::Aborted,
            Some(FleetPhase::Aborted)
        )
    );
    assert_eq!(st.rollbacks, 0, "an abort is the operator's, not a failure");
}

#[test]
fn a_wave_that_rolled_back_before_the_abort_still_counts() {
    let p = two_waves(1, 5, "Aborted");
    let st = with("a=InProgress/1", 0);
    let d = run(
        &p,
        &st,
        "a",
        &fleet(&[("a", false)]),
        &local("", "shop RolledBack"),
        T0,
    );
    let st = d.status.unwrap();
    assert_eq!((st.nodes["a"].phase, st.rollbacks), (NodePhase::Aborted, 1));
}

#[test]
fn a_claim_not_started_is_given_back_when_the_node_is_no_longer_selected() {
    let p = two_waves(1, 5, "Running");
    let mut nodes = fleet(&[("b", false)]);
    nodes.insert("a".into(), Labels::new()); // its role label was removed
    let d = run(
        &p,
        &with("a=InProgress/1", 0),
        "a",
        &nodes,
        &local("", ""),
        T0,
    );
    assert_eq!((d.verdict, d.action), (Verdict::NotSelected, Action::None));
    assert!(d.status.unwrap().nodes.is_empty());
}

#[test]
fn aborting_a_wave_in_flight_is_not_a_rollback_and_a_local_abort_stops_the_node() {
    let p = two_waves(1, 5, "Aborted");
    let st = with("a=InProgress/1", 0);
    let nodes = fleet(&[("a", false)]);
    let d = run(&p, &st, "a", &nodes, &local("", "shop Aborted"), T0);
    let st2 = d.status.unwrap();
    assert_eq!(
        (st2.nodes["a"].phase, st2.rollbacks),
        (NodePhase::Aborted, 0)
    );
    // Running, but the operator aborted the wave on the node itself: it stops, uncounted.
    let p = two_waves(1, 5, "Running");
    let d = run(&p, &st, "a", &nodes, &local("", "shop Aborted"), T0);
    let st2 = d.status.unwrap();
    assert_eq!(d.verdict, Verdict::Stopped(NodePhase::Failed, 1));
    assert_eq!(
        (st2.nodes["a"].phase, st2.rollbacks),
        (NodePhase::Failed, 0)
    );
}

#[test]
fn the_machines_abort_reads_as_an_abort_not_a_rollback() {
    let mut c = crate::cutover::Cutover::new(vec![vec!["shop".into()]], vec![], 60, false);
    c.phase = crate::cutover::Phase::Soak { until: T0 };
    let (c, _) = crate::cutover::step(&c, &crate::cutover::Event::Abort { now: T0 });
    let (c, _) = crate::cutover::step(&c, &crate::cutover::Event::RolledBack { now: T0 });
    let l = Local::new(&[], Some(&c));
    assert_eq!(l.cutover.map(|(_, p)| p), Some(LocalPhase::Aborted));
}

#[test]
fn a_stale_claim_expires_counts_as_a_rollback_and_frees_its_slot() {
    let p = two_waves(1, 5, "Running");
    let nodes = fleet(&[("a", false), ("b", false)]);
    let st = with("a=InProgress/1", 0);
    let d = run(&p, &st, "b", &nodes, &local("", ""), T0 + 599);
    assert_eq!(
        d.verdict,
        Verdict::Waiting(0, Wait::Slots(vec!["a".into()]))
    );
    let d = run(&p, &st, "b", &nodes, &local("", ""), T0 + 600);
    assert_eq!(d.verdict, Verdict::Starting(0));
    let st = d.status.unwrap();
    assert_eq!((st.nodes["a"].phase, st.rollbacks), (NodePhase::Expired, 1));
    // a comes back with the wave still running: it takes it back.
    let d = run(
        &p,
        &st,
        "a",
        &nodes,
        &local("shop", "shop InFlight"),
        T0 + 700,
    );
    assert!(
        matches!(d.action, Action::RollBack { ref namespaces, .. } if namespaces == &["shop"]),
        "{:?}",
        d.action
    );
}

#[test]
fn a_wave_rolled_back_after_its_soak_is_reported_and_counted() {
    let p = two_waves(1, 5, "Running");
    let st = with("a=Completed/1", 0);
    let d = run(&p, &st, "a", &fleet(&[("a", false)]), &local("", ""), T0);
    let st = d.status.unwrap();
    assert_eq!(
        (d.verdict, st.rollbacks),
        (Verdict::Stopped(NodePhase::RolledBack, 1), 1)
    );
    assert!(st.nodes["a"].message.as_deref().unwrap().contains("shop"));
}

#[test]
fn unselected_nodes_start_nothing_and_a_finished_fleet_is_completed() {
    let p = two_waves(1, 5, "Running");
    let mut nodes = fleet(&[("a", false)]);
    nodes.insert("db".into(), Labels::new());
    let d = run(&p, &Status::default(), "db", &nodes, &local("", ""), T0);
    assert_eq!((d.verdict, d.action), (Verdict::NotSelected, Action::None));
    let st = with("a=Completed/2", 0);
    let d = run(&p, &st, "a", &nodes, &local("shop,auth,cart", ""), T0);
    assert_eq!(
        (d.verdict, d.status.unwrap().phase),
        (Verdict::Completed, Some(FleetPhase::Completed))
    );
}

#[test]
fn a_node_whose_entry_was_cleared_resumes_at_the_wave_it_had_not_finished() {
    let p = two_waves(1, 5, "Running");
    let nodes = fleet(&[("a", false)]);
    // Wave 2 rolled back; wave 1 is still migrated; the operator removed the entry.
    let l = local("shop", "auth,cart RolledBack");
    let d = run(&p, &Status::default(), "a", &nodes, &l, T0);
    assert_eq!(d.verdict, Verdict::Starting(1));
    assert_eq!(d.status.unwrap().nodes["a"].wave, 2);
}

/// tests/deploy/status.yaml validates against the CRD's status schema (validate.py): the
/// agent reads it and writes it back unchanged.
#[test]
fn the_status_the_crd_accepts_reads_and_writes_back_unchanged() {
    let text = include_str!("../../../../tests/deploy/status.yaml");
    let want: Value = serde_saphyr::from_str(text).unwrap();
    let st: Status = serde_saphyr::from_str(text).unwrap();
    assert_eq!(st.nodes["node-2"].phase, NodePhase::InProgress);
    assert_eq!((st.rollbacks, st.current_wave), (1, Some(2)));
    assert_eq!(serde_json::to_value(&st).unwrap(), want);
}

#[test]
fn agents_act_on_the_oldest_unfinished_migration_else_the_newest() {
    fn c(objs: &[(&'static str, &'static str, Option<FleetPhase>)]) -> Option<&'static str> {
        choose(objs).map(|i| objs[i].0)
    }
    let (old, new) = ("2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z");
    assert_eq!(c(&[]), None);
    assert_eq!(
        c(&[("b", new, None), ("a", old, Some(FleetPhase::Progressing))]),
        Some("a")
    );
    assert_eq!(
        c(&[("b", new, None), ("a", old, Some(FleetPhase::Completed))]),
        Some("b")
    );
    assert_eq!(
        c(&[
            ("b", new, Some(FleetPhase::Aborted)),
            ("a", old, Some(FleetPhase::Completed))
        ]),
        Some("b")
    );
    assert_eq!(
        c(&[("b", old, None), ("a", old, None)]),
        Some("a"),
        "same age: by name"
    );
}

mod laws;
