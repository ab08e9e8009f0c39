//! Mock-API scenarios for the slot protocol and the watch. Requests and answers follow the
//! Kubernetes API reference: a custom resource's status is replaced with
//! `PUT /apis/GROUP/VERSION/PLURAL/NAME/status` carrying `metadata.resourceVersion`, and a
//! stale one is refused with `409 Conflict` (reason `Conflict`, "the object has been
//! modified; please apply your changes to the latest version and try again"); a watch from a
//! compacted `resourceVersion` sends an `ERROR` event with a `410` `Status` (reason
//! `Expired`, "too old resource version"), after which a client lists again ("API
//! Concepts": efficient detection of changes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use futures_util::StreamExt;
use ipvsmig_engine::rollout::{Action, FleetPhase, Local, LocalPhase, NodePhase, Verdict, Wait};
use serde_json::{Value, json};

use super::*;
use crate::testing::rbac::Grants;
use crate::testing::{MockApiServer, mock_api, mock_api_with_timeout};

const PATH: &str = "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations";
const STATUS: &str = "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations/workers/status";
const NOW: u64 = 1_795_572_000; // 2026-11-25T02:00:00Z

fn object(rv: &str, spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "ipvs-migrate.io/v1alpha1",
        "kind": "IPVSMigration",
        "metadata": {"name": "workers", "resourceVersion": rv, "generation": 2,
                     "creationTimestamp": "2026-11-25T01:00:00Z", "uid": "5f0c"},
        "spec": spec,
        "status": status,
    })
}

fn spec(max: u32, state: &str) -> Value {
    json!({"waves": [{"name": "first", "namespaces": ["shop"]}, {"namespaces": ["auth"]}],
           "maxNodesInParallel": max, "haltAfterRollbacks": 2, "state": state, "soak": "30m"})
}

fn migration(v: Value) -> Migration {
    Migration::from_object(serde_json::from_value(v).unwrap()).unwrap()
}

fn fleet() -> BTreeMap<String, Labels> {
    ["n1", "n2"]
        .iter()
        .map(|n| ((*n).to_owned(), Labels::new()))
        .collect()
}

fn idle() -> Local {
    Local::default()
}

/// What another agent (`node`) wrote: its own decision on `status`, as JSON.
fn written_by(node: &str, m: &Migration) -> Value {
    let d = rollout::decide(&Input {
        plan: m.plan.as_ref().unwrap(),
        name: &m.name,
        generation: m.generation,
        status: &m.status,
        node,
        nodes: &fleet(),
        local: &idle(),
        now: NOW - 5,
    });
    serde_json::to_value(d.status.unwrap()).unwrap()
}

/// Every call the server saw is one deploy/rbac.yaml grants the agent.
fn assert_granted(server_calls: &[Call]) {
    let g = Grants::parse(
        include_str!("../../../../deploy/rbac.yaml"),
        "kube-system",
        "ipvs-migrate",
    )
    .unwrap();
    for c in server_calls {
        assert!(g.allows(c), "deploy/rbac.yaml does not allow {c}");
    }
}

