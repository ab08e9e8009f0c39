//! Every metric a Grafana dashboard (dashboards/) or an alerting rule (rules/, the
//! PrometheusRule in deploy/) reads is one the agent exports. The exported set is docs/metrics.md's
//! table, which `metrics_documented_here_are_the_metrics_served` (agent/cli/src/serve/tests.rs)
//! keeps equal to the served registry; histograms add their `_bucket`, `_sum` and `_count`
//! series, and Prometheus itself makes `ALERTS` and `ALERTS_FOR_STATE` from the rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "observability/promql.rs"]
mod promql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// docs/metrics.md's table: the rows `| \`name\` | type | …`.
fn exported(metrics_md: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for line in metrics_md.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(kind)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        if *kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                set.insert(format!("{name}{suffix}"));
            }
        } else {
            set.insert(name.to_owned());
        }
    }
    set
}

/// What Prometheus adds to the agent's series: the alerts' own series.
const PROMETHEUS_SERIES: &[&str] = &["ALERTS", "ALERTS_FOR_STATE"];

/// Names among `exprs` (place, PromQL) that are neither exported nor Prometheus's own, as
/// "place: name"; an expression the tokenizer cannot read is reported too.
fn unexported(exprs: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    for (place, expr) in exprs {
        match promql::metric_names(expr) {
            Ok(names) => bad.extend(
                names
                    .into_iter()
                    .filter(|n| !exported.contains(n) && !PROMETHEUS_SERIES.contains(&n.as_str()))
                    .map(|n| format!("{place}: {n}")),
            ),
            Err(e) => bad.push(format!("{place}: {e} in {expr}")),
        }
    }
    bad
}

/// A Grafana variable query: `label_values(EXPR, label)` or `query_result(EXPR)` → EXPR.
fn variable_expr(query: &str) -> Result<String, String> {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // The label is the last argument; a selector's commas are inside its braces.
        let depth_zero_comma = inner
            .char_indices()
            .scan(0i32, |depth, (i, ch)| {
                match ch {
                    '{' | '(' => *depth += 1,
                    '}' | ')' => *depth -= 1,
                    _ => {}
                }
                Some((i, ch, *depth))
            })
            .filter(|&(_, ch, d)| ch == ',' && d == 0)
            .map(|(i, _, _)| i)
            .last();
        return Ok(match depth_zero_comma {
            Some(i) => inner[..i].to_owned(),
            None => inner.to_owned(), // label_values(label): no metric
        });
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Ok(inner.to_owned());
    }
    Err(format!("{q}: not a label_values() or query_result() query"))
}

/// Every PromQL expression of a dashboard: panel targets (rows' nested panels too) and
/// query variables.
fn dashboard_exprs(name: &str, json: &str) -> Result<Vec<(String, String)>, String> {
    let d: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    fn panels(name: &str, list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("{name} panel {title:?}"), e.to_owned()));
                }
            }
            panels(name, &p["panels"], out);
        }
    }
    panels(name, &d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str());
        let q = q.ok_or_else(|| format!("{name}: variable {} has no query", v["name"]))?;
        out.push((format!("{name} variable {}", v["name"]), variable_expr(q)?));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}
#[derive(Deserialize)]
struct Group {
    rules: Vec<Rule>,
}
#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
}
#[derive(Deserialize)]
struct PrometheusRule {
    spec: RuleFile,
}

fn rule_exprs(place: &str, f: RuleFile) -> Vec<(String, String)> {
    f.groups
        .into_iter()
        .flat_map(|g| g.rules)
        .map(|r| {
            let name = r.alert.or(r.record).unwrap_or_default();
            (format!("{place} {name}"), r.expr)
        })
        .collect()
}

fn dashboards() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = format!("dashboards/{}", p.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&p).unwrap();
            (name, text)
        })
        .collect()
}

