//! The command line's use of the Kubernetes API (docs/kubernetes.md): kube-proxy's ConfigMap
//! for INPUTS, the api-drift preflight finding, `fleet status`, and finalize's switch. The
//! API is used only when asked for (`--kubeconfig` / `--kube-api`); errors get the exit codes
//! docs/kubernetes.md documents (69 unusable API, 66 missing object, 65 bad answer, 3 refused).
//!
//! Must not: be used by `serve` (the daemon is async and best-effort: serve/kube.rs), or
//! decide anything the engine decides (drift, the switch's manifests).

use std::time::{Duration, SystemTime};

use ipvsmig_engine::drift;
use ipvsmig_engine::inventory::Inventory;
use ipvsmig_engine::preflight::Finding;
use ipvsmig_kube::configmap::{ConfigMapKey, read_config_text};
use ipvsmig_kube::{ApiClient, ClientOptions, ErrorClass, KubeError};

use crate::cli::{ApiArgs, Format, Inputs};
use crate::exit::{CliError, ExitCode};

/// How long the drift check waits before its second read (kube-proxy's default
/// `minSyncPeriod` is 1 s; a large sync takes a few more).
pub const DRIFT_RECHECK: Duration = Duration::from_secs(3);

/// The exit code of an API error (docs/kubernetes.md "Errors and exit codes").
pub fn api_error(e: KubeError) -> CliError {
    let code = match e.class() {
        ErrorClass::Unavailable => ExitCode::Unavailable,
        ErrorClass::Missing => ExitCode::NoInput,
        ErrorClass::BadData => ExitCode::DataErr,
        ErrorClass::Failed => ExitCode::OperationFailed,
    };
    CliError::new(code, e.to_string())
}

/// A one-thread runtime for the API calls of one command.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ExitCode::OperationFailed, format!("tokio runtime: {e}")))
}

/// Runs `f` with a client, on a fresh runtime.
pub fn with_api<T, F, Fut>(args: &ApiArgs, f: F) -> Result<T, CliError>
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let rt = runtime()?;
    rt.block_on(async {
        let api = ApiClient::connect(&ClientOptions {
            kubeconfig: args.kubeconfig.clone(),
            timeout: Duration::from_secs(args.kube_api_timeout.max(1)),
        })
        .await
        .map_err(api_error)?;
        f(api).await
    })
}

/// Which ConfigMap key the flags name.
pub fn configmap_key(i: &Inputs) -> Result<ConfigMapKey, CliError> {
    let mut key: ConfigMapKey = i
        .kube_proxy_configmap
        .parse()
        .map_err(|e| CliError::new(ExitCode::Usage, format!("--kube-proxy-configmap {e}")))?;
    if i.kube_proxy_configmap_key.trim().is_empty() {
        return Err(CliError::new(
            ExitCode::Usage,
            "--kube-proxy-configmap-key is empty",
        ));
    }
    key.key = i.kube_proxy_configmap_key.clone();
    Ok(key)
}

/// kube-proxy's configuration text from its ConfigMap, with the place it came from; `None`
/// when the API was not asked for.
pub fn kube_proxy_config_text(i: &Inputs) -> Result<Option<(String, String)>, CliError> {
    if !i.api.enabled() {
        return Ok(None);
    }
    let key = configmap_key(i)?;
    let text = with_api(&i.api, |api| async move {
        read_config_text(&api, &key).await.map_err(api_error)
    })?;
    Ok(Some((format!("configmap {}", configmap_key(i)?), text)))
}

