//! The node metrics as a scrape sees them (OpenMetrics text of the daemon's registry).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ipvsmig_engine::cutover::Phase;
use ipvsmig_host::counters::{ConntrackDrops, Counters, IpvsTotals, Snmp};

use super::super::{Metrics, encode};
use super::*;

fn scrape(reg: &Registry) -> String {
    encode(reg).unwrap()
}

/// The value of the sample `name` whose labels are `labels` plus `node="n1"`, in any order.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<String> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([("node".to_owned(), "n1".to_owned())])
        .collect();
    want.sort();
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{')?;
        let mut got: Vec<(String, String)> = rest
            .strip_suffix('}')?
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
            })
            .collect();
        got.sort();
        (n == name && got == want).then(|| value.to_owned())
    })
}

fn reading() -> Counters {
    Counters {
        ipvs: Some(IpvsTotals {
            conns: 6699,
            in_packets: 65280,
            out_packets: 65024,
            in_bytes: 305_419_896,
            out_bytes: 4_294_967_296,
        }),
        snmp: Some(Snmp {
            icmp_out_dest_unreachs: Some(42),
            icmp_out_type3: Some(42),
            tcp_out_rsts: Some(822),
        }),
        conntrack: Some(ConntrackDrops {
            drop: Some(17),
            early_drop: Some(5),
            insert_failed: Some(10),
        }),
    }
}

#[test]
fn kernel_counters_are_exported_with_the_kernels_values_once_read() {
    let (m, reg) = Metrics::register("n1");
    let before = scrape(&reg);
    assert!(!before.contains("ipvs_incoming_packets"), "{before}");
    m.node.refresh_node(&reading());
    let t = scrape(&reg);
    for (series, want) in [
        ("ipvs_incoming_packets_total", "65280"),
        ("ipvs_outgoing_packets_total", "65024"),
        ("ipvs_incoming_bytes_total", "305419896"),
        ("ipvs_outgoing_bytes_total", "4294967296"),
        ("ipvs_scheduled_connections_total", "6699"),
        ("ipvs_migrate_icmp_dest_unreachable_sent_total", "42"),
        ("ipvs_migrate_tcp_resets_sent_total", "822"),
        ("ipvs_migrate_conntrack_drops_total", "32"),
    ] {
        assert_eq!(
            sample(&t, series, &[]).as_deref(),
            Some(want),
            "{series}\n{t}"
        );
    }
    assert!(
        t.contains("# TYPE ipvs_scheduled_connections counter"),
        "{t}"
    );
    // The per-namespace probe counter keeps its own name.
    assert!(!t.contains("# TYPE ipvs_connections counter\n# HELP ipvs_connections IPVS"));
}

#[test]
fn absent_kernel_files_give_no_series() {
    // Before the cutover: no ip_vs_stats, no conntrack; snmp present.
    let (m, reg) = Metrics::register("n1");
    m.node.refresh_node(&Counters {
        ipvs: None,
        conntrack: None,
        ..reading()
    });
    let t = scrape(&reg);
    assert!(
        !t.contains("ipvs_incoming_packets") && !t.contains("conntrack_drops"),
        "{t}"
    );
    assert_eq!(
        sample(&t, "ipvs_migrate_tcp_resets_sent_total", &[]).as_deref(),
        Some("822")
    );
}

#[test]
fn sync_histogram_has_kube_proxys_buckets() {
    let (m, reg) = Metrics::register("n1");
    m.node.observe_sync(Duration::from_micros(1500));
    m.node.observe_sync(Duration::from_secs(20));
    let t = scrape(&reg);
    let les: Vec<String> = t
        .lines()
        .filter(|l| l.starts_with("ipvs_migrate_sync_duration_seconds_bucket"))
        .filter_map(|l| {
            l.split("le=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    // metrics.ExponentialBuckets(0.001, 2, 15) in pkg/proxy/metrics/metrics.go: 1 ms … 16.384 s.
    let want = [
        "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
        "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf",
    ];
    assert_eq!(les, want, "{t}");
    let bucket = |le: &str| {
        sample(
            &t,
            "ipvs_migrate_sync_duration_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(bucket("0.001").as_deref(), Some("0"));
    assert_eq!(bucket("0.002").as_deref(), Some("1"));
    assert_eq!(bucket("16.384").as_deref(), Some("1"));
    assert_eq!(bucket("+Inf").as_deref(), Some("2"));
}

#[test]
fn a_probe_counts_an_attempt_a_rejection_and_its_latency() {
    let (m, reg) = Metrics::register("n1");
    m.probe("shop", Duration::from_millis(3), false);
    m.probe("shop", Duration::from_secs(2), true);
    let t = scrape(&reg);
    let ns = [("namespace", "shop")];
    assert_eq!(
        sample(&t, "ipvs_connections_total", &ns).as_deref(),
        Some("2")
    );
    assert_eq!(
        sample(&t, "ipvs_connections_rejected_total", &ns).as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&t, "ipvs_migrate_probe_duration_seconds_count", &ns).as_deref(),
        Some("2")
    );
    assert_eq!(
        sample(
            &t,
            "ipvs_migrate_probe_duration_seconds_bucket",
            &[("le", "0.0032"), ns[0]]
        )
        .as_deref(),
        Some("1"),
        "{t}"
    );
}

#[test]
fn every_rollback_reason_is_exported_from_zero_and_counted() {
    let (m, reg) = Metrics::register("n1");
    m.node.rollback(RollbackReason::ProbeFailed);
    let t = scrape(&reg);
    let names = [
        "alert_builtin",
        "alertmanager",
        "prometheus",
        "probe_failed",
        "apply_failed",
        "operator",
        "restart",
    ];
    for r in names {
        let want = if r == "probe_failed" { "1" } else { "0" };
        assert_eq!(
            sample(&t, "ipvs_migrate_rollbacks_total", &[("reason", r)]).as_deref(),
            Some(want),
            "{r}\n{t}"
        );
    }
    assert_eq!(RollbackReason::ALL.map(RollbackReason::as_str), names);
    // Both trigger sources are exported from 0 too.
    for source in ["alertmanager", "prometheus"] {
        assert_eq!(
            sample(
                &t,
                "ipvs_migrate_rollback_triggers_total",
                &[("source", source)]
            )
            .as_deref(),
            Some("0"),
            "{source}"
        );
    }
}

#[test]
fn a_namespace_has_one_phase_series_which_follows_the_machine() {
    let (m, reg) = Metrics::register("n1");
    m.set_phase("shop", &Phase::Apply, 100.0);
    m.set_phase("shop", &Phase::Probe, 160.0);
    m.set_phase("web", &Phase::Apply, 170.0);
    let t = scrape(&reg);
    let phase =
        |ns: &str, p: &str| sample(&t, "ipvs_migrate_phase", &[("namespace", ns), ("phase", p)]);
    assert_eq!(phase("shop", "probe").as_deref(), Some("1"));
    assert_eq!(phase("shop", "apply"), None, "{t}");
    assert_eq!(phase("web", "apply").as_deref(), Some("1"));
    let since = |p: &str| {
        sample(
            &t,
            "ipvs_migrate_phase_started_timestamp_seconds",
            &[("namespace", "shop"), ("phase", p)],
        )
    };
    assert_eq!(since("probe").as_deref(), Some("160.0"));
    assert_eq!(since("apply"), None, "{t}");
    m.forget_phase("shop");
    let t = scrape(&reg);
    assert!(!t.contains("namespace=\"shop\""), "{t}");
    assert!(t.contains("namespace=\"web\""), "{t}");
}
