//! The daemon's in-memory rejection history: per namespace, the cumulative probe counts
//! (total, rejected) over the last hour, one sample per [`RESOLUTION`] seconds plus the
//! latest. The report's "rejection rate per namespace over the last hour" chart is drawn from
//! it. It lives in memory only: a restarted daemon starts with an empty history (documented in
//! docs/report.md); the counters it samples restart at zero too.
//!
//! Pure: the caller passes the time of each sample. It must not grow past [`WINDOW`].

use std::collections::BTreeMap;

use serde::Serialize;

/// How far back the history reaches, seconds.
pub const WINDOW: u64 = 3600;
/// At most one kept sample per this many seconds (the latest sample is always kept).
pub const RESOLUTION: u64 = 10;

/// The cumulative probe counts of a namespace at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Probes so far.
    pub total: u64,
    /// Rejected probes so far (refused, reset, timed out).
    pub rejected: u64,
}

/// Per-namespace ring buffers of [`Sample`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    series: BTreeMap<String, Vec<Sample>>,
}

impl History {
    /// Records the counts of `namespace` at `s.at`. While the latest sample is less than
    /// [`RESOLUTION`] after the one before it, a new sample replaces it, so the series keeps its
    /// resolution and always ends with the newest counts. Samples older than [`WINDOW`] are dropped, in every
    /// namespace (a namespace with none left is forgotten).
    pub fn record(&mut self, namespace: &str, s: Sample) {
        let v = self.series.entry(namespace.to_owned()).or_default();
        match v.as_slice() {
            [.., prev, last] if last.at.saturating_sub(prev.at) < RESOLUTION && s.at >= last.at => {
                let n = v.len();
                v[n - 1] = s;
            }
            [.., last] if s.at < last.at => {} // the clock went back: keep what is known
            _ => v.push(s),
        }
        let keep = s.at.saturating_sub(WINDOW);
        for v in self.series.values_mut() {
            v.retain(|x| x.at >= keep);
        }
        self.series.retain(|_, v| !v.is_empty());
    }

    /// The samples per namespace, oldest first.
    pub fn series(&self) -> &BTreeMap<String, Vec<Sample>> {
        &self.series
    }
}

/// Rejected probes per second between consecutive samples, at the later sample's time. Both
/// counters restart together (the namespace was rolled back and migrated again): when either
/// went down the increase is the new value, as Prometheus' `rate()` treats a counter reset.
pub fn rates(samples: &[Sample]) -> Vec<(u64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].at.checked_sub(w[0].at).filter(|d| *d > 0)?;
            Some((w[1].at, increase(&w[0], &w[1]).1 as f64 / dt as f64))
        })
        .collect()
}

/// The share of probes rejected over the whole series (reset-aware), or `None` with no probe.
pub fn ratio(samples: &[Sample]) -> Option<f64> {
    let (mut total, mut rejected) = (0u64, 0u64);
    for w in samples.windows(2) {
        let (t, r) = increase(&w[0], &w[1]);
        total += t;
        rejected += r;
    }
    if let [only] = samples {
        (total, rejected) = (only.total, only.rejected);
    }
    (total > 0).then(|| rejected as f64 / total as f64)
}

/// (total, rejected) added from `a` to `b`.
fn increase(a: &Sample, b: &Sample) -> (u64, u64) {
    if b.total < a.total || b.rejected < a.rejected {
        (b.total, b.rejected)
    } else {
        (b.total - a.total, b.rejected - a.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: u64, total: u64, rejected: u64) -> Sample {
        Sample {
            at,
            total,
            rejected,
        }
    }

    #[test]
    fn samples_closer_than_the_resolution_replace_the_latest() {
        let mut h = History::default();
        for t in 0..=25 {
            h.record("a", s(1000 + t, t, 0));
        }
        let at: Vec<u64> = h.series()["a"].iter().map(|x| x.at).collect();
        // 1000 stays; 1010 is the first 10 s after it, 1020 after that; 1025 is the latest.
        assert_eq!(at, vec![1000, 1010, 1020, 1025]);
        assert_eq!(h.series()["a"][3].total, 25);
    }

    #[test]
    fn samples_older_than_an_hour_are_dropped_and_empty_namespaces_forgotten() {
        let mut h = History::default();
        h.record("old", s(100, 1, 0));
        h.record("new", s(100 + WINDOW + 1, 1, 0));
        assert!(!h.series().contains_key("old"));
        assert_eq!(h.series()["new"].len(), 1);
    }

    #[test]
    fn the_buffer_never_holds_more_than_an_hour_at_its_resolution() {
        let mut h = History::default();
        for t in 0..3 * WINDOW {
            h.record("a", s(t, t, 0));
        }
        assert!(h.series()["a"].len() as u64 <= WINDOW / RESOLUTION + 2);
    }

    #[test]
    fn rates_are_increases_per_second_and_a_reset_counts_from_zero() {
        let v = [
            s(0, 0, 0),
            s(10, 40, 5),
            s(20, 80, 25),
            s(30, 4, 2),
            s(40, 8, 2),
        ];
        assert_eq!(rates(&v), vec![(10, 0.5), (20, 2.0), (30, 0.2), (40, 0.0)]);
    }

    #[test]
    fn the_ratio_is_rejected_over_total_across_a_reset() {
        let v = [s(0, 10, 0), s(10, 50, 10), s(20, 10, 10)];
        // increases: total 40 + 10 (reset), rejected 10 + 10 (reset with it)
        assert_eq!(ratio(&v), Some(20.0 / 50.0));
        assert_eq!(ratio(&[s(0, 0, 0)]), None);
        assert_eq!(ratio(&[s(0, 4, 1)]), Some(0.25));
    }
}
