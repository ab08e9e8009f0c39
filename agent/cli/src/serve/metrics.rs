//! The daemon's metrics (docs/metrics.md), one struct registered on one prometheus-client
//! registry whose constant label `node` every series carries. Names come from
//! `ipvsmig_engine::rules` (the alerting rules read them); label values are closed sets or
//! namespaces being migrated, never text from a request.
//!
//! Series that only mean something once namespaces are migrated (per-namespace counters, the
//! phase and switch gauges) appear when the reconcile loop first sets them: a switch-expiry
//! gauge at 0 would fire `IPVSMigrateSwitchExpiring` on a node with nothing migrated.

use std::time::{SystemTime, UNIX_EPOCH};

use ipvsmig_engine::rules;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub mod node;
// Used by the test that writes and checks docs/metrics.md, not by the daemon.
#[cfg(test)]
pub mod reference;

use node::NodeMetrics;

/// `Content-Type` of `/metrics` (OpenMetrics text, which Prometheus negotiates and parses).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the per-namespace series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// A migrated namespace.
    pub namespace: String,
}

/// Labels of the phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// A migrated namespace.
    pub namespace: String,
    /// `Phase::name()` of the cutover machine.
    pub phase: String,
}

/// Where a rollback trigger came from (closed set).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    /// The built-in evaluator of rules/ thresholds.
    Builtin,
    /// Alertmanager's webhook.
    Alertmanager,
    /// The polled Prometheus query (alerts/prom.rs).
    Prometheus,
}

impl Source {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Builtin => "builtin",
            Source::Alertmanager => "alertmanager",
            Source::Prometheus => "prometheus",
        }
    }
}

/// Why a webhook call was refused (closed set).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// No or wrong bearer token.
    Unauthorized,
    /// Not an Alertmanager webhook payload.
    Malformed,
    /// Over the webhook's rate limit (429; serve/ratelimit.rs).
    RateLimited,
}

impl Refusal {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Malformed => "malformed",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// Labels `source`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// [`Source::as_str`].
    pub source: &'static str,
}

/// Labels `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// [`Refusal::as_str`].
    pub reason: &'static str,
}

/// Labels of the Kubernetes API counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `ipvsmig_kube::KubeError::kind()`, or `dropped` (an event over the queue).
    pub outcome: &'static str,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    /// `ipvs_connections_total{namespace}`.
    pub connections: Family<NamespaceLabels, Counter>,
    /// `ipvs_connections_rejected_total{namespace}`.
    pub rejected: Family<NamespaceLabels, Counter>,
    /// `ipvs_migrate_probe_failures_total{namespace}`.
    pub probe_failures: Family<NamespaceLabels, Counter>,
    /// `ipvs_migrate_reconcile_errors_total`.
    pub reconcile_errors: Counter,
    /// `ipvs_migrate_phase_started_timestamp_seconds{namespace, phase}`.
    pub phase_started: Family<PhaseLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `ipvs_migrate_switch_expires_timestamp_seconds`.
    pub switch_expires: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `ipvs_migrate_rollback_triggers_total{source}`.
    pub triggers: Family<SourceLabels, Counter>,
    /// `ipvs_migrate_webhook_refused_total{reason}`.
    pub webhook_refused: Family<ReasonLabels, Counter>,
    /// `ipvs_migrate_kube_api_requests_total{outcome}` (serve/kube.rs).
    pub kube_api: Family<OutcomeLabels, Counter>,
    /// Kernel counters, sync and probe durations, rollbacks, phase (metrics/node.rs).
    pub node: NodeMetrics,
}

