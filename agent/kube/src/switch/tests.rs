//! The switch against the mock API server, with the manifests the engine writes for
//! `finalize --manifests`. Requests from the API reference: server-side apply is
//! `PATCH …?fieldManager=NAME` with `Content-Type: application/apply-patch+yaml`; a
//! strategic-merge patch `application/strategic-merge-patch+json`; the node label a merge patch.

use ipvsmig_engine::plan::switch::{LABEL_KEY, LABEL_VALUE, SwitchOptions, manifests};
use serde_json::json;

use super::*;
use crate::testing::{mock_api, rbac::Grants};

fn switch() -> Switch {
    let m = manifests(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
        &SwitchOptions {
            node: "node-1".into(),
            image: "registry.k8s.io/kube-proxy:v1.33.2".into(),
            ..SwitchOptions::default()
        },
    )
    .expect("manifests");
    let parse = |y: &str| -> Value { serde_saphyr::from_str(y).expect("manifest YAML") };
    Switch {
        namespace: "kube-system".into(),
        configmap: parse(&m.configmap),
        daemonset: parse(&m.daemonset),
        original: "kube-proxy".into(),
        patch: parse(&m.patch),
        node: "node-1".into(),
        label: (LABEL_KEY.into(), LABEL_VALUE.into()),
    }
}

#[tokio::test]
async fn the_switch_applies_both_objects_patches_the_original_then_labels_the_node() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server
            .expect("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy", &[])
            .await
            .respond_json(200, &json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy", "namespace": "kube-system"}}));
        for (path, kind) in [
            (
                "/api/v1/namespaces/kube-system/configmaps/kube-proxy-ipvs",
                "ConfigMap",
            ),
            (
                "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy-ipvs",
                "DaemonSet",
            ),
        ] {
            let ex = server
                .expect("PATCH", path, &[("fieldManager", "ipvs-migrate")])
                .await;
            assert_eq!(
                ex.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
            let body = ex.body_json();
            assert_eq!(body["kind"], kind);
            ex.respond_json(200, &body);
        }
        let ex = server
            .expect(
                "PATCH",
                "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
                &[],
            )
            .await;
        assert_eq!(
            ex.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        let terms = &ex.body_json()["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][0]["operator"], "NotIn");
        ex.respond_json(200, &json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy"}}));
        let ex = server.expect("PATCH", "/api/v1/nodes/node-1", &[]).await;
        assert_eq!(
            ex.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            ex.body_json(),
            json!({"metadata": {"labels": {"ipvs-migrate.io/kube-proxy-mode": "ipvs"}}})
        );
        ex.respond_json(
            200,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}),
        );
        server
    });
    let done = apply(&api, &switch())
        .await
        .map_err(|(_, e)| e)
        .expect("applied");
    drop(api);
    let calls = task.await.expect("server").finish().await;
    assert_eq!(done.len(), 5);
    let grants = Grants::of_cluster_role(
        include_str!("../../../../deploy/rbac.yaml"),
        "ipvs-migrate-finalize",
    )
    .expect("rbac");
    for c in &calls {
        assert!(grants.allows(c), "ipvs-migrate-finalize does not allow {c}");
    }
}

#[tokio::test]
async fn nothing_changes_when_the_original_daemonset_is_missing() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server
            .expect(
                "GET",
                "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
                &[],
            )
            .await
            .respond_status(
                404,
                "NotFound",
                "daemonsets.apps \"kube-proxy\" not found",
                json!({"name": "kube-proxy", "group": "apps", "kind": "daemonsets"}),
            );
        server
    });
    let (done, err) = apply(&api, &switch()).await.expect_err("404");
    drop(api);
    task.await.expect("server").finish().await;
    assert!(done.is_empty());
    assert!(
        err.to_string()
            .contains("daemonsets.apps kube-system/kube-proxy"),
        "{err}"
    );
}

#[test]
fn the_finalize_role_may_read_kube_proxys_configmap_finalize_reads_first() {
    // `finalize --apply-switch` without --kube-proxy-config reads the ConfigMap
    // (configmap.rs) before it sends the switch, with the same credentials.
    let grants = Grants::of_cluster_role(
        include_str!("../../../../deploy/rbac.yaml"),
        "ipvs-migrate-finalize",
    )
    .expect("rbac");
    for name in ["kube-proxy", "kube-proxy-config"] {
        let c = Call::new("get", "", "configmaps")
            .in_namespace("kube-system")
            .named(name);
        assert!(
            grants.allows(&c),
            "ipvs-migrate-finalize does not allow {c}"
        );
    }
    let other = Call::new("get", "", "configmaps")
        .in_namespace("kube-system")
        .named("coredns");
    assert!(!grants.allows(&other), "{other} must stay denied");
}
