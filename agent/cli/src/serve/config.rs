//! `serve --config FILE`: the daemon's YAML configuration (docs/serve.md). Parsing is pure: the
//! file's text, the `NODE_NAME` variable and the hostname are passed in, so every error case is
//! a unit test. Unknown keys are refused (a typo must not silently fall back to a default), and
//! every bad value is an error naming its key. Reading the files (config, token) is
//! [`load`]'s job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipvsmig_engine::rollback::Thresholds;
use serde::Deserialize;

use crate::exit::{CliError, ExitCode};

mod rollout;
pub use rollout::RolloutConfig;
pub mod pod;
pub use pod::RateLimit;

/// Default listen address: loopback only (the webhook has a token, `/metrics` and
/// `/api/v1/status` have none). 9964: not kube-scheduler's 10259 or any other port a
/// control-plane or kube-proxy component binds on the host network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9964";
/// Default soak per wave.
pub const DEFAULT_SOAK: Duration = Duration::from_secs(600);
/// Default reconcile period.
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(10);
/// Default interval between two rounds of the rejection-signal probes.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a cutover's verification probes a wave's VIPs before admitting traffic.
pub const DEFAULT_VERIFY: Duration = Duration::from_secs(10);
/// Default period of the Prometheus query: Prometheus evaluates rules every 15 s to 1 m
/// (`evaluation_interval`, default 1m), so polling faster finds nothing new.
pub const DEFAULT_PROMETHEUS_INTERVAL: Duration = Duration::from_secs(30);

/// The configuration the daemon runs with (defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// This node's name: alerts for other nodes are ignored; every metric carries it.
    pub node_name: String,
    /// File holding the webhook's bearer token; `None`: the webhook refuses every call.
    pub token_file: Option<PathBuf>,
    /// Rollback thresholds of the built-in evaluator.
    pub thresholds: Thresholds,
    /// Soak time per wave.
    pub soak: Duration,
    /// How long established IPVS connections may drain on a rollback.
    pub drain: Duration,
    /// Reconcile loop period.
    pub reconcile_period: Duration,
    /// Prometheus server to poll for the rejection signal (`http://` only).
    pub prometheus_url: Option<String>,
    /// Interval between two rounds of the rejection-signal probes.
    pub probe_interval: Duration,
    /// The dead man's switch: admission entries expire this long after the last refresh.
    pub switch_timeout: Duration,
    /// How long a cutover probes a wave's VIPs (only the agent's probes reach IPVS) before
    /// admitting all traffic.
    pub verify: Duration,
    /// Whether the built-in evaluator of rules/ thresholds may trigger rollbacks.
    pub builtin_evaluator: bool,
    /// This node's IPs for NodePort virtual servers (as `--node-ip`); empty: none.
    pub node_ips: Vec<std::net::IpAddr>,
    /// kube-proxy's configuration file (as `--kube-proxy-config`).
    pub kube_proxy_config: Option<PathBuf>,
    /// kube-proxy's healthz server (a loopback address); `None`: not asked.
    pub kube_proxy_healthz: Option<SocketAddr>,
    /// kube-proxy's metrics server, asked for `/proxyMode` (a loopback address); `None`: not
    /// asked.
    pub kube_proxy_metrics: Option<SocketAddr>,
    /// The instant-vector expression polled (default: this node's firing rollback alerts).
    pub prometheus_query: String,
    /// How often it is polled.
    pub prometheus_interval: Duration,
    /// The Kubernetes API side (`kubernetes:`); `None`: the agent never calls the API.
    pub kubernetes: Option<KubeSettings>,
    /// The fleet rollout from `IPVSMigration` objects (`rollout:`, docs/rollout.md).
    pub rollout: RolloutConfig,
    /// Where the host's `/` is (`/host` in the DaemonSet): /proc, /sys, /etc and /lib/modules
    /// are read below it (config/pod.rs).
    pub host_root: PathBuf,
    /// Serve HTTPS with these PEM files; `None`: plain HTTP.
    pub tls: Option<crate::serve::tls::TlsFiles>,
    /// The webhook's rate limit.
    pub webhook_rate_limit: RateLimit,
}

