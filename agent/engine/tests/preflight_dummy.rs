//! The `dummy` driver in preflight's kernel-modules check: kube-ipvs0 is a dummy link
//! (drivers/net/dummy.c), so a kernel known to lack it is a blocker, while a driver that cannot
//! be seen (no module tree, no kernel config) is only said — creating the link loads the module
//! through its "rtnl-link-dummy" alias. Facts are built by hand for each case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use ipvsmig_engine::preflight::checks::kernel_modules;
use ipvsmig_engine::preflight::{Finding, ModuleFacts, NodeFacts, Severity};

/// A 6.1 node with every IPVS module and conntrack loaded, and `extra` about dummy.
fn node(extra: impl FnOnce(&mut NodeFacts)) -> NodeFacts {
    let mut f = NodeFacts {
        kernel_release: Some("6.1.0-56-amd64".into()),
        modules: ModuleFacts {
            loaded: Some(
                ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..ModuleFacts::default()
        },
        ..NodeFacts::default()
    };
    extra(&mut f);
    f
}

fn check(f: &NodeFacts) -> Finding {
    let mut out = kernel_modules(f, "rr");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn dummy_line(f: &Finding) -> &str {
    f.evidence
        .iter()
        .find(|l| l.starts_with("dummy (kube-ipvs0): "))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no dummy evidence in {:?}", f.evidence))
}

#[test]
fn a_kernel_config_without_dummy_is_a_blocker_naming_it() {
    let f = check(&node(|f| {
        f.modules.config = Some(BTreeMap::from([(
            "CONFIG_IP_VS".to_owned(),
            "m".to_owned(),
        )]));
    }));
    assert_eq!(f.severity, Severity::Blocker);
    assert!(f.title.contains("dummy"), "{}", f.title);
    assert!(dummy_line(&f).contains("MISSING"), "{f:?}");
}

#[test]
fn a_module_tree_without_dummy_is_a_blocker_and_with_it_is_fine() {
    let without = check(&node(|f| {
        f.modules.loadable = Some(vec!["ip_vs_lc".into()])
    }));
    assert_eq!(without.severity, Severity::Blocker);
    let with = check(&node(|f| f.modules.loadable = Some(vec!["dummy".into()])));
    assert_eq!(with.severity, Severity::Info);
    assert!(dummy_line(&with).contains("loadable"), "{with:?}");
}

#[test]
fn an_unseen_driver_is_said_but_not_warned_about() {
    // Nothing tells: no module tree, no kernel config, not loaded.
    let f = check(&node(|_| {}));
    assert_eq!(f.severity, Severity::Info);
    assert!(dummy_line(&f).contains("unknown"), "{f:?}");
}

#[test]
fn an_existing_kube_ipvs0_proves_the_driver_and_builtin_counts() {
    let f = check(&node(|f| {
        f.kube_ipvs0 = true;
        f.modules.config = Some(BTreeMap::new());
    }));
    assert_eq!(f.severity, Severity::Info);
    assert!(dummy_line(&f).contains("kube-ipvs0 exists"), "{f:?}");
    let builtin = check(&node(|f| {
        f.modules.config = Some(BTreeMap::from([(
            "CONFIG_DUMMY".to_owned(),
            "y".to_owned(),
        )]));
    }));
    assert_eq!(builtin.severity, Severity::Info);
    assert!(dummy_line(&builtin).contains("built in"), "{builtin:?}");
}
