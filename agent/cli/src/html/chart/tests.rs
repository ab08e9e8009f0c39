//! Chart geometry against coordinates worked out by hand, and escaping.

use super::*;

#[test]
fn a_known_series_maps_to_known_pixels() {
    // Plot area: x 56..624 (640 - 16), y 16..220 (260 - 40). Over the hour [0, 3600] and
    // [0, 2]: t=0 → x 56, t=1800 → 56 + 568/2 = 340, t=3600 → 624; v=0 → 220,
    // v=1 → 220 - 204/2 = 118, v=2 → 16; v=0.5 → 220 - 51 = 169.
    let pts = [(0, 0.0), (1800, 1.0), (2700, 0.5), (3600, 2.0)];
    assert_eq!(
        polyline(&Frame::LINE, &pts, 0, 3600, 2.0),
        "56,220 340,118 482,169 624,16"
    );
}

#[test]
fn the_axis_spans_the_history_when_it_is_younger_than_an_hour() {
    let s = |first: u64| {
        vec![Series {
            namespace: "a",
            points: vec![(first, 0.0), (10_000, 1.0)],
        }]
    };
    assert_eq!(axis_start(&s(9_700), 10_000), 9_700);
    assert_eq!(axis_start(&s(9_990), 10_000), 10_000 - MIN_SPAN);
    assert_eq!(axis_start(&s(1_000), 10_000), 10_000 - 3600);
    assert_eq!(axis_start(&[], 10_000), 10_000 - MIN_SPAN);
    let svg = rejection_chart(&s(9_700), 0, 10_000);
    // 300 s: ticks every 75 s; the first point at the plot's left edge, the last at its
    // right edge and top (1/s on a 0..1 axis).
    for label in [
        "−5 min",
        "−225 s",
        "−150 s",
        "−75 s",
        ">now<",
        "time (last 5m0s)",
    ] {
        assert!(svg.contains(label), "{label} in {svg}");
    }
    assert!(svg.contains(r#"points="56,220 624,16""#), "{svg}");
}

#[test]
fn points_outside_the_hour_are_not_drawn() {
    let pts = [(10, 1.0), (100, 1.0), (4000, 1.0)];
    assert_eq!(polyline(&Frame::LINE, &pts, 100, 3700, 1.0), "56,16");
}

#[test]
fn axis_maxima_are_one_two_or_five_times_a_power_of_ten() {
    for (v, want) in [
        (0.0, 1.0),
        (0.3, 0.5),
        (1.0, 1.0),
        (1.2, 2.0),
        (3.0, 5.0),
        (7.0, 10.0),
        (1234.0, 2000.0),
    ] {
        assert_eq!(nice_max(v), want, "nice_max({v})");
    }
}

#[test]
fn a_rules_bar_is_as_long_as_its_share_of_the_axis() {
    use ipvsmig_engine::report::NamespaceCount;
    let mut per_namespace = std::collections::BTreeMap::new();
    per_namespace.insert(
        "big".to_owned(),
        NamespaceCount {
            service_ports: 100,
            endpoints: 300,
            iptables_rules: 1000,
        },
    );
    per_namespace.insert(
        "small".to_owned(),
        NamespaceCount {
            service_ports: 10,
            endpoints: 20,
            iptables_rules: 250,
        },
    );
    let s = Summary {
        service_ports: 110,
        namespaces: 2,
        endpoints: 320,
        without_endpoints: 0,
        kube_rules: 1400,
        warnings: 0,
        per_namespace,
    };
    let svg = rules_chart(&s);
    // Axis 0..1000 over x 150..580 (640 - 60): 1000 rules → 430 px, 100 ports → 43 px,
    // 250 rules → 107.5 px, 10 ports → 4.3 px. "big" comes first (more rules).
    assert!(svg.contains(r##"y="8" width="430""##), "{svg}");
    assert!(svg.contains(r##"y="19" width="43""##), "{svg}");
    assert!(svg.contains(r##"y="34" width="107.5""##), "{svg}");
    assert!(svg.contains(r##"y="45" width="4.3""##), "{svg}");
    assert!(svg.find("big").unwrap_or(usize::MAX) < svg.find("small").unwrap_or(0));
}

#[test]
fn charts_escape_namespace_names() {
    let mut r = std::collections::BTreeMap::new();
    r.insert(
        "<script>x</script>".to_owned(),
        vec![
            Sample {
                at: 100,
                total: 1,
                rejected: 0,
            },
            Sample {
                at: 110,
                total: 2,
                rejected: 1,
            },
        ],
    );
    let (series, _) = rejection_series(&r);
    let svg = rejection_chart(&series, 0, 200);
    assert!(!svg.contains("<script>"));
    assert!(svg.contains("&lt;script&gt;"));
}