/// `kubernetes:` — the API integration of serve (docs/kubernetes.md "The agent").
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    /// A kubeconfig file; `None`: the pod's service account (or KUBECONFIG).
    pub kubeconfig: Option<PathBuf>,
    /// kube-proxy's ConfigMap, read when `kubeProxyConfig` (a file) is not set.
    pub configmap: ipvsmig_kube::configmap::ConfigMapKey,
    /// Minimum time between two patches of the Node (and the Events' rate limit).
    pub report_interval: Duration,
}

/// Default `kubernetes.reportInterval`.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The file as written. Leaves are [`Scalar`]s so that a bad value is reported with its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    listen: Option<Scalar>,
    node_name: Option<Scalar>,
    token_file: Option<Scalar>,
    thresholds: Option<RawThresholds>,
    soak: Option<Scalar>,
    drain: Option<Scalar>,
    reconcile_period: Option<Scalar>,
    prometheus_url: Option<Scalar>,
    probe_interval: Option<Scalar>,
    switch_timeout: Option<Scalar>,
    verify: Option<Scalar>,
    builtin_evaluator: Option<Scalar>,
    #[serde(rename = "nodeIPs")]
    node_ips: Option<Vec<Scalar>>,
    kube_proxy_config: Option<Scalar>,
    kube_proxy_healthz: Option<Scalar>,
    kube_proxy_metrics: Option<Scalar>,
    prometheus_query: Option<Scalar>,
    prometheus_interval: Option<Scalar>,
    kubernetes: Option<RawKubernetes>,
    rollout: Option<rollout::RawRollout>,
    host_root: Option<Scalar>,
    tls: Option<pod::RawTls>,
    webhook_rate_limit: Option<pod::RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKubernetes {
    enabled: Option<Scalar>,
    kubeconfig: Option<Scalar>,
    kube_proxy_config_map: Option<Scalar>,
    kube_proxy_config_map_key: Option<Scalar>,
    report_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    window: Option<Scalar>,
    rate: Option<Scalar>,
    ratio: Option<Scalar>,
    #[serde(rename = "for")]
    for_: Option<Scalar>,
}

/// Any YAML scalar, kept as text (`10`, `0.01`, `5m`, `true` alike).
#[derive(Debug, Clone, PartialEq)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a single value (string or number)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A configuration error: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key (`thresholds.rate`), or `(file)` when the YAML itself is malformed.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn duration(key: &str, v: Option<Scalar>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(Scalar(s)) => crate::migrate::parse_duration(&s)
            .ok_or_else(|| bad(key, format!("{s:?} is not a duration like 30s, 5m or 1h"))),
    }
}

fn number(
    key: &str,
    v: Option<Scalar>,
    default: f64,
    ok: fn(f64) -> bool,
    want: &str,
) -> Result<f64, ConfigError> {
    let Some(Scalar(s)) = v else {
        return Ok(default);
    };
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && ok(n) => Ok(n),
        _ => Err(bad(key, format!("{s:?} is not {want}"))),
    }
}