#[test]
fn every_metric_a_dashboard_reads_is_exported_by_the_agent() {
    let exported = exported(&read("docs/metrics.md"));
    let boards = dashboards();
    assert_eq!(boards.len(), 3, "the fleet, node and rejections dashboards");
    let mut exprs = Vec::new();
    for (name, text) in &boards {
        let e = dashboard_exprs(name, text).unwrap();
        assert!(e.len() >= 6, "{name}: only {} expressions", e.len());
        exprs.extend(e);
    }
    assert_eq!(unexported(&exprs, &exported), Vec::<String>::new());
    // And the other way round: every exported metric is on some dashboard (a histogram by its
    // buckets), so a new metric comes with a panel and the check above is never vacuous.
    let read: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| promql::metric_names(e).unwrap())
        .collect();
    let unread: Vec<&String> = exported
        .iter()
        .filter(|n| !read.contains(*n) && !n.ends_with("_count") && !n.ends_with("_sum"))
        .collect();
    assert!(
        unread.is_empty(),
        "exported but on no dashboard: {unread:?}"
    );
}

#[test]
fn every_metric_an_alerting_rule_reads_is_exported_by_the_agent() {
    let exported = exported(&read("docs/metrics.md"));
    let file: RuleFile = serde_saphyr::from_str(&read("rules/ipvs-migrate.rules.yml")).unwrap();
    let object: PrometheusRule =
        serde_saphyr::from_str(&read("deploy/prometheusrule.yaml")).unwrap();
    let mut exprs = rule_exprs("rules/ipvs-migrate.rules.yml", file);
    exprs.extend(rule_exprs("deploy/prometheusrule.yaml", object.spec));
    assert_eq!(exprs.len(), 12, "six alerts in each file");
    assert_eq!(unexported(&exprs, &exported), Vec::<String>::new());
}

#[test]
fn the_exported_set_is_read_from_the_metrics_table() {
    let set = exported(&read("docs/metrics.md"));
    // Spot checks against the table's rows, one per type.
    for n in [
        "ipvs_connections_rejected_total",
        "ipvs_migrate_phase",
        "ipvs_migrate_sync_duration_seconds_bucket",
        "ipvs_migrate_sync_duration_seconds_count",
        "process_start_time_seconds",
    ] {
        assert!(set.contains(n), "{n} missing from {set:?}");
    }
    // A histogram's family name is not a series.
    assert!(!set.contains("ipvs_migrate_sync_duration_seconds"));
    assert!(set.len() >= 20, "{set:?}");
}

#[test]
fn a_dashboard_reading_a_metric_the_agent_does_not_export_fails_the_check() {
    let exported = exported(&read("docs/metrics.md"));
    let board = r#"{"panels": [{"type": "row", "title": "r", "panels": [
        {"title": "p", "targets": [{"expr": "sum by (node) (rate(kubeproxy_sync_proxy_rules_last_timestamp_seconds{node=\"$node\"}[$__rate_interval]))"}]}]}],
      "templating": {"list": [{"type": "query", "name": "node",
        "query": {"query": "label_values(ipvs_migrate_phasee{node=~\"a,b\"}, node)"}}]}}"#;
    let exprs = dashboard_exprs("board.json", board).unwrap();
    assert_eq!(
        unexported(&exprs, &exported),
        vec![
            "board.json panel \"p\": kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "board.json variable \"node\": ipvs_migrate_phasee",
        ]
    );
    // A histogram's family name alone is no series either, nor is an unknown function.
    let exprs = vec![
        (
            "a".to_owned(),
            "ipvs_migrate_probe_duration_seconds".to_owned(),
        ),
        (
            "b".to_owned(),
            "rated(ipvs_connections_total[5m])".to_owned(),
        ),
    ];
    let bad = unexported(&exprs, &exported);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0], "a: ipvs_migrate_probe_duration_seconds");
    assert!(
        bad[1].starts_with("b: rated(: not a PromQL function"),
        "{bad:?}"
    );
}

