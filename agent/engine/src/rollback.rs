//! The built-in rollback evaluator: the same thresholds as the alerting rules in rules/
//! (generated from [`crate::rules`]), evaluated in-process so the agent rolls back with no
//! Prometheus at all. Evaluating the same series here and with `promtool test rules` must give
//! the same alerts at the same times (tests/tests/rules_parity.rs).
//!
//! `rate()` follows Prometheus's documented extrapolation (promql `extrapolatedRate`, 2.x): the
//! counter's increase over the samples in `[t - range, t]`, counter resets added back, then
//! extrapolated to the range boundaries when the first/last sample lies within 1.1 average
//! sample intervals of them (else by half an interval), never extrapolating a counter below
//! zero, divided by the range. An alert is pending from the first evaluation its condition
//! holds and fires once it has held for `for` (evaluations every `interval`, as a rule group).

use std::collections::{BTreeMap, BTreeSet};

/// One counter series: (seconds, value), ascending time.
pub type Series = Vec<(f64, f64)>;

/// Thresholds and windows (defaults from the runbook).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// `rate()` window, seconds (5m).
    pub window: f64,
    /// Rejections per second per node (10).
    pub rate: f64,
    /// Rejected / total per namespace (0.01).
    pub ratio: f64,
    /// How long a condition must hold before the alert fires, seconds.
    pub for_secs: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: 300.0,
            rate: 10.0,
            ratio: 0.01,
            for_secs: 60.0,
        }
    }
}

/// Prometheus `rate(series[range])` at `t`, `None` when fewer than two samples are in range.
pub fn rate(series: &[(f64, f64)], t: f64, range: f64) -> Option<f64> {
    let start = t - range;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .copied()
        .filter(|(ts, _)| *ts >= start && *ts <= t)
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    let mut increase = last.1 - first.1;
    let mut prev = 0.0;
    for (_, v) in &pts {
        if *v < prev {
            increase += prev; // a counter reset: what was counted before it still counts
        }
        prev = *v;
    }
    let sampled = last.0 - first.0;
    let avg = sampled / (pts.len() - 1) as f64;
    let mut to_start = first.0 - start;
    let to_end = t - last.0;
    if increase > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / increase);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    Some(increase * (interval / sampled) / range)
}

/// Which rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alert {
    /// `sum by (node) (rate(rejected)) > rate` — node-wide.
    RejectionRate,
    /// `rate(rejected) / rate(total) > ratio` — per namespace.
    RejectionRatio(String),
}

impl Alert {
    /// The alert's name in rules/.
    pub fn name(&self) -> &'static str {
        match self {
            Alert::RejectionRate => crate::rules::ALERT_RATE,
            Alert::RejectionRatio(_) => crate::rules::ALERT_RATIO,
        }
    }
}

/// The counters of one node, per namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSeries {
    /// `ipvs_connections_rejected_total{namespace}`.
    pub rejected: BTreeMap<String, Series>,
    /// `ipvs_connections_total{namespace}`.
    pub total: BTreeMap<String, Series>,
}

/// The conditions that hold at `t` (before `for`).
pub fn conditions(s: &NodeSeries, t: f64, th: &Thresholds) -> BTreeSet<Alert> {
    let mut out = BTreeSet::new();
    let rates: BTreeMap<&String, f64> = s
        .rejected
        .iter()
        .filter_map(|(ns, series)| Some((ns, rate(series, t, th.window)?)))
        .collect();
    if !rates.is_empty() && rates.values().sum::<f64>() > th.rate {
        out.insert(Alert::RejectionRate);
    }
    for (ns, r) in &rates {
        let Some(total) = s.total.get(*ns).and_then(|x| rate(x, t, th.window)) else {
            continue;
        };
        // PromQL division: x/0 is +Inf (fires when x > 0), 0/0 is NaN (never fires).
        let ratio = *r / total;
        if ratio > th.ratio {
            out.insert(Alert::RejectionRatio((*ns).clone()));
        }
    }
    out
}

