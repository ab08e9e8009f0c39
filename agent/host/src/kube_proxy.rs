//! kube-proxy's own view of itself, over its local HTTP endpoints: `/healthz` and `/livez` on
//! the healthz port (10256) and `/proxyMode` on the metrics port (10249). The reconcile loop
//! watches them to see that kube-proxy keeps syncing beside the hybrid and which mode it runs
//! in.
//!
//! kube-proxy's healthz handler (pkg/proxy/healthcheck/proxy_health.go) answers 200 when the
//! proxier is healthy and 503 when a queued update is older than the health timeout, with the
//! body `{"lastUpdated": %q,"currentTime": %q}` — Go `time.Time` values in their `String`
//! form (`2026-11-24 22:42:06.123 +0000 UTC m=+12.3`). When healthy, `lastUpdated` is set to
//! `currentTime` (compatibility with old releases), so it only tells something on a 503.
//! Since KEP-3836 (v1.28+) `/healthz` adds `"nodeEligible": true|false` and is also 503 while
//! the node is being deleted or drained by the cluster autoscaler, and `/livez` answers the
//! proxier's health alone (404 on older releases). "Is kube-proxy still syncing?" is `/livez`,
//! else `/healthz` with `node_eligible` taken into account.
//! `/proxyMode` (cmd/kube-proxy/app/server.go) writes the mode name (`iptables`, `ipvs`,
//! `nftables`) as plain text.
//!
//! Loopback only: these endpoints are unauthenticated, and this agent reads its own node's.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::http_get::{self, HttpError, Limits};

/// kube-proxy's default healthz port (`healthzBindAddress` 0.0.0.0:10256).
pub const HEALTHZ_PORT: u16 = 10256;
/// kube-proxy's default metrics port (`metricsBindAddress` 127.0.0.1:10249), which serves
/// `/proxyMode`.
pub const METRICS_PORT: u16 = 10249;

/// Why kube-proxy's answer could not be had or read.
#[derive(Debug, thiserror::Error)]
pub enum KubeProxyError {
    /// Only loopback addresses are asked.
    #[error("{0}: not a loopback address (kube-proxy's endpoints are read on this node only)")]
    NotLoopback(SocketAddr),
    /// No answer.
    #[error("kube-proxy {path}: {source}")]
    Http {
        /// `/healthz`, `/livez` or `/proxyMode`.
        path: &'static str,
        /// Why.
        source: HttpError,
    },
    /// An answer that is not kube-proxy's.
    #[error("kube-proxy {path} on {addr}: {message}")]
    Answer {
        /// `/healthz`, `/livez` or `/proxyMode`.
        path: &'static str,
        /// Where.
        addr: SocketAddr,
        /// What is wrong.
        message: String,
    },
}

/// kube-proxy's health as `/healthz` or `/livez` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// 200 (true) or 503 (false).
    pub healthy: bool,
    /// `nodeEligible` of `/healthz` (v1.28+): `Some(false)` while the node is being deleted
    /// or drained, which alone makes `/healthz` 503. `None` when not reported.
    pub node_eligible: Option<bool>,
    /// `lastUpdated` as kube-proxy printed it.
    pub last_updated: String,
    /// `lastUpdated` in unix seconds; `None` for Go's zero time (never synced) or a form this
    /// reader does not know.
    pub last_updated_unix: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    last_updated: String,
    #[serde(default)]
    node_eligible: Option<bool>,
    #[allow(dead_code)]
    current_time: String,
}

/// `GET path` from kube-proxy at `addr`, which must be a loopback address.
fn ask(
    addr: SocketAddr,
    path: &'static str,
    limits: Limits,
) -> Result<http_get::Response, KubeProxyError> {
    if !addr.ip().is_loopback() {
        return Err(KubeProxyError::NotLoopback(addr));
    }
    http_get::get(addr, &addr.to_string(), path, limits)
        .map_err(|source| KubeProxyError::Http { path, source })
}

/// An answer from `addr` at `path` that is not kube-proxy's, with what is wrong.
fn refusal(path: &'static str, addr: SocketAddr) -> impl Fn(String) -> KubeProxyError {
    move |message| KubeProxyError::Answer {
        path,
        addr,
        message,
    }
}

/// `GET /healthz` from kube-proxy's healthz server at `addr` (`127.0.0.1:10256`).
pub fn healthz(addr: SocketAddr, limits: Limits) -> Result<Health, KubeProxyError> {
    health(addr, "/healthz", limits)
}

/// `GET /livez` from kube-proxy's healthz server at `addr`: the proxier's health without the
/// node's eligibility (v1.28+; older releases answer 404, an `Answer` error).
pub fn livez(addr: SocketAddr, limits: Limits) -> Result<Health, KubeProxyError> {
    health(addr, "/livez", limits)
}

fn health(addr: SocketAddr, path: &'static str, limits: Limits) -> Result<Health, KubeProxyError> {
    let r = ask(addr, path, limits)?;
    let answer = refusal(path, addr);
    let healthy = match r.status {
        200 => true,
        503 => false,
        s => return Err(answer(format!("status {s}, want 200 or 503"))),
    };
    let body: HealthBody = serde_json::from_slice(&r.body).map_err(|e| {
        answer(format!(
            "not the {{\"lastUpdated\", \"currentTime\"}} document: {e}"
        ))
    })?;
    Ok(Health {
        healthy,
        node_eligible: body.node_eligible,
        last_updated_unix: go_time_unix(&body.last_updated),
        last_updated: body.last_updated,
    })
}

/// `GET /proxyMode` from kube-proxy's metrics server at `addr` (`127.0.0.1:10249`): the mode
/// name.
pub fn proxy_mode(addr: SocketAddr, limits: Limits) -> Result<String, KubeProxyError> {
    const PATH: &str = "/proxyMode";
    let r = ask(addr, PATH, limits)?;
    let answer = refusal(PATH, addr);
    if r.status != 200 {
        return Err(answer(format!("status {}, want 200", r.status)));
    }
    let mode = std::str::from_utf8(&r.body)
        .map_err(|_| answer("the mode is not UTF-8".into()))?
        .trim();
    if mode.is_empty() || mode.len() > 32 || !mode.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(answer(format!("{mode:?} is not a proxy mode name")));
    }
    Ok(mode.to_owned())
}

/// Unix seconds of a Go `time.Time.String()` value
/// (`2006-01-02 15:04:05.999999999 -0700 MST`, optionally followed by the monotonic reading
/// `m=±s`); `None` for Go's zero time (year 1) or any other form.
pub fn go_time_unix(s: &str) -> Option<f64> {
    let mut w = s.split_whitespace();
    let (date, time, offset) = (w.next()?, w.next()?, w.next()?);
    let mut d = date.splitn(3, '-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if y <= 1 || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off = offset.get(1..)?;
    if off.len() != 4 {
        return None;
    }
    let off_s = sign
        * (off.get(..2)?.parse::<i64>().ok()? * 3600 + off.get(2..)?.parse::<i64>().ok()? * 60);
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - off_s;
    Some(secs as f64 + frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