#[test]
fn variable_queries_yield_their_expression() {
    assert_eq!(
        variable_expr("label_values(process_start_time_seconds, node)").unwrap(),
        "process_start_time_seconds"
    );
    assert_eq!(
        variable_expr(r#"label_values(m{a="x,y",b=~"1|2"}, namespace)"#).unwrap(),
        r#"m{a="x,y",b=~"1|2"}"#
    );
    assert_eq!(variable_expr("label_values(node)").unwrap(), "node");
    assert_eq!(
        variable_expr("query_result(topk(3, m))").unwrap(),
        "topk(3, m)"
    );
    assert!(variable_expr("metrics(ipvs_.*)").is_err());
}

fn names(expr: &str) -> Vec<String> {
    promql::metric_names(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

#[test]
fn the_tokenizer_finds_the_metrics_of_the_rules_readme() {
    // The six expressions as rules/README.md lists them; the names by reading them.
    assert_eq!(
        names("sum by (node) (rate(ipvs_connections_rejected_total[5m])) > 10"),
        ["ipvs_connections_rejected_total"]
    );
    assert_eq!(
        names(
            "sum by (node, namespace) (rate(ipvs_connections_rejected_total[5m])) / sum by (node, namespace) (rate(ipvs_connections_total[5m])) > 0.01"
        ),
        ["ipvs_connections_rejected_total", "ipvs_connections_total"]
    );
    assert_eq!(
        names(
            r#"time() - ipvs_migrate_phase_started_timestamp_seconds{phase=~"preflight|prepare|apply|probe|soak|rolling-back"} > 3600"#
        ),
        ["ipvs_migrate_phase_started_timestamp_seconds"]
    );
    assert_eq!(
        names("ipvs_migrate_switch_expires_timestamp_seconds - time() < 20"),
        ["ipvs_migrate_switch_expires_timestamp_seconds"]
    );
}

#[test]
fn label_names_keywords_strings_and_numbers_are_not_metrics() {
    assert_eq!(
        names("a_total / on (node) group_left (phase) b * ignoring(le) c unless without_label"),
        ["a_total", "b", "c", "without_label"]
    );
    assert_eq!(names("sum without (instance, job) (q)"), ["q"]);
    assert_eq!(
        names("x > bool 1e-3 and y offset 1h30m or z @ 1609746000"),
        ["x", "y", "z"]
    );
    assert_eq!(
        names("x > Inf or y < -NaN or 0x1F + .5 * w"),
        ["x", "y", "w"]
    );
    assert_eq!(
        names(r#"label_replace(x, "dst", "$1", "src", "(fake_metric).*") + count_values('v', y)"#),
        ["x", "y"]
    );
    assert_eq!(names("topk(5, m) + quantile(0.9, m) + m ^ 2"), ["m"]);
    assert_eq!(names("# a comment naming not_a_metric\nm"), ["m"]);
    assert_eq!(names("m{job=`raw\\`}"), ["m"]);
    assert_eq!(names("rate(ns:m:rate5m[5m:1m] @ start())"), ["ns:m:rate5m"]);
    assert_eq!(names(r#"{__name__="up", job="x"}"#), ["up"]);
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))"),
        ["h_bucket"]
    );
}

#[test]
fn grafana_variables_are_not_metrics() {
    assert_eq!(
        names(
            r#"rate(m{node="$node",ns=~"${namespace:regex}"}[$__rate_interval]) * $scale + ${offset}"#
        ),
        ["m"]
    );
    assert_eq!(names("increase(m[$__range])"), ["m"]);
}

#[test]
fn what_the_tokenizer_cannot_classify_is_an_error() {
    for (expr, needle) in [
        ("nosuchfunc(m)", "not a PromQL function"),
        (r#"m{job="x}"#, "unterminated string"),
        ("m{job=\"x\"", "no '}'"),
        ("rate(m[5m)", "no ']'"),
        (r#"{__name__=~"ipvs_.*"}"#, "cannot be checked"),
    ] {
        let e = promql::metric_names(expr).expect_err(expr);
        assert!(e.contains(needle), "{expr}: {e}");
    }
}