/// Parses the configuration file's text. `node_env` is `NODE_NAME`, `hostname` the machine's;
/// an empty text is the all-defaults configuration.
pub fn parse(
    text: &str,
    node_env: Option<String>,
    hostname: Option<String>,
) -> Result<Config, ConfigError> {
    let raw: Raw = if text.trim().is_empty() {
        Raw::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let key = e
                .location()
                .and_then(|l| key_at(text, l.line()))
                .unwrap_or_else(|| "(file)".to_owned());
            // The parser's text starts with its own "error: " and ends with a source snippet
            // naming `<input>`: the caller prints "error:" and the file already.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            bad(&key, first.strip_prefix("error: ").unwrap_or(first))
        })?
    };
    let listen = match raw.listen {
        None => parse_listen(DEFAULT_LISTEN).map_err(|m| bad("listen", m))?,
        Some(Scalar(s)) => parse_listen(&s).map_err(|m| bad("listen", m))?,
    };
    let node_name = match raw.node_name {
        Some(Scalar(s)) if s.trim().is_empty() => return Err(bad("nodeName", "is empty")),
        Some(Scalar(s)) => s.trim().to_owned(),
        None => [node_env, hostname]
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
            .ok_or_else(|| {
                bad(
                    "nodeName",
                    "not set, and neither NODE_NAME nor the hostname gives one",
                )
            })?,
    };
    let token_file = match raw.token_file {
        Some(Scalar(s)) if s.trim().is_empty() => return Err(bad("tokenFile", "is empty")),
        Some(Scalar(s)) => Some(PathBuf::from(s)),
        None => None,
    };
    let d = Thresholds::default();
    let t = raw.thresholds.unwrap_or_default();
    let thresholds = Thresholds {
        window: duration(
            "thresholds.window",
            t.window,
            Duration::from_secs_f64(d.window),
        )?
        .as_secs_f64(),
        rate: number(
            "thresholds.rate",
            t.rate,
            d.rate,
            |n| n > 0.0,
            "a number of rejections per second above 0",
        )?,
        ratio: number(
            "thresholds.ratio",
            t.ratio,
            d.ratio,
            |n| n > 0.0 && n <= 1.0,
            "a ratio in (0, 1]",
        )?,
        for_secs: duration(
            "thresholds.for",
            t.for_,
            Duration::from_secs_f64(d.for_secs),
        )?
        .as_secs_f64(),
    };
    if thresholds.window <= 0.0 {
        return Err(bad("thresholds.window", "must be longer than 0s"));
    }
    let reconcile_period = duration("reconcilePeriod", raw.reconcile_period, DEFAULT_RECONCILE)?;
    if reconcile_period.is_zero() {
        return Err(bad("reconcilePeriod", "must be longer than 0s"));
    }
    let prometheus_url = match raw.prometheus_url {
        None => None,
        Some(Scalar(s)) => match ipvsmig_host::http_get::Url::parse(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                let why = match e {
                    ipvsmig_host::http_get::HttpError::Url { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(bad(
                    "prometheusUrl",
                    format!("{s:?} is not an http:// URL: {why}"),
                ));
            }
        },
    };
    let probe_interval = duration("probeInterval", raw.probe_interval, DEFAULT_PROBE_INTERVAL)?;
    if probe_interval.is_zero() {
        return Err(bad("probeInterval", "must be longer than 0s"));
    }
    let default_switch = Duration::from_secs(u64::from(
        ipvsmig_engine::plan::hybrid::DEFAULT_SWITCH_TIMEOUT,
    ));
    let switch_timeout = duration("switchTimeout", raw.switch_timeout, default_switch)?;
    // Two refreshes must fit in one timeout, or a single slow pass lets the switch fire.
    if switch_timeout < reconcile_period * 2 || switch_timeout.as_secs() > u64::from(u32::MAX) {
        return Err(bad(
            "switchTimeout",
            format!(
                "{} s must be at least twice reconcilePeriod ({} s)",
                switch_timeout.as_secs(),
                reconcile_period.as_secs()
            ),
        ));
    }
    let builtin_evaluator = match raw.builtin_evaluator {
        None => true,
        Some(Scalar(s)) => match s.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(bad(
                    "builtinEvaluator",
                    format!("{s:?} is not true or false"),
                ));
            }
        },
    };
    let node_ips = raw
        .node_ips
        .unwrap_or_default()
        .into_iter()
        .map(|Scalar(s)| {
            s.trim()
                .parse()
                .map_err(|_| bad("nodeIPs", format!("{s:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kube_proxy_healthz = loopback(
        "kubeProxyHealthz",
        raw.kube_proxy_healthz,
        ipvsmig_host::kube_proxy::HEALTHZ_PORT,
    )?;
    let kube_proxy_metrics = loopback(
        "kubeProxyMetrics",
        raw.kube_proxy_metrics,
        ipvsmig_host::kube_proxy::METRICS_PORT,
    )?;
    let kube_proxy_config = match raw.kube_proxy_config {
        Some(Scalar(s)) if s.trim().is_empty() => return Err(bad("kubeProxyConfig", "is empty")),
        Some(Scalar(s)) => Some(PathBuf::from(s)),
        None => None,
    };
    // Query and interval mean nothing without a server: a forgotten URL is a mistake to report.
    if prometheus_url.is_none() {
        for (key, set) in [
            ("prometheusQuery", raw.prometheus_query.is_some()),
            ("prometheusInterval", raw.prometheus_interval.is_some()),
        ] {
            if set {
                return Err(bad(key, "is set but prometheusUrl is not"));
            }
        }
    }
    let prometheus_query = match raw.prometheus_query {
        None => super::alerts::prom::default_query(&node_name),
        Some(Scalar(s)) if s.trim().is_empty() => return Err(bad("prometheusQuery", "is empty")),
        Some(Scalar(s)) => s.trim().to_owned(),
    };
    let prometheus_interval = duration(
        "prometheusInterval",
        raw.prometheus_interval,
        DEFAULT_PROMETHEUS_INTERVAL,
    )?;
    if prometheus_interval < Duration::from_secs(1) {
        return Err(bad("prometheusInterval", "must be 1s or longer"));
    }
    let kubernetes = kubernetes(raw.kubernetes)?;
    let rollout = rollout::parse(raw.rollout, kubernetes.is_some())?;
    Ok(Config {
        listen,
        node_name,
        token_file,
        thresholds,
        soak: duration("soak", raw.soak, DEFAULT_SOAK)?,
        drain: duration("drain", raw.drain, crate::migrate::DEFAULT_DRAIN)?,
        reconcile_period,
        prometheus_url,
        probe_interval,
        switch_timeout,
        verify: duration("verify", raw.verify, DEFAULT_VERIFY)?,
        builtin_evaluator,
        node_ips,
        kube_proxy_config,
        kube_proxy_healthz,
        kube_proxy_metrics,
        prometheus_query,
        prometheus_interval,
        kubernetes,
        rollout,
        host_root: pod::host_root(raw.host_root)?,
        tls: pod::tls(raw.tls)?,
        webhook_rate_limit: pod::rate_limit(raw.webhook_rate_limit)?,
    })
}

/// `kubernetes:`; off unless `enabled: true`.
fn kubernetes(raw: Option<RawKubernetes>) -> Result<Option<KubeSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let enabled = match raw.enabled.as_ref().map(|Scalar(s)| s.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(s) => {
            return Err(bad(
                "kubernetes.enabled",
                format!("{s:?} is not true or false"),
            ));
        }
    };
    let mut configmap = ipvsmig_kube::configmap::ConfigMapKey::default();
    if let Some(Scalar(s)) = raw.kube_proxy_config_map {
        configmap = s
            .trim()
            .parse()
            .map_err(|e: String| bad("kubernetes.kubeProxyConfigMap", e))?;
    }
    if let Some(Scalar(s)) = raw.kube_proxy_config_map_key {
        if s.trim().is_empty() {
            return Err(bad("kubernetes.kubeProxyConfigMapKey", "is empty"));
        }
        configmap.key = s.trim().to_owned();
    }
    let report_interval = duration(
        "kubernetes.reportInterval",
        raw.report_interval,
        DEFAULT_REPORT_INTERVAL,
    )?;
    if report_interval < Duration::from_secs(1) {
        return Err(bad("kubernetes.reportInterval", "must be 1s or longer"));
    }
    Ok(enabled.then(|| KubeSettings {
        kubeconfig: raw.kubeconfig.map(|Scalar(s)| PathBuf::from(s.trim())),
        configmap,
        report_interval,
    }))
}

/// A loopback `HOST:PORT` of kube-proxy's (default `127.0.0.1:PORT`; `""`: not asked).
fn loopback(key: &str, v: Option<Scalar>, port: u16) -> Result<Option<SocketAddr>, ConfigError> {
    match v {
        None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], port)))),
        Some(Scalar(s)) if s.trim().is_empty() => Ok(None),
        // `http://HOST:PORT` (finalize's `--kube-proxy-metrics` form) means the same.
        Some(Scalar(s)) => match parse_listen(
            s.trim()
                .strip_prefix("http://")
                .map_or(s.as_str(), |r| r.trim_end_matches('/')),
        ) {
            Ok(a) if a.ip().is_loopback() => Ok(Some(a)),
            Ok(_) => Err(bad(key, "must be a loopback address")),
            Err(m) => Err(bad(key, m)),
        },
    }
}

