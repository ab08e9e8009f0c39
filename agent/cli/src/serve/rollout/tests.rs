//! The rollout task against the mock API server (requests and answers from the Kubernetes API
//! reference, as in ipvsmig-kube's migration tests) and a stand-in for the reconcile loop on
//! the other end of the channel: the watch delivers an object, this node claims a slot with
//! the status write, and only then is the wave handed to the loop — or nothing is, when the
//! write is forbidden.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::mpsc;
use std::time::Duration;

use ipvsmig_kube::testing::{MockApiServer, mock_api};
use serde_json::{Value, json};

use super::*;

const PATH: &str = "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations";

fn object(state: &str) -> Value {
    json!({
        "apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigration",
        "metadata": {"name": "workers", "resourceVersion": "100", "generation": 1,
                     "creationTimestamp": "2026-11-25T01:00:00Z"},
        "spec": {"waves": [{"name": "first", "namespaces": ["shop"], "exclude": ["shop/legacy"]},
                           {"namespaces": ["auth"]}],
                 "nodeSelector": {"matchLabels": {"role": "worker"}},
                 "thresholds": {"window": "2m", "rate": 5, "ratio": 0.05, "for": "30s"},
                 "soak": "30m", "maxNodesInParallel": 1, "state": state}
    })
}

/// Plays the API server until the status write, answering it with `put_code`; the watch is
/// left open (no further events). Returns the PUT's body.
async fn serve_until_put(
    server: &mut MockApiServer,
    state: &str,
    put_code: u16,
) -> (Value, Vec<ipvsmig_kube::testing::Pending>) {
    let mut open = Vec::new();
    loop {
        let ex = server.next().await;
        match (
            ex.method.as_str(),
            ex.path.as_str(),
            ex.query_value("watch"),
        ) {
            ("GET", PATH, Some("true")) => open.push(ex.hang()),
            ("GET", PATH, None) => ex.respond_json(
                200,
                &json!({
                "apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigrationList",
                "metadata": {"resourceVersion": "100"}, "items": [object(state)]}),
            ),
            ("GET", "/api/v1/nodes", _) => {
                assert_eq!(ex.query_value("labelSelector"), Some("role=worker"));
                ex.respond_json(
                    200,
                    &json!({
                    "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": "7"},
                    "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": {"name": "n1", "labels": {"role": "worker"}}}]}),
                );
            }
            ("PUT", p, _) if p == format!("{PATH}/workers/status") => {
                let body = ex.body_json();
                if put_code == 200 {
                    ex.respond_json(200, &body);
                } else {
                    ex.respond_status(put_code, "Forbidden", "ipvsmigrations.ipvs-migrate.io \"workers\" is forbidden: User \"system:serviceaccount:kube-system:ipvs-migrate\" cannot update resource \"ipvsmigrations/status\" in API group \"ipvs-migrate.io\" at the cluster scope", json!({"name": "workers", "group": "ipvs-migrate.io", "kind": "ipvsmigrations"}));
                }
                return (body, open);
            }
            (m, p, _) => panic!("unexpected request {m} {p}"),
        }
    }
}

/// A stand-in for the reconcile loop: a node in state `local`; records what it was asked to do.
fn fake_loop(local: Local) -> (mpsc::Sender<Msg>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<Msg>();
    let (seen_tx, seen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            match m {
                Msg::Rollout(ToAgent::Local { reply }) => {
                    let _ = reply.send(local.clone());
                }
                Msg::Rollout(ToAgent::Thresholds(t)) => {
                    let _ = seen_tx.send(format!("thresholds {t:?}"));
                }
                Msg::Rollout(ToAgent::Start {
                    namespaces,
                    exclude,
                    soak,
                    reply,
                }) => {
                    let _ = seen_tx.send(format!(
                        "start {namespaces:?} exclude {exclude:?} soak {}s",
                        soak.as_secs()
                    ));
                    let _ = reply.send(Ok("started".into()));
                }
                Msg::Rollout(ToAgent::RollBack {
                    namespaces, reply, ..
                }) => {
                    let _ = seen_tx.send(format!("rollback {namespaces:?}"));
                    let _ = reply.send(Ok("rolled back".into()));
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
    });
    (tx, seen_rx)
}

/// The next thing the stand-in loop was asked (the test's runtime is the driver's: wait
/// without blocking it).
async fn next_seen(seen: &mpsc::Receiver<String>) -> String {
    for _ in 0..100 {
        if let Ok(s) = seen.try_recv() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::from("nothing within 10 s")
}

fn rollout(api: ApiClient, inbox: mpsc::Sender<Msg>) -> Rollout {
    let cfg = RolloutConfig {
        enabled: true,
        period: Duration::from_secs(3600),
        node_list_period: Duration::from_secs(3600),
    };
    Rollout::new(api, "n1".into(), cfg, inbox)
}

#[tokio::test]
async fn the_watched_object_makes_this_node_claim_a_slot_then_start_wave_one() {
    let (api, mut server) = mock_api();
    let (inbox, seen) = fake_loop(Local::default());
    let task = tokio::spawn(rollout(api, inbox).run());
    let (body, _open) = tokio::time::timeout(
        Duration::from_secs(10),
        serve_until_put(&mut server, "Running", 200),
    )
    .await
    .unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "100");
    assert_eq!(body["status"]["nodes"]["n1"]["phase"], "InProgress");
    assert_eq!(body["status"]["nodes"]["n1"]["wave"], 1);
    let start = next_seen(&seen).await;
    assert_eq!(
        start,
        r#"start ["shop"] exclude ["shop/legacy"] soak 1800s"#
    );
    task.abort();
}

#[tokio::test]
async fn a_forbidden_claim_starts_nothing() {
    let (api, mut server) = mock_api();
    let (inbox, seen) = fake_loop(Local::default());
    let task = tokio::spawn(rollout(api, inbox).run());
    let (_, _open) = tokio::time::timeout(
        Duration::from_secs(10),
        serve_until_put(&mut server, "Running", 403),
    )
    .await
    .unwrap();
    // The round is over once the 403 is read; give it time to (wrongly) act.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen.try_recv().is_err(),
        "the loop was asked to act after a refused claim"
    );
    task.abort();
}

#[tokio::test]
async fn an_aborted_migration_has_the_loop_roll_back_what_the_node_holds() {
    let (api, mut server) = mock_api();
    let local = Local {
        migrated: ["shop".to_owned(), "manual".to_owned()].into(),
        cutover: None,
    };
    let (inbox, seen) = fake_loop(local);
    let task = tokio::spawn(rollout(api, inbox).run());
    // The summary (phase Aborting) is written first; the rollback follows.
    let (body, _open) = tokio::time::timeout(
        Duration::from_secs(10),
        serve_until_put(&mut server, "Aborted", 200),
    )
    .await
    .unwrap();
    assert_eq!(body["status"]["phase"], "Aborting");
    let mut asked = next_seen(&seen).await;
    if asked.starts_with("thresholds") {
        asked = next_seen(&seen).await;
    }
    assert_eq!(asked, r#"rollback ["shop"]"#);
    task.abort();
}
