//! `finalize`'s state check: does the node's IPVS hold exactly the full IPVS-mode plan, as it
//! must once kube-proxy runs in IPVS mode (it adopts the virtual servers the hybrid created and
//! programs the rest)? And which virtual servers are foreign — not in the plan — so the
//! IPVS-mode configuration must exclude them (`ipvs.excludeCIDRs`: kube-proxy's
//! `cleanLegacyService` deletes every unknown virtual server outside them on each sync;
//! kube-proxy-facts.md §2.1). Pure: compares two states it is given.

use std::fmt::Write as _;

use super::diff::{State, VsKey};

fn desc(k: &VsKey) -> String {
    match k.1 {
        std::net::IpAddr::V4(a) => format!("{}:{}/{}", a, k.2, k.0.as_str()),
        std::net::IpAddr::V6(a) => format!("[{}]:{}/{}", a, k.2, k.0.as_str()),
    }
}

/// Every difference between the observed state and the plan, described, for each planned
/// virtual server and address. Objects the plan does not have are not differences (they are
/// foreign, or services created after the inventory was read). A destination at weight 0 that
/// the plan lacks is an endpoint kube-proxy is still draining (graceful termination,
/// pkg/proxy/ipvs/graceful_termination.go; §2.3), not a difference.
pub fn differences(observed: &State, plan: &State) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in &plan.services {
        let Some(got) = observed.services.get(key) else {
            out.push(format!("virtual server {} is missing", desc(key)));
            continue;
        };
        let mut d = String::new();
        if got.scheduler != want.scheduler {
            let _ = write!(d, " scheduler {} (plan {})", got.scheduler, want.scheduler);
        }
        if got.flags != want.flags {
            let _ = write!(d, " flags {:#x} (plan {:#x})", got.flags, want.flags);
        }
        if got.timeout != want.timeout {
            let _ = write!(
                d,
                " persistence {} s (plan {} s)",
                got.timeout, want.timeout
            );
        }
        for (dest, w) in &want.dests {
            match got.dests.get(dest) {
                None => {
                    let _ = write!(d, " real server {}:{} missing", dest.0, dest.1);
                }
                Some(g) if g != w => {
                    let _ = write!(
                        d,
                        " real server {}:{} weight {g} (plan {w})",
                        dest.0, dest.1
                    );
                }
                Some(_) => {}
            }
        }
        for (dest, w) in &got.dests {
            if *w != 0 && !want.dests.contains_key(dest) {
                let _ = write!(d, " real server {}:{} not in the plan", dest.0, dest.1);
            }
        }
        if !d.is_empty() {
            out.push(format!("virtual server {}:{d}", desc(key)));
        }
    }
    for a in plan.addresses.keys() {
        if !observed.addresses.contains_key(a) {
            out.push(format!("address {a} is not bound on kube-ipvs0"));
        }
    }
    out
}

/// Virtual servers in the kernel that the plan does not have.
pub fn foreign(observed: &State, plan: &State) -> Vec<VsKey> {
    observed
        .services
        .keys()
        .filter(|k| !plan.services.contains_key(*k))
        .copied()
        .collect()
}

/// `ipvs.excludeCIDRs` entries covering those virtual servers' addresses (/32 or /128), sorted
/// and without duplicates.
pub fn exclude_cidrs(keys: &[VsKey]) -> Vec<String> {
    let mut v: Vec<String> = keys
        .iter()
        .map(|k| match k.1 {
            std::net::IpAddr::V4(a) => format!("{a}/32"),
            std::net::IpAddr::V6(a) => format!("{a}/128"),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::diff::{Owner, VsState};
    use super::*;
    use crate::inventory::Protocol;

    fn vs(sched: &str, dests: &[(&str, u16, u32)]) -> VsState {
        VsState {
            scheduler: sched.into(),
            flags: 0,
            timeout: 0,
            netmask: 0xffff_ffff,
            dests: dests
                .iter()
                .map(|(a, p, w)| ((a.parse().unwrap(), *p), *w))
                .collect::<BTreeMap<_, _>>(),
            owner: Owner::Foreign,
        }
    }

    fn key(a: &str) -> VsKey {
        (Protocol::Tcp, a.parse().unwrap(), 80)
    }

    #[test]
    fn equal_states_have_no_differences_and_extras_are_foreign_not_differences() {
        let mut plan = State::default();
        plan.services
            .insert(key("10.96.0.10"), vs("rr", &[("10.244.1.2", 8080, 1)]));
        plan.addresses
            .insert("10.96.0.10".parse().unwrap(), Owner::Us);
        let mut obs = plan.clone();
        obs.services.insert(key("192.0.2.1"), vs("wrr", &[]));
        // A draining endpoint (weight 0) kube-proxy keeps until its connections end.
        obs.services
            .get_mut(&key("10.96.0.10"))
            .unwrap()
            .dests
            .insert(("10.244.1.9".parse().unwrap(), 8080), 0);
        assert_eq!(differences(&obs, &plan), Vec::<String>::new());
        assert_eq!(foreign(&obs, &plan), [key("192.0.2.1")]);
        assert_eq!(exclude_cidrs(&foreign(&obs, &plan)), ["192.0.2.1/32"]);
    }

    #[test]
    fn each_kind_of_difference_is_named() {
        let mut plan = State::default();
        plan.services
            .insert(key("10.96.0.10"), vs("rr", &[("10.244.1.2", 8080, 1)]));
        plan.services.insert(key("10.96.0.11"), vs("rr", &[]));
        plan.addresses
            .insert("10.96.0.10".parse().unwrap(), Owner::Us);
        let mut obs = State::default();
        obs.services
            .insert(key("10.96.0.10"), vs("wrr", &[("10.244.1.3", 8080, 1)]));
        let d = differences(&obs, &plan);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("scheduler wrr (plan rr)"));
        assert!(
            d[0].contains("10.244.1.2:8080 missing")
                && d[0].contains("10.244.1.3:8080 not in the plan")
        );
        assert!(d[1].contains("10.96.0.11:80/tcp is missing"));
        assert!(d[2].contains("address 10.96.0.10"));
    }
}