/// A counter's name without the `_total` suffix prometheus-client adds.
fn stem(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Metrics {
    /// The metrics registered on a new registry labelled with `node`, process start time
    /// included.
    pub fn register(node: &str) -> (Metrics, Registry) {
        let mut reg = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("node"),
                std::borrow::Cow::Owned(node.to_owned()),
            )]
            .into_iter(),
        );
        let m = Metrics {
            connections: Family::default(),
            rejected: Family::default(),
            probe_failures: Family::default(),
            reconcile_errors: Counter::default(),
            phase_started: Family::default(),
            switch_expires: Family::default(),
            triggers: Family::default(),
            webhook_refused: Family::default(),
            kube_api: Family::default(),
            node: NodeMetrics::register(&mut reg),
        };
        reg.register(
            stem(rules::M_TOTAL),
            "Connections the agent's probes attempted to the namespace's VIPs",
            m.connections.clone(),
        );
        reg.register(
            stem(rules::M_REJECTED),
            "Probe connections refused, reset or timed out",
            m.rejected.clone(),
        );
        reg.register(
            stem(rules::M_PROBE_FAILURES),
            "Probes whose answer did not match expectation",
            m.probe_failures.clone(),
        );
        reg.register(
            stem(rules::M_RECONCILE_ERRORS),
            "Failed reconcile passes",
            m.reconcile_errors.clone(),
        );
        reg.register(
            rules::M_PHASE_SINCE,
            "When the namespace entered its current cutover phase (unix seconds)",
            m.phase_started.clone(),
        );
        reg.register(
            rules::M_SWITCH_EXPIRES,
            "When the earliest admission entry expires unless refreshed (unix seconds)",
            m.switch_expires.clone(),
        );
        reg.register(
            "ipvs_migrate_rollback_triggers",
            "Rollback triggers accepted (after deduplication), by source",
            m.triggers.clone(),
        );
        reg.register(
            "ipvs_migrate_webhook_refused",
            "Alertmanager webhook calls refused, by reason",
            m.webhook_refused.clone(),
        );
        reg.register(
            "ipvs_migrate_kube_api_requests",
            "Kubernetes API requests of the agent (Node status, Events, kube-proxy's ConfigMap), by outcome",
            m.kube_api.clone(),
        );
        // Counters with a closed label set start at 0, so rate() sees the first increase.
        for outcome in ["ok", super::kube::OUTCOME_DROPPED]
            .into_iter()
            .chain(ipvsmig_kube::error::KINDS)
        {
            let _ = m.kube_api.get_or_create(&OutcomeLabels { outcome });
        }
        for source in [Source::Builtin, Source::Alertmanager, Source::Prometheus] {
            let _ = m.triggers.get_or_create(&SourceLabels {
                source: source.as_str(),
            });
        }
        for r in [
            Refusal::Unauthorized,
            Refusal::Malformed,
            Refusal::RateLimited,
        ] {
            let _ = m
                .webhook_refused
                .get_or_create(&ReasonLabels { reason: r.as_str() });
        }
        let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        reg.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        );
        (m, reg)
    }

    /// Counts an accepted trigger.
    pub fn trigger(&self, source: Source) {
        self.triggers
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .inc();
    }

    /// Counts a refused webhook call.
    pub fn refused(&self, why: Refusal) {
        self.webhook_refused
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a Kubernetes API request's outcome (a closed set: see [`OutcomeLabels`]).
    pub fn kube_api(&self, outcome: &'static str) {
        self.kube_api
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// What the reconcile loop records (with `Metrics::node`).
impl Metrics {
    /// Records one probe of `namespace`: its duration, one attempted connection, and one
    /// rejected when it was refused, reset or timed out (DESIGN.md: all three count).
    pub fn probe(&self, namespace: &str, took: std::time::Duration, rejected: bool) {
        let ns = NamespaceLabels {
            namespace: namespace.to_owned(),
        };
        self.node.observe_probe(namespace, took);
        self.connections.get_or_create(&ns).inc();
        if rejected {
            self.rejected.get_or_create(&ns).inc();
        }
    }

    /// Puts `namespace` at `phase`, entered at `since` (unix seconds): the phase gauge and
    /// the phase-started gauge move to the new phase's series, the previous phase's series
    /// are removed (a stale `phase_started` would fire `IPVSMigratePhaseStuck`).
    pub fn set_phase(&self, namespace: &str, phase: &ipvsmig_engine::cutover::Phase, since: f64) {
        if let Some(old) = self.node.set_phase(namespace, phase) {
            self.phase_started.remove(&node::labels(namespace, old));
        }
        self.phase_started
            .get_or_create(&node::labels(namespace, phase.name()))
            .set(since);
    }

    /// Removes `namespace`'s phase series (it is no longer migrated).
    pub fn forget_phase(&self, namespace: &str) {
        if let Some(old) = self.node.forget(namespace) {
            self.phase_started.remove(&node::labels(namespace, old));
        }
    }
}

/// The registry as OpenMetrics text.
pub fn encode(reg: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, reg)?;
    Ok(out)
}
