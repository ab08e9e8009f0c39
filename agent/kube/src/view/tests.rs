//! Listing Services and EndpointSlices from the mock API server. The objects are written in
//! the API reference's shapes (core/v1 ServiceList, discovery.k8s.io/v1 EndpointSliceList,
//! `metadata.continue` for chunked lists); the expected view in Kubernetes terms.

use serde_json::{Value, json};

use super::*;
use crate::testing::{mock_api, rbac::Grants};

fn service(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn list(kind: &str, api_version: &str, items: Vec<Value>, cont: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": "4711"});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items})
}

fn slice(ns: &str, svc: &str, endpoints: Value) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-abcde"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": endpoints
    })
}

#[tokio::test]
async fn services_and_slices_are_listed_page_by_page_and_converted_as_kube_proxy_reads_them() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        let web = service(
            "shop",
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "externalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]}),
        );
        let headless = service(
            "shop",
            "db",
            json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}),
        );
        let external = service(
            "shop",
            "ext",
            json!({"type": "ExternalName", "externalName": "example.org"}),
        );
        let first = server
            .expect("GET", "/api/v1/services", &[("limit", "500")])
            .await;
        assert_eq!(first.query_value("continue"), None);
        first.respond_json(
            200,
            &list("ServiceList", "v1", vec![web, headless], Some("page2")),
        );
        server
            .expect(
                "GET",
                "/api/v1/services",
                &[("limit", "500"), ("continue", "page2")],
            )
            .await
            .respond_json(200, &list("ServiceList", "v1", vec![external], None));
        server
            .expect(
                "GET",
                "/apis/discovery.k8s.io/v1/endpointslices",
                &[("limit", "500")],
            )
            .await
            .respond_json(
                200,
                &list(
                    "EndpointSliceList",
                    "discovery.k8s.io/v1",
                    vec![slice(
                        "shop",
                        "web",
                        json!([
                            // conditions omitted: ready and serving are nil, read as true.
                            {"addresses": ["10.244.1.5"], "nodeName": "node-1"},
                            {"addresses": ["10.244.2.7"], "nodeName": "node-2",
                             "conditions": {"ready": false, "serving": true, "terminating": true}}
                        ]),
                    )],
                    None,
                ),
            );
        server
    });
    let snap = read_view(&api, "node-1").await.expect("read");
    drop(api);
    let calls = task.await.expect("server").finish().await;

    assert_eq!(snap.skipped_services, 2, "headless and ExternalName");
    assert_eq!(snap.notes, Vec::<String>::new());
    let [sp] = snap.view.service_ports.as_slice() else {
        panic!("one service port expected: {:?}", snap.view);
    };
    assert_eq!(sp.name.to_string(), "shop/web:http");
    assert_eq!((sp.port, sp.node_port), (80, Some(30080)));
    assert!(sp.external_local && sp.externally_accessible && !sp.internal_local);
    let eps: Vec<(String, bool, bool, bool, bool)> = sp
        .endpoints
        .iter()
        .map(|e| {
            (
                format!("{}:{}", e.ip, e.port),
                e.ready,
                e.serving,
                e.terminating,
                e.local,
            )
        })
        .collect();
    assert_eq!(
        eps,
        [
            ("10.244.1.5:8080".to_owned(), true, true, false, true),
            ("10.244.2.7:8080".to_owned(), false, true, true, false),
        ]
    );

    let grants = Grants::parse(
        include_str!("../../../../deploy/rbac.yaml"),
        "kube-system",
        "ipvs-migrate",
    )
    .expect("rbac");
    for call in &calls {
        assert!(
            grants.allows(call),
            "deploy/rbac.yaml does not allow {call}"
        );
    }
}

#[tokio::test]
async fn a_forbidden_slice_list_names_the_discovery_group() {
    let (api, mut server) = mock_api();
    let task = tokio::spawn(async move {
        server
            .expect("GET", "/api/v1/services", &[])
            .await
            .respond_json(200, &list("ServiceList", "v1", vec![], None));
        server
            .expect("GET", "/apis/discovery.k8s.io/v1/endpointslices", &[])
            .await
            .respond_status(
                403,
                "Forbidden",
                "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:kube-system:ipvs-migrate\" cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\" at the cluster scope",
                json!({"group": "discovery.k8s.io", "kind": "endpointslices"}),
            );
    });
    let err = read_view(&api, "node-1").await.expect_err("403");
    task.await.expect("server");
    let msg = err.to_string();
    assert!(
        msg.contains("grants `list` on `endpointslices.discovery.k8s.io`"),
        "{msg}"
    );
}
