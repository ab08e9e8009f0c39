//! Parity of the built-in rollback evaluator (agent/engine/src/rollback.rs) with Prometheus:
//! the same counter series go to our evaluator and, with the very same generated rules
//! (rules.rs, default window and thresholds), to `promtool test rules`. Every minute of every
//! scenario, the alerts our evaluator says are firing must be exactly the alerts promtool
//! says are firing — promtool is the oracle. Scenarios sit on both sides of the thresholds.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use ipvsmig_engine::rollback::{Alert, Evaluator, NodeSeries, Thresholds};
use ipvsmig_engine::rules::{M_REJECTED, M_TOTAL, Params, render};
use ipvsmig_tests::tool_available;

const STEP: f64 = 15.0;
const MINUTES: usize = 20;

/// Per-second rates per 15 s step -> counter values.
fn counter(rates: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    let mut v = 0.0;
    let mut out = Vec::new();
    let n = (MINUTES as f64 * 60.0 / STEP) as usize;
    for i in 0..=n {
        let t = i as f64 * STEP;
        if i > 0 {
            v += (rates(t) * STEP).round();
        }
        out.push((t, v));
    }
    out
}

struct Scenario {
    name: &'static str,
    series: NodeSeries,
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut add = |name: &'static str,
                   rej: Vec<(&str, Vec<(f64, f64)>)>,
                   tot: Vec<(&str, Vec<(f64, f64)>)>| {
        let mut s = NodeSeries::default();
        for (ns, v) in rej {
            s.rejected.insert(ns.into(), v);
        }
        for (ns, v) in tot {
            s.total.insert(ns.into(), v);
        }
        out.push(Scenario { name, series: s });
    };
    add(
        "quiet",
        vec![("shop", counter(|_| 0.0)), ("auth", counter(|_| 0.0))],
        vec![("shop", counter(|_| 50.0)), ("auth", counter(|_| 20.0))],
    );
    add(
        "ratio-burst-from-minute-5",
        vec![
            ("shop", counter(|t| if t > 300.0 { 1.0 } else { 0.0 })),
            ("auth", counter(|_| 0.0)),
        ],
        vec![("shop", counter(|_| 50.0)), ("auth", counter(|_| 20.0))],
    );
    add(
        "node-rate-storm-split-over-namespaces",
        vec![
            ("shop", counter(|t| if t > 240.0 { 8.0 } else { 0.0 })),
            ("auth", counter(|t| if t > 240.0 { 7.0 } else { 0.0 })),
        ],
        vec![("shop", counter(|_| 2000.0)), ("auth", counter(|_| 2000.0))],
    );
    add(
        "just-under-both-thresholds",
        vec![("shop", counter(|_| 9.0))],
        vec![("shop", counter(|_| 1000.0))],
    );
    add(
        "ratio-just-over",
        vec![("shop", counter(|_| 2.0))],
        vec![("shop", counter(|_| 180.0))],
    );
    let mut reset = counter(|_| 4.0);
    for p in reset.iter_mut().skip(40) {
        p.1 -= 150.0 * 4.0 * STEP / STEP; // the counter restarts (agent restart) at minute 10
        p.1 = p.1.max(0.0);
    }
    add(
        "counter-reset-mid-storm",
        vec![("shop", reset)],
        vec![("shop", counter(|_| 100.0))],
    );
    add(
        "rejecting-with-no-total-series-growth",
        vec![("shop", counter(|t| if t > 420.0 { 0.5 } else { 0.0 }))],
        vec![("shop", counter(|_| 0.0))],
    );
    add(
        "appears-late-just-over-the-rate",
        vec![("shop", late(205.0 + 5.0, 10.6))],
        vec![("shop", late(210.0, 2000.0))],
    );
    add(
        "appears-late-just-under-the-rate",
        vec![("shop", late(210.0, 9.8))],
        vec![("shop", late(210.0, 2000.0))],
    );
    add(
        "storm-that-stops",
        vec![(
            "shop",
            counter(|t| {
                if (180.0..480.0).contains(&t) {
                    30.0
                } else {
                    0.0
                }
            }),
        )],
        vec![("shop", counter(|_| 3000.0))],
    );
    out
}

