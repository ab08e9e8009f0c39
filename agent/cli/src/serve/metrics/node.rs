//! The node-level metrics of the rollback signal (DESIGN.md "Rejection-rate signal and
//! rollback"; docs/metrics.md): the kernel's IPVS, ICMP, TCP and conntrack counters as the
//! reconcile loop last read them, the loop's sync-duration histogram with kube-proxy's buckets,
//! probe latency, rollbacks by reason and the cutover phase. Registered from
//! `Metrics::register`; the loop calls the methods, the HTTP handler only encodes.
//!
//! Kernel counters are exported with the kernel's own value (a reset when a module reloads
//! is what Prometheus's `rate()` already handles), and only once read: a counter whose file
//! is absent (IPVS not loaded yet) has no series rather than a misleading 0. This module reads
//! no files itself; `refresh_node` takes a reading made by `ipvsmig_host::counters`.
//! (A child of metrics.rs so that the daemon's module list, serve.rs, stays as it is.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvsmig_engine::cutover::Phase;
use ipvsmig_host::counters::Counters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{NamespaceLabels, PhaseLabels};

/// kube-proxy's `sync_proxy_rules_duration_seconds` buckets,
/// `metrics.ExponentialBuckets(0.001, 2, 15)` (pkg/proxy/metrics/metrics.go): 1 ms … 16.384 s,
/// so dashboards compare the agent's sync with kube-proxy's bucket for bucket.
pub fn sync_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

/// Probe latency buckets: 100 µs (a loopback connect) … 3.2768 s (past the 2 s probe timeout).
pub fn probe_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 16)
}

/// Why a namespace was rolled back (closed set: the `reason` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RollbackReason {
    /// The built-in evaluator's rate or ratio alert fired.
    AlertBuiltin,
    /// An Alertmanager webhook trigger.
    Alertmanager,
    /// The Prometheus query returned a firing rollback alert.
    Prometheus,
    /// The agent's own probes failed after apply.
    ProbeFailed,
    /// Applying the wave failed.
    ApplyFailed,
    /// An operator asked (`rollback`, abort).
    Operator,
    /// The agent restarted into a state it rolls back from.
    Restart,
}

impl RollbackReason {
    /// Every reason, for exporting each from 0.
    pub const ALL: [RollbackReason; 7] = [
        RollbackReason::AlertBuiltin,
        RollbackReason::Alertmanager,
        RollbackReason::Prometheus,
        RollbackReason::ProbeFailed,
        RollbackReason::ApplyFailed,
        RollbackReason::Operator,
        RollbackReason::Restart,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::AlertBuiltin => "alert_builtin",
            RollbackReason::Alertmanager => "alertmanager",
            RollbackReason::Prometheus => "prometheus",
            RollbackReason::ProbeFailed => "probe_failed",
            RollbackReason::ApplyFailed => "apply_failed",
            RollbackReason::Operator => "operator",
            RollbackReason::Restart => "restart",
        }
    }
}

/// Labels `reason` of the rollbacks counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    /// [`RollbackReason::as_str`].
    pub reason: &'static str,
}

/// The kernel counters' last reading, encoded at scrape time.
#[derive(Debug, Default)]
struct KernelCounters {
    last: Mutex<Option<Counters>>,
}

/// (name without `_total`, help, value) of each kernel counter in a reading.
fn kernel_series(c: &Counters) -> [(&'static str, &'static str, Option<u64>); 8] {
    let ipvs = c.ipvs;
    [
        (
            "ipvs_incoming_packets",
            "Packets IPVS received for its virtual services (/proc/net/ip_vs_stats)",
            ipvs.map(|i| i.in_packets),
        ),
        (
            "ipvs_outgoing_packets",
            "Packets IPVS sent back from real servers (/proc/net/ip_vs_stats)",
            ipvs.map(|i| i.out_packets),
        ),
        (
            "ipvs_incoming_bytes",
            "Bytes IPVS received for its virtual services (/proc/net/ip_vs_stats)",
            ipvs.map(|i| i.in_bytes),
        ),
        (
            "ipvs_outgoing_bytes",
            "Bytes IPVS sent back from real servers (/proc/net/ip_vs_stats)",
            ipvs.map(|i| i.out_bytes),
        ),
        (
            "ipvs_scheduled_connections",
            "Connections IPVS scheduled to a real server (/proc/net/ip_vs_stats)",
            ipvs.map(|i| i.conns),
        ),
        (
            "ipvs_migrate_icmp_dest_unreachable_sent",
            "ICMP destination-unreachable messages the node sent (/proc/net/snmp Icmp OutDestUnreachs)",
            c.icmp_dest_unreachable_sent(),
        ),
        (
            "ipvs_migrate_tcp_resets_sent",
            "TCP resets the node sent (/proc/net/snmp Tcp OutRsts)",
            c.tcp_resets_sent(),
        ),
        (
            "ipvs_migrate_conntrack_drops",
            "Conntrack drop + early_drop + insert_failed over all CPUs (/proc/net/stat/nf_conntrack)",
            c.conntrack.and_then(|d| d.total()),
        ),
    ]
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(c) = *self.last.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(());
        };
        for (name, help, value) in kernel_series(&c) {
            let Some(v) = value else { continue };
            let counter = ConstCounter::new(v);
            let m = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(m)?;
        }
        Ok(())
    }
}