/// This node's Kubernetes name: `explicit`, else NODE_NAME (the DaemonSet's downward API),
/// else the host name below the host root.
pub fn node_name(i: &Inputs, explicit: Option<&str>) -> String {
    if let Some(n) = explicit {
        return n.to_owned();
    }
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string(crate::node::host_root(i).join("proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The api-drift finding: the API read twice [`DRIFT_RECHECK`] apart, the node's rules
/// (`reread` gives them afresh: the live node changes, files do not), only differences seen
/// both times. `None` when the API was not asked for.
pub fn drift_finding(
    i: &Inputs,
    first: &Inventory,
    reread: impl FnOnce() -> Result<Inventory, CliError>,
) -> Result<Option<Finding>, CliError> {
    if !i.api.enabled() {
        return Ok(None);
    }
    let node = node_name(i, None);
    let read = |node: String| {
        with_api(&i.api, |api| async move {
            ipvsmig_kube::view::read_view(&api, &node)
                .await
                .map_err(api_error)
        })
    };
    let snap = read(node.clone())?;
    for n in &snap.notes {
        tracing::warn!(note = %n, "api-drift: left out of the comparison");
    }
    let earlier = drift::compare(first, &snap.view);
    if earlier.items.is_empty() {
        return Ok(Some(drift::finding(
            &earlier,
            snap.view.service_ports.len(),
        )));
    }
    std::thread::sleep(DRIFT_RECHECK);
    let later_snap = read(node)?;
    let later = drift::compare(&reread()?, &later_snap.view);
    Ok(Some(drift::finding(
        &drift::persisting(&earlier, &later),
        later_snap.view.service_ports.len(),
    )))
}

/// `fleet status`: exit 0, or 1 when a node is flagged (two kube-proxies).
pub fn fleet_status(args: &ApiArgs, output: Format) -> Result<ExitCode, CliError> {
    // A usage error is one before anything is asked of the API server.
    if output == Format::Html {
        return Err(CliError::new(
            ExitCode::Usage,
            "fleet status has no html output: use -o table or -o json",
        ));
    }
    let status = with_api(args, |api| async move {
        ipvsmig_kube::fleet::read_fleet(&api)
            .await
            .map_err(api_error)
    })?;
    match output {
        Format::Json => crate::commands::print_json(&status)?,
        // Html was refused above.
        Format::Table | Format::Html => {
            crate::commands::write_out(&crate::table::fleet(&status, SystemTime::now()))?
        }
    }
    Ok(if status.flagged().next().is_some() {
        ExitCode::NotReady
    } else {
        ExitCode::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvsmig_kube::Call;

    #[test]
    fn api_errors_get_the_documented_exit_codes() {
        let call = || {
            Call::new("get", "", "configmaps")
                .in_namespace("kube-system")
                .named("kube-proxy")
        };
        let server = "https://k:6443/".to_owned();
        for (e, code) in [
            (
                KubeError::Config {
                    message: "none".into(),
                },
                69,
            ),
            (
                KubeError::Forbidden {
                    server: server.clone(),
                    call: call(),
                    message: "no".into(),
                },
                69,
            ),
            (
                KubeError::Timeout {
                    server: server.clone(),
                    call: call(),
                    timeout: Duration::from_secs(1),
                },
                69,
            ),
            (
                KubeError::NotFound {
                    server: server.clone(),
                    call: call(),
                    message: "gone".into(),
                },
                66,
            ),
            (
                KubeError::Decode {
                    server: server.clone(),
                    call: call(),
                    message: "x".into(),
                },
                65,
            ),
            (
                KubeError::Api {
                    server,
                    call: call(),
                    code: 500,
                    reason: "InternalError".into(),
                    message: "x".into(),
                },
                3,
            ),
        ] {
            assert_eq!(api_error(e).code.code(), code);
        }
    }

    #[test]
    fn the_configmap_flags_are_checked() {
        let mut i = Inputs {
            kube_proxy_configmap: "kube-proxy-config".into(),
            kube_proxy_configmap_key: "config.conf".into(),
            ..Inputs::default()
        };
        assert_eq!(
            configmap_key(&i).map(|k| k.to_string()).ok().as_deref(),
            Some("kube-system/kube-proxy-config key config.conf")
        );
        i.kube_proxy_configmap = "A/B".into();
        assert_eq!(
            configmap_key(&i).map_err(|e| e.code).err(),
            Some(ExitCode::Usage)
        );
        // Without --kubeconfig/--kube-api nothing is read from the API.
        assert_eq!(
            kube_proxy_config_text(&Inputs::default()).ok().flatten(),
            None
        );
    }
}
