//! The daemon's readiness report (docs/report.md): `/` (HTML) and `/api/v1/report` (JSON,
//! `kind: Report`): the audit of the node's live state — the same computation as
//! `ipvs-migrate audit` — plus the migration section from the journal and the in-memory
//! rejection history the reconcile loop feeds after each probe round.
//!
//! The audit reads every KUBE-* rule (seconds at 20k services): it runs on the blocking pool,
//! one at a time, and is cached for [`ReportState::ttl`] (the reconcile period, at least
//! [`MIN_TTL`]); rendering and serializing run there too. Handlers only await, so `/metrics`
//! and `/readyz` never wait behind a report. The virtual servers and kube-ipvs0 the journal
//! owns are the migration itself: the audit leaves them out of the preflight's facts (they are
//! not another program's). It must not change anything on the node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipvsmig_engine::report::migration::{Inputs as MigrationInputs, Rollback};
use ipvsmig_engine::report::{Audit, Document, History, Migration, Sample};

use crate::audit::Ours;
use crate::cli::{BackendArg, Inputs};
use crate::migrate::{StatusDoc, unix_now};

/// The shortest time an audit is reused for.
pub const MIN_TTL: Duration = Duration::from_secs(5);

/// What the report audits.
#[derive(Debug, Clone)]
pub enum Source {
    /// The node (its inputs as the daemon reads them).
    Node {
        /// Node IPs, kube-proxy's configuration, host root.
        inputs: Box<Inputs>,
        /// `--iptables-backend`.
        backend: BackendArg,
    },
    /// The bundled snapshot: the router tests' offline source.
    #[cfg(test)]
    Demo,
}

/// The report's state in the daemon: source, cached audit, rejection history.
pub struct ReportState {
    source: Source,
    /// How long an audit is reused.
    pub ttl: Duration,
    /// When the daemon started (unix seconds): the history begins here.
    started: u64,
    cache: tokio::sync::Mutex<Option<(Instant, Ours, Arc<Audit>)>>,
    history: Mutex<History>,
}

/// A rendered report: JSON or HTML bytes.
pub enum Rendered {
    /// `kind: Report` JSON.
    Json(Vec<u8>),
    /// The page.
    Html(String),
}

impl ReportState {
    /// A report of `source`, an audit reused for `ttl` (at least [`MIN_TTL`]).
    pub fn new(source: Source, ttl: Duration) -> ReportState {
        ReportState {
            source,
            ttl: ttl.max(MIN_TTL),
            started: unix_now(),
            cache: tokio::sync::Mutex::new(None),
            history: Mutex::new(History::default()),
        }
    }

    /// Records a namespace's cumulative probe counts (the reconcile loop, after each round).
    pub fn record(&self, namespace: &str, sample: Sample) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.record(namespace, sample);
    }

    /// The audit, from the cache while it is fresh and the journal owns the same objects;
    /// computed on the blocking pool otherwise. Concurrent requests wait for the one
    /// computation.
    pub async fn audit(&self, status: &StatusDoc) -> Result<Arc<Audit>, String> {
        let ours = Ours {
            services: status.owned.services.iter().map(|(k, _)| *k).collect(),
            link: status.owned.created_link,
        };
        let mut cache = self.cache.lock().await;
        if let Some((at, o, a)) = cache.as_ref()
            && at.elapsed() < self.ttl
            && *o == ours
        {
            return Ok(Arc::clone(a));
        }
        let source = self.source.clone();
        let key = ours.clone();
        let audit = tokio::task::spawn_blocking(move || {
            let (demo, inputs, backend) = match source {
                #[cfg(test)]
                Source::Demo => (true, Box::default(), BackendArg::Auto),
                Source::Node { inputs, backend } => (false, inputs, backend),
            };
            crate::audit::audit_with(demo, &inputs, backend, &ours).map(|b| b.audit)
        })
        .await
        .map_err(|e| format!("the audit stopped: {e}"))?
        .map_err(|e| format!("the audit failed: {}", e.message))?;
        let audit = Arc::new(audit);
        *cache = Some((Instant::now(), key, Arc::clone(&audit)));
        Ok(audit)
    }

    /// The migration section from the journal's state and the history, at `now`.
    pub fn migration(&self, node: &str, status: &StatusDoc, now: u64) -> Migration {
        let owned = &status.owned;
        let rollbacks: Vec<Rollback> = owned
            .rollbacks
            .iter()
            .map(|r| Rollback {
                at: r.at,
                namespaces: r.namespaces.clone(),
                reason: r.reason.clone(),
                source: r.source.clone(),
            })
            .collect();
        let history = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Migration::build(MigrationInputs {
            node,
            now,
            started: self.started,
            migrated: &owned.namespaces,
            no_watch: owned.no_watch,
            finalized: owned.finalized,
            cutover: owned.cutover.as_ref(),
            rollbacks: &rollbacks,
            history: &history,
            last_failure: status.last_failure.as_deref(),
        })
    }
}

/// Renders the report (JSON or HTML) on the blocking pool: a 20k-service inventory serializes
/// to tens of MB.
pub async fn render(
    audit: Arc<Audit>,
    migration: Migration,
    html: bool,
) -> Result<Rendered, String> {
    tokio::task::spawn_blocking(move || {
        let doc = Document::report(&audit, &migration);
        if html {
            Ok(Rendered::Html(crate::html::page(&doc)))
        } else {
            serde_json::to_vec_pretty(&doc)
                .map(Rendered::Json)
                .map_err(|e| format!("serializing the report: {e}"))
        }
    })
    .await
    .map_err(|e| format!("rendering the report: {e}"))?
}

#[cfg(test)]
mod tests;
