//! The phase machine, by scenario (written from DESIGN.md's cutover sequence) and by property
//! over random event sequences.

use proptest::prelude::*;

use super::*;

fn waves() -> Vec<Vec<String>> {
    vec![vec!["shop".into()], vec!["auth".into(), "cart".into()]]
}

fn run(s: &Cutover, evs: &[Event]) -> (Cutover, Vec<Effect>) {
    let mut s = s.clone();
    let mut all = Vec::new();
    for e in evs {
        let (n, fx) = step(&s, e);
        s = n;
        all.extend(fx);
    }
    (s, all)
}

fn kinds(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Persist | Effect::Announce { .. } => None,
            Effect::RunPreflight => Some("preflight"),
            Effect::CreateLink => Some("link"),
            Effect::WatchCalico => Some("calico"),
            Effect::Apply { .. } => Some("apply"),
            Effect::Probe { .. } => Some("probe"),
            Effect::Admit { .. } => Some("admit"),
            Effect::Rollback { .. } => Some("rollback"),
        })
        .collect()
}

#[test]
fn two_waves_go_through_every_gate_in_order_and_commit() {
    let s = Cutover::new(waves(), vec![], 600, false);
    let wave = |t: u64| {
        vec![
            Event::PreflightDone {
                blockers: vec![],
                now: t,
            },
            Event::Prepared {
                link_created: t,
                now: t,
            },
            Event::Applied { now: t + 1 },
            Event::Probed {
                failed: vec![],
                now: t + 2,
            },
            Event::Admitted { now: t + 3 },
            Event::Tick { now: t + 300 },
            Event::Tick { now: t + 603 },
        ]
    };
    let mut evs = vec![Event::Start { now: 0 }];
    evs.extend(wave(10));
    let (mid, fx) = run(&s, &evs);
    assert_eq!(mid.wave, 1);
    assert_eq!(
        mid.phase,
        Phase::Preflight,
        "the second wave starts at the gate"
    );
    assert_eq!(
        kinds(&fx),
        ["preflight", "link", "apply", "probe", "admit", "preflight"]
    );
    let (end, fx) = run(&mid, &wave(1000));
    assert_eq!(end.phase, Phase::Committed);
    // The second wave applies and admits both waves' namespaces, probes only its own.
    let applied: Vec<&Effect> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Apply { .. }))
        .collect();
    assert_eq!(
        applied,
        [&Effect::Apply {
            namespaces: vec!["shop".into(), "auth".into(), "cart".into()]
        }]
    );
    assert!(fx.contains(&Effect::Probe {
        namespaces: vec!["auth".into(), "cart".into()]
    }));
}

#[test]
fn a_blocker_stops_before_any_change_unless_deliberately_allowed() {
    let s = Cutover::new(waves(), vec![], 60, false);
    let evs = [
        Event::Start { now: 0 },
        Event::PreflightDone {
            blockers: vec!["kernel-modules".into()],
            now: 1,
        },
    ];
    let (end, fx) = run(&s, &evs);
    assert!(matches!(&end.phase, Phase::Failed { error } if error.contains("kernel-modules")));
    assert_eq!(kinds(&fx), ["preflight"], "no link, no apply");
    let s = Cutover::new(waves(), vec!["kernel-modules".into()], 60, false);
    let (end, fx) = run(&s, &evs);
    assert_eq!(end.phase, Phase::Prepare);
    assert_eq!(end.allowed, ["kernel-modules"], "the override is recorded");
    assert_eq!(kinds(&fx), ["preflight", "link"]);
}

#[test]
fn on_calico_nodes_apply_waits_for_calico_node_to_restart_after_the_link_exists() {
    let s = Cutover::new(waves(), vec![], 60, true);
    let (st, fx) = run(
        &s,
        &[
            Event::Start { now: 0 },
            Event::PreflightDone {
                blockers: vec![],
                now: 1,
            },
            Event::Prepared {
                link_created: 100,
                now: 100,
            },
            Event::CalicoStarted {
                started: 50,
                now: 110,
            },
        ],
    );
    assert_eq!(st.phase, Phase::WaitCalico { link_created: 100 });
    assert_eq!(kinds(&fx), ["preflight", "link", "calico"]);
    let (st, fx) = step(
        &st,
        &Event::CalicoStarted {
            started: 130,
            now: 140,
        },
    );
    assert_eq!(st.phase, Phase::Apply);
    assert_eq!(kinds(&fx), ["apply"]);
}

/// Start → preflight → prepare → applied: waiting for the probes.
fn to_probe() -> [Event; 4] {
    [
        Event::Start { now: 0 },
        Event::PreflightDone {
            blockers: vec![],
            now: 1,
        },
        Event::Prepared {
            link_created: 1,
            now: 1,
        },
        Event::Applied { now: 2 },
    ]
}

