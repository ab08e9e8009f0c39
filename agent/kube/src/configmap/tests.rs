//! Mock-API scenarios for reading kube-proxy's ConfigMap. Requests and answers follow the
//! API reference: `GET /api/v1/namespaces/{namespace}/configmaps/{name}` returns a ConfigMap;
//! failures return a `Status` with the code, reason and message the API server writes.

use serde_json::json;

use super::*;
use crate::error::ErrorClass;
use crate::testing::{mock_api, mock_api_with_timeout};

const PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kube-proxy";

fn kubeadm_configmap() -> serde_json::Value {
    // The shape kubeadm writes: config.conf (KubeProxyConfiguration) and kubeconfig.conf.
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "resourceVersion": "231"},
        "data": {
            "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: \"\"\nipvs:\n  scheduler: \"\"\n",
            "kubeconfig.conf": "apiVersion: v1\nkind: Config\n"
        }
    })
}

/// Reads the default ConfigMap from a server that answers with a failure `Status`.
async fn read_failing(code: u16, reason: &'static str, message: &'static str) -> KubeError {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server.expect("GET", PATH, &[]).await.respond_status(
            code,
            reason,
            message,
            json!({"name": "kube-proxy", "kind": "configmaps"}),
        );
    });
    let err = read_config_text(&api, &ConfigMapKey::default())
        .await
        .expect_err("a failure status");
    task.await.expect("server task");
    err
}

#[tokio::test]
async fn the_config_text_is_read_from_the_kubeadm_configmap() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server
            .expect("GET", PATH, &[])
            .await
            .respond_json(200, &kubeadm_configmap());
        server
    });
    let text = read_config_text(&api, &ConfigMapKey::default()).await;
    drop(api);
    let calls = task.await.expect("server task").finish().await;
    let text = text.expect("read");
    assert!(text.contains("kind: KubeProxyConfiguration"), "{text}");
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn a_configmap_of_another_name_and_key_is_read_where_told() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let mut cm = kubeadm_configmap();
        cm["metadata"]["name"] = json!("kube-proxy-config");
        cm["data"] = json!({"kube-proxy-config.yaml": "kind: KubeProxyConfiguration\n"});
        server
            .expect(
                "GET",
                "/api/v1/namespaces/kube-system/configmaps/kube-proxy-config",
                &[],
            )
            .await
            .respond_json(200, &cm);
        server
    });
    let mut src: ConfigMapKey = "kube-system/kube-proxy-config".parse().expect("name");
    src.key = "kube-proxy-config.yaml".into();
    let text = read_config_text(&api, &src).await.expect("read");
    assert_eq!(text, "kind: KubeProxyConfiguration\n");
    drop(api);
    task.await.expect("server task").finish().await;
}

#[tokio::test]
async fn a_missing_configmap_is_a_not_found_error_naming_it() {
    let err = read_failing(404, "NotFound", "configmaps \"kube-proxy\" not found").await;
    assert_eq!(err.class(), ErrorClass::Missing);
    let msg = err.to_string();
    assert!(msg.contains("configmaps kube-system/kube-proxy"), "{msg}");
    assert!(msg.contains("404"), "{msg}");
}

#[tokio::test]
async fn a_configmap_without_the_key_lists_the_keys_it_has() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let mut cm = kubeadm_configmap();
        cm["data"] = json!({"kubeconfig.conf": "x"});
        server.expect("GET", PATH, &[]).await.respond_json(200, &cm);
    });
    let err = read_config_text(&api, &ConfigMapKey::default())
        .await
        .expect_err("no key");
    task.await.expect("server task");
    assert_eq!(err.class(), ErrorClass::Missing);
    let msg = err.to_string();
    assert!(
        msg.contains("no key \"config.conf\"") && msg.contains("kubeconfig.conf"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_forbidden_read_names_the_rbac_rule_it_needs() {
    let err = read_failing(
        403,
        "Forbidden",
        "configmaps \"kube-proxy\" is forbidden: User \"system:serviceaccount:kube-system:ipvs-migrate\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\"",
    )
    .await;
    assert_eq!(err.class(), ErrorClass::Unavailable);
    let msg = err.to_string();
    assert!(
        msg.contains("may not get configmaps kube-system/kube-proxy")
            && msg.contains("grants `get` on `configmaps` in namespace kube-system"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unanswered_read_times_out_naming_the_server() {
    let (api, mut server) = mock_api_with_timeout(std::time::Duration::from_millis(200));
    let task = tokio::spawn(async move {
        let pending = server.expect("GET", PATH, &[]).await.hang();
        // Hold the request open past the client's deadline.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        drop(pending);
    });
    let err = read_config_text(&api, &ConfigMapKey::default())
        .await
        .expect_err("timeout");
    assert!(matches!(err, KubeError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("mock-apiserver"), "{err}");
    assert_eq!(err.class(), ErrorClass::Unavailable);
    task.await.expect("server task");
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server.next().await.refuse();
    });
    let err = read_config_text(&api, &ConfigMapKey::default())
        .await
        .expect_err("closed");
    task.await.expect("server task");
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("mock-apiserver") && msg.contains("connection refused"),
        "{msg}"
    );
}

#[test]
fn configmap_names_are_checked() {
    let ok: ConfigMapKey = "kube-proxy".parse().expect("plain name");
    assert_eq!(
        (ok.namespace.as_str(), ok.name.as_str()),
        ("kube-system", "kube-proxy")
    );
    for bad in ["", "a/b/c", "Kube-Proxy", "ns/", "/name"] {
        assert!(bad.parse::<ConfigMapKey>().is_err(), "{bad:?}");
    }
}
