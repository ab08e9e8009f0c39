//! The daemon's HTTP surface (docs/serve.md): `/healthz` and `/readyz` describe the agent
//! process (alive; its state loaded), never the node's migration verdict — a not-ready node
//! must not stall the DaemonSet rollout (DESIGN.md). `/metrics`, `/api/v1/status` (the journal,
//! read-only), the readiness report `/` (HTML) and `/api/v1/report` (JSON; report.rs) and the
//! Alertmanager webhook `/api/v1/alerts`, which needs the bearer token and hands rollback
//! triggers to the reconcile loop over a channel; it is rate-limited (ratelimit.rs: 429 +
//! Retry-After). It is the only route that changes state, and the only one behind the token:
//! the others are read-only and open for scraping. Handlers never block the runtime: the
//! journal is read, and the report computed, on the blocking pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::mpsc;

use super::alerts::{self, Decision, Dedup, Trigger};
use super::metrics::{self, Metrics, Refusal, Source};
use super::ratelimit::{Caller, Limiter};
use crate::migrate::StatusDoc;

/// Everything the handlers share.
pub struct App {
    /// This node's name.
    pub node: String,
    /// The state directory (journal).
    pub state_dir: PathBuf,
    /// Host root (the boot id is read below it).
    pub host_root: PathBuf,
    /// The webhook's bearer token; `None`: the webhook refuses every call.
    token: Option<String>,
    /// Metrics.
    pub metrics: Metrics,
    registry: Registry,
    dedup: Mutex<Dedup>,
    triggers: mpsc::Sender<Trigger>,
    ready: AtomicBool,
    limiter: Mutex<Limiter>,
    /// The readiness report: its source, cached audit and rejection history.
    pub report: super::report::ReportState,
}

impl App {
    /// A new app for `node`, sending triggers to `triggers`.
    pub fn new(
        node: String,
        state_dir: PathBuf,
        host_root: PathBuf,
        token: Option<String>,
        triggers: mpsc::Sender<Trigger>,
    ) -> App {
        let (metrics, registry) = Metrics::register(&node);
        App {
            node,
            state_dir,
            host_root,
            token,
            metrics,
            registry,
            dedup: Mutex::new(Dedup::default()),
            triggers,
            ready: AtomicBool::new(false),
            limiter: Mutex::new(Limiter::new(
                super::ratelimit::DEFAULT_RATE,
                super::ratelimit::DEFAULT_BURST,
                std::time::Instant::now(),
            )),
            report: super::report::ReportState::new(
                super::report::Source::Node {
                    inputs: Box::default(),
                    backend: crate::cli::BackendArg::Auto,
                },
                super::report::MIN_TTL,
            ),
        }
    }

    /// The webhook's rate limit: `burst` calls at once, `rate` a second sustained, for
    /// authorized and unauthorized callers each.
    pub fn with_rate_limit(mut self, rate: f64, burst: u32) -> App {
        self.limiter = Mutex::new(Limiter::new(rate, burst, std::time::Instant::now()));
        self
    }

    /// The same app with this report state (what it audits, how long an audit is reused).
    pub fn with_report(mut self, report: super::report::ReportState) -> App {
        self.report = report;
        self
    }

    /// Reads the journal (read-only) on the blocking pool.
    pub async fn status(self: &Arc<Self>) -> Result<StatusDoc, String> {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            crate::migrate::status(&app.state_dir, &app.host_root).map_err(|e| e.message)
        })
        .await
        .map_err(|e| format!("reading the journal: {e}"))?
    }

    /// Loads the state once; ready from then on (a readiness latch). Returns the error while
    /// the journal cannot be read.
    pub async fn load(self: &Arc<Self>) -> Result<(), String> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.status().await?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Why the request's bearer token is refused, or `None` when it is the configured one.
    fn refusal(&self, headers: &HeaderMap) -> Option<&'static str> {
        let Some(want) = &self.token else {
            return Some("no tokenFile is configured: the webhook is off");
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Some("no Authorization header");
        };
        let Some((scheme, got)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
            return Some("the Authorization header is not `Bearer TOKEN`");
        };
        // RFC 7235: the scheme is case-insensitive.
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Some("the Authorization scheme is not Bearer");
        }
        if alerts::constant_time_eq(got.trim().as_bytes(), want.as_bytes()) {
            None
        } else {
            Some("wrong bearer token")
        }
    }
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status))
        .route("/api/v1/alerts", post(webhook))
        .route("/", get(report_html))
        .route("/api/v1/report", get(report_json))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.load().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the journal cannot be read: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    match metrics::encode(&app.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn json_error(code: StatusCode, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "apiVersion": ipvsmig_engine::inventory::API_VERSION,
            "kind": "Error",
            "message": message,
        })),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    match app.status().await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// The report's parts: the (cached) audit and the migration section read now.
