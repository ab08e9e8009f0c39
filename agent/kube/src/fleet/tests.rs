//! fleet status against the mock API server: NodeList, PodList (kube-system, label selector)
//! and the IPVSMigration list, in the API reference's shapes. The scenario: node-1 migrated
//! and reporting, node-2 untouched, node-3 after a `kubeadm upgrade` that rewrote the
//! kube-proxy DaemonSet, so both the original and finalize's kube-proxy run there.

use serde_json::{Value, json};

use super::*;
use crate::testing::mock_api;

fn node(name: &str, phase: Option<&str>, status: Option<&str>) -> Value {
    let mut n = json!({"metadata": {"name": name, "creationTimestamp": "2026-01-02T03:04:05Z"}});
    if let Some(p) = phase {
        n["metadata"]["labels"] = json!({"ipvs-migrate.io/phase": p});
    }
    if let Some(s) = status {
        n["metadata"]["annotations"] = json!({"ipvs-migrate.io/status": s});
    }
    n
}

fn pod(name: &str, node: &str, ds: &str, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "kube-system",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds,
                                          "uid": format!("uid-{ds}"), "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "kube-proxy"}]},
        "status": {"phase": phase}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items})
}

async fn serve_nodes_and_pods(server: &mut crate::testing::MockApiServer) {
    server
        .expect("GET", "/api/v1/nodes", &[("limit", "500")])
        .await
        .respond_json(
            200,
            &list(
                "NodeList",
                vec![
                    node("node-2", None, None),
                    node(
                        "node-1",
                        Some("committed"),
                        Some(r#"{"phase":"committed","namespaces":{"shop":"committed"},"since":"2026-11-25T01:00:00Z","rollbacks":0,"version":"0.1.0"}"#),
                    ),
                    node("node-3", Some("finalized"), Some("{not json")),
                ],
            ),
        );
    server
        .expect(
            "GET",
            "/api/v1/namespaces/kube-system/pods",
            &[("labelSelector", "k8s-app in (kube-proxy,kube-proxy-ipvs)")],
        )
        .await
        .respond_json(
            200,
            &list(
                "PodList",
                vec![
                    pod("kube-proxy-a", "node-1", "kube-proxy", "Running"),
                    pod("kube-proxy-b", "node-2", "kube-proxy", "Running"),
                    pod("kube-proxy-c", "node-3", "kube-proxy", "Running"),
                    pod("kube-proxy-ipvs-d", "node-3", "kube-proxy-ipvs", "Running"),
                ],
            ),
        );
}

/// fleet status from a server that serves the nodes and pods above and answers the
/// IPVSMigration list with `answer`; also the calls made.
async fn read_with(
    answer: impl FnOnce(crate::testing::Exchange) + Send + 'static,
) -> (FleetStatus, Vec<crate::error::Call>) {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        serve_nodes_and_pods(&mut server).await;
        answer(
            server
                .expect("GET", "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations", &[])
                .await,
        );
        server
    });
    let fleet = read_fleet(&api).await.expect("read");
    drop(api);
    let calls = task.await.expect("server").finish().await;
    (fleet, calls)
}

#[tokio::test]
async fn fleet_status_shows_phases_and_flags_a_node_with_two_kube_proxies() {
    let (fleet, calls) = read_with(|ex| {
        ex.respond_json(
            200,
&json!({"kind": "IPVSMigrationList", "apiVersion": "ipvs-migrate.io/v1alpha1",
                        "metadata": {"resourceVersion": "3"},
                        "items": [{"apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigration",
                                   "metadata": {"name": "workers-to-ipvs"},
                                   "spec": {"state": "Paused", "waves": []},
                                   "status": {"phase": "Halted", "rollbacks": 2}}]}),
            )
    })
    .await;
    let grants = crate::testing::rbac::Grants::of_cluster_role(
        include_str!("../../../../deploy/rbac.yaml"),
        "ipvs-migrate-fleet-viewer",
    )
    .expect("rbac");
    for c in &calls {
        assert!(
            grants.allows(c),
            "ipvs-migrate-fleet-viewer does not allow {c}"
        );
    }

    let names: Vec<&str> = fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    let flagged: Vec<&str> = fleet.flagged().map(|n| n.name.as_str()).collect();
    assert_eq!(flagged, ["node-3"]);
    assert_eq!(fleet.nodes[0].phase.as_deref(), Some("committed"));
    assert_eq!(
        fleet.nodes[0].status.as_ref().map(|s| s.namespaces.len()),
        Some(1)
    );
    assert_eq!(fleet.nodes[1].phase, None);
    assert_eq!(
        fleet.nodes[2].kube_proxies[1].daemon_set.as_deref(),
        Some("kube-proxy-ipvs")
    );
    assert_eq!(
        fleet.migrations,
        [FleetMigration {
            name: "workers-to-ipvs".into(),
            state: Some("Paused".into()),
            phase: Some("Halted".into()),
            rollbacks: Some(2),
        }]
    );
    assert_eq!(fleet.notes.len(), 1, "{:?}", fleet.notes);
    assert!(fleet.notes[0].contains("node-3"), "{:?}", fleet.notes);
}

#[tokio::test]
async fn a_cluster_without_the_crd_still_shows_its_nodes() {
    // An API path of a resource that does not exist: the server answers 404 with a plain
    // "404 page not found" body, not a Status.
    let (fleet, _) = read_with(|ex| {
        ex.respond_raw(
            404,
            "text/plain; charset=utf-8",
            b"404 page not found\n".to_vec(),
        );
    })
    .await;
    assert_eq!(fleet.nodes.len(), 3);
    assert!(
        fleet.notes[0].contains("CRD is not installed"),
        "{:?}",
        fleet.notes
    );
}

#[tokio::test]
async fn fleet_status_without_the_right_to_list_nodes_fails_naming_it() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server.expect("GET", "/api/v1/nodes", &[]).await.respond_status(
            403,
            "Forbidden",
            "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
            json!({"kind": "nodes"}),
        );
    });
    let err = read_fleet(&api).await.expect_err("403");
    task.await.expect("server");
    assert!(err.to_string().contains("may not list nodes"), "{err}");
}

#[test]
fn ages_read_like_kubectl() {
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_568_400);
    for (t, want) in [
        ("2026-11-25T00:59:00Z", Some("60s")),
        ("2026-11-25T00:00:00Z", Some("60m")),
        ("2026-11-24T01:00:00Z", Some("24h")),
        ("2026-11-20T01:00:00Z", Some("5d")),
        ("yesterday", None),
    ] {
        assert_eq!(age(t, now).as_deref(), want, "{t}");
    }
}
