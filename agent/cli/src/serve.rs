//! `ipvs-migrate serve`: the node agent (DESIGN.md "Who runs it"; docs/serve.md): its
//! configuration, the HTTP server (health, readiness, metrics, status, the Alertmanager
//! webhook), the local socket the CLI hands requests to, and the reconcile loop (agent.rs),
//! which owns the journal's lock for the daemon's life. Tokio and axum live only here.
//!
//! One current-thread runtime for HTTP (a handful of small requests a minute; reading the
//! journal goes to tokio's blocking pool); the reconcile loop and the socket run on their own
//! threads, because everything they do blocks.

pub mod agent;
pub mod alerts;
pub mod config;
pub mod http;
pub mod metrics;
pub mod report;
pub mod socket;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{BackendArg, Inputs};
use crate::exit::{CliError, ExitCode};

/// Rollback triggers waiting for the reconcile loop; when full, the webhook answers 503 and
/// Alertmanager retries.
pub const TRIGGER_QUEUE: usize = 64;

/// How long open connections may keep a shutting-down agent alive.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT; exit 0 after a graceful shutdown.
pub fn serve_cmd(
    state_dir: &Path,
    backend: BackendArg,
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
    rt.block_on(run(cfg, token, state_dir, backend))
}

async fn run(
    cfg: config::Config,
    token: Option<String>,
    state_dir: &Path,
    backend: BackendArg,
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
    let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
    let node_inputs = Inputs {
        node_ips: cfg.node_ips.clone(),
        kube_proxy_config: cfg.kube_proxy_config.clone(),
        ..Inputs::default()
    };
    let app = Arc::new(
        http::App::new(
            cfg.node_name.clone(),
            state_dir.to_owned(),
            "/".into(),
            token,
            tx,
        )
        .with_report(report::ReportState::new(
            report::Source::Node {
                inputs: node_inputs.clone(),
                backend,
            },
            cfg.reconcile_period,
        )),
    );
    // The reconcile loop takes the journal's lock now: a second daemon, or a CLI command
    // running in-process, makes this one exit (3) before it listens anywhere.
    std::fs::create_dir_all(state_dir)
        .map_err(|e| failed(&format!("{}", state_dir.display()), e))?;
    let settings = agent::Settings {
        state_dir: state_dir.to_owned(),
        inputs: node_inputs,
        backend,
        cfg: cfg.clone(),
    };
    // kube-proxy's configuration is read at every plan: a wrong mount must show now, not at
    // the first cutover.
    if cfg.kube_proxy_config.is_some() {
        crate::inputs::kube_proxy_config(&settings.inputs)?;
    }
    let (inbox, agent_rx) = std::sync::mpsc::channel();
    let loop_thread = match agent::Agent::open(settings, Arc::clone(&app)) {
        Ok(agent) => {
            let t = std::thread::Builder::new()
                .name("reconcile".into())
                .spawn(move || agent.run(agent_rx))
                .map_err(|e| failed("starting the reconcile loop", e))?;
            socket::listen(state_dir, inbox.clone())?;
            Some(t)
        }
        // A journal that cannot be read (damaged): serve HTTP with /readyz answering 503 and
        // the reason, and change nothing — a crash loop would hide the reason and help no
        // one; the runbook repairs the journal (docs/journal.md). A lock held by another
        // process (a second daemon, a CLI command running) is an error: exit 3.
        Err(e) if app.load().await.is_err() => {
            tracing::error!(error = %e.message, state_dir = %state_dir.display(), "the journal cannot be read: no reconcile loop, no socket; /readyz answers 503 until it is repaired and the agent restarted");
            None
        }
        Err(e) => return Err(e),
    };
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
        builtin_evaluator = cfg.builtin_evaluator,
        soak_s = cfg.soak.as_secs(),
        drain_s = cfg.drain.as_secs(),
        reconcile_period_s = cfg.reconcile_period.as_secs(),
        switch_timeout_s = cfg.switch_timeout.as_secs(),
        probe_interval_s = cfg.probe_interval.as_secs_f64(),
        "configuration"
    );
    tokio::spawn(forward(rx, inbox.clone()));
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
    // The loop finishes what it is doing (a step is journaled before and after, so even a
    // kill here would be recovered from) and stops.
    let _ = inbox.send(agent::Msg::Stop);
    let Some(loop_thread) = loop_thread else {
        return Ok(ExitCode::Ok);
    };
    let _ = std::fs::remove_file(socket::path(state_dir));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = loop_thread.join();
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(SHUTDOWN_GRACE).is_err() {
        tracing::warn!(
            "the reconcile loop is still busy (a drain?): exiting; the journal says where it stopped"
        );
    }
    Ok(ExitCode::Ok)
}

/// Hands the webhook's triggers to the reconcile loop.
async fn forward(
    mut rx: mpsc::Receiver<alerts::Trigger>,
    inbox: std::sync::mpsc::Sender<agent::Msg>,
) {
    while let Some(trigger) = rx.recv().await {
        if inbox
            .send(agent::Msg::Trigger {
                trigger,
                source: metrics::Source::Alertmanager,
            })
            .is_err()
        {
            tracing::error!("the reconcile loop is gone: a rollback trigger was dropped");
        }
    }
}
