//! serve's Kubernetes side (docs/kubernetes.md "The agent"), on when the config says
//! `kubernetes: {enabled: true}`: the Node's phase label and status annotation, Events for
//! phase changes and rollbacks, and kube-proxy's ConfigMap kept as a file the plans read.
//!
//! Best-effort by construction: the reconcile loop only hands values over (a `watch` slot
//! that keeps the latest status, a bounded queue of events it never waits on); a task on the
//! HTTP runtime talks to the API at most once per `reportInterval` (a patch when the status
//! changed, up to [`EVENTS_PER_INTERVAL`] events). An API outage is logged and counted
//! (`ipvs_migrate_kube_api_requests_total{outcome}`) and never delays or fails data-plane
//! work; what could not be sent is sent when the API answers again (the latest status) or
//! dropped and counted (events beyond the queue).
//!
//! Must not: be awaited by the reconcile loop, or call the API from its thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipvsmig_host::apply::Owned;
use ipvsmig_kube::configmap::{ConfigMapKey, read_config_text};
use ipvsmig_kube::node_status::{EventNote, NodeStatus, patch_node, record_event};
use ipvsmig_kube::{ApiClient, ClientOptions, KubeError};
use tokio::sync::{mpsc, watch};

use super::config::KubeSettings;
use super::http::App;

/// Events sent per `reportInterval` at most (the rest wait for the next interval).
pub const EVENTS_PER_INTERVAL: usize = 5;
/// Events waiting to be sent; more are dropped (and counted).
pub const EVENT_QUEUE: usize = 32;
/// The ConfigMap is read again every this many intervals (it changes rarely).
const CONFIGMAP_EVERY: u32 = 60;
/// The file the ConfigMap's text is kept in, in the state directory (the plans read it like
/// `kubeProxyConfig`; the last copy serves while the API is away).
pub const CONFIGMAP_CACHE: &str = "kube-proxy-config.from-api.yaml";

/// What the loop reports: the node-wide phase, per namespace phases, rollbacks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// `finalized`, the cutover's phase, `migrated`, or `idle`.
    pub phase: String,
    /// Migrated namespaces and their phase.
    pub namespaces: BTreeMap<String, String>,
    /// When the cutover entered its phase (unix seconds), if one runs.
    pub since_unix: Option<u64>,
    /// Rollbacks in the journal's history (it keeps the last 20).
    pub rollbacks: u32,
}

/// The status the journal's state describes.
pub fn snapshot(owned: &Owned) -> Snapshot {
    let mut namespaces: BTreeMap<String, String> = owned
        .namespaces
        .iter()
        .map(|n| (n.clone(), "migrated".to_owned()))
        .collect();
    let phase = if owned.finalized {
        "finalized".to_owned()
    } else if let Some(c) = owned.cutover.as_ref().filter(|c| c.phase.in_flight()) {
        for ns in c.namespaces() {
            namespaces.insert(ns, c.phase.name().to_owned());
        }
        c.phase.name().to_owned()
    } else if namespaces.is_empty() {
        "idle".to_owned()
    } else {
        "migrated".to_owned()
    };
    Snapshot {
        since_unix: owned
            .cutover
            .as_ref()
            .filter(|c| c.phase.in_flight())
            .map(|c| c.since),
        phase,
        namespaces,
        rollbacks: u32::try_from(owned.rollbacks.len()).unwrap_or(u32::MAX),
    }
}

/// The loop's handle: hands values over, never waits.
#[derive(Clone)]
pub struct Reporter {
    status: watch::Sender<Option<Snapshot>>,
    events: mpsc::Sender<EventNote>,
    app: Arc<App>,
}

impl Reporter {
    /// The latest status (only a change wakes the task).
    pub fn status(&self, s: Snapshot) {
        self.status.send_if_modified(|cur| {
            if cur.as_ref() == Some(&s) {
                false
            } else {
                *cur = Some(s);
                true
            }
        });
    }

    /// An event; dropped (and counted) when the queue is full.
    pub fn event(&self, note: EventNote) {
        if self.events.try_send(note).is_err() {
            self.app.metrics.kube_api(OUTCOME_DROPPED);
            tracing::warn!("Kubernetes event queue full: an event was dropped");
        }
    }
}

/// The outcome label of a dropped event.
pub const OUTCOME_DROPPED: &str = "dropped";

fn outcome(r: &Result<(), KubeError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.kind(),
    }
}