async fn sync_with<F, Fut>(
    m: Migration,
    local: Local,
    play: F,
) -> (Result<Decision, MigrationError>, Vec<Call>)
where
    F: FnOnce(MockApiServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = MockApiServer> + Send + 'static,
{
    let (api, server) = mock_api();
    let task = tokio::spawn(play(server));
    let nodes = fleet();
    let ask = Ask {
        node: "n1",
        nodes: &nodes,
        local: &local,
        now: NOW,
    };
    let r = sync(&api, m, ask).await;
    drop(api);
    let calls = task.await.expect("server task").finish().await;
    assert_granted(&calls);
    (r, calls)
}

#[tokio::test]
async fn a_node_claims_a_slot_with_a_put_of_the_status_carrying_the_resource_version() {
    let m = migration(object("100", spec(1, "Running"), Value::Null));
    let (r, calls) = sync_with(m, idle(), |mut s| async move {
        let ex = s.expect("PUT", STATUS, &[]).await;
        let body = ex.body_json();
        assert_eq!(body["metadata"]["resourceVersion"], "100");
        assert_eq!(
            body["spec"]["state"], "Running",
            "the spec goes back unchanged"
        );
        let n1 = &body["status"]["nodes"]["n1"];
        assert_eq!(
            (n1["phase"].as_str(), n1["wave"].as_u64()),
            (Some("InProgress"), Some(1))
        );
        assert_eq!(n1["since"], "2026-11-25T02:00:00Z");
        assert_eq!(
            (
                body["status"]["phase"].as_str(),
                body["status"]["observedGeneration"].as_i64()
            ),
            (Some("Progressing"), Some(2))
        );
        let mut answer = body.clone();
        answer["metadata"]["resourceVersion"] = json!("101");
        ex.respond_json(200, &answer);
        s
    })
    .await;
    let d = r.unwrap();
    assert_eq!(d.verdict, Verdict::Starting(0));
    assert_eq!(
        d.action,
        Action::Start {
            wave: 0,
            namespaces: vec!["shop".into()],
            exclude: vec![]
        }
    );
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn a_conflict_means_reading_again_and_waiting_when_the_slots_are_gone() {
    let m = migration(object("100", spec(1, "Running"), Value::Null));
    // n2 won the race: the object now holds its claim at resourceVersion 101.
    let taken = object("101", spec(1, "Running"), written_by("n2", &m));
    let (r, calls) = sync_with(m, idle(), |mut s| async move {
        s.expect("PUT", STATUS, &[]).await.respond_status(
            409,
            "Conflict",
            "Operation cannot be fulfilled on ipvsmigrations.ipvs-migrate.io \"workers\": the object has been modified; please apply your changes to the latest version and try again",
            json!({"name": "workers", "group": "ipvs-migrate.io", "kind": "ipvsmigrations"}),
        );
        s.expect("GET", &format!("{PATH}/workers"), &[]).await.respond_json(200, &taken);
        s
    })
    .await;
    let d = r.unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Waiting(0, Wait::Slots(vec!["n2".into()]))
    );
    assert_eq!((d.action, d.status), (Action::None, None));
    assert_eq!(calls.len(), 2, "no second write: nothing of n1 changed");
}

#[tokio::test]
async fn a_halted_or_paused_migration_starts_nothing_and_writes_nothing() {
    for (state, rollbacks, phase, verdict) in [
        ("Running", 2, "Halted", Verdict::Halted),
        ("Paused", 0, "Paused", Verdict::Paused),
    ] {
        let status = json!({"phase": phase, "currentWave": 1, "rollbacks": rollbacks, "observedGeneration": 2,
            "nodes": {"n2": {"phase": "RolledBack", "wave": 1, "since": "2026-11-25T01:50:00Z", "heartbeat": "2026-11-25T01:50:00Z"}}});
        let m = migration(object("100", spec(2, state), status));
        let (r, calls) = sync_with(m, idle(), |s| async move { s }).await;
        let d = r.unwrap();
        assert_eq!((d.verdict, d.action), (verdict, Action::None), "{state}");
        assert!(calls.is_empty(), "{state}: {calls:?}");
    }
}

#[tokio::test]
async fn aborted_asks_for_the_rollback_of_what_the_node_holds() {
    let status = json!({"phase": "Aborting", "currentWave": 1, "rollbacks": 0, "observedGeneration": 2,
        "nodes": {"n1": {"phase": "InProgress", "wave": 1, "since": "2026-11-25T01:59:00Z", "heartbeat": "2026-11-25T01:59:00Z"}}});
    let m = migration(object("100", spec(1, "Aborted"), status));
    let local = Local {
        migrated: ["shop".to_owned()].into(),
        cutover: Some((["shop".to_owned()].into(), LocalPhase::InFlight)),
    };
    let (r, calls) = sync_with(m, local, |s| async move { s }).await;
    let d = r.unwrap();
    assert_eq!(d.verdict, Verdict::Aborting);
    assert!(matches!(d.action, Action::RollBack { ref namespaces, .. } if namespaces == &["shop"]));
    assert!(calls.is_empty());
}

#[tokio::test]
async fn a_forbidden_status_write_is_an_error_naming_the_rbac_rule_and_no_decision() {
    let m = migration(object("100", spec(1, "Running"), Value::Null));
    let (r, _) = sync_with(m, idle(), |mut s| async move {
        s.expect("PUT", STATUS, &[]).await.respond_status(
            403,
            "Forbidden",
            "ipvsmigrations.ipvs-migrate.io \"workers\" is forbidden: User \"system:serviceaccount:kube-system:ipvs-migrate\" cannot update resource \"ipvsmigrations/status\" in API group \"ipvs-migrate.io\" at the cluster scope",
            json!({"name": "workers", "group": "ipvs-migrate.io", "kind": "ipvsmigrations"}),
        );
        s
    })
    .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("forbidden (HTTP 403)")
            && e.contains("`update` on `ipvsmigrations.ipvs-migrate.io/status`"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unanswered_write_times_out_and_an_object_deleted_meanwhile_is_not_found() {
    let (api, mut server) = mock_api_with_timeout(std::time::Duration::from_millis(300));
    let task = tokio::spawn(async move {
        let pending = server.expect("PUT", STATUS, &[]).await.hang();
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        drop(pending);
        server
    });
    let nodes = fleet();
    let local = idle();
    let ask = Ask {
        node: "n1",
        nodes: &nodes,
        local: &local,
        now: NOW,
    };
    let m = migration(object("100", spec(1, "Running"), Value::Null));
    let e = sync(&api, m.clone(), ask).await.unwrap_err();
    assert!(
        matches!(&e, MigrationError::Kube(k) if matches!(**k, KubeError::Timeout { .. })),
        "{e}"
    );
    drop(api);
    task.await.unwrap().finish().await;

    let (r, _) = sync_with(m, idle(), |mut s| async move {
        s.expect("PUT", STATUS, &[]).await.respond_status(
            409,
            "Conflict",
            "the object has been modified",
            json!({"name": "workers"}),
        );
        s.expect("GET", &format!("{PATH}/workers"), &[])
            .await
            .respond_status(
                404,
                "NotFound",
                "ipvsmigrations.ipvs-migrate.io \"workers\" not found",
                json!({"name": "workers"}),
            );
        s
    })
    .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("not found (HTTP 404)") && e.contains("ipvsmigrations.ipvs-migrate.io workers"),
        "{e}"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_with_its_field_and_nothing_is_written() {
    let mut s = spec(1, "Running");
    s["soak"] = json!("30 minutes");
    let (r, calls) = sync_with(
        migration(object("100", s, Value::Null)),
        idle(),
        |s| async move { s },
    )
    .await;
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with("IPVSMigration workers: spec.soak:"), "{e}");
    assert!(calls.is_empty());
}

#[tokio::test]
async fn nodes_are_listed_metadata_only_with_the_plans_selector() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let ex = server
            .expect("GET", "/api/v1/nodes", &[("labelSelector", "role=worker")])
            .await;
        // kube-client asks for the metadata-only form (API Concepts: "Receiving resources as
        // Tables" / PartialObjectMetadata via the Accept header).
        ex.respond_json(
            200,
            &json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "7"},
                "items": [
                    {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                     "metadata": {"name": "n1", "labels": {"role": "worker", "canary": "yes"}}},
                    {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                     "metadata": {"name": "n2", "labels": {"role": "worker"}}}
                ]
            }),
        );
        server
    });
    let sel: rollout::selector::LabelSelector =
        serde_json::from_value(json!({"matchLabels": {"role": "worker"}})).unwrap();
    let nodes = super::nodes(&api, Some(&sel)).await.unwrap();
    drop(api);
    assert_granted(&task.await.unwrap().finish().await);
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(nodes["n1"].get("canary").map(String::as_str), Some("yes"));
}