#[test]
fn a_failed_probe_or_an_alert_rolls_back_once_however_many_alerts_come() {
    let s = Cutover::new(waves(), vec![], 600, false);
    let (st, _) = run(&s, &to_probe());
    let (st2, fx) = step(
        &st,
        &Event::Probed {
            failed: vec!["10.96.0.10:80/tcp: refused".into()],
            now: 3,
        },
    );
    assert!(matches!(&st2.phase, Phase::RollingBack { reason, .. } if reason.contains("probe")));
    assert_eq!(kinds(&fx), ["rollback"]);

    let (soaking, _) = run(
        &st,
        &[
            Event::Probed {
                failed: vec![],
                now: 3,
            },
            Event::Admitted { now: 4 },
        ],
    );
    assert!(matches!(soaking.phase, Phase::Soak { until: 604 }));
    let flood: Vec<Event> = (0..50)
        .map(|i| Event::Alert {
            reason: format!("IPVSMigrateRejectionRateHigh #{i}"),
            namespace: None,
            now: 100 + i,
        })
        .collect();
    let (end, fx) = run(&soaking, &flood);
    assert_eq!(
        kinds(&fx),
        ["rollback"],
        "a flood of alerts gives one rollback"
    );
    assert_eq!(end.rollbacks, 1);
    assert!(matches!(&end.phase, Phase::RollingBack { reason, .. } if reason.ends_with("#0")));
    let (end, _) = step(&end, &Event::RolledBack { now: 200 });
    assert!(matches!(end.phase, Phase::RolledBack { .. }));
    // The soak's end after a rollback does not commit.
    let (end, fx) = step(&end, &Event::Tick { now: 10_000 });
    assert!(matches!(end.phase, Phase::RolledBack { .. }));
    assert!(fx.is_empty());
}

#[test]
fn an_abort_before_the_kernel_is_touched_fails_cleanly_and_after_it_rolls_back() {
    let s = Cutover::new(waves(), vec![], 60, false);
    let (st, fx) = run(&s, &[Event::Start { now: 0 }, Event::Abort { now: 1 }]);
    assert!(matches!(st.phase, Phase::Failed { .. }));
    assert_eq!(kinds(&fx), ["preflight"]);
    let mut evs = to_probe().to_vec();
    evs.push(Event::Abort { now: 3 });
    let (st, fx) = run(&s, &evs);
    assert!(matches!(st.phase, Phase::RollingBack { .. }));
    assert_eq!(
        kinds(&fx),
        ["preflight", "link", "apply", "probe", "rollback"]
    );
}

fn through_wave_one(s: &Cutover) -> Cutover {
    let mut evs = to_probe().to_vec();
    evs.extend([
        Event::Probed {
            failed: vec![],
            now: 3,
        },
        Event::Admitted { now: 4 },
    ]);
    run(s, &evs).0
}

#[test]
fn a_restart_mid_wave_rolls_back_that_wave_only_and_committed_waves_stay() {
    let s = Cutover::new(waves(), vec![], 60, false);
    // Wave 1 soaks and is followed by wave 2, which is soaking when the agent restarts.
    let w1 = through_wave_one(&s);
    let (w2, _) = run(&w1, &[Event::Tick { now: 64 }]);
    assert_eq!(w2.phase, Phase::Preflight);
    let w2 = through_wave_one(&Cutover {
        phase: Phase::Idle,
        ..w2
    });
    assert_eq!(w2.wave, 1);
    let (st, fx) = step(&w2, &Event::Resume { now: 70 });
    let rolled: Vec<&Effect> = fx
        .iter()
        .filter(|f| matches!(f, Effect::Rollback { .. }))
        .collect();
    assert_eq!(
        rolled,
        [&Effect::Rollback {
            namespaces: vec!["auth".into(), "cart".into()],
            reason: "the agent restarted during the soak phase".into(),
        }]
    );
    // Restarting again while rolling back runs the same rollback again, counted once.
    let (again, fx) = step(&st, &Event::Resume { now: 71 });
    assert_eq!(again.rollbacks, 1);
    assert_eq!(kinds(&fx), ["rollback"]);
    // A committed cutover survives a restart untouched.
    let (done, _) = run(&w1, &[Event::Tick { now: 64 }]);
    let done = through_wave_one(&Cutover {
        phase: Phase::Idle,
        ..done
    });
    let (done, _) = step(&done, &Event::Tick { now: 1000 });
    assert_eq!(done.phase, Phase::Committed);
    let (same, fx) = step(&done, &Event::Resume { now: 1001 });
    assert_eq!(same, done);
    assert!(fx.is_empty());
    // After the commit, an alert about one namespace takes back that namespace only.
    let (st, fx) = step(
        &done,
        &Event::Alert {
            reason: "IPVSMigrateRejectionRatioHigh".into(),
            namespace: Some("shop".into()),
            now: 1002,
        },
    );
    assert!(fx.contains(&Effect::Rollback {
        namespaces: vec!["shop".into()],
        reason: "IPVSMigrateRejectionRatioHigh".into(),
    }));
    assert!(matches!(st.phase, Phase::RollingBack { .. }));
}