/// The node-level metrics (see the module doc).
#[derive(Debug)]
pub struct NodeMetrics {
    kernel: Arc<KernelCounters>,
    /// `ipvs_migrate_sync_duration_seconds`.
    pub sync_duration: Histogram,
    /// `ipvs_migrate_probe_duration_seconds{namespace}`.
    pub probe_duration: Family<NamespaceLabels, Histogram>,
    /// `ipvs_migrate_rollbacks_total{reason}`.
    pub rollbacks: Family<RollbackLabels, Counter>,
    /// `ipvs_migrate_phase{namespace, phase}`: 1 at each namespace's current phase.
    pub phase: Family<PhaseLabels, Gauge>,
    /// Each namespace's phase as last set, to remove the previous phase's series.
    current: Mutex<BTreeMap<String, &'static str>>,
}

impl NodeMetrics {
    /// Registers the node metrics on `reg`.
    pub fn register(reg: &mut Registry) -> NodeMetrics {
        let m = NodeMetrics {
            kernel: Arc::new(KernelCounters::default()),
            sync_duration: Histogram::new(sync_buckets()),
            probe_duration: Family::new_with_constructor(|| Histogram::new(probe_buckets())),
            rollbacks: Family::default(),
            phase: Family::default(),
            current: Mutex::new(BTreeMap::new()),
        };
        reg.register_collector(Box::new(Arc::clone(&m.kernel)));
        reg.register(
            "ipvs_migrate_sync_duration_seconds",
            "Duration of one reconcile pass (kube-proxy's sync_proxy_rules_duration_seconds buckets)",
            m.sync_duration.clone(),
        );
        reg.register(
            "ipvs_migrate_probe_duration_seconds",
            "Duration of one probe of a namespace's VIP, answered or not",
            m.probe_duration.clone(),
        );
        reg.register(
            "ipvs_migrate_rollbacks",
            "Rollbacks started, by reason",
            m.rollbacks.clone(),
        );
        reg.register(
            "ipvs_migrate_phase",
            "1 for the namespace's current cutover phase",
            m.phase.clone(),
        );
        // A closed label set starts at 0, so rate() sees the first rollback.
        for r in RollbackReason::ALL {
            let _ = m
                .rollbacks
                .get_or_create(&RollbackLabels { reason: r.as_str() });
        }
        m
    }

    /// Records one reconcile pass's duration.
    pub fn observe_sync(&self, d: Duration) {
        self.sync_duration.observe(d.as_secs_f64());
    }

    /// Records one probe's duration for `namespace`.
    pub fn observe_probe(&self, namespace: &str, d: Duration) {
        self.probe_duration
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .observe(d.as_secs_f64());
    }

    /// Counts a rollback.
    pub fn rollback(&self, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Exports `c` as the kernel counters' values from now on.
    pub fn refresh_node(&self, c: &Counters) {
        *self.kernel.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(*c);
    }

    /// Puts `namespace` at `phase`: its gauge at the new phase is 1 and the previous phase's
    /// series is removed (one series per namespace). Returns the previous phase's name.
    pub fn set_phase(&self, namespace: &str, phase: &Phase) -> Option<&'static str> {
        let name = phase.name();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let previous = cur.insert(namespace.to_owned(), name);
        if let Some(old) = previous.filter(|old| *old != name) {
            self.phase.remove(&labels(namespace, old));
        }
        self.phase.get_or_create(&labels(namespace, name)).set(1);
        previous
    }

    /// Drops `namespace`'s phase series (no longer migrated). Returns the phase it had.
    pub fn forget(&self, namespace: &str) -> Option<&'static str> {
        let old = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(namespace)?;
        self.phase.remove(&labels(namespace, old));
        Some(old)
    }
}

/// The phase gauges' labels.
pub fn labels(namespace: &str, phase: &str) -> PhaseLabels {
    PhaseLabels {
        namespace: namespace.to_owned(),
        phase: phase.to_owned(),
    }
}

#[cfg(test)]
mod tests;
