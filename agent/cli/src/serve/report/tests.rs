//! `/` and `/api/v1/report` through tower's `oneshot`, on the bundled snapshot (offline): the
//! JSON is `audit -o json`'s content plus the migration section, the page shows the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ipvsmig_engine::report::{Document, Sample};
use ipvsmig_host::apply::{Owned, Record, RollbackEntry};
use ipvsmig_host::journal::Journal;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{ReportState, Source};
use crate::cli::{BackendArg, Inputs};
use crate::serve::http::{App, router};

const BOOT: &str = "3f2c1e9a-0000-4000-8000-000000000002";

/// An app on the bundled snapshot, its journal saying `shop` is migrated and `cart` was
/// rolled back by an alert.
fn app(dir: &tempfile::TempDir) -> Arc<App> {
    let random = dir.path().join("root/proc/sys/kernel/random");
    std::fs::create_dir_all(&random).unwrap();
    std::fs::write(random.join("boot_id"), format!("{BOOT}\n")).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (mut j, _) = Journal::<Record>::open(&state, BOOT).unwrap();
    let mut owned = Owned {
        namespaces: vec!["shop".into()],
        ..Owned::default()
    };
    owned.record_rollback(RollbackEntry {
        at: 1_700_000_000,
        namespaces: vec!["cart".into()],
        reason: "IPVSMigrateRejectionRatioHigh".into(),
        source: "alertmanager".into(),
    });
    j.append(&Record::State {
        step: "admit".into(),
        owned,
    })
    .unwrap();
    drop(j);
    let (tx, _rx) = mpsc::channel(1);
    let app = App::new("node-r".into(), state, dir.path().join("root"), None, tx)
        .with_report(ReportState::new(Source::Demo, Duration::from_secs(60)));
    Arc::new(app)
}

async fn get(app: &Arc<App>, path: &str) -> (StatusCode, String, String) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let resp = router(Arc::clone(app)).oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_report_json_is_the_audit_json_plus_the_migration_section() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    app.report.record(
        "shop",
        Sample {
            at: 1_700_000_100,
            total: 8,
            rejected: 2,
        },
    );
    let (status, ctype, body) = get(&app, "/api/v1/report").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ctype, "application/json");
    let mut report: Value = serde_json::from_str(&body).unwrap();
    // `audit --demo -o json`, computed independently of the daemon's cache.
    let built = crate::audit::audit(true, &Inputs::default(), BackendArg::Auto).unwrap();
    let mut audit = serde_json::to_value(Document::audit(&built.audit)).unwrap();
    assert_eq!(report["kind"], "Report");
    assert_eq!(audit["kind"], "Audit");
    let migration = report.as_object_mut().unwrap().remove("migration").unwrap();
    report.as_object_mut().unwrap().remove("kind");
    audit.as_object_mut().unwrap().remove("kind");
    assert_eq!(report, audit);
    assert_eq!(migration["node"], "node-r");
    let rows: Vec<(String, String)> = migration["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["namespace"].as_str().unwrap().to_owned(),
                r["phase"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("cart".to_owned(), "rolled-back".to_owned()),
            ("shop".to_owned(), "applied".to_owned())
        ]
    );
    assert_eq!(migration["namespaces"][1]["probes"], 8);
    assert_eq!(migration["namespaces"][1]["rejected"], 2);
    assert_eq!(
        migration["rollbacks"][0]["reason"],
        "IPVSMigrateRejectionRatioHigh"
    );
    assert_eq!(migration["rejections"]["shop"][0]["at"], 1_700_000_100u64);
}

#[tokio::test]
async fn the_report_page_is_html_with_the_verdict_the_migration_and_both_charts() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir);
    let (status, ctype, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "text/html; charset=utf-8");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.contains("Verdict: READY"),
        "the demo snapshot is ready"
    );
    assert!(page.contains("node node-r"));
    assert!(page.contains(r#"<tr data-namespace="shop"><td>shop</td><td>applied</td>"#));
    assert!(page.contains("IPVSMigrateRejectionRatioHigh"));
    assert!(page.contains(r#"id="chart-rejections""#));
    assert!(page.contains(r#"id="chart-rules""#));
}

#[tokio::test]
async fn a_failed_audit_answers_503_and_metrics_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let missing = dir.path().join("missing.txt");
    let app = Arc::new(
        App::new(
            "n".into(),
            dir.path().join("state"),
            dir.path().join("root"),
            None,
            tx,
        )
        .with_report(ReportState::new(
            Source::Node {
                inputs: Box::new(Inputs {
                    iptables_save: Some(missing),
                    ..Inputs::default()
                }),
                backend: BackendArg::Auto,
            },
            Duration::from_secs(60),
        )),
    );
    let random = dir.path().join("root/proc/sys/kernel/random");
    std::fs::create_dir_all(&random).unwrap();
    std::fs::write(random.join("boot_id"), format!("{BOOT}\n")).unwrap();
    let (status, _, body) = get(&app, "/api/v1/report").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "Error");
    assert!(
        v["message"].as_str().unwrap().contains("missing.txt"),
        "{body}"
    );
    let (status, _, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("missing.txt"));
    let (status, _, _) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
}
