//! The binary against a fake API server on loopback (plain HTTP, reached through a
//! kubeconfig): `fleet status`, and `preflight` reading kube-proxy's ConfigMap and comparing
//! the `policies` golden fixture with Services and EndpointSlices. The objects are written from
//! the API reference and from the Services that fixture was built for
//! (agent/engine/tests/golden/README.md), not from our output.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Answers by path; records each `METHOD path?query`.
#[derive(Clone, Default)]
struct Fake {
    answers: Arc<BTreeMap<String, (u16, Value)>>,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn answer(State(f): State<Fake>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let uri = &parts.uri;
    f.seen.lock().unwrap().push(format!(
        "{} {}?{} {}",
        parts.method,
        uri.path(),
        uri.query().unwrap_or(""),
        String::from_utf8_lossy(&body)
    ));
    match f.answers.get(uri.path()) {
        Some((code, body)) => (
            StatusCode::from_u16(*code).unwrap(),
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response(),
        // What the API server answers for a path it does not serve.
        None => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    }
}

/// Starts the fake server on its own thread; returns its kubeconfig and the request log.
fn start(answers: BTreeMap<String, (u16, Value)>, dir: &std::path::Path) -> (String, Fake) {
    let fake = Fake {
        answers: Arc::new(answers),
        seen: Arc::default(),
    };
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let f = fake.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let app = axum::Router::new().fallback(answer).with_state(f);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    (kubeconfig.display().to_string(), fake)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipvs-migrate"))
        .args(args)
        .env("NODE_NAME", "node-1")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": items})
}

#[test]
fn fleet_status_flags_a_node_running_two_kube_proxies_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let pod = |name: &str, ds: &str| {
        json!({"metadata": {"name": name, "namespace": "kube-system",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds, "uid": ds}]},
               "spec": {"nodeName": "node-1", "containers": [{"name": "kube-proxy"}]},
               "status": {"phase": "Running"}})
    };
    let answers = BTreeMap::from([
        (
            "/api/v1/nodes".to_owned(),
            (
                200,
                list(
                    "NodeList",
                    "v1",
                    vec![
                        json!({"metadata": {"name": "node-1", "labels": {"ipvs-migrate.io/phase": "finalized"}}}),
                    ],
                ),
            ),
        ),
        (
            "/api/v1/namespaces/kube-system/pods".to_owned(),
            (
                200,
                list(
                    "PodList",
                    "v1",
                    vec![
                        pod("kube-proxy-a", "kube-proxy"),
                        pod("kube-proxy-ipvs-b", "kube-proxy-ipvs"),
                    ],
                ),
            ),
        ),
    ]);
    let (kc, fake) = start(answers, dir.path());
    let out = run(&["fleet", "status", "--kubeconfig", &kc, "-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kind"], "FleetStatus");
    assert_eq!(doc["nodes"][0]["flags"], json!(["two-kube-proxies"]));
    assert!(
        doc["notes"][0]
            .as_str()
            .unwrap()
            .contains("CRD is not installed")
    );
    let seen = fake.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |r| r.starts_with("GET /api/v1/namespaces/kube-system/pods?")
                && r.contains("labelSelector=k8s-app+in+%28kube-proxy%2Ckube-proxy-ipvs%29")
        ),
        "{seen:?}"
    );

    let table = run(&["fleet", "status", "--kubeconfig", &kc]);
    let text = String::from_utf8_lossy(&table.stdout);
    let err = String::from_utf8_lossy(&table.stderr);
    assert!(text.starts_with("NODE"), "{text}{err}");
    assert!(text.contains("two-kube-proxies"), "{text}");
}