/// The dotted key of the mapping entry on 1-based `line` (`thresholds.rate`), found by
/// indentation: the parser's errors point at a line, the user wants the key.
fn key_at(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let idx = usize::try_from(line).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key = |l: &str| {
        let k = l.trim().split_once(':')?.0.trim();
        (!k.is_empty() && !k.starts_with(['#', '-'])).then(|| k.to_owned())
    };
    let mut path = vec![key(lines.get(idx)?)?];
    let mut depth = indent(lines[idx]);
    for l in lines[..idx].iter().rev() {
        if depth == 0 {
            break;
        }
        if !l.trim().is_empty() && indent(l) < depth {
            path.push(key(l)?);
            depth = indent(l);
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// `HOST:PORT` with a literal IP (`[::1]:9964` for IPv6).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address like 127.0.0.1:9964 or [::1]:9964"))
}

/// Reads and parses the configuration file (none: defaults), with `NODE_NAME` and the hostname
/// from this machine. A missing file exits 66, a bad one 65.
pub fn load(path: Option<&Path>) -> Result<Config, CliError> {
    let text = match path {
        None => String::new(),
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ExitCode::NoInput
            } else {
                ExitCode::DataErr
            };
            CliError::new(code, format!("{}: {e}", p.display()))
        })?,
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let env_ips = std::env::var(pod::NODE_IPS_ENV).ok();
    parse(&text, std::env::var("NODE_NAME").ok(), hostname)
        .and_then(|mut c| {
            c.node_ips = pod::node_ips(std::mem::take(&mut c.node_ips), env_ips.as_deref())?;
            Ok(c)
        })
        .map_err(|e| {
            let mut err = CliError::new(
                ExitCode::DataErr,
                match path {
                    Some(p) => format!("{}: {e}", p.display()),
                    None => e.to_string(),
                },
            );
            err.input = path.map(|p| p.display().to_string());
            err
        })
}