/// A series that only exists from `from` seconds on, already counting (scraped late): the
/// rate windows that see its beginning are extrapolated, which is where evaluators disagree.
fn late(from: f64, per_sec: f64) -> Vec<(f64, f64)> {
    counter(|_| per_sec)
        .into_iter()
        .filter(|(t, _)| *t >= from)
        .map(|(t, _)| (t, 50_000.0 + ((t - from) * per_sec).round()))
        .collect()
}

/// promtool's notation over the 15 s grid: `_` where the series has no sample.
fn values(v: &[(f64, f64)]) -> String {
    let n = (MINUTES as f64 * 60.0 / STEP) as usize;
    (0..=n)
        .map(|i| {
            let t = i as f64 * STEP;
            v.iter()
                .find(|(ts, _)| (*ts - t).abs() < 1e-9)
                .map_or("_".to_owned(), |(_, x)| format!("{x}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_builtin_evaluator_fires_exactly_when_promtool_does() {
    if !tool_available("rules_parity", "promtool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let params = Params {
        annotations: false,
        ..Params::default()
    };
    std::fs::write(dir.path().join("rules.yml"), render(&params)).unwrap();
    let th = Thresholds::default();
    assert_eq!(
        (th.window, th.rate, th.ratio, th.for_secs),
        (300.0, params.rate, params.ratio, 60.0)
    );

    let mut y = String::from("rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n");
    let mut fired_somewhere = 0;
    let mut silent_somewhere = 0;
    for sc in scenarios() {
        let _ = writeln!(y, "  # {}\n  - interval: 15s\n    input_series:", sc.name);
        for (metric, map) in [
            (M_REJECTED, &sc.series.rejected),
            (M_TOTAL, &sc.series.total),
        ] {
            for (ns, v) in map {
                let _ = writeln!(
                    y,
                    "      - series: '{metric}{{node=\"n1\",namespace=\"{ns}\"}}'\n        values: '{}'",
                    values(v)
                );
            }
        }
        y.push_str("    alert_rule_test:\n");
        let mut ev = Evaluator::new(th.clone());
        for minute in 0..MINUTES {
            let t = minute as f64 * 60.0;
            let firing = ev.eval(&sc.series, t);
            let mut by_name: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
            by_name.insert("IPVSMigrateRejectionRateHigh", vec![]);
            by_name.insert("IPVSMigrateRejectionRatioHigh", vec![]);
            for a in &firing {
                by_name.entry(a.name()).or_default().push(a);
            }
            for (name, alerts) in by_name {
                if alerts.is_empty() {
                    silent_somewhere += 1;
                } else {
                    fired_somewhere += 1;
                }
                let _ = writeln!(y, "      - eval_time: {minute}m\n        alertname: {name}");
                if alerts.is_empty() {
                    y.push_str("        exp_alerts: []\n");
                    continue;
                }
                y.push_str("        exp_alerts:\n");
                for a in alerts {
                    y.push_str("          - exp_labels:\n              node: n1\n              severity: critical\n              ipvs_migrate_rollback: \"true\"\n");
                    if let Alert::RejectionRatio(ns) = a {
                        let _ = writeln!(y, "              namespace: {ns}");
                    }
                }
            }
        }
    }
    assert!(
        fired_somewhere > 10 && silent_somewhere > 10,
        "scenarios on both sides of the thresholds"
    );
    let test_file = dir.path().join("test.yml");
    std::fs::write(&test_file, &y).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test_file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool disagrees with the built-in evaluator:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_checked_in_rules_pass_promtool_check_and_their_unit_tests() {
    if !tool_available("rules_parity", "promtool") {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for args in [
        vec!["check", "rules", "rules/ipvs-migrate.rules.yml"],
        vec!["test", "rules", "rules/tests/alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
