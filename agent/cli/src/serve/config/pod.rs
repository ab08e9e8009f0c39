//! The configuration keys for running as a pod (docs/serve.md "Running in a pod" and
//! "Security"): `hostRoot` (where the host's `/` is mounted), `tls`, `webhookRateLimit`, and
//! this node's IPs from the downward API when the shared ConfigMap cannot hold them. Pure like
//! the rest of config.rs: the environment's values are passed in. It reads no file (TLS files
//! are read by serve/tls.rs at start).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Scalar, bad, number};
use crate::serve::ratelimit;
use crate::serve::tls::TlsFiles;

/// The environment variable the DaemonSet fills from the downward API's `status.hostIPs`
/// (deploy/daemonset.yaml): the node's addresses, IPv4 and IPv6 on a dual-stack node,
/// comma-separated (KEP-2681; GA in Kubernetes 1.30).
pub const NODE_IPS_ENV: &str = "NODE_IPS";

/// `tls:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTls {
    cert_file: Option<Scalar>,
    key_file: Option<Scalar>,
}

/// `webhookRateLimit:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    rate: Option<Scalar>,
    burst: Option<Scalar>,
}

/// The webhook's rate limit (serve/ratelimit.rs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Calls per second, sustained.
    pub rate: f64,
    /// Calls at once.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            rate: ratelimit::DEFAULT_RATE,
            burst: ratelimit::DEFAULT_BURST,
        }
    }
}

fn path(key: &str, v: Option<Scalar>) -> Result<Option<PathBuf>, ConfigError> {
    match v {
        None => Ok(None),
        Some(Scalar(s)) if s.trim().is_empty() => Err(bad(key, "is empty")),
        Some(Scalar(s)) => Ok(Some(PathBuf::from(s.trim()))),
    }
}

/// `tls`: both files or neither.
pub(super) fn tls(raw: Option<RawTls>) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let cert = path("tls.certFile", raw.cert_file)?;
    let key = path("tls.keyFile", raw.key_file)?;
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
        })),
        (None, _) => Err(bad("tls.certFile", "is required when tls is set")),
        (_, None) => Err(bad("tls.keyFile", "is required when tls is set")),
    }
}

/// `webhookRateLimit`: `rate` > 0 calls per second, `burst` a whole number ≥ 1.
pub(super) fn rate_limit(raw: Option<RawRateLimit>) -> Result<RateLimit, ConfigError> {
    let d = RateLimit::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let rate = number(
        "webhookRateLimit.rate",
        raw.rate,
        d.rate,
        |n| n > 0.0,
        "a number of calls per second above 0",
    )?;
    let burst = match raw.burst {
        None => d.burst,
        Some(Scalar(s)) => match s.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(bad(
                    "webhookRateLimit.burst",
                    format!("{s:?} is not a whole number of calls, 1 or more"),
                ));
            }
        },
    };
    Ok(RateLimit { rate, burst })
}

/// `hostRoot`: an absolute directory (default `/`: the agent runs on the host itself).
pub(super) fn host_root(v: Option<Scalar>) -> Result<PathBuf, ConfigError> {
    match path("hostRoot", v)? {
        None => Ok(PathBuf::from("/")),
        Some(p) if p.is_absolute() => Ok(p),
        Some(p) => Err(bad(
            "hostRoot",
            format!("{:?} is not an absolute path", p.display()),
        )),
    }
}

