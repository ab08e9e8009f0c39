//! The Prometheus trigger on answers written from the HTTP API documentation
//! (prometheus.io/docs/prometheus/latest/querying/api/: the `status`/`data`/`errorType`/`error`
//! envelope, `resultType: vector` with `metric` and `value` per series), over a loopback
//! listener, and against a real Prometheus (Debian's `prometheus`) when it is installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::*;

/// `ALERTS` as the query API returns it: a firing rollback alert for namespace shop on n1, the
/// node-wide one on n1, a rollback alert of another node, a pending one, and another alert.
const ALERTS_ANSWER: &str = r#"{
  "status": "success",
  "data": {
    "resultType": "vector",
    "result": [
      {"metric": {"__name__": "ALERTS", "alertname": "IPVSMigrateRejectionRatioHigh", "alertstate": "firing",
                  "ipvs_migrate_rollback": "true", "node": "n1", "namespace": "shop", "severity": "critical"},
       "value": [1795560126.781, "1"]},
      {"metric": {"__name__": "ALERTS", "alertname": "IPVSMigrateRejectionRateHigh", "alertstate": "firing",
                  "ipvs_migrate_rollback": "true", "node": "n1"},
       "value": [1795560126.781, "1"]},
      {"metric": {"__name__": "ALERTS", "alertname": "IPVSMigrateRejectionRateHigh", "alertstate": "firing",
                  "ipvs_migrate_rollback": "true", "node": "n2"},
       "value": [1795560126.781, "1"]},
      {"metric": {"__name__": "ALERTS", "alertname": "IPVSMigrateRejectionRatioHigh", "alertstate": "pending",
                  "ipvs_migrate_rollback": "true", "node": "n1", "namespace": "web"},
       "value": [1795560126.781, "1"]},
      {"metric": {"__name__": "ALERTS", "alertname": "KubeProxyDown", "alertstate": "firing", "node": "n1"},
       "value": [1795560126.781, "1"]}
    ]
  },
  "warnings": ["a warning the agent ignores"]
}"#;

fn series(answer: &str) -> Vec<BTreeMap<String, String>> {
    parse_answer(200, answer.as_bytes()).unwrap()
}

fn keys(p: &Polled) -> Vec<(String, Option<String>)> {
    p.triggers.iter().map(|(k, _)| k.clone()).collect()
}

#[test]
fn firing_rollback_alerts_of_this_node_are_triggers() {
    let mut d = PollDedup::default();
    let p = d.poll("n1", &series(ALERTS_ANSWER));
    assert_eq!(
        keys(&p),
        [
            (
                "IPVSMigrateRejectionRatioHigh".to_owned(),
                Some("shop".to_owned())
            ),
            ("IPVSMigrateRejectionRateHigh".to_owned(), None),
        ]
    );
    assert_eq!((p.duplicates, p.ignored), (0, 3));
    assert_eq!(p.triggers[0].1.namespace.as_deref(), Some("shop"));
}

#[test]
fn a_series_triggers_once_while_it_fires_and_again_after_it_was_gone() {
    let mut d = PollDedup::default();
    let all = series(ALERTS_ANSWER);
    assert_eq!(d.poll("n1", &all).triggers.len(), 2);
    let again = d.poll("n1", &all);
    assert_eq!((again.triggers.len(), again.duplicates), (0, 2));
    // The namespace alert resolves (absent from one poll), the node-wide one keeps firing.
    let without_shop: Vec<_> = all
        .iter()
        .filter(|l| l.get("namespace").map(String::as_str) != Some("shop"))
        .cloned()
        .collect();
    let p = d.poll("n1", &without_shop);
    assert_eq!((p.triggers.len(), p.duplicates), (0, 1));
    let back = d.poll("n1", &all);
    assert_eq!(
        keys(&back),
        [(
            "IPVSMigrateRejectionRatioHigh".to_owned(),
            Some("shop".to_owned())
        )]
    );
    // A trigger the loop could not queue is forgotten and comes back on the next poll.
    d.forget(&back.triggers[0].0);
    assert_eq!(d.poll("n1", &all).triggers.len(), 1);
}