/// Pending and firing state across evaluations, like a Prometheus rule group.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    /// Thresholds.
    pub th: Thresholds,
    pending: BTreeMap<Alert, f64>,
}

impl Evaluator {
    /// A new evaluator.
    pub fn new(th: Thresholds) -> Evaluator {
        Evaluator {
            th,
            pending: BTreeMap::new(),
        }
    }

    /// One evaluation at `t`: returns the firing alerts.
    pub fn eval(&mut self, s: &NodeSeries, t: f64) -> BTreeSet<Alert> {
        let now = conditions(s, t, &self.th);
        self.pending.retain(|a, _| now.contains(a));
        for a in &now {
            self.pending.entry(a.clone()).or_insert(t);
        }
        self.pending
            .iter()
            .filter(|(_, since)| t - **since >= self.th.for_secs)
            .map(|(a, _)| a.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(per_sec: f64, every: f64, until: f64) -> Series {
        let mut s = Vec::new();
        let mut t = 0.0;
        while t <= until {
            s.push((t, per_sec * t));
            t += every;
        }
        s
    }

    #[test]
    fn rate_of_a_steady_counter_is_its_slope() {
        // Samples every 15 s at 12/s, a window fully covered: no extrapolation error.
        let s = linear(12.0, 15.0, 900.0);
        let r = rate(&s, 900.0, 300.0).unwrap();
        assert!((r - 12.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn rate_needs_two_samples_and_handles_resets() {
        assert_eq!(rate(&[(0.0, 5.0)], 10.0, 300.0), None);
        // 0,10,20 then reset to 5: increase 20 + 5 = 25 over 45 s of samples.
        let s = vec![(0.0, 0.0), (15.0, 10.0), (30.0, 20.0), (45.0, 5.0)];
        let r = rate(&s, 45.0, 45.0).unwrap();
        // Extrapolation: to_start 0 (< threshold), to_end 0: 25 / 45.
        assert!((r - 25.0 / 45.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn an_alert_fires_only_after_its_condition_held_for_the_for_duration() {
        let mut ns = NodeSeries::default();
        ns.rejected.insert("shop".into(), linear(20.0, 15.0, 600.0));
        ns.total.insert("shop".into(), linear(100.0, 15.0, 600.0));
        let mut e = Evaluator::new(Thresholds::default());
        // Evaluations every 60 s: pending from the first that sees two samples.
        assert!(e.eval(&ns, 0.0).is_empty());
        let fired_at_60 = e.eval(&ns, 60.0);
        assert!(fired_at_60.is_empty(), "pending, not yet firing");
        // The ratio (20% > 1%) held since 60 s: firing. The rate is averaged over the 5 m
        // window from a counter that starts at 0: 20/s × 120 s / 300 s = 8/s, not yet > 10.
        let at_120 = e.eval(&ns, 120.0);
        assert_eq!(
            at_120.into_iter().collect::<Vec<_>>(),
            vec![Alert::RejectionRatio("shop".into())]
        );
        // 12/s at 180 s: pending; firing one evaluation interval later.
        assert!(!e.eval(&ns, 180.0).contains(&Alert::RejectionRate));
        assert!(e.eval(&ns, 240.0).contains(&Alert::RejectionRate));
    }

    #[test]
    fn a_quiet_namespace_never_fires_and_division_by_zero_follows_promql() {
        let mut ns = NodeSeries::default();
        ns.rejected.insert("a".into(), linear(0.0, 15.0, 600.0));
        ns.total.insert("a".into(), linear(0.0, 15.0, 600.0));
        assert!(
            conditions(&ns, 600.0, &Thresholds::default()).is_empty(),
            "0/0 is NaN"
        );
        ns.rejected.insert("a".into(), linear(0.5, 15.0, 600.0));
        let c = conditions(&ns, 600.0, &Thresholds::default());
        assert!(
            c.contains(&Alert::RejectionRatio("a".into())),
            "x/0 is +Inf"
        );
        assert!(!c.contains(&Alert::RejectionRate), "0.5/s < 10/s");
    }
}
