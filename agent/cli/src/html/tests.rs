//! The page: escaping of hostile strings, nothing loaded from anywhere, blockers first, the
//! migration section, dates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ipvsmig_engine::cutover::{Cutover, Phase};
use ipvsmig_engine::preflight::{Finding, Severity};
use ipvsmig_engine::report::migration::{Inputs, Rollback};
use ipvsmig_engine::report::{Audit, Document, History, Migration, NamespaceCount, Sample};

use super::{page, utc};
use crate::cli::BackendArg;

fn demo() -> Audit {
    crate::audit::audit(true, &crate::cli::Inputs::default(), BackendArg::Auto)
        .unwrap()
        .audit
}

const HOSTILE: &str = "<script>alert(1)</script>";

fn migration(node: &str, ns: &str, cutover: Option<&Cutover>, history: &History) -> Migration {
    let rollbacks = [Rollback {
        at: 1_000_500,
        namespaces: vec![ns.to_owned()],
        reason: format!("</td>{HOSTILE}"),
        source: "builtin".into(),
    }];
    Migration::build(Inputs {
        node,
        now: 1_001_000,
        started: 1_000_000,
        migrated: &[],
        no_watch: false,
        finalized: false,
        cutover,
        rollbacks: &rollbacks,
        history,
        last_failure: Some(HOSTILE),
    })
}

#[test]
fn every_hostile_string_is_escaped() {
    let mut a = demo();
    a.findings[0].evidence.push(HOSTILE.into());
    a.findings[0].title = format!("\"'>{HOSTILE}");
    a.summary.per_namespace.insert(
        format!("ns{HOSTILE}"),
        NamespaceCount {
            service_ports: 1,
            endpoints: 1,
            iptables_rules: 3,
        },
    );
    a.verdict.reasons.push(HOSTILE.into());
    a.plan.findings.push(ipvsmig_engine::plan::PlanFinding {
        id: HOSTILE.into(),
        service: HOSTILE.into(),
        message: HOSTILE.into(),
    });
    let mut h = History::default();
    for (at, rejected) in [(1_000_900, 0), (1_000_910, 5)] {
        h.record(
            HOSTILE,
            Sample {
                at,
                total: 10 + rejected,
                rejected,
            },
        );
    }
    let m = migration("\"><img src=x onerror=alert(2)>", HOSTILE, None, &h);
    let p = page(&Document::report(&a, &m));
    assert!(!p.contains("<script"), "an unescaped script tag");
    assert!(!p.contains("<img"), "an unescaped img tag");
    assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(p.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert!(p.contains("&quot;&#39;&gt;&lt;script&gt;"));
}

/// The values of `attr="..."` in `p`.
fn attrs<'a>(p: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!(" {attr}=\"");
    p.match_indices(&key)
        .filter_map(|(i, _)| {
            let rest = &p[i + key.len()..];
            rest.find('"').map(|e| &rest[..e])
        })
        .collect()
}

#[test]
fn the_page_loads_nothing_and_links_only_to_the_runbook() {
    let a = demo();
    let h = History::default();
    let m = migration("node-1", "shop", None, &h);
    for p in [page(&Document::audit(&a)), page(&Document::report(&a, &m))] {
        let lower = p.to_ascii_lowercase();
        for banned in [
            "http://", "https://", "<script", "<link", "<img", "<iframe", "<object", "<embed",
            " src=", "url(", "@import", "//cdn",
        ] {
            assert!(!lower.contains(banned), "the page contains {banned:?}");
        }
        let hrefs = attrs(&p, "href");
        assert!(
            hrefs.len() >= a.findings.len(),
            "a runbook link per finding"
        );
        for h in hrefs {
            assert!(
                h.starts_with("docs/runbooks/preflight.md#"),
                "a link that is not a runbook section: {h}"
            );
        }
    }
}

#[test]
fn blockers_come_first_then_warnings_then_notes() {
    let inv = ipvsmig_engine::inventory::inventory_from_str("empty", "*nat\nCOMMIT\n").unwrap();
    let plan = ipvsmig_engine::plan::full(&inv, &ipvsmig_engine::plan::PlanOptions::default());
    let f = |id: &str, s| Finding::new(id, s, format!("title of {id}"), vec![], "fix");
    let a = Audit::new(
        inv,
        vec![
            f("a-note", Severity::Info),
            f("b-warn", Severity::Warning),
            f("z-block", Severity::Blocker),
        ],
        &plan,
        None,
        false,
    );
    let p = page(&Document::audit(&a));
    let at = |s: &str| p.find(s).unwrap_or_else(|| panic!("{s} missing"));
    assert!(at("Verdict: NOT READY") < at("id=\"finding-z-block\""));
    assert!(at("id=\"finding-z-block\"") < at("id=\"finding-b-warn\""));
    assert!(at("id=\"finding-b-warn\"") < at("id=\"finding-a-note\""));
    assert!(p.contains("<li>blocker z-block: title of z-block</li>"));
}

#[test]
fn the_migration_section_shows_phases_rollbacks_and_the_rejection_chart() {
    let a = demo();
    let mut c = Cutover::new(vec![vec!["shop".into()]], vec![], 600, false);
    c.phase = Phase::Soak { until: 1_001_500 };
    c.since = 1_000_900;
    let mut h = History::default();
    for (at, total, rejected) in [(1_000_800, 0, 0), (1_000_810, 4, 0), (1_000_820, 8, 2)] {
        h.record(
            "shop",
            Sample {
                at,
                total,
                rejected,
            },
        );
    }
    let m = migration("node-1", "cart", Some(&c), &h);
    let p = page(&Document::report(&a, &m));
    assert!(p.contains("<tr data-namespace=\"shop\"><td>shop</td><td>soak</td><td>1970-01-12 14:01:40 UTC (1m40s ago)</td><td class=\"n\">8</td><td class=\"n\">2</td><td class=\"n\">0.20</td><td class=\"n\">25.0 %</td></tr>"), "{p}");
    assert!(p.contains("<tr data-namespace=\"cart\"><td>cart</td><td>rolled-back</td>"));
    assert!(p.contains(
        "id=\"cutover\">Cutover: wave 1 of 1 (<code>shop</code>), phase <strong>soak</strong> since 1970-01-12 14:01:40 UTC; the soak ends 1970-01-12 14:11:40 UTC (in 8m20s)"
    ));
    assert!(p.contains("<polyline class=\"series\" data-namespace=\"shop\""));
    assert!(p.contains("<table id=\"rollbacks\">"));
}

#[test]
fn utc_dates_are_the_calendars() {
    // Checked with `date -u -d @N`.
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
}