/// Reads the webhook's bearer token: the file's content without surrounding whitespace. A
/// missing file exits 66, an empty one 65. A file others can read is allowed, with a warning.
pub fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ExitCode::NoInput
        } else {
            ExitCode::DataErr
        };
        CliError::new(code, format!("tokenFile {}: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::new(
            ExitCode::DataErr,
            format!("tokenFile {}: the file is empty", path.display()),
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the webhook token file is readable by group or others");
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    pub(super) fn ok(text: &str) -> Config {
        parse(text, None, Some("host-a\n".into())).unwrap()
    }

    /// One table of bad configurations: each must name its key.
    pub(super) fn check(text: &str, key: &str, needle: &str) {
        let e = parse(text, None, Some("h".into())).expect_err(text);
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = ok("");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.node_name, "host-a");
        assert_eq!(c.token_file, None);
        assert_eq!(c.thresholds, Thresholds::default());
        assert_eq!(c.soak, DEFAULT_SOAK);
        assert_eq!(c.drain, crate::migrate::DEFAULT_DRAIN);
        assert_eq!(c.reconcile_period, DEFAULT_RECONCILE);
        assert_eq!(c.prometheus_url, None);
        assert_eq!(c.probe_interval, DEFAULT_PROBE_INTERVAL);
        assert_eq!(c.switch_timeout, Duration::from_secs(60));
        assert_eq!(c.verify, DEFAULT_VERIFY);
        assert!(c.builtin_evaluator);
        assert!(c.node_ips.is_empty());
        assert_eq!(c.kube_proxy_config, None);
        assert_eq!(
            c.kube_proxy_healthz.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:10256")
        );
        assert_eq!(ok("kubeProxyHealthz: \"\"").kube_proxy_healthz, None);
        assert_eq!(
            c.kube_proxy_metrics.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:10249")
        );
        assert_eq!(
            ok("kubeProxyMetrics: \"[::1]:10249\"")
                .kube_proxy_metrics
                .map(|a| a.to_string())
                .as_deref(),
            Some("[::1]:10249")
        );
        assert_eq!(
            c.prometheus_query,
            "ALERTS{alertstate=\"firing\",ipvs_migrate_rollback=\"true\",node=\"host-a\"}"
        );
        assert_eq!(c.prometheus_interval, DEFAULT_PROMETHEUS_INTERVAL);
    }

    #[test]
    fn node_name_comes_from_the_file_then_node_name_env_then_the_hostname() {
        assert_eq!(
            parse("nodeName: n1", Some("env".into()), Some("h".into()))
                .unwrap()
                .node_name,
            "n1"
        );
        assert_eq!(
            parse("", Some("env".into()), Some("h".into()))
                .unwrap()
                .node_name,
            "env"
        );
        assert_eq!(
            parse("", Some(" ".into()), Some("h\n".into()))
                .unwrap()
                .node_name,
            "h"
        );
        let e = parse("", None, None).unwrap_err();
        assert_eq!(e.key, "nodeName");
    }

    #[test]
    fn every_key_is_read() {
        let c = ok(
            "listen: \"[::1]:8080\"\nnodeName: worker-1\ntokenFile: /etc/ipvs-migrate/token\n\
             thresholds:\n  window: 2m\n  rate: 5\n  ratio: 0.05\n  for: 30s\n\
             soak: 1h\ndrain: 0\nreconcilePeriod: 5s\nprometheusUrl: http://prometheus:9090\n\
             probeInterval: 2s\nswitchTimeout: 30s\nverify: 20s\nbuiltinEvaluator: false\n\
             nodeIPs: [10.0.0.5, \"fd00::5\"]\nkubeProxyConfig: /etc/kp.yaml\n\
             prometheusQuery: 'ALERTS{alertstate=\"firing\",node=\"worker-1\"}'\nprometheusInterval: 1m\n",
        );
        assert_eq!(c.probe_interval, Duration::from_secs(2));
        assert_eq!(c.switch_timeout, Duration::from_secs(30));
        assert_eq!(c.verify, Duration::from_secs(20));
        assert!(!c.builtin_evaluator);
        assert_eq!(
            c.node_ips,
            [
                "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(c.kube_proxy_config, Some(PathBuf::from("/etc/kp.yaml")));
        assert_eq!(c.listen.to_string(), "[::1]:8080");
        assert_eq!(c.node_name, "worker-1");
        assert_eq!(c.token_file, Some(PathBuf::from("/etc/ipvs-migrate/token")));
        assert_eq!(
            c.thresholds,
            Thresholds {
                window: 120.0,
                rate: 5.0,
                ratio: 0.05,
                for_secs: 30.0
            }
        );
        assert_eq!(c.soak, Duration::from_secs(3600));
        assert_eq!(c.drain, Duration::ZERO);
        assert_eq!(c.reconcile_period, Duration::from_secs(5));
        assert_eq!(c.prometheus_url.as_deref(), Some("http://prometheus:9090"));
        assert_eq!(
            c.prometheus_query,
            "ALERTS{alertstate=\"firing\",node=\"worker-1\"}"
        );
        assert_eq!(c.prometheus_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_example_in_deploy_parses() {
        let text = include_str!("../../../../deploy/serve-config.yaml");
        let c = ok(text);
        assert_eq!(c.thresholds, Thresholds::default());
    }

    #[test]
    fn the_daemonsets_config_in_deploy_parses() {
        #[derive(serde::Deserialize)]
        struct ConfigMap {
            data: std::collections::BTreeMap<String, String>,
        }
        let cm: ConfigMap =
            serde_saphyr::from_str(include_str!("../../../../deploy/configmap.yaml")).unwrap();
        let c = ok(&cm.data["serve.yaml"]);
        assert!(
            c.kubernetes.is_some(),
            "the DaemonSet reports through the API"
        );
        // The DaemonSet's mounts (deploy/daemonset.yaml) and the runbook thresholds.
        assert_eq!(
            c.token_file.as_deref(),
            Some(Path::new("/etc/ipvs-migrate/token/token"))
        );
        // kube-proxy's configuration comes through the API (no volume that a distribution
        // with another ConfigMap name would leave the pod waiting for).
        assert_eq!(c.kube_proxy_config, None);
        assert_eq!(c.thresholds, Thresholds::default());
        assert!(
            c.rollout.enabled,
            "the DaemonSet follows IPVSMigration objects"
        );
    }

    #[test]
    fn the_kubernetes_block_is_off_unless_enabled_and_defaults_to_kubeadms_configmap() {
        assert_eq!(ok("").kubernetes, None);
        assert_eq!(ok("kubernetes:\n  enabled: false").kubernetes, None);
        let k = ok("kubernetes:\n  enabled: true").kubernetes.unwrap();
        assert_eq!(
            k.configmap.to_string(),
            "kube-system/kube-proxy key config.conf"
        );
        assert_eq!(
            (k.kubeconfig, k.report_interval),
            (None, DEFAULT_REPORT_INTERVAL)
        );
        let k = ok("kubernetes:\n  enabled: true\n  kubeProxyConfigMap: kube-proxy-config\n  kubeProxyConfigMapKey: config\n  reportInterval: 30s")
            .kubernetes
            .unwrap();
        assert_eq!(
            k.configmap.to_string(),
            "kube-system/kube-proxy-config key config"
        );
        assert_eq!(k.report_interval, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_and_unknown_keys_name_the_key() {
        check(
            "kubernetes:\n  enabled: maybe",
            "kubernetes.enabled",
            "true or false",
        );
        check(
            "kubernetes:\n  enabled: true\n  kubeProxyConfigMap: a/b/c",
            "kubernetes.kubeProxyConfigMap",
            "NAMESPACE/NAME",
        );
        check(
            "kubernetes:\n  kubeProxyConfigMapKey: \"\"",
            "kubernetes.kubeProxyConfigMapKey",
            "empty",
        );
        check(
            "kubernetes:\n  reportInterval: 0s",
            "kubernetes.reportInterval",
            "1s or longer",
        );
        check("listen: localhost", "listen", "not an address");
        check("listen: 10.0.0.1", "listen", "not an address");
        check("nodeName: \"\"", "nodeName", "empty");
        check("tokenFile: \"\"", "tokenFile", "empty");
        check("thresholds:\n  rate: abc", "thresholds.rate", "\"abc\"");
        check("thresholds:\n  rate: -1", "thresholds.rate", "above 0");
        check("thresholds:\n  ratio: 2", "thresholds.ratio", "(0, 1]");
        check(
            "thresholds:\n  window: 5 minutes",
            "thresholds.window",
            "duration",
        );
        check(
            "thresholds:\n  window: 0s",
            "thresholds.window",
            "longer than 0s",
        );
        check("thresholds:\n  for: -1m", "thresholds.for", "duration");
        check("soak: 10x", "soak", "duration");
        check("drain: soon", "drain", "duration");
        check("reconcilePeriod: 0", "reconcilePeriod", "longer than 0s");
        check("prometheusUrl: prometheus:9090", "prometheusUrl", "http://");
        check("probeInterval: 0", "probeInterval", "longer than 0s");
        check(
            "switchTimeout: 15s",
            "switchTimeout",
            "twice reconcilePeriod",
        );
        check(
            "builtinEvaluator: maybe",
            "builtinEvaluator",
            "true or false",
        );
        check("nodeIPs: [10.0.0.300]", "nodeIPs", "not an IP");
        check("kubeProxyConfig: \"\"", "kubeProxyConfig", "empty");
        check(
            "kubeProxyHealthz: 10.0.0.1:10256",
            "kubeProxyHealthz",
            "loopback",
        );
        check(
            "kubeProxyHealthz: localhost",
            "kubeProxyHealthz",
            "not an address",
        );
        check(
            "kubeProxyMetrics: 10.0.0.1:10249",
            "kubeProxyMetrics",
            "loopback",
        );
        check("prometheusUrl: https://p:9090", "prometheusUrl", "no TLS");
        check(
            "prometheusUrl: http://p:9090/?x=1",
            "prometheusUrl",
            "queries",
        );
        check(
            "prometheusQuery: up",
            "prometheusQuery",
            "prometheusUrl is not",
        );
        check(
            "prometheusInterval: 1m",
            "prometheusInterval",
            "prometheusUrl is not",
        );
        check(
            "prometheusUrl: http://p\nprometheusQuery: \"  \"",
            "prometheusQuery",
            "empty",
        );
        check(
            "prometheusUrl: http://p\nprometheusInterval: 0s",
            "prometheusInterval",
            "1s or longer",
        );
        check(
            "prometheusUrl: http://p\nprometheusInterval: often",
            "prometheusInterval",
            "duration",
        );
        // Errors from the YAML parser: the key is found from the line it points at.
        check("thresholds:\n  rate: .nan", "thresholds.rate", "non-finite");
        check("listn: 127.0.0.1:1", "listn", "unknown field");
        check(
            "soak: 1m\nthresholds:\n  rates: 5",
            "thresholds.rates",
            "unknown field",
        );
        check("node_name: x", "node_name", "unknown field");
        check("drain: 1m\nlisten: [a, b]", "listen", "line 2");
        check("- a\n- b", "(file)", "");
    }
}
