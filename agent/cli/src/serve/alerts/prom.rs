//! The optional Prometheus trigger (DESIGN.md: "an optional Prometheus query"): every
//! `prometheusInterval` the loop asks `GET /api/v1/query?query=EXPR` (Prometheus HTTP API,
//! prometheus.io/docs/prometheus/latest/querying/api/) and each series of the instant vector
//! is read as a firing alert. By default EXPR selects this node's firing rollback alerts from
//! `ALERTS`, which carries the alert's labels (`alertname`, `alertstate`, `node`,
//! `namespace`, `ipvs_migrate_rollback`), so the same rule as the webhook's decides which
//! series trigger ([`Dedup::decide`]). A poll sees the whole firing set: a key missing from a
//! poll has resolved and triggers again when it returns.
//!
//! The query runs over `ipvsmig_host::http_get` (plain HTTP, bounded); building the request
//! and reading the answer are pure functions. A child of alerts.rs: same triggers.

use std::collections::{BTreeMap, BTreeSet};

use ipvsmig_host::http_get::{self, HttpError, Limits, Url};
use serde::Deserialize;

use super::{Alert, Decision, Dedup, Key, ROLLBACK_LABEL, Status, Trigger};

/// Time and size bounds of one query.
pub const LIMITS: Limits = Limits {
    timeout: std::time::Duration::from_secs(10),
    max_bytes: 4 << 20,
};

/// Why a poll gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// Not reachable, too slow, too large, not HTTP.
    #[error("Prometheus: {0}")]
    Http(#[from] HttpError),
    /// Prometheus answered with its error document.
    #[error("Prometheus query failed (HTTP {status}, {error_type}): {error}")]
    Api {
        /// HTTP status (400 bad_data, 422 execution, 503 timeout, ...).
        status: u16,
        /// `errorType`.
        error_type: String,
        /// `error`.
        error: String,
    },
    /// Not the API's JSON envelope, or not an instant vector.
    #[error("Prometheus answer (HTTP {status}) not understood: {message}")]
    Answer {
        /// HTTP status.
        status: u16,
        /// What is wrong.
        message: String,
    },
}

/// The default expression: this node's firing rollback alerts.
pub fn default_query(node: &str) -> String {
    format!(
        "ALERTS{{alertstate=\"firing\",{ROLLBACK_LABEL}=\"true\",node=\"{}\"}}",
        promql_string(node)
    )
}

/// `s` escaped for a double-quoted PromQL string (backslash and quote; Go string rules).
fn promql_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `s` percent-encoded for a query parameter: everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request target for `expr` below the server's path prefix (`""` or `/prometheus`).
pub fn query_target(prefix: &str, expr: &str) -> String {
    format!("{prefix}/api/v1/query?query={}", urlencode(expr))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
}

/// The label sets of an instant-vector answer (HTTP status and body).
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<BTreeMap<String, String>>, PromError> {
    let answer = |message: String| PromError::Answer { status, message };
    let env: Envelope = serde_json::from_slice(body).map_err(|e| answer(e.to_string()))?;
    match env.status.as_str() {
        "success" => {}
        "error" => {
            return Err(PromError::Api {
                status,
                error_type: env.error_type.unwrap_or_default(),
                error: env.error.unwrap_or_default(),
            });
        }
        other => return Err(answer(format!("status {other:?}"))),
    }
    let data = env.data.ok_or_else(|| answer("no `data`".into()))?;
    if data.result_type != "vector" {
        return Err(answer(format!(
            "resultType {:?}: the query must give an instant vector",
            data.result_type
        )));
    }
    Ok(data.result.into_iter().map(|s| s.metric).collect())
}

/// Runs `expr` against the Prometheus at `url` (blocking; call it off the async runtime).
pub fn query(
    url: &Url,
    expr: &str,
    limits: Limits,
) -> Result<Vec<BTreeMap<String, String>>, PromError> {
    let addr = url.resolve()?;
    let r = http_get::get(
        addr,
        &url.authority(),
        &query_target(&url.path, expr),
        limits,
    )?;
    parse_answer(r.status, &r.body)
}

/// Which polled series are new triggers: one per (alertname, namespace) while it stays in the
/// answers, again after it was missing from one.
#[derive(Debug, Default)]
pub struct PollDedup {
    dedup: Dedup,
    firing: BTreeSet<Key>,
}

/// One poll's outcome.
#[derive(Debug, Default, PartialEq)]
pub struct Polled {
    /// New triggers (their keys are marked sent).
    pub triggers: Vec<(Key, Trigger)>,
    /// Series already triggered.
    pub duplicates: usize,
    /// Series that are not this node's firing rollback alerts.
    pub ignored: usize,
}

impl PollDedup {
    /// Decides about one poll's series for `node`. A trigger that cannot be queued should be
    /// [`PollDedup::forget`]-ten: the next poll triggers it again.
    pub fn poll(&mut self, node: &str, series: &[BTreeMap<String, String>]) -> Polled {
        let mut out = Polled::default();
        let mut now = BTreeSet::new();
        for labels in series {
            // ALERTS also holds pending alerts; a custom query might return them.
            if labels.get("alertstate").is_some_and(|s| s != "firing") {
                out.ignored += 1;
                continue;
            }
            let a = Alert {
                status: Status::Resolved,
                labels: labels.clone(),
                annotations: BTreeMap::new(),
                starts_at: None,
            };
            // Asked about the resolved form, `decide` gives the key (or ignores the series)
            // without changing anything: the webhook's rule, not a copy of it.
            let Decision::Resolved(key) = self.dedup.decide(node, &a) else {
                out.ignored += 1;
                continue;
            };
            now.insert(key);
            let firing = Alert {
                status: Status::Firing,
                ..a
            };
            match self.dedup.decide(node, &firing) {
                Decision::Trigger(key, t) => {
                    self.dedup.sent(key.clone());
                    out.triggers.push((key, t));
                }
                _ => out.duplicates += 1,
            }
        }
        for gone in self.firing.difference(&now) {
            self.dedup.resolve(gone);
        }
        self.firing = now;
        out
    }

    /// `key` was not handed on: the next poll that returns it triggers again.
    #[allow(
        dead_code,
        reason = "the reconcile loop acts on a poll's triggers at once; a queued hand-over would need it"
    )]
    pub fn forget(&mut self, key: &Key) {
        self.dedup.resolve(key);
        self.firing.remove(key);
    }
}

#[cfg(test)]
mod tests;
