//! Laws of the plan diff (issue 4): diff(a, a) is empty; applying diff(a, b) to a gives b for
//! everything we own while foreign objects stay untouched; foreign objects are never deleted or
//! edited (a desired key held by a foreign object is a conflict); services exist before their
//! destinations are added and lose their destinations before they are deleted; a changed
//! endpoint costs ops proportional to the change; the plan does not depend on rule order.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvsmig_engine::inventory::{Protocol, inventory_from_str};
use ipvsmig_engine::plan::diff::{Conflict, Op, Owner, State, VsState, apply, diff};
use ipvsmig_engine::plan::{PlanOptions, full};
use proptest::prelude::*;

fn ip(last: u8, net: u8) -> IpAddr {
    IpAddr::from([10, net, 0, last])
}

fn vs_strategy(owner: BoxedStrategy<Owner>) -> impl Strategy<Value = VsState> {
    (
        prop::sample::select(vec!["rr", "wrr", "mh"]),
        0u32..2,
        prop::collection::btree_map((1u8..5).prop_map(|l| (ip(l, 1), 8080u16)), 0u32..3, 0..4),
        owner,
    )
        .prop_map(|(s, f, dests, owner)| VsState {
            scheduler: s.into(),
            flags: f,
            timeout: f * 10800,
            netmask: 0xffff_ffff,
            dests,
            owner,
        })
}

fn state(owner: BoxedStrategy<Owner>) -> impl Strategy<Value = State> {
    let key = (
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp]),
        (1u8..6).prop_map(|l| ip(l, 96)),
        prop::sample::select(vec![80u16, 443]),
    );
    (
        prop::collection::btree_map(key, vs_strategy(owner.clone()), 0..8),
        prop::collection::btree_map((1u8..6).prop_map(|l| ip(l, 96)), owner, 0..6),
    )
        .prop_map(|(services, addresses)| State {
            services,
            addresses,
        })
}

fn ours() -> BoxedStrategy<Owner> {
    Just(Owner::Us).boxed()
}

fn anyone() -> BoxedStrategy<Owner> {
    prop_oneof![3 => Just(Owner::Us), 1 => Just(Owner::Foreign)].boxed()
}

type ForeignPart = (BTreeMap<(Protocol, IpAddr, u16), VsState>, Vec<IpAddr>);