/// The Services and EndpointSlices the `policies` fixture was built from; node-1 is the
/// node whose rules the fixture holds (its endpoints are the fixture's local ones).
fn policies_api(with_mixed: bool) -> BTreeMap<String, (u16, Value)> {
    let svc = |ns: &str, name: &str, ip: &str, node_port: Option<u16>, itp: &str, etp: &str| {
        let mut port = json!({"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        let mut spec = json!({"type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
                              "clusterIP": ip, "clusterIPs": [ip], "ports": [port],
                              "internalTrafficPolicy": itp});
        if node_port.is_some() {
            spec["externalTrafficPolicy"] = json!(etp);
        }
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
    };
    let slice = |ns: &str, name: &str, eps: &[(&str, &str)]| {
        json!({"metadata": {"namespace": ns, "name": format!("{name}-x"),
                            "labels": {"kubernetes.io/service-name": name}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
               "endpoints": eps.iter().map(|(ip, node)| json!({"addresses": [ip], "nodeName": node,
                   "conditions": {"ready": true, "serving": true, "terminating": false}})).collect::<Vec<_>>()})
    };
    let mut services = vec![
        svc("ns1", "itp-local", "172.30.1.1", None, "Local", "Cluster"),
        svc("ns1", "itp-nolocal", "172.30.1.2", None, "Local", "Cluster"),
        svc(
            "ns2",
            "etp-nolocal",
            "172.30.1.3",
            Some(30080),
            "Cluster",
            "Local",
        ),
    ];
    let mut slices = vec![
        slice(
            "ns1",
            "itp-local",
            &[("10.180.0.1", "node-1"), ("10.180.0.2", "node-1")],
        ),
        slice("ns1", "itp-nolocal", &[("10.181.0.3", "node-2")]),
        slice("ns2", "etp-nolocal", &[("10.181.0.5", "node-2")]),
    ];
    if with_mixed {
        services.push(svc(
            "ns3",
            "mixed",
            "172.30.1.4",
            Some(30081),
            "Cluster",
            "Local",
        ));
        slices.push(slice(
            "ns3",
            "mixed",
            &[
                ("10.180.0.7", "node-1"),
                ("10.180.0.9", "node-1"),
                ("10.181.0.8", "node-2"),
            ],
        ));
    }
    BTreeMap::from([
        (
            "/api/v1/namespaces/kube-system/configmaps/kube-proxy".to_owned(),
            (
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                       "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: \"\"\nipvs:\n  scheduler: wrr\n"}}),
            ),
        ),
        (
            "/api/v1/services".to_owned(),
            (200, list("ServiceList", "v1", services)),
        ),
        (
            "/apis/discovery.k8s.io/v1/endpointslices".to_owned(),
            (
                200,
                list("EndpointSliceList", "discovery.k8s.io/v1", slices),
            ),
        ),
    ])
}

fn preflight(kc: &str, host: &std::path::Path) -> (Value, String) {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/golden/policies/restore.txt"
    );
    let out = run(&[
        "preflight",
        "--offline",
        "--host-root",
        host.to_str().unwrap(),
        "--iptables-save",
        fixture,
        "--kubeconfig",
        kc,
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (doc, stderr)
}

fn finding<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding in {doc}"))
}

#[test]
fn preflight_reads_kube_proxys_configmap_and_finds_no_drift_on_a_node_that_follows_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (kc, fake) = start(policies_api(true), dir.path());
    let (doc, stderr) = preflight(&kc, dir.path());
    assert_eq!(finding(&doc, "api-drift")["severity"], "info", "{stderr}");
    // The ConfigMap was read: the scheduler check saw wrr, not "no configuration".
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != "kube-proxy-config-missing"),
        "{doc}"
    );
    let seen = fake.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/kube-system/configmaps/kube-proxy?")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /api/v1/services?") && r.contains("limit=500")),
        "{seen:?}"
    );
}

#[test]
fn preflight_warns_about_rules_for_a_service_the_api_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (kc, fake) = start(policies_api(false), dir.path());
    let (doc, stderr) = preflight(&kc, dir.path());
    let f = finding(&doc, "api-drift");
    assert_eq!(f["severity"], "warning", "{stderr}");
    assert_eq!(
        f["evidence"],
        json!(["ns3/mixed:http tcp IPv4: rules on the node, not in the API"])
    );
    // Read twice (sync lag): two lists of each.
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|r| r.starts_with("GET /api/v1/services?"))
            .count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn an_unreachable_api_server_is_exit_69_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = dir.path().join("kc");
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"),
    )
    .unwrap();
    let out = run(&[
        "fleet",
        "status",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    // Under -o json, stderr is one JSON error object (no log lines of kube-client's).
    let err: Value = serde_json::from_str(&stderr).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("unreachable"),
        "{msg}"
    );
}