/// This node's IPs: the configuration's `nodeIPs` when set (a single node's own file), else
/// [`NODE_IPS_ENV`] (`env`), comma- or space-separated; neither: none (no NodePort virtual
/// servers are planned, as with no `--node-ip`). A bad address names the variable.
pub fn node_ips(configured: Vec<IpAddr>, env: Option<&str>) -> Result<Vec<IpAddr>, ConfigError> {
    if !configured.is_empty() {
        return Ok(configured);
    }
    let Some(text) = env else {
        return Ok(Vec::new());
    };
    let mut ips = Vec::new();
    for s in text.split([',', ' ']).filter(|s| !s.trim().is_empty()) {
        let ip: IpAddr = s.trim().parse().map_err(|_| {
            bad(
                NODE_IPS_ENV,
                format!("{s:?} is not an IP address (the variable is {text:?})"),
            )
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn configured_node_ips_win_over_the_environment() {
        let got = node_ips(vec![ip("10.0.0.5")], Some("192.0.2.1")).unwrap();
        assert_eq!(got, vec![ip("10.0.0.5")]);
    }

    #[test]
    fn the_downward_apis_host_ips_give_both_families_in_order() {
        // status.hostIPs as the kubelet writes it into the environment: comma-separated.
        let got = node_ips(Vec::new(), Some("192.0.2.10,2001:db8::10")).unwrap();
        assert_eq!(got, vec![ip("192.0.2.10"), ip("2001:db8::10")]);
        assert_eq!(
            node_ips(Vec::new(), Some(" 192.0.2.10 , 192.0.2.10 ")).unwrap(),
            vec![ip("192.0.2.10")]
        );
    }

    #[test]
    fn no_configuration_and_no_variable_is_no_node_ip() {
        assert!(node_ips(Vec::new(), None).unwrap().is_empty());
        assert!(node_ips(Vec::new(), Some("")).unwrap().is_empty());
    }

    #[test]
    fn a_bad_address_in_the_variable_names_the_variable() {
        let e = node_ips(Vec::new(), Some("192.0.2.10,node-a")).unwrap_err();
        assert_eq!(e.key, NODE_IPS_ENV);
        assert!(e.message.contains("\"node-a\" is not an IP address"), "{e}");
    }

    // config.rs's table helpers: parse and expect success, or an error naming the key.
    use crate::serve::config::tests::{check, ok};

    #[test]
    fn without_the_keys_the_host_is_slash_tls_is_off_and_the_limit_is_the_default() {
        let c = ok("");
        assert_eq!(c.host_root, PathBuf::from("/"));
        assert_eq!(c.tls, None);
        assert_eq!(c.webhook_rate_limit, RateLimit::default());
    }

    #[test]
    fn the_keys_as_deploy_writes_them_are_read() {
        let c = ok(
            "hostRoot: /host\ntls:\n  certFile: /tls/tls.crt\n  keyFile: /tls/tls.key\nwebhookRateLimit:\n  rate: 0.5\n  burst: 4\n",
        );
        assert_eq!(c.host_root, PathBuf::from("/host"));
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert_file: "/tls/tls.crt".into(),
                key_file: "/tls/tls.key".into(),
            })
        );
        assert_eq!(
            c.webhook_rate_limit,
            RateLimit {
                rate: 0.5,
                burst: 4
            }
        );
    }

    #[test]
    fn kube_proxys_addresses_may_be_written_as_finalize_writes_them() {
        let c =
            ok("kubeProxyMetrics: http://127.0.0.1:10249/\nkubeProxyHealthz: http://[::1]:10256\n");
        assert_eq!(
            c.kube_proxy_metrics,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(c.kube_proxy_healthz, Some("[::1]:10256".parse().unwrap()));
        check(
            "kubeProxyMetrics: http://192.0.2.1:10249",
            "kubeProxyMetrics",
            "loopback",
        );
    }

    #[test]
    fn bad_pod_keys_are_errors_naming_the_key() {
        // (file, key named, text in the message)
        let cases = [
            ("hostRoot: host", "hostRoot", "not an absolute path"),
            ("hostRoot: \"\"", "hostRoot", "is empty"),
            ("tls:\n  certFile: /a\n", "tls.keyFile", "is required"),
            ("tls:\n  keyFile: /a\n", "tls.certFile", "is required"),
            (
                "tls: {certFile: /a, keyFile: /b, caFile: /c}",
                "tls",
                "unknown field",
            ),
            (
                "webhookRateLimit: {rate: 0}",
                "webhookRateLimit.rate",
                "above 0",
            ),
            (
                "webhookRateLimit: {burst: 0}",
                "webhookRateLimit.burst",
                "1 or more",
            ),
            (
                "webhookRateLimit: {burst: 2.5}",
                "webhookRateLimit.burst",
                "whole number",
            ),
        ];
        for (text, key, needle) in cases {
            check(text, key, needle);
        }
    }

    #[test]
    fn the_daemonset_mounts_the_host_where_its_config_says_and_passes_the_node_ips() {
        use serde_json::Value;
        let ds: Value =
            serde_saphyr::from_str(include_str!("../../../../../deploy/daemonset.yaml")).unwrap();
        let cm: Value =
            serde_saphyr::from_str(include_str!("../../../../../deploy/configmap.yaml")).unwrap();
        let c = ok(cm["data"]["serve.yaml"].as_str().unwrap());
        let pod = &ds["spec"]["template"]["spec"];
        let agent = &pod["containers"][0];
        let named = |list: &Value, name: &str| -> Value {
            list.as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let mount = named(&agent["volumeMounts"], "host-root");
        assert_eq!(
            mount["mountPath"].as_str().map(PathBuf::from),
            Some(c.host_root)
        );
        assert_eq!(mount["readOnly"], true);
        assert_eq!(named(&pod["volumes"], "host-root")["hostPath"]["path"], "/");
        let env = named(&agent["env"], NODE_IPS_ENV);
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIPs");
        // Per node, never in the ConfigMap every node shares.
        assert!(c.node_ips.is_empty());
    }
}