fn foreign_part(s: &State) -> ForeignPart {
    (
        s.services
            .iter()
            .filter(|(_, v)| v.owner == Owner::Foreign)
            .map(|(k, v)| (*k, v.clone()))
            .collect(),
        s.addresses
            .iter()
            .filter(|(_, o)| **o == Owner::Foreign)
            .map(|(a, _)| *a)
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn diff_of_a_state_with_itself_is_empty(a in state(ours())) {
        let (ops, conflicts) = diff(&a, &a);
        prop_assert!(ops.is_empty(), "{ops:?}");
        prop_assert!(conflicts.is_empty());
    }

    #[test]
    fn applying_the_diff_gives_the_desired_state_and_keeps_foreign_objects(observed in state(anyone()), desired in state(ours())) {
        let (ops, conflicts) = diff(&observed, &desired);
        let mut s = observed.clone();
        apply(&mut s, &ops).map_err(TestCaseError::fail)?;
        // Foreign objects are exactly as they were.
        prop_assert_eq!(foreign_part(&s), foreign_part(&observed));
        // Everything desired and not in conflict is there, as desired.
        for (k, v) in &desired.services {
            if conflicts.contains(&Conflict::Service(*k)) {
                prop_assert_eq!(s.services[k].owner, Owner::Foreign);
            } else {
                prop_assert_eq!(&s.services[k], v);
            }
        }
        for a in desired.addresses.keys() {
            prop_assert!(s.addresses.contains_key(a));
        }
        // Nothing of ours remains that is not desired.
        for (k, v) in &s.services {
            prop_assert!(v.owner == Owner::Foreign || desired.services.contains_key(k));
        }
        for (a, o) in &s.addresses {
            prop_assert!(*o == Owner::Foreign || desired.addresses.contains_key(a));
        }
    }

    #[test]
    fn no_op_touches_a_foreign_object(observed in state(anyone()), desired in state(ours())) {
        let (ops, _) = diff(&observed, &desired);
        for op in &ops {
            match op {
                Op::DelService { service } | Op::EditService { service, .. } | Op::DelDest { service, .. } | Op::EditDest { service, .. } => {
                    prop_assert_eq!(observed.services[service].owner, Owner::Us, "{:?}", op);
                }
                Op::AddDest { service, .. } => {
                    let ok = observed.services.get(service).is_none_or(|v| v.owner == Owner::Us);
                    prop_assert!(ok, "{:?}", op);
                }
                Op::DelAddress { address } => prop_assert_eq!(observed.addresses[address], Owner::Us),
                Op::AddService { .. } | Op::AddAddress { .. } => {}
            }
        }
    }

    #[test]
    fn services_come_before_their_destinations_and_leave_after_them(observed in state(ours()), desired in state(ours())) {
        let (ops, _) = diff(&observed, &desired);
        for (i, op) in ops.iter().enumerate() {
            if let Op::AddDest { service, .. } = op {
                let added_at = ops.iter().position(|o| matches!(o, Op::AddService { service: s, .. } if s == service));
                let ok = added_at.is_none_or(|p| p < i);
                prop_assert!(ok, "destination added before its service: {:?}", op);
            }
            if let Op::DelService { service } = op {
                let later = ops[i..].iter().any(|o| matches!(o, Op::DelDest { service: s, .. } if s == service));
                prop_assert!(!later, "destination deleted after its service: {:?}", op);
            }
        }
    }
}

const OVERALL: &str = include_str!("golden/overall/restore.txt");

#[test]
fn one_changed_endpoint_costs_two_ops() {
    let before = inventory_from_str("a", OVERALL).unwrap();
    let after =
        inventory_from_str("b", &OVERALL.replace("10.180.0.1:80", "10.180.0.9:80")).unwrap();
    let opts = PlanOptions {
        scheduler: String::new(),
        node_ips: vec![IpAddr::from([192, 168, 0, 2])],
    };
    let (a, b) = (
        State::from_plan(&full(&before, &opts)),
        State::from_plan(&full(&after, &opts)),
    );
    let (ops, conflicts) = diff(&a, &b);
    assert!(conflicts.is_empty());
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(matches!(ops[0], Op::DelDest { .. }) && matches!(ops[1], Op::AddDest { .. }));
}

#[test]
fn the_plan_does_not_depend_on_rule_order() {
    // Reverse the order of the nat table's rules (kube-proxy writes services in map order).
    let (head, nat) = OVERALL.split_at(OVERALL.find("*nat\n").unwrap());
    let lines: Vec<&str> = nat.lines().collect();
    let (decls, rest): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| !l.starts_with("-A "));
    let mut rules: Vec<&str> = rest;
    // Keep each chain's own rule order (that is semantic), shuffle chains against each other.
    rules.sort_by_key(|l| std::cmp::Reverse(l.split_whitespace().nth(1).unwrap_or("").to_owned()));
    let commit = decls.iter().position(|l| *l == "COMMIT").unwrap();
    let mut text = String::from(head);
    for l in &decls[..commit] {
        text.push_str(l);
        text.push('\n');
    }
    for l in &rules {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    let opts = PlanOptions {
        scheduler: String::new(),
        node_ips: vec![IpAddr::from([192, 168, 0, 2])],
    };
    let a = full(&inventory_from_str("a", OVERALL).unwrap(), &opts);
    let b = full(&inventory_from_str("b", &text).unwrap(), &opts);
    assert_eq!(a, b);
}
