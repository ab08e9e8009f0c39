//! `finalize --apply-switch`: the per-node kube-proxy switch sent through the Kubernetes API
//! (docs/finalize.md "Applying the switch through the API"). It computes what a dry run of
//! finalize computes (the manifests for this node, from the same INPUTS), then sends the
//! requests `ipvsmig_kube::switch` lists — or prints them with `--dry-run`. It changes nothing
//! on the node: the hand-over is the next `finalize`, once kube-proxy runs in IPVS mode.
//!
//! Must not: run in the daemon (its service account has no rights on DaemonSets), or apply
//! anything when kube-proxy already runs in IPVS mode on this node.

use std::fmt::Write as _;
use std::path::Path;

use ipvsmig_engine::plan::switch::{LABEL_KEY, LABEL_VALUE, Manifests};
use ipvsmig_kube::switch::{Step, Switch, apply, steps};
use serde_json::Value;

use super::{FinalizeArgs, finalize};
use crate::cli::{BackendArg, Format, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::kube_api::{api_error, with_api};
use crate::migrate::read_owned;

/// The switch's values from the manifests' YAML.
fn switch_of(node: &str, m: &Manifests) -> Result<Switch, CliError> {
    let parse = |what: &str, y: &str| -> Result<Value, CliError> {
        serde_saphyr::from_str(y).map_err(|e| {
            CliError::new(
                ExitCode::OperationFailed,
                format!("the {what} manifest does not read back: {e}"),
            )
        })
    };
    Ok(Switch {
        namespace: "kube-system".into(),
        configmap: parse("ConfigMap", &m.configmap)?,
        daemonset: parse("DaemonSet", &m.daemonset)?,
        original: "kube-proxy".into(),
        patch: parse("DaemonSet patch", &m.patch)?,
        node: node.to_owned(),
        label: (LABEL_KEY.into(), LABEL_VALUE.into()),
    })
}

fn describe(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        let how = match s.patch_type {
            "" => String::new(),
            "apply" => " (server-side apply, fieldManager=ipvs-migrate)".into(),
            t => format!(" ({t} patch)"),
        };
        let _ = writeln!(out, "{}{how}", s.call);
        if !s.body.is_null() {
            let body = serde_json::to_string(&s.body).unwrap_or_default();
            let _ = writeln!(out, "  {body}");
        }
    }
    out
}

/// Runs `finalize --apply-switch [--dry-run]`.
pub fn run(
    state_dir: &Path,
    i: &Inputs,
    backend: BackendArg,
    a: &FinalizeArgs<'_>,
) -> Result<ExitCode, CliError> {
    if !i.api.enabled() {
        return Err(CliError::new(
            ExitCode::Usage,
            "--apply-switch sends the switch through the Kubernetes API: pass --kubeconfig FILE or --kube-api",
        ));
    }
    let (mut owned, _, fail) = read_owned(state_dir, i)?;
    let dry = FinalizeArgs {
        dry_run: true,
        ..a.clone()
    };
    let f = finalize(
        state_dir,
        i,
        backend,
        &dry,
        None,
        &mut owned,
        fail.is_some(),
    )?;
    let Some((node, manifests)) = f.switch else {
        return Err(CliError::new(
            ExitCode::NotReady,
            "nothing to apply: kube-proxy already runs in IPVS mode on this node, or finalize has no kube-proxy configuration to build the manifests from (give --kube-proxy-config or read the ConfigMap with --kubeconfig/--kube-api); run finalize without --apply-switch",
        ));
    };
    let sw = switch_of(&node, &manifests)?;
    let planned = steps(&sw);
    if a.dry_run {
        let text = format!(
            "finalize --apply-switch --dry-run: would send, in order (node {node}):\n{}",
            describe(&planned)
        );
        return write(a.output, &node, &planned, "dry-run", &text).map(|()| ExitCode::Ok);
    }
    let result = with_api(&i.api, |api| async move { Ok(apply(&api, &sw).await) })?;
    match result {
        Ok(done) => {
            let text = format!(
                "switch applied through the API for node {node}:\n{}Once the kube-proxy-ipvs pod runs on {node}, run `ipvs-migrate finalize` again to hand the node over.\n",
                describe(&done)
            );
            write(a.output, &node, &done, "applied", &text).map(|()| ExitCode::Ok)
        }
        Err((done, e)) => {
            let mut err = api_error(e);
            err.message = format!(
                "{}; done before it: {}",
                err.message,
                if done.is_empty() {
                    "nothing".to_owned()
                } else {
                    done.iter()
                        .map(|s| s.call.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            Err(err)
        }
    }
}

fn write(
    output: Format,
    node: &str,
    steps: &[Step],
    outcome: &str,
    text: &str,
) -> Result<(), CliError> {
    match output {
        Format::Json => crate::commands::print_json(&serde_json::json!({
            "apiVersion": ipvsmig_engine::inventory::API_VERSION,
            "kind": "FinalizeSwitch",
            "node": node,
            "outcome": outcome,
            "requests": steps.iter().map(|s| serde_json::json!({
                "verb": s.call.verb,
                "resource": s.call.qualified_resource(),
                "namespace": s.call.namespace,
                "name": s.call.name,
                "patchType": s.patch_type,
                "body": s.body,
            })).collect::<Vec<_>>(),
        })),
        _ => crate::commands::write_out(text),
    }
}