#[tokio::test]
async fn the_watch_lists_then_watches_and_lists_again_after_410_gone() {
    let (api, mut server) = mock_api();
    let first = object("100", spec(1, "Running"), Value::Null);
    let second = object("250", spec(1, "Paused"), Value::Null);
    let task = tokio::spawn(async move {
        let list = |rv: &str, item: &Value| json!({"apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigrationList", "metadata": {"resourceVersion": rv}, "items": [item]});
        server
            .expect("GET", PATH, &[])
            .await
            .respond_json(200, &list("100", &first));
        let ex = server
            .expect(
                "GET",
                PATH,
                &[
                    ("watch", "true"),
                    ("resourceVersion", "100"),
                    ("allowWatchBookmarks", "true"),
                ],
            )
            .await;
        let gone = json!({"type": "ERROR", "object": crate::testing::status_body(410, "Expired", "too old resource version: 100 (240)", json!({}))});
        ex.respond_raw(200, "application/json", format!("{gone}\n").into_bytes());
        server
            .expect("GET", PATH, &[])
            .await
            .respond_json(200, &list("250", &second));
        server
    });
    let mut stream = std::pin::pin!(watch(&api));
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 7 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(match ev {
            Ok(watcher::Event::Init) => "init".into(),
            Ok(watcher::Event::InitApply(o)) => format!(
                "object rv {}",
                o.metadata.resource_version.unwrap_or_default()
            ),
            Ok(watcher::Event::InitDone) => "done".into(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!(
                "error {}",
                if e.to_string().contains("410") || format!("{e:?}").contains("410") {
                    "410"
                } else {
                    "other"
                }
            ),
        });
    }
    assert_eq!(
        seen,
        [
            "init",
            "object rv 100",
            "done",
            "error 410",
            "init",
            "object rv 250",
            "done"
        ]
    );
    drop(api);
    let server = task.await.unwrap();
    assert_granted(&server.calls());
}

#[test]
fn a_status_written_by_this_build_reads_back_the_same() {
    let m = migration(object("1", spec(1, "Running"), Value::Null));
    let v = written_by("n2", &m);
    let back: Status = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), v);
    assert_eq!(back.phase, Some(FleetPhase::Progressing));
    assert_eq!(back.nodes["n2"].phase, NodePhase::InProgress);
}