/// Runs `serve --config CONFIG` as node-1 until the fake server saw a request starting with
/// `prefix` (20 s at most), then stops it by its PID (SIGTERM, as an orchestrator would).
fn serve_until(
    config: &std::path::Path,
    state: &std::path::Path,
    fake: &Fake,
    prefix: &str,
) -> (Option<String>, std::process::ExitStatus) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipvs-migrate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .env("NODE_NAME", "node-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let seen = loop {
        let seen = fake.seen.lock().unwrap().clone();
        if let Some(r) = seen.iter().find(|r| r.starts_with(prefix)) {
            break Some(r.clone());
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    (seen, child.wait().unwrap())
}

#[test]
fn serve_reports_its_phase_on_the_node_and_keeps_kube_proxys_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let mut answers = policies_api(true);
    answers.insert(
        "/api/v1/nodes/node-1".to_owned(),
        (
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}),
        ),
    );
    let (kc, fake) = start(answers, dir.path());
    let state = dir.path().join("state");
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!("kubernetes:\n  enabled: true\n  kubeconfig: {kc}\n  reportInterval: 1s\n"),
    )
    .unwrap();
    let (patch, status) = serve_until(&config, &state, &fake, "PATCH /api/v1/nodes/node-1?");
    let patch = patch.unwrap_or_else(|| panic!("no Node patch in {:?}", fake.seen.lock().unwrap()));
    let body: Value =
        serde_json::from_str(patch.split_once(' ').unwrap().1.split_once(' ').unwrap().1).unwrap();
    assert_eq!(body["metadata"]["labels"]["ipvs-migrate.io/phase"], "idle");
    let details: Value = serde_json::from_str(
        body["metadata"]["annotations"]["ipvs-migrate.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(details["phase"], "idle");
    assert_eq!(details["rollbacks"], 0);
    // The ConfigMap became the file the plans read.
    let cached = std::fs::read_to_string(state.join("kube-proxy-config.from-api.yaml")).unwrap();
    assert!(cached.contains("scheduler: wrr"), "{cached}");
    assert_eq!(status.code(), Some(0));
}

/// `rollout.enabled`: serve lists the IPVSMigration objects and, for a paused one, writes the
/// fleet summary into its status (a PUT of the status subresource carrying the
/// resourceVersion it read) and starts nothing — paused, so no data-plane change here.
#[test]
fn serve_follows_a_paused_ipvsmigration_and_writes_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let migration = json!({
        "apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigration",
        "metadata": {"name": "workers", "resourceVersion": "42", "generation": 1,
                     "creationTimestamp": "2026-11-25T01:00:00Z"},
        "spec": {"waves": [{"namespaces": ["shop"]}], "state": "Paused"}
    });
    let answers = BTreeMap::from([
        (
            "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations".to_owned(),
            (
                200,
                list(
                    "IPVSMigrationList",
                    "ipvs-migrate.io/v1alpha1",
                    vec![migration.clone()],
                ),
            ),
        ),
        (
            "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations/workers/status".to_owned(),
            (200, migration),
        ),
        (
            "/api/v1/nodes".to_owned(),
            (
                200,
                list(
                    "PartialObjectMetadataList",
                    "meta.k8s.io/v1",
                    vec![
                        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "node-1"}}),
                    ],
                ),
            ),
        ),
    ]);
    let (kc, fake) = start(answers, dir.path());
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!("kubernetes:\n  enabled: true\n  kubeconfig: {kc}\nrollout:\n  enabled: true\n"),
    )
    .unwrap();
    let (put, status) = serve_until(&config, &dir.path().join("state"), &fake, "PUT ");
    let put = put.unwrap_or_else(|| panic!("no status write in {:?}", fake.seen.lock().unwrap()));
    let (line, body) = put.split_once(' ').unwrap().1.split_once(' ').unwrap();
    assert!(
        line.starts_with("/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations/workers/status?"),
        "{line}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "42");
    assert_eq!(body["status"]["phase"], "Paused");
    assert!(body["status"].get("nodes").is_none(), "paused: no claim");
    assert_eq!(status.code(), Some(0));
}
