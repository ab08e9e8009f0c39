//! End-to-end kernel suite for the fleet rollout (docs/rollout.md), run inside the VM test bed
//! (tests/vm/rollout-e2e.sh; one boot, both iptables backends): kube-proxy's iptables-mode rules for
//! `shop`, pods in network namespaces, and a stand-in API server on loopback holding one
//! `IPVSMigration` (one wave, `shop`, soak 4s). It answers as the API reference says: the
//! list, a watch that streams `MODIFIED` events whenever the object changes, a metadata-only
//! Node list, `PUT …/status` accepted only with the current `resourceVersion` (else `409`).
//! `serve` with `rollout.enabled` must claim the slot (entry `InProgress`), cut `shop` over in
//! the real kernel (clients then reach its ClusterIPs through IPVS), report `Completed` after
//! the soak; then, with the object set to `Aborted`, take `shop` back to iptables and report
//! `Aborted`.
//!
//! Modes: `legacy` / `nft` (the suite), `serve`/`get` (vmkit).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[path = "vmkit/mod.rs"]
mod vmkit;
use vmkit::*;

const PATH: &str = "/apis/ipvs-migrate.io/v1alpha1/ipvsmigrations";

/// The stand-in API server's one object (its `resourceVersion` counts every change).
struct Api {
    obj: Mutex<Value>,
}

impl Api {
    fn rv(o: &Value) -> u64 {
        o["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn get(&self) -> Value {
        self.obj.lock().unwrap().clone()
    }
    /// Stores `new` as the next version (the operator's edit or an accepted status write).
    fn put(&self, mut new: Value) -> Value {
        let mut o = self.obj.lock().unwrap();
        new["metadata"]["resourceVersion"] = json!((Api::rv(&o) + 1).to_string());
        *o = new;
        o.clone()
    }
}

fn respond(s: &mut TcpStream, code: u16, body: &Value) {
    let text = body.to_string();
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Conflict",
    };
    let _ = write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// One connection: requests one after the other (HTTP/1.1 keep-alive); a watch keeps it.
fn connection(stream: TcpStream, api: Arc<Api>) {
    let mut out = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let (method, target) = (
            words.next().unwrap_or("").to_owned(),
            words.next().unwrap_or("").to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match (method.as_str(), path) {
            ("GET", PATH) if query.contains("watch=true") => return watch(&mut out, &api),
            ("GET", PATH) => {
                let o = api.get();
                let rv = o["metadata"]["resourceVersion"].clone();
                respond(
                    &mut out,
                    200,
                    &json!({"apiVersion": "ipvs-migrate.io/v1alpha1",
                    "kind": "IPVSMigrationList", "metadata": {"resourceVersion": rv}, "items": [o]}),
                );
            }
            ("GET", p) if p == format!("{PATH}/workers") => respond(&mut out, 200, &api.get()),
            ("PUT", p) if p == format!("{PATH}/workers/status") => {
                let new: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let current = api.get();
                if new["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    respond(
                        &mut out,
                        409,
                        &status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ),
                    );
                } else {
                    let mut next = current;
                    next["status"] = new["status"].clone();
                    respond(&mut out, 200, &api.put(next));
                }
            }
            ("GET", "/api/v1/nodes") => respond(
                &mut out,
                200,
                &json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "1"},
                "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"name": "vm", "labels": {"kubernetes.io/hostname": "vm"}}}]}),
            ),
            // The Node report and Events of `kubernetes.enabled` are not this suite's.
            _ => respond(&mut out, 404, &status(404, "NotFound", "not served here")),
        }
    }
}

/// A watch: a `MODIFIED` event (one JSON line, chunked) each time the object changes.
fn watch(out: &mut TcpStream, api: &Api) {
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut sent = Api::rv(&api.get());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let o = api.get();
        if Api::rv(&o) != sent {
            sent = Api::rv(&o);
            let line = format!("{}\n", json!({"type": "MODIFIED", "object": o}));
            if write!(out, "{:x}\r\n{line}\r\n", line.len()).is_err() {
                return;
            }
        }
    }
}

fn entry(api: &Api) -> (String, u64, String) {
    let o = api.get();
    let e = &o["status"]["nodes"]["vm"];
    (
        e["phase"].as_str().unwrap_or("").to_owned(),
        e["wave"].as_u64().unwrap_or(0),
        o["status"]["phase"].as_str().unwrap_or("").to_owned(),
    )
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    f()
}

