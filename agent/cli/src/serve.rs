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
pub mod kube;
pub mod metrics;
pub mod ratelimit;
pub mod report;
pub mod rollout;
pub mod socket;
#[cfg(test)]
mod tests;
pub mod tls;

use std::future::IntoFuture;
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
    let certs = cfg.tls.clone().map(load_certs).transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ExitCode::OperationFailed, format!("tokio runtime: {e}")))?;
    rt.block_on(run(cfg, token, certs, state_dir, backend))
}

/// The TLS files loaded once at start: a missing file exits 66, an unusable one 65.
fn load_certs(files: tls::TlsFiles) -> Result<tls::Reloading, CliError> {
    let missing = [&files.cert_file, &files.key_file]
        .iter()
        .any(|p| !p.exists());
    tls::Reloading::new(files).map_err(|e| {
        let code = if missing {
            ExitCode::NoInput
        } else {
            ExitCode::DataErr
        };
        CliError::new(code, format!("tls: {e}"))
    })
}

async fn run(
    cfg: config::Config,
    token: Option<String>,
    certs: Option<tls::Reloading>,
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
    // The reconcile loop takes the journal's lock below: a second daemon, or a CLI command
    // running in-process, makes this one exit (3) before it listens anywhere.
    std::fs::create_dir_all(state_dir)
        .map_err(|e| failed(&format!("{}", state_dir.display()), e))?;
    // kube-proxy's ConfigMap through the API when no file is configured: kept as a file in
    // the state directory, which the plans (and the report's audit) read like
    // `kubeProxyConfig` (serve/kube.rs).
    let from_api = match (&cfg.kubernetes, &cfg.kube_proxy_config) {
        (Some(k), None) => kube::prepare_configmap(k, state_dir).await,
        _ => None,
    };
    let node_inputs = Inputs {
        node_ips: cfg.node_ips.clone(),
        host_root: Some(cfg.host_root.clone()),
        kube_proxy_config: cfg.kube_proxy_config.clone().or(from_api),
        ..Inputs::default()
    };
    let app = Arc::new(
        http::App::new(
            cfg.node_name.clone(),
            state_dir.to_owned(),
            cfg.host_root.clone(),
            token,
            tx,
        )
        .with_rate_limit(cfg.webhook_rate_limit.rate, cfg.webhook_rate_limit.burst)
        .with_report(report::ReportState::new(
            report::Source::Node {
                inputs: Box::new(node_inputs.clone()),
                backend,
            },
            cfg.reconcile_period,
        )),
    );
    let reporter = cfg.kubernetes.clone().map(|k| {
        kube::start(
            k,
            cfg.node_name.clone(),
            Arc::clone(&app),
            cfg.kube_proxy_config
                .is_none()
                .then(|| state_dir.join(kube::CONFIGMAP_CACHE)),
        )
    });
    let settings = agent::Settings {
        state_dir: state_dir.to_owned(),
        inputs: node_inputs,
        backend,
        cfg: cfg.clone(),
        reporter,
    };
    // kube-proxy's configuration is read at every plan: a wrong mount must show now, not at
    // the first cutover.
    if settings.inputs.kube_proxy_config.is_some() {
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
            if cfg.rollout.enabled {
                start_rollout(&cfg, inbox.clone()).await?;
            }
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
    let scheme = if certs.is_some() { "https" } else { "http" };
    eprintln!(
        "ipvs-migrate: serving on {scheme}://{addr} for node {}",
        cfg.node_name
    );
    tracing::info!(
        node = %cfg.node_name,
        host_root = %cfg.host_root.display(),
        node_ips = ?cfg.node_ips,
        tls = cfg.tls.is_some(),
        webhook_rate = cfg.webhook_rate_limit.rate,
        webhook_burst = cfg.webhook_rate_limit.burst,
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
    // One server either way; with TLS the router sees connections whose handshake is done.
    let router = http::router(app);
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>> =
        match certs {
            None => Box::pin(
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .into_future(),
            ),
            Some(certs) => Box::pin(
                axum::serve(
                    tls::TlsListener::new(listener, certs)
                        .map_err(|e| failed("listening socket", e))?,
                    router,
                )
                .with_graceful_shutdown(shutdown)
                .into_future(),
            ),
        };
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

/// Connects to the API server (as `kubernetes:` says) and starts the fleet rollout task
/// (docs/rollout.md). No usable API configuration with `rollout.enabled` is a start-up error
/// (69): a daemon that silently never follows its IPVSMigration would stall the fleet unseen.
async fn start_rollout(
    cfg: &config::Config,
    inbox: std::sync::mpsc::Sender<agent::Msg>,
) -> Result<(), CliError> {
    let opts = ipvsmig_kube::ClientOptions {
        kubeconfig: cfg.kubernetes.as_ref().and_then(|k| k.kubeconfig.clone()),
        ..Default::default()
    };
    let api = ipvsmig_kube::ApiClient::connect(&opts)
        .await
        .map_err(|e| CliError::new(ExitCode::Unavailable, format!("rollout.enabled: {e}")))?;
    tracing::info!(server = %api.server(), node = %cfg.node_name, "following IPVSMigration objects");
    let r = rollout::Rollout::new(api, cfg.node_name.clone(), cfg.rollout.clone(), inbox);
    tokio::spawn(r.run());
    Ok(())
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