/// Reads kube-proxy's ConfigMap into the cache file, written whole (temp + rename) so a plan
/// never reads half of it.
async fn refresh_configmap(api: &ApiClient, key: &ConfigMapKey, path: &Path) -> Result<(), String> {
    let text = read_config_text(api, key)
        .await
        .map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the plans find kube-proxy's configuration when it comes from the API, read once
/// now (before the loop plans anything). A failed read keeps the previous copy, if any.
pub async fn prepare_configmap(k: &KubeSettings, state_dir: &Path) -> Option<PathBuf> {
    let path = state_dir.join(CONFIGMAP_CACHE);
    match connect(k).await {
        Ok(api) => match refresh_configmap(&api, &k.configmap, &path).await {
            Ok(()) => {
                tracing::info!(configmap = %k.configmap, "kube-proxy's configuration read from the API")
            }
            Err(e) => {
                tracing::warn!(error = %e, "kube-proxy's ConfigMap not read; using the last copy if there is one")
            }
        },
        Err(e) => tracing::warn!(error = %e, "no Kubernetes API client"),
    }
    path.exists().then_some(path)
}

async fn connect(k: &KubeSettings) -> Result<ApiClient, KubeError> {
    ApiClient::connect(&ClientOptions {
        kubeconfig: k.kubeconfig.clone(),
        ..ClientOptions::default()
    })
    .await
}

/// Starts the reporting task on the current runtime and returns the loop's handle.
/// `configmap`: where to refresh kube-proxy's ConfigMap, when it comes from the API.
pub fn start(k: KubeSettings, node: String, app: Arc<App>, configmap: Option<PathBuf>) -> Reporter {
    let (status_tx, status_rx) = watch::channel(None);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let reporter = Reporter {
        status: status_tx,
        events: events_tx,
        app: Arc::clone(&app),
    };
    tokio::spawn(run(k, node, app, status_rx, events_rx, configmap));
    reporter
}

async fn run(
    k: KubeSettings,
    node: String,
    app: Arc<App>,
    mut status_rx: watch::Receiver<Option<Snapshot>>,
    mut events_rx: mpsc::Receiver<EventNote>,
    configmap: Option<PathBuf>,
) {
    let mut api: Option<ApiClient> = None;
    let mut sent: Option<Snapshot> = None;
    let mut since: (String, String) = (String::new(), String::new());
    let mut ticks: u32 = 0;
    let mut tick = tokio::time::interval(k.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        let client = match &api {
            Some(c) => c.clone(),
            None => match connect(&k).await {
                Ok(c) => {
                    api = Some(c.clone());
                    c
                }
                Err(e) => {
                    app.metrics.kube_api(e.kind());
                    tracing::warn!(error = %e, "no Kubernetes API client; reporting waits");
                    continue;
                }
            },
        };
        if let Some(path) = &configmap
            && ticks.is_multiple_of(CONFIGMAP_EVERY)
            && let Err(e) = refresh_configmap(&client, &k.configmap, path).await
        {
            tracing::warn!(error = %e, "kube-proxy's ConfigMap not refreshed; the last copy stays");
        }
        let current = status_rx.borrow_and_update().clone();
        if let Some(s) = current.filter(|s| sent.as_ref() != Some(s)) {
            if since.0 != s.phase {
                since = (s.phase.clone(), rfc3339(SystemTime::now()));
            }
            let status = NodeStatus {
                phase: s.phase.clone(),
                namespaces: s.namespaces.clone(),
                since: s
                    .since_unix
                    .map(|t| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(t)))
                    .unwrap_or_else(|| since.1.clone()),
                rollbacks: s.rollbacks,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let r = patch_node(&client, &node, &status).await;
            app.metrics.kube_api(outcome(&r));
            match r {
                Ok(()) => sent = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "the Node's phase label and status were not updated")
                }
            }
        }
        for _ in 0..EVENTS_PER_INTERVAL {
            let Ok(note) = events_rx.try_recv() else {
                break;
            };
            // involvedObject.uid = the node's name, as kubelet records node events (its node
            // reference, pkg/kubelet); `kubectl describe node` looks events up by that uid as
            // well as by the Node's own (kubectl's NodeDescriber).
            let r = record_event(&client, &node, Some(&node), &note, SystemTime::now()).await;
            app.metrics.kube_api(outcome(&r));
            if let Err(e) = r {
                tracing::warn!(error = %e, reason = %note.reason, "a Kubernetes event was not recorded");
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    ipvsmig_kube::node_status::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_node_is_idle_and_a_migrated_one_lists_its_namespaces() {
        let mut owned = Owned::default();
        assert_eq!(snapshot(&owned).phase, "idle");
        owned.namespaces = vec!["shop".into(), "auth".into()];
        let s = snapshot(&owned);
        assert_eq!(s.phase, "migrated");
        assert_eq!(
            s.namespaces.keys().cloned().collect::<Vec<_>>(),
            ["auth", "shop"]
        );
        assert_eq!(s.since_unix, None);
        owned.finalized = true;
        assert_eq!(snapshot(&owned).phase, "finalized");
    }
}