fn suite() -> i32 {
    let (mut s, dir) = Suite::start("vm-rollout");
    let p = |n: &str| dir.join(n).display().to_string();
    s.standard_pods();
    for pod in ["pod1", "pod2"] {
        s.spawn(pod, &["serve", pod, "8080", "8081", "8082", "8084", "8090"]);
    }
    let v4 = shop_core();
    load_kube_proxy_rules(&dir, &v4, &[]);
    let tcp = answering_tcp(&v4, &[]);
    std::fs::write(
        p("kube-proxy.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\n",
    )
    .unwrap();

    let api = Arc::new(Api {
        obj: Mutex::new(json!({
            "apiVersion": "ipvs-migrate.io/v1alpha1", "kind": "IPVSMigration",
            "metadata": {"name": "workers", "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": "2026-11-25T01:00:00Z"},
            "spec": {"waves": [{"name": "shop", "namespaces": ["shop"]}],
                     "soak": "4s", "maxNodesInParallel": 1, "slotTimeout": "1m", "state": "Running"}
        })),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = Arc::clone(&api);
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            let a = Arc::clone(&a);
            std::thread::spawn(move || connection(c, a));
        }
    });
    // rustls wants a root certificate even for http:// (docs/kubernetes.md): a throw-away CA.
    std::fs::write(
        p("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n    certificate-authority-data: {TEST_CA}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    std::fs::write(
        p("serve.yaml"),
        format!(
            "listen: 127.0.0.1:9964\nnodeName: vm\nreconcilePeriod: 2s\nswitchTimeout: 6s\nverify: 4s\ndrain: 1s\n\
             nodeIPs: [192.168.0.2]\nkubeProxyConfig: {}\nkubernetes:\n  enabled: true\n  kubeconfig: {}\n\
             rollout:\n  enabled: true\n  period: 2s\n  nodeListPeriod: 2s\n",
            p("kube-proxy.yaml"),
            p("kubeconfig")
        ),
    )
    .unwrap();
    let before: Vec<String> = tcp
        .iter()
        .filter(|x| s.route("cli", &addr(&x.spec.cluster_ip, x.spec.port)).2)
        .map(|x| x.spec.spn())
        .collect();
    s.check(
        "baseline: no shop ClusterIP goes through IPVS",
        before.is_empty(),
        &before.join(", "),
    );
    let log = std::fs::File::create(p("serve.log")).unwrap();
    let mut daemon = Command::new(&s.bin)
        .args([
            "serve",
            "--config",
            &p("serve.yaml"),
            "--state-dir",
            &s.state,
        ])
        .args(["--iptables-backend", be()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve");

    let claimed = wait_until(30, || {
        entry(&api).0 == "InProgress" || entry(&api).0 == "Completed"
    });
    s.check(
        "the agent claims the slot: status.nodes.vm is InProgress for wave 1 (a PUT with the current resourceVersion)",
        claimed && entry(&api).1 == 1,
        &format!("{:?}", api.get()["status"]),
    );
    let through: Vec<String> = if wait_until(40, || entry(&api).0 == "Completed") {
        tcp.iter()
            .filter(|x| {
                let (rc, out, via) = s.route("cli", &addr(&x.spec.cluster_ip, x.spec.port));
                rc != 0 || !x.answers.contains(&out) || !via
            })
            .map(|x| x.spec.spn())
            .collect()
    } else {
        vec!["never Completed".into()]
    };
    s.check(
        "after the soak the entry is Completed, the fleet phase Completed, and every shop ClusterIP answers through IPVS",
        through.is_empty() && entry(&api).2 == "Completed",
        &format!("{}; status {:?}", through.join(", "), api.get()["status"]),
    );

    // The operator aborts.
    let mut o = api.get();
    o["spec"]["state"] = json!("Aborted");
    o["metadata"]["generation"] = json!(2);
    api.put(o);
    let aborted = wait_until(40, || entry(&api).0 == "Aborted");
    let still: Vec<String> = tcp
        .iter()
        .filter(|x| {
            let (rc, out, via) = s.route("cli", &addr(&x.spec.cluster_ip, x.spec.port));
            rc != 0 || !x.answers.contains(&out) || via
        })
        .map(|x| x.spec.spn())
        .collect();
    s.check(
        "Aborted: the agent takes shop back (clients answered by kube-proxy's rules, not IPVS) and reports Aborted",
        aborted && still.is_empty() && entry(&api).2 == "Aborted",
        &format!("{}; status {:?}", still.join(", "), api.get()["status"]),
    );

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    if s.fail > 0 {
        println!(
            "# serve.log (tail):\n{}",
            sh(&format!("tail -30 {}", p("serve.log"))).1
        );
    }
    s.finish(
        "vm-rollout",
        &format!(
            "{} rollback --all --drain 0 --state-dir {} >/dev/null 2>&1",
            s.bin, s.state
        ),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = helper_mode(&args).unwrap_or_else(suite);
    std::process::exit(code);
}
