//! The Node patch and the Event against the mock API server. Expected requests from the API
//! reference: `PATCH /api/v1/nodes/{name}` with `Content-Type: application/merge-patch+json`
//! answered with the Node; `POST /api/v1/namespaces/{namespace}/events` with a core/v1 Event
//! answered 201 with it.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::error::ErrorClass;
use crate::testing::{mock_api, rbac::Grants};

fn grants() -> Grants {
    Grants::parse(
        include_str!("../../../../deploy/rbac.yaml"),
        "kube-system",
        "ipvs-migrate",
    )
    .expect("rbac")
}

fn status() -> NodeStatus {
    NodeStatus {
        phase: "soak".into(),
        namespaces: [("shop".to_owned(), "soak".to_owned())].into(),
        since: "2026-11-25T01:00:00Z".into(),
        rollbacks: 1,
        version: "0.1.0".into(),
    }
}

#[tokio::test]
async fn the_phase_label_and_details_annotation_go_in_one_merge_patch() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let ex = server.expect("PATCH", "/api/v1/nodes/node-1", &[]).await;
        assert_eq!(
            ex.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let body = ex.body_json();
        assert_eq!(body["metadata"]["labels"]["ipvs-migrate.io/phase"], "soak");
        let details: serde_json::Value = serde_json::from_str(
            body["metadata"]["annotations"]["ipvs-migrate.io/status"]
                .as_str()
                .expect("annotation is a string"),
        )
        .expect("annotation is JSON");
        assert_eq!(
            details,
            json!({"phase": "soak", "namespaces": {"shop": "soak"},
                   "since": "2026-11-25T01:00:00Z", "rollbacks": 1, "version": "0.1.0"})
        );
        ex.respond_json(
            200,
            &json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "node-1", "labels": {"ipvs-migrate.io/phase": "soak"}}}),
        );
        server
    });
    patch_node(&api, "node-1", &status())
        .await
        .expect("patched");
    drop(api);
    let calls = task.await.expect("server").finish().await;
    assert!(calls.iter().all(|c| grants().allows(c)), "{calls:?}");
}

#[tokio::test]
async fn a_rollback_is_a_warning_event_about_the_node_in_default() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let ex = server
            .expect("POST", "/api/v1/namespaces/default/events", &[])
            .await;
        let ev = ex.body_json();
        assert_eq!(
            ev["involvedObject"],
            json!({"kind": "Node", "apiVersion": "v1", "name": "node-1", "uid": "u-1"})
        );
        assert_eq!(
            (ev["type"].as_str(), ev["reason"].as_str()),
            (Some("Warning"), Some("RolledBack"))
        );
        assert_eq!(
            ev["source"],
            json!({"component": "ipvs-migrate", "host": "node-1"})
        );
        assert_eq!(ev["firstTimestamp"], "2026-11-25T01:00:00Z");
        assert_eq!(ev["count"], 1);
        let mut created = ev.clone();
        created["metadata"]["uid"] = json!("e-1");
        ex.respond_json(201, &created);
        server
    });
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_568_400);
    let note = EventNote {
        reason: "RolledBack".into(),
        message: "namespace shop rolled back: rejection ratio above 1%".into(),
        warning: true,
    };
    record_event(&api, "node-1", Some("u-1"), &note, at)
        .await
        .expect("created");
    drop(api);
    let calls = task.await.expect("server").finish().await;
    assert!(calls.iter().all(|c| grants().allows(c)), "{calls:?}");
}

#[tokio::test]
async fn a_patch_of_a_deleted_node_is_not_found() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server
            .expect("PATCH", "/api/v1/nodes/node-1", &[])
            .await
            .respond_status(
                404,
                "NotFound",
                "nodes \"node-1\" not found",
                json!({"name": "node-1", "kind": "nodes"}),
            );
    });
    let err = patch_node(&api, "node-1", &status())
        .await
        .expect_err("404");
    task.await.expect("server");
    assert_eq!(err.class(), ErrorClass::Missing);
    assert!(err.to_string().contains("nodes node-1"), "{err}");
}

#[test]
fn phases_become_valid_label_values() {
    for (phase, label) in [
        ("soak", "soak"),
        ("rolling back", "rolling-back"),
        ("-x-", "x"),
        ("", "unknown"),
        ("√", "unknown"),
    ] {
        assert_eq!(label_value(phase), label, "{phase:?}");
    }
    assert_eq!(label_value(&"a".repeat(80)).len(), 63);
}
