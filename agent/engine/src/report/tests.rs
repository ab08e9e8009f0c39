//! Tests of the report value: the migration section's rows from the cutover machine's state,
//! the verdict, the per-namespace rule count against kube-proxy's rule layout.

use super::history::{History, Sample};
use super::migration::{Inputs, Migration, Rollback};
use super::*;
use crate::cutover::{Cutover, Phase};

fn inputs<'a>(
    migrated: &'a [String],
    cutover: Option<&'a Cutover>,
    rollbacks: &'a [Rollback],
    history: &'a History,
) -> Inputs<'a> {
    Inputs {
        node: "n1",
        now: 2000,
        started: 1000,
        migrated,
        no_watch: false,
        finalized: false,
        cutover,
        rollbacks,
        history,
        last_failure: None,
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn each_namespace_gets_the_phase_of_its_wave_and_rolled_back_ones_keep_their_time() {
    let mut c = Cutover::new(
        vec![names(&["a"]), names(&["b"]), names(&["c"])],
        vec![],
        60,
        false,
    );
    c.wave = 1;
    c.phase = Phase::Soak { until: 1900 };
    c.since = 1840;
    let rollbacks = [Rollback {
        at: 1500,
        namespaces: names(&["x"]),
        reason: "IPVSMigrateRejectionRatioHigh".into(),
        source: "builtin".into(),
    }];
    let mut h = History::default();
    for (at, total, rejected) in [(1800, 0, 0), (1810, 40, 0), (1820, 80, 10)] {
        h.record(
            "b",
            Sample {
                at,
                total,
                rejected,
            },
        );
    }
    let migrated = names(&["a", "b"]);
    let m = Migration::build(inputs(&migrated, Some(&c), &rollbacks, &h));
    let rows: Vec<(&str, &str, Option<u64>)> = m
        .namespaces
        .iter()
        .map(|r| (r.namespace.as_str(), r.phase.as_str(), r.since))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a", "committed", None),
            ("b", "soak", Some(1840)),
            ("c", "waiting", None),
            ("x", "rolled-back", Some(1500)),
        ]
    );
    let b = &m.namespaces[1];
    // 10 rejected in the last 10 s; 10 of 80 probes over the history.
    assert_eq!(
        (b.probes, b.rejected, b.rejection_rate, b.rejection_ratio),
        (80, 10, Some(1.0), Some(0.125))
    );
    assert_eq!(m.cutover.as_ref().map(|c| c.wave), Some(2));
    assert!(m.watched);
}

#[test]
fn a_stopped_cutover_leaves_later_waves_out_and_an_alert_rolled_back_wave_is_not_committed() {
    let mut c = Cutover::new(vec![names(&["a"]), names(&["b"])], vec![], 60, false);
    c.wave = 1;
    c.phase = Phase::RolledBack {
        reason: "probe failed".into(),
    };
    c.since = 1900;
    let rollbacks = [Rollback {
        at: 1890,
        namespaces: names(&["a", "b"]),
        reason: "probe failed".into(),
        source: "probe".into(),
    }];
    let h = History::default();
    let m = Migration::build(inputs(&[], Some(&c), &rollbacks, &h));
    let rows: Vec<(&str, &str)> = m
        .namespaces
        .iter()
        .map(|r| (r.namespace.as_str(), r.phase.as_str()))
        .collect();
    assert_eq!(rows, vec![("a", "rolled-back"), ("b", "rolled-back")]);
    assert_eq!(
        m.cutover.and_then(|c| c.detail),
        Some("probe failed".to_owned())
    );
    assert!(!m.watched);
}

#[test]
fn the_verdict_puts_blockers_first_and_names_the_equivalence_result() {
    use crate::preflight::{Finding, Severity};
    let inv = crate::inventory::inventory_from_str("empty", "*nat\nCOMMIT\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = crate::plan::full(&inv, &crate::plan::PlanOptions::default());
    let findings = vec![
        Finding::new("z-info", Severity::Info, "context", vec![], "nothing"),
        Finding::new("a-block", Severity::Blocker, "no IPVS", vec![], "load it"),
    ];
    let a = Audit::new(inv, findings, &plan, None, false);
    assert_eq!(a.verdict.status, "not-ready");
    assert_eq!(a.verdict.reasons[0], "blocker a-block: no IPVS");
    assert_eq!(a.findings[0].id, "a-block");
    let doc = serde_json::to_value(Document::audit(&a)).unwrap_or_default();
    assert_eq!(doc["kind"], "Audit");
    assert_eq!(doc["apiVersion"], "ipvs-migrate/v1");
    assert!(doc.get("migration").is_none());
}
