//! The HTTP surface through tower's `oneshot` (no sockets): health, readiness, status and
//! metrics, and the webhook's authentication, parsing and deduplication. The real-socket test
//! (start, GET, SIGTERM, exit 0) is agent/cli/tests/serve.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ipvsmig_host::apply::{Owned, Record};
use ipvsmig_host::journal::Journal;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::alerts::Trigger;
use super::http::{App, router};

mod security;

const TOKEN: &str = "s3cret-token";
const BOOT: &str = "3f2c1e9a-0000-4000-8000-000000000001";
const NODE: &str = "node-a";

/// A state directory and a host root whose boot id is [`BOOT`].
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let random = dir.path().join("root/proc/sys/kernel/random");
        std::fs::create_dir_all(&random).unwrap();
        std::fs::write(random.join("boot_id"), format!("{BOOT}\n")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        Fixture { dir }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn app(&self, token: Option<&str>) -> (Arc<App>, mpsc::Receiver<Trigger>) {
        self.app_limited(
            token,
            super::ratelimit::DEFAULT_RATE,
            super::ratelimit::DEFAULT_BURST,
        )
    }

    /// An app whose webhook admits `burst` calls, then `rate` a second.
    fn app_limited(
        &self,
        token: Option<&str>,
        rate: f64,
        burst: u32,
    ) -> (Arc<App>, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(8);
        let app = App::new(
            NODE.into(),
            self.state(),
            self.dir.path().join("root"),
            token.map(str::to_owned),
            tx,
        )
        .with_rate_limit(rate, burst)
        // The report audits the bundled snapshot here, never this machine.
        .with_report(super::report::ReportState::new(
            super::report::Source::Demo,
            std::time::Duration::from_secs(60),
        ));
        (Arc::new(app), rx)
    }

    /// A journal damaged before its last line (a torn last line alone is only reported).
    fn damage(&self) {
        std::fs::write(
            self.state().join("journal.jsonl"),
            "damaged\nstill damaged\n",
        )
        .unwrap();
    }

    /// A journal saying `shop` is migrated (as `apply --no-watch` leaves it).
    fn migrated(&self) {
        let (mut j, _) = Journal::<Record>::open(&self.state(), BOOT).unwrap();
        j.append(&Record::State {
            step: "admit".into(),
            owned: Owned {
                namespaces: vec!["shop".into()],
                no_watch: true,
                ..Owned::default()
            },
        })
        .unwrap();
    }
}

async fn call(app: &Arc<App>, req: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let resp = router(Arc::clone(app)).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(auth: Option<&str>, body: impl Into<String>) -> Request<Body> {
    let mut b = Request::post("/api/v1/alerts").header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    b.body(Body::from(body.into())).unwrap()
}

fn bearer() -> Option<&'static str> {
    Some("Bearer s3cret-token")
}

/// An Alertmanager webhook payload (version 4) with one alert.
fn payload(status: &str, labels: Value) -> String {
    json!({
        "receiver": "ipvs-migrate",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": "rejections above 1%"},
            "startsAt": "2026-11-24T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": "IPVSMigrateRejectionRatioHigh"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"IPVSMigrateRejectionRatioHigh\"}",
        "truncatedAlerts": 0
    })
    .to_string()
}

fn ratio_alert(node: &str) -> Value {
    json!({
        "alertname": "IPVSMigrateRejectionRatioHigh",
        "node": node,
        "namespace": "shop",
        "severity": "critical",
        "ipvs_migrate_rollback": "true"
    })
}

fn drain(rx: &mut mpsc::Receiver<Trigger>) -> Vec<Trigger> {
    let mut out = Vec::new();
    while let Ok(t) = rx.try_recv() {
        out.push(t);
    }
    out
}

