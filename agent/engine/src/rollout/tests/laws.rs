//! The slot protocol's laws, over random interleavings of agents reading, deciding and
//! writing with the API server's optimistic concurrency.

use proptest::prelude::*;

use super::*;

/// One agent's round in the simulation: read (snapshot + version), or decide on its snapshot
/// and write it if the version is unchanged (the API server's optimistic concurrency), or its
/// node's cutover finishing one way or the other.
#[derive(Debug, Clone)]
enum Step {
    Read(usize),
    Write(usize),
    Finish(usize, bool),
    Operator(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..6usize).prop_map(Step::Read),
        4 => (0..6usize).prop_map(Step::Write),
        3 => (0..6usize, any::<bool>()).prop_map(|(n, ok)| Step::Finish(n, ok)),
        1 => (0..4u8).prop_map(Step::Operator),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any interleaving of reads, conditional writes, finishing waves, pause, abort and resume: never
    /// more than maxNodesInParallel claims, nothing started after the halt or while paused,
    /// waves in order on each node (a wave starts only on a node holding every earlier one),
    /// and every start preceded by its own claim.
    #[test]
    fn claims_never_exceed_the_slots_and_gates_hold(
        n in 1..6usize, canaries in 0..3usize, max in 1..3u32, halt in 1..4u32,
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let nodes = fleet(&names.iter().enumerate().map(|(i, s)| (s.as_str(), i < canaries)).collect::<Vec<_>>());
        let mut p = two_waves(max, halt, "Running");
        let (mut st, mut version) = (Status::default(), 0u64);
        let mut snap: Vec<(Status, u64)> = vec![(Status::default(), 0); n];
        let mut locals: Vec<Local> = vec![Local::default(); n];
        let mut now = T0;
        for s in steps {
            now += 7;
            match s {
                Step::Read(i) if i < n => snap[i] = (st.clone(), version),
                Step::Write(i) if i < n => {
                    let (seen, v) = &snap[i];
                    let d = run(&p, seen, &names[i], &nodes, &locals[i], now);
                    if *v != version {
                        continue; // 409 Conflict: nothing written, nothing started
                    }
                    if let Action::Start { wave, namespaces, .. } = &d.action {
                        prop_assert!(seen.rollbacks < p.halt_after_rollbacks, "start after halt");
                        prop_assert_eq!(p.state, State::Running, "start while not running");
                        let earlier = p.waves[..*wave].iter().flat_map(|w| w.namespaces.iter());
                        for ns in earlier {
                            prop_assert!(locals[i].migrated.contains(ns), "wave {wave} started without {ns}");
                        }
                        let claim = d.status.as_ref().map(|s| s.nodes[&names[i]].clone());
                        prop_assert_eq!(claim.map(|c| (c.phase, c.wave)), Some((NodePhase::InProgress, *wave as u32 + 1)));
                        locals[i].cutover = Some((namespaces.iter().cloned().collect(), LocalPhase::InFlight));
                    }
                    if let Action::RollBack { namespaces, .. } = &d.action {
                        locals[i].migrated.retain(|m| !namespaces.contains(m));
                        // The daemon aborts a wave in flight through the cutover machine.
                        if let Some(c) = &mut locals[i].cutover && c.1 == LocalPhase::InFlight {
                            c.1 = LocalPhase::Aborted;
                        }
                    }
                    if let Some(new) = d.status {
                        st = new;
                        version += 1;
                        snap[i] = (st.clone(), version);
                    }
                    prop_assert!(st.holders().len() <= max as usize, "{} holders > {max}: {:?}", st.holders().len(), st.nodes);
                }
                Step::Finish(i, ok) if i < n => {
                    let l = &mut locals[i];
                    if let Some((ns, ph)) = &mut l.cutover && *ph == LocalPhase::InFlight {
                        *ph = if ok { LocalPhase::Committed } else { LocalPhase::RolledBack };
                        if ok {
                            l.migrated.extend(ns.iter().cloned());
                        }
                    }
                }
                Step::Operator(k) => p.state = [State::Running, State::Paused, State::Aborted, State::Running][k as usize],
                _ => {}
            }
        }
    }
}