fn event() -> impl Strategy<Value = Event> {
    let t = 0u64..5_000;
    prop_oneof![
        t.clone().prop_map(|now| Event::Start { now }),
        (
            proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 0..2),
            t.clone()
        )
            .prop_map(|(b, now)| Event::PreflightDone {
                blockers: b.into_iter().map(String::from).collect(),
                now
            }),
        (t.clone(), t.clone()).prop_map(|(l, now)| Event::Prepared {
            link_created: l,
            now
        }),
        (t.clone(), t.clone()).prop_map(|(st, now)| Event::CalicoStarted { started: st, now }),
        t.clone().prop_map(|now| Event::Applied { now }),
        t.clone().prop_map(|now| Event::ApplyFailed {
            error: "x".into(),
            now
        }),
        (any::<bool>(), t.clone()).prop_map(|(f, now)| Event::Probed {
            failed: if f { vec!["v".into()] } else { vec![] },
            now
        }),
        t.clone().prop_map(|now| Event::Admitted { now }),
        t.clone().prop_map(|now| Event::Tick { now }),
        (t.clone(), any::<bool>()).prop_map(|(now, ns)| Event::Alert {
            reason: "r".into(),
            namespace: ns.then(|| "cart".to_owned()),
            now
        }),
        t.clone().prop_map(|now| Event::Resume { now }),
        t.clone().prop_map(|now| Event::Abort { now }),
        t.clone().prop_map(|now| Event::RolledBack { now }),
        t.prop_map(|now| Event::RollbackFailed {
            error: "e".into(),
            now
        }),
    ]
}

proptest! {
    #[test]
    fn laws_hold_for_any_event_sequence(
        evs in proptest::collection::vec(event(), 0..60),
        calico in any::<bool>(),
        allow_a in any::<bool>(),
    ) {
        let allow = if allow_a { vec!["a".to_owned()] } else { vec![] };
        let mut s = Cutover::new(waves(), allow, 300, calico);
        let mut rollbacks = 0u32;
        for e in &evs {
            let (n, fx) = step(&s, e);
            // The new state is journaled before anything is done about it.
            if n.phase != s.phase {
                prop_assert_eq!(fx.first(), Some(&Effect::Persist));
            } else if matches!(e, Event::Resume { .. }) {
                // A restart re-issues the current phase's own effect, at most one.
                prop_assert!(fx.len() <= 1, "{:?}", fx);
            } else {
                prop_assert!(fx.is_empty(), "no effects without a transition: {:?}", fx);
            }
            // The kernel is only touched past the gate, and only by an allowed gate.
            if fx.iter().any(|f| matches!(f, Effect::Apply { .. })) {
                let gate = matches!(s.phase, Phase::Prepare | Phase::WaitCalico { .. });
                prop_assert!(gate, "apply from {:?}", s.phase);
                prop_assert!(n.allowed.iter().all(|b| n.allow.contains(b)));
            }
            // One rollback per trigger, only where the kernel may hold objects.
            let r = fx.iter().filter(|f| matches!(f, Effect::Rollback { .. })).count() as u32;
            let rerun = matches!(s.phase, Phase::RollingBack { .. });
            if r > 0 {
                prop_assert!(s.phase.touched_kernel() || rerun, "rollback from {:?}", s.phase);
                let rolling = matches!(n.phase, Phase::RollingBack { .. });
                prop_assert!(rolling, "after a rollback effect: {:?}", n.phase);
                // What is taken back is what was migrated, never more.
                for f in &fx {
                    if let Effect::Rollback { namespaces, .. } = f {
                        prop_assert!(!namespaces.is_empty());
                        prop_assert!(namespaces.iter().all(|ns| s.migrated().contains(ns)));
                    }
                }
            }
            if !rerun {
                rollbacks += r;
            }
            prop_assert_eq!(n.rollbacks, rollbacks);
            // A wave is admitted only after its probes passed.
            if fx.iter().any(|f| matches!(f, Effect::Admit { .. })) {
                let probed_ok = matches!(e, Event::Probed { failed, .. } if failed.is_empty());
                prop_assert!(probed_ok, "admitted on {:?}", e);
            }
            s = n;
        }
    }
}