#[test]
fn an_empty_vector_is_no_trigger() {
    let s = series(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
    assert!(s.is_empty());
    assert_eq!(PollDedup::default().poll("n1", &s), Polled::default());
}

#[test]
fn error_documents_and_other_answers_are_errors() {
    // The API's error envelope (400 bad_data for a query that does not parse).
    let e = parse_answer(
        400,
        br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:8: parse error: unexpected end of input"}"#,
    )
    .unwrap_err();
    match &e {
        PromError::Api {
            status,
            error_type,
            error,
        } => {
            assert_eq!((*status, error_type.as_str()), (400, "bad_data"));
            assert!(error.contains("parse error"));
        }
        other => panic!("{other:?}"),
    }
    let check = |status: u16, body: &str, needle: &str| {
        let e = parse_answer(status, body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{body}: {e}");
    };
    check(
        200,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        "instant vector",
    );
    check(
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
        "HTTP 200",
    );
    check(200, r#"{"status":"success"}"#, "no `data`");
    check(502, "<html>Bad Gateway</html>", "HTTP 502");
    check(200, r#"{"status":"maybe","data":null}"#, "\"maybe\"");
}

#[test]
fn the_query_is_percent_encoded_below_the_path_prefix() {
    // Encoded by hand per RFC 3986 (unreserved kept): { %7B, = %3D, " %22, , %2C, } %7D.
    assert_eq!(
        query_target("", "ALERTS{a=\"b\",c=\"d e\"}"),
        "/api/v1/query?query=ALERTS%7Ba%3D%22b%22%2Cc%3D%22d%20e%22%7D"
    );
    assert_eq!(query_target("/prom", "up"), "/prom/api/v1/query?query=up");
    assert_eq!(
        default_query("n1"),
        "ALERTS{alertstate=\"firing\",ipvs_migrate_rollback=\"true\",node=\"n1\"}"
    );
    // A node name cannot break out of the PromQL string.
    assert_eq!(
        default_query("a\"b\\"),
        "ALERTS{alertstate=\"firing\",ipvs_migrate_rollback=\"true\",node=\"a\\\"b\\\\\"}"
    );
}

#[test]
fn a_query_over_a_loopback_listener_gives_the_series() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ALERTS_ANSWER}",
            ALERTS_ANSWER.len()
        );
        s.write_all(reply.as_bytes()).unwrap();
        String::from_utf8(head).unwrap()
    });
    let url = Url::parse(&format!("http://127.0.0.1:{port}/prom/")).unwrap();
    let got = query(&url, &default_query("n1"), LIMITS).unwrap();
    assert_eq!(got.len(), 5);
    let head = server.join().unwrap();
    assert!(
        head.starts_with(&format!(
            "GET /prom/api/v1/query?query={} HTTP/1.0\r\n",
            urlencode(&default_query("n1"))
        )),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
}

/// A real Prometheus on a loopback port with two always-true alerting rules labelled like
/// rules/: one fires at once, one stays pending (`for: 1h`). The default query must return the
/// firing one only, and a malformed query Prometheus's own `bad_data` error.
#[test]
fn a_real_prometheus_answers_the_default_query() {
    let Some(bin) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("IPVSMIG_REQUIRE_ALL").as_deref() != Ok("1"),
            "prometheus is not installed, and IPVSMIG_REQUIRE_ALL=1"
        );
        eprintln!("SKIP: prometheus is not installed (Debian package `prometheus`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = [
        "groups:",
        "- name: t",
        "  interval: 1s",
        "  rules:",
        "  - alert: IPVSMigrateRejectionRatioHigh",
        "    expr: vector(1)",
        "    labels: {ipvs_migrate_rollback: \"true\", node: n1, namespace: shop}",
        "  - alert: IPVSMigrateRejectionRateHigh",
        "    expr: vector(1)",
        "    for: 1h",
        "    labels: {ipvs_migrate_rollback: \"true\", node: n1}",
    ];
    std::fs::write(dir.path().join("rules.yml"), rules.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global: {evaluation_interval: 1s}\nrule_files: [rules.yml]\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        match query(&url, &default_query("n1"), LIMITS) {
            Ok(s) if !s.is_empty() => break Ok(s),
            r if Instant::now() > deadline => break r,
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let bad = query(&url, "ALERTS{", LIMITS);
    // Stop the Prometheus this test started (by its handle) before asserting.
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let s = result.unwrap_or_else(|e| panic!("{e}\nprometheus stderr:\n{log}"));
    let p = PollDedup::default().poll("n1", &s);
    assert_eq!(
        keys(&p),
        [(
            "IPVSMigrateRejectionRatioHigh".to_owned(),
            Some("shop".to_owned())
        )],
        "{s:?}"
    );
    match bad {
        Err(PromError::Api {
            status: 400,
            error_type,
            ..
        }) => assert_eq!(error_type, "bad_data"),
        other => panic!("{other:?}"),
    }
}
