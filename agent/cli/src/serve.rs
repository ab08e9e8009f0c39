//! `ipvs-migrate serve`: the node agent (DESIGN.md "Who runs it"; docs/serve.md). This build
//! has its configuration, the HTTP server (health, readiness, metrics, status, the
//! Alertmanager webhook) and graceful shutdown; the reconcile loop that consumes rollback
//! triggers, refreshes the dead man's switch and runs probes is still to come — until then a
//! trigger is logged as an error and nothing is rolled back. Tokio and axum live only here.
//!
//! One current-thread runtime: the server is a handful of small requests a minute, and
//! blocking work (reading the journal) goes to tokio's blocking pool.

pub mod alerts;
pub mod config;
pub mod http;
pub mod metrics;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::exit::{CliError, ExitCode};

/// Rollback triggers waiting for the reconcile loop; when full, the webhook answers 503 and
/// Alertmanager retries.
pub const TRIGGER_QUEUE: usize = 64;

/// How long open connections may keep a shutting-down agent alive.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT; exit 0 after a graceful shutdown.
pub fn serve_cmd(
    state_dir: &Path,
    listen: Option<&str>,
    config_file: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let mut cfg = config::load(config_file)?;
    if let Some(l) = listen {
        cfg.listen = config::parse_listen(l)
            .map_err(|m| CliError::new(ExitCode::Usage, format!("--listen: {m}")))?;
    }
    let token = cfg
        .token_file
        .as_deref()
        .map(config::read_token)
        .transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ExitCode::OperationFailed, format!("tokio runtime: {e}")))?;
    rt.block_on(run(cfg, token, state_dir))
}

async fn run(
    cfg: config::Config,
    token: Option<String>,
    state_dir: &Path,
) -> Result<ExitCode, CliError> {
    let failed = |what: &str, e: std::io::Error| {
        CliError::new(ExitCode::OperationFailed, format!("{what}: {e}"))
    };
    // Signal handlers first: a SIGTERM right after start must still shut down cleanly.
    let mut term = signal(SignalKind::terminate()).map_err(|e| failed("SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| failed("SIGINT handler", e))?;
    if token.is_none() {
        tracing::warn!(
            "no tokenFile in the configuration: the Alertmanager webhook refuses every call"
        );
    }
    if let Some(url) = &cfg.prometheus_url {
        tracing::warn!(%url, "prometheusUrl is set but this build does not poll Prometheus yet");
    }
    let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
    let app = Arc::new(http::App::new(
        cfg.node_name.clone(),
        state_dir.to_owned(),
        "/".into(),
        token,
        tx,
    ));
    if let Err(e) = app.load().await {
        tracing::error!(error = %e, state_dir = %state_dir.display(), "the journal cannot be read: /readyz answers 503 until it can");
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| failed(&format!("listening on {}", cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failed("listening socket", e))?;
    // One line on stderr whatever the log level: where the agent is (port 0 picks one).
    eprintln!(
        "ipvs-migrate: serving on http://{addr} for node {}",
        cfg.node_name
    );
    tracing::info!(
        node = %cfg.node_name,
        window_s = cfg.thresholds.window,
        rate = cfg.thresholds.rate,
        ratio = cfg.thresholds.ratio,
        for_s = cfg.thresholds.for_secs,
        soak_s = cfg.soak.as_secs(),
        drain_s = cfg.drain.as_secs(),
        reconcile_period_s = cfg.reconcile_period.as_secs(),
        "configuration (thresholds, soak, drain and period are for the reconcile loop, not in this build)"
    );
    tokio::spawn(consume(rx));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&stopping);
    let shutdown = async move {
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = sig, "shutting down");
        notify.notify_one();
    };
    let server = axum::serve(listener, http::router(app)).with_graceful_shutdown(shutdown);
    // In-flight requests may finish; a client that keeps a request open does not hold the
    // agent past the grace period (kubelet would SIGKILL it at terminationGracePeriodSeconds).
    tokio::select! {
        r = server => r.map_err(|e| failed("HTTP server", e))?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the grace period: closing them"
        ),
    }
    Ok(ExitCode::Ok)
}

/// Stands in for the reconcile loop (issue 6): says loudly that a trigger arrived and that
/// nothing acts on it in this build.
async fn consume(mut rx: mpsc::Receiver<alerts::Trigger>) {
    while let Some(t) = rx.recv().await {
        tracing::error!(
            alertname = %t.alertname,
            namespace = t.namespace.as_deref().unwrap_or("(all of this node's)"),
            "rollback trigger received, but this build has no reconcile loop: nothing was rolled back"
        );
    }
}