#[tokio::test]
async fn healthz_answers_ok_whatever_the_state() {
    let f = Fixture::new();
    f.damage();
    let (app, _rx) = f.app(None);
    let (code, _, body) = call(&app, get("/healthz")).await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn readyz_is_ok_once_the_journal_is_read_even_when_nothing_is_migrated() {
    let f = Fixture::new();
    let (app, _rx) = f.app(None);
    let (code, _, _) = call(&app, get("/readyz")).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_while_the_journal_cannot_be_read_and_says_why() {
    let f = Fixture::new();
    f.damage();
    let (app, _rx) = f.app(None);
    let (code, _, body) = call(&app, get("/readyz")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("journal"), "{body}");
    // Repaired: ready from then on.
    std::fs::remove_file(f.state().join("journal.jsonl")).unwrap();
    assert_eq!(call(&app, get("/readyz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_is_the_journal_as_status_json_shows_it() {
    let f = Fixture::new();
    f.migrated();
    let (app, _rx) = f.app(None);
    let (code, headers, body) = call(&app, get("/api/v1/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["apiVersion"], "ipvs-migrate/v1");
    assert_eq!(v["kind"], "MigrationStatus");
    assert_eq!(v["owned"]["namespaces"], json!(["shop"]));
    assert_eq!(v["watched"], false);
    // The very document `status -o json` prints.
    let doc = crate::migrate::status(&f.state(), &f.dir.path().join("root")).unwrap();
    assert_eq!(v, serde_json::to_value(&doc).unwrap());
}

#[tokio::test]
async fn status_of_a_damaged_journal_is_a_503_error_document() {
    let f = Fixture::new();
    f.damage();
    let (app, _rx) = f.app(None);
    let (code, _, body) = call(&app, get("/api/v1/status")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "Error");
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].trim())
}

#[tokio::test]
async fn metrics_are_openmetrics_text_labelled_with_the_node_and_start_at_zero() {
    let f = Fixture::new();
    let (app, _rx) = f.app(Some(TOKEN));
    let (code, headers, text) = call(&app, get("/metrics")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    for family in [
        "ipvs_migrate_reconcile_errors counter",
        "ipvs_migrate_rollback_triggers counter",
        "ipvs_migrate_webhook_refused counter",
        "process_start_time_seconds gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "ipvs_migrate_reconcile_errors_total{node=\"node-a\"}"
        ),
        Some("0")
    );
    assert_eq!(
        sample(
            &text,
            "ipvs_migrate_rollback_triggers_total{node=\"node-a\",source=\"alertmanager\"}"
        ),
        Some("0"),
        "{text}"
    );
    let start: f64 = sample(&text, "process_start_time_seconds{node=\"node-a\"}")
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 1.7e9, "{start}");
    // Nothing migrated: no per-namespace series, no phase, no switch expiry (a 0 would fire
    // IPVSMigrateSwitchExpiring); a family without series is left out of the exposition.
    for absent in [
        "ipvs_connections",
        "ipvs_migrate_probe_failures",
        "ipvs_migrate_phase_started_timestamp_seconds",
        "ipvs_migrate_switch_expires_timestamp_seconds",
    ] {
        assert!(!text.contains(&format!(" {absent} ")), "{absent}: {text}");
        assert!(!text.contains(&format!("{absent}{{")), "{absent}: {text}");
    }
}

#[tokio::test]
async fn per_namespace_series_carry_namespace_and_node() {
    let f = Fixture::new();
    let (app, _rx) = f.app(None);
    let ns = super::metrics::NamespaceLabels {
        namespace: "shop".into(),
    };
    app.metrics.rejected.get_or_create(&ns).inc_by(3);
    app.metrics.connections.get_or_create(&ns).inc_by(300);
    let (_, _, text) = call(&app, get("/metrics")).await;
    assert_eq!(
        sample(
            &text,
            "ipvs_connections_rejected_total{node=\"node-a\",namespace=\"shop\"}"
        ),
        Some("3"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "ipvs_connections_total{node=\"node-a\",namespace=\"shop\"}"
        ),
        Some("300")
    );
}

async fn metric(app: &Arc<App>, series: &str) -> String {
    let (_, _, text) = call(app, get("/metrics")).await;
    sample(&text, series).unwrap_or("absent").to_owned()
}

/// One table for the refused calls: (authorization, body, expected status).
#[tokio::test]
async fn unauthenticated_or_malformed_webhook_calls_are_refused_and_counted() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    let good = payload("firing", ratio_alert(NODE));
    let cases: &[(Option<&str>, &str, StatusCode)] = &[
        (None, &good, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong-token"), &good, StatusCode::UNAUTHORIZED),
        (Some("Bearer s3cret-toke"), &good, StatusCode::UNAUTHORIZED),
        (
            Some("Basic czNjcmV0LXRva2Vu"),
            &good,
            StatusCode::UNAUTHORIZED,
        ),
        (Some("s3cret-token"), &good, StatusCode::UNAUTHORIZED),
        (bearer(), "{not json", StatusCode::BAD_REQUEST),
        (bearer(), "{\"alerts\": []}", StatusCode::BAD_REQUEST),
        (
            bearer(),
            "{\"version\": \"3\", \"alerts\": []}",
            StatusCode::BAD_REQUEST,
        ),
        (
            bearer(),
            "{\"version\": \"4\", \"alerts\": [{\"status\": \"pending\", \"labels\": {}}]}",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (auth, body, want) in cases {
        let (code, headers, _) = call(&app, post(*auth, *body)).await;
        assert_eq!(code, *want, "{auth:?} {body}");
        if code == StatusCode::UNAUTHORIZED {
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    assert!(drain(&mut rx).is_empty());
    let series =
        |r: &str| format!("ipvs_migrate_webhook_refused_total{{node=\"node-a\",reason=\"{r}\"}}");
    assert_eq!(metric(&app, &series("unauthorized")).await, "5");
    assert_eq!(metric(&app, &series("malformed")).await, "4");
}

#[tokio::test]
async fn without_a_token_file_the_webhook_refuses_every_call() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(None);
    let (code, _, _) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_firing_rollback_alert_for_this_node_is_one_trigger() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    let (code, _, body) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        drain(&mut rx),
        vec![Trigger {
            alertname: "IPVSMigrateRejectionRatioHigh".into(),
            namespace: Some("shop".into()),
            starts_at: Some("2026-11-24T10:00:00Z".into()),
            summary: Some("rejections above 1%".into()),
        }]
    );
    let series = "ipvs_migrate_rollback_triggers_total{node=\"node-a\",source=\"alertmanager\"}";
    assert_eq!(metric(&app, series).await, "1");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    let (code, _, _) = call(
        &app,
        post(
            Some("bearer s3cret-token"),
            payload("firing", ratio_alert(NODE)),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[tokio::test]
async fn the_same_alert_fifty_times_is_still_one_trigger() {
    let f = Fixture::new();
    // Above the default burst: this is about deduplication, not the rate limit.
    let (app, mut rx) = f.app_limited(Some(TOKEN), 1000.0, 100);
    for _ in 0..50 {
        let (code, _, _) = call(&app, post(bearer(), payload("firing", ratio_alert(NODE)))).await;
        assert_eq!(code, StatusCode::OK);
    }
    assert_eq!(drain(&mut rx).len(), 1);
    let series = "ipvs_migrate_rollback_triggers_total{node=\"node-a\",source=\"alertmanager\"}";
    assert_eq!(metric(&app, series).await, "1");
}

#[tokio::test]
async fn resolved_then_firing_again_is_a_second_trigger() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    for status in [
        "firing", "firing", "resolved", "resolved", "firing", "firing",
    ] {
        let (code, _, _) = call(&app, post(bearer(), payload(status, ratio_alert(NODE)))).await;
        assert_eq!(code, StatusCode::OK);
    }
    assert_eq!(drain(&mut rx).len(), 2);
}

#[tokio::test]
async fn the_same_alert_for_another_namespace_is_its_own_trigger() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    let mut other = ratio_alert(NODE);
    other["namespace"] = json!("payments");
    let mut node_wide = ratio_alert(NODE);
    node_wide["alertname"] = json!("IPVSMigrateRejectionRateHigh");
    node_wide.as_object_mut().unwrap().remove("namespace");
    for labels in [ratio_alert(NODE), other, node_wide.clone(), node_wide] {
        call(&app, post(bearer(), payload("firing", labels))).await;
    }
    let got: Vec<(String, Option<String>)> = drain(&mut rx)
        .into_iter()
        .map(|t| (t.alertname, t.namespace))
        .collect();
    assert_eq!(
        got,
        vec![
            ("IPVSMigrateRejectionRatioHigh".into(), Some("shop".into())),
            (
                "IPVSMigrateRejectionRatioHigh".into(),
                Some("payments".into())
            ),
            ("IPVSMigrateRejectionRateHigh".into(), None),
        ]
    );
}

#[tokio::test]
async fn alerts_for_another_node_or_without_the_rollback_label_trigger_nothing() {
    let f = Fixture::new();
    let (app, mut rx) = f.app(Some(TOKEN));
    let mut no_label = ratio_alert(NODE);
    no_label
        .as_object_mut()
        .unwrap()
        .remove("ipvs_migrate_rollback");
    let mut label_false = ratio_alert(NODE);
    label_false["ipvs_migrate_rollback"] = json!("false");
    let mut no_node = ratio_alert(NODE);
    no_node.as_object_mut().unwrap().remove("node");
    for labels in [ratio_alert("node-b"), no_label, label_false, no_node] {
        let (code, _, body) = call(&app, post(bearer(), payload("firing", labels))).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_full_trigger_queue_answers_503_so_alertmanager_retries_and_the_retry_triggers() {
    let f = Fixture::new();
    let (tx, mut rx) = mpsc::channel(1);
    let app = Arc::new(App::new(
        NODE.into(),
        f.state(),
        f.dir.path().join("root"),
        Some(TOKEN.into()),
        tx,
    ));
    let mut other = ratio_alert(NODE);
    other["namespace"] = json!("payments");
    assert_eq!(
        call(&app, post(bearer(), payload("firing", ratio_alert(NODE))))
            .await
            .0,
        StatusCode::OK
    );
    // The queue holds one: the second namespace's trigger cannot be queued.
    let p = payload("firing", other);
    assert_eq!(
        call(&app, post(bearer(), p.clone())).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(drain(&mut rx).len(), 1);
    // Alertmanager's retry is not a duplicate: it was never handed on.
    assert_eq!(call(&app, post(bearer(), p)).await.0, StatusCode::OK);
    assert_eq!(drain(&mut rx)[0].namespace.as_deref(), Some("payments"));
}

#[test]
fn fixture_paths_exist() {
    let f = Fixture::new();
    assert!(Path::new(&f.state()).is_dir());
}

/// `/metrics` with every family given a series, so each is exposed.
async fn populated(app: &Arc<App>) -> String {
    let m = &app.metrics;
    let ns = super::metrics::NamespaceLabels {
        namespace: "shop".into(),
    };
    m.connections.get_or_create(&ns).inc();
    m.rejected.get_or_create(&ns).inc();
    m.probe_failures.get_or_create(&ns).inc();
    m.set_phase("shop", &ipvsmig_engine::cutover::Phase::Probe, 1.0);
    m.probe("shop", std::time::Duration::from_millis(1), true);
    m.switch_expires.get_or_create(&Vec::new()).set(1.0);
    // A node where every kernel counters file exists (IPVS loaded).
    let root = tempfile::tempdir().unwrap();
    for (rel, text) in [
        (
            ipvsmig_host::counters::IPVS_STATS,
            "Total Incoming Outgoing Incoming Outgoing\nConns Packets Packets Bytes Bytes\n1 2 3 4 5\n",
        ),
        (
            ipvsmig_host::counters::SNMP,
            "Icmp: OutDestUnreachs\nIcmp: 1\nTcp: OutRsts\nTcp: 2\n",
        ),
        (
            ipvsmig_host::counters::CONNTRACK_STATS,
            "entries drop\n00000001 00000002\n",
        ),
    ] {
        let p = root.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    m.node
        .refresh_node(&ipvsmig_host::counters::read(root.path()).unwrap());
    call(app, get("/metrics")).await.2
}

#[tokio::test]
async fn metrics_documented_here_are_the_metrics_served() {
    let f = Fixture::new();
    let (app, _rx) = f.app(None);
    let text = populated(&app).await;
    let mut served: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_owned(),
            None => l.to_owned(),
        })
        .collect();
    served.sort();
    let doc = include_str!("../../../../docs/metrics.md");
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect();
    documented.sort();
    assert_eq!(served, documented);
    // Every sample carries the node.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.contains("node=\"node-a\""), "{l}");
    }
}

#[tokio::test]
async fn metrics_reference_in_docs_is_generated_from_the_registry() {
    use super::metrics::reference;
    let f = Fixture::new();
    let (fresh_app, _rx) = f.app(None);
    let fresh = call(&fresh_app, get("/metrics")).await.2;
    let (app, _rx2) = f.app(None);
    let table = reference::table(&populated(&app).await, &fresh);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let want = reference::splice(&doc, &table).unwrap();
    if std::env::var_os("IPVSMIG_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    } else {
        assert!(
            doc == want,
            "docs/metrics.md's table differs from the registry: regenerate with IPVSMIG_UPDATE_DOCS=1 cargo test -p ipvs-migrate metrics_reference\n{table}"
        );
    }
}