async fn report(app: &Arc<App>, html: bool) -> Result<super::report::Rendered, String> {
    let status = app.status().await?;
    let audit = app.report.audit(&status).await?;
    let migration = app
        .report
        .migration(&app.node, &status, crate::migrate::unix_now());
    super::report::render(audit, migration, html).await
}

async fn report_json(State(app): State<Arc<App>>) -> Response {
    match report(&app, false).await {
        Ok(super::report::Rendered::Json(body)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Ok(super::report::Rendered::Html(_)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn report_html(State(app): State<Arc<App>>) -> Response {
    match report(&app, true).await {
        Ok(super::report::Rendered::Html(page)) => axum::response::Html(page).into_response(),
        Ok(super::report::Rendered::Json(_)) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::response::Html(format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ipvs-migrate report unavailable</title></head><body><h1>The readiness report is not available</h1><p>{}</p></body></html>\n",
                crate::html::esc(&e)
            )),
        )
            .into_response(),
    }
}

async fn webhook(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let refusal = app.refusal(&headers);
    // The limit comes before anything else is done with the call (docs/serve.md#security).
    let caller = match refusal {
        None => Caller::Authorized,
        Some(_) => Caller::Unauthorized,
    };
    let admitted = app
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(caller, std::time::Instant::now());
    if let Err(retry_after) = admitted {
        app.metrics.refused(Refusal::RateLimited);
        tracing::warn!(
            retry_after_s = retry_after,
            authorized = refusal.is_none(),
            "Alertmanager webhook call refused (429): over the rate limit"
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from(retry_after))],
            "too many requests\n",
        )
            .into_response();
    }
    if let Some(why) = refusal {
        app.metrics.refused(Refusal::Unauthorized);
        tracing::warn!(reason = why, "Alertmanager webhook call refused (401)");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "unauthorized\n",
        )
            .into_response();
    }
    let payload: alerts::Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            app.metrics.refused(Refusal::Malformed);
            tracing::warn!(error = %e, bytes = body.len(), "Alertmanager webhook call refused (400): not a webhook payload");
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("not an Alertmanager webhook payload: {e}"),
            );
        }
    };
    if payload.version != alerts::VERSION {
        app.metrics.refused(Refusal::Malformed);
        tracing::warn!(version = %payload.version, "Alertmanager webhook call refused (400): unknown payload version");
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "webhook payload version {:?}: this agent reads version {:?}",
                payload.version,
                alerts::VERSION
            ),
        );
    }
    let (mut triggered, mut duplicates) = (0u32, 0u32);
    // No await while the lock is held: decide and hand on under one lock, so two concurrent
    // deliveries of the same alert give one trigger.
    let mut dedup = app.dedup.lock().unwrap_or_else(|p| p.into_inner());
    for a in &payload.alerts {
        match dedup.decide(&app.node, a) {
            Decision::Ignore => {}
            Decision::Duplicate => duplicates += 1,
            Decision::Resolved(key) => dedup.resolve(&key),
            Decision::Trigger(key, t) => {
                let (name, ns) = (t.alertname.clone(), t.namespace.clone());
                if let Err(e) = app.triggers.try_send(t) {
                    // Not marked as sent: Alertmanager retries on a 5xx and triggers again.
                    tracing::error!(alertname = %name, namespace = ?ns, error = %e, "rollback trigger could not be queued");
                    drop(dedup);
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the rollback trigger queue is full or closed; retry",
                    );
                }
                dedup.sent(key);
                app.metrics.trigger(Source::Alertmanager);
                tracing::info!(alertname = %name, namespace = ?ns, group = %payload.group_key, "rollback trigger from Alertmanager");
                triggered += 1;
            }
        }
    }
    drop(dedup);
    axum::Json(json!({ "triggered": triggered, "duplicates": duplicates })).into_response()
}
