//! `ipvs-migrate cutover`: the waves (from `--namespace`, one wave, or a `--waves` file), a
//! dry run that shows the gate and the plan of each wave, and the hand-over to the `serve`
//! daemon, which runs the phase machine (a cutover soaks and watches for minutes: it cannot
//! live in a CLI process).
//!
//! The waves file (YAML):
//! ```yaml
//! waves:
//!   - namespaces: [shop]
//!   - namespaces: [auth, cart]
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::cli::{BackendArg, Inputs};
use crate::exit::{CliError, ExitCode};
use crate::migrate;
use crate::serve::socket::{self, Request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WavesFile {
    waves: Vec<Wave>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wave {
    namespaces: Vec<String>,
}

/// A Kubernetes namespace name (RFC 1123 label): what may appear in a wave.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// Parses a waves file's text: namespace groups in order; each namespace once in all.
pub fn parse_waves(text: &str) -> Result<Vec<Vec<String>>, String> {
    let f: WavesFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    check_waves(f.waves.into_iter().map(|w| w.namespaces).collect())
}

fn check_waves(waves: Vec<Vec<String>>) -> Result<Vec<Vec<String>>, String> {
    if waves.is_empty() {
        return Err("no waves".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in waves.iter().enumerate() {
        if w.is_empty() {
            return Err(format!("wave {} has no namespaces", i + 1));
        }
        for ns in w {
            if !valid_namespace(ns) {
                return Err(format!(
                    "wave {}: {ns:?} is not a namespace name (RFC 1123 label)",
                    i + 1
                ));
            }
            if !seen.insert(ns.clone()) {
                let where_ = if w.iter().filter(|n| *n == ns).count() > 1 {
                    "twice in this wave"
                } else {
                    "in an earlier wave"
                };
                return Err(format!("wave {}: namespace {ns} is {where_}", i + 1));
            }
        }
    }
    Ok(waves)
}

/// `cutover`.
pub fn cutover_cmd(
    state_dir: &Path,
    namespaces: &[String],
    waves_file: Option<&Path>,
    soak: Option<&str>,
    allow: &[String],
    dry_run: bool,
) -> Result<ExitCode, CliError> {
    let waves = match (waves_file, namespaces.is_empty()) {
        (Some(_), false) => {
            return Err(CliError::new(
                ExitCode::Usage,
                "give the namespaces either with --namespace (one wave) or in a --waves file, not both",
            ));
        }
        (None, true) => {
            return Err(CliError::new(
                ExitCode::Usage,
                "say which namespaces to cut over: --namespace NS (one wave) or --waves FILE",
            ));
        }
        (None, false) => check_waves(vec![namespaces.to_vec()])
            .map_err(|m| CliError::new(ExitCode::Usage, format!("--namespace: {m}")))?,
        (Some(p), true) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    ExitCode::NoInput
                } else {
                    ExitCode::DataErr
                };
                CliError::new(code, format!("{}: {e}", p.display()))
            })?;
            parse_waves(&text).map_err(|m| {
                let mut e = CliError::new(ExitCode::DataErr, format!("{}: {m}", p.display()));
                e.input = Some(p.display().to_string());
                e
            })?
        }
    };
    // An id that no check has would allow nothing and hide a typo.
    if let Some(bad) = allow
        .iter()
        .find(|a| !ipvsmig_engine::preflight::CHECK_IDS.contains(&a.as_str()))
    {
        return Err(CliError::new(
            ExitCode::Usage,
            format!(
                "--allow {bad}: no preflight check has that id (ids: {})",
                ipvsmig_engine::preflight::CHECK_IDS.join(", ")
            ),
        ));
    }
    let soak_secs = soak
        .map(migrate::duration)
        .transpose()?
        .map(|d| d.as_secs());
    if dry_run {
        return dry_run_text(&waves, allow, soak_secs);
    }
    let req = Request::Cutover {
        waves,
        soak_secs,
        allow: allow.to_vec(),
    };
    match migrate::hand_to_daemon(state_dir, &Inputs::default(), &req)? {
        Some(resp) => socket::finish(resp),
        None => Err(CliError::new(
            ExitCode::Unavailable,
            format!(
                "a cutover soaks, watches and rolls back by itself, so it runs in the ipvs-migrate daemon, and none listens on {}: start `ipvs-migrate serve` on this node (deploy/ runs it as a DaemonSet), then run this again",
                socket::path(state_dir).display()
            ),
        )),
    }
}

/// What a cutover would do, read from this node (nothing changed).
fn dry_run_text(
    waves: &[Vec<String>],
    allow: &[String],
    soak_secs: Option<u64>,
) -> Result<ExitCode, CliError> {
    let i = Inputs::default();
    let g = migrate::gate(&i)?;
    let mut out = String::from("Dry run: nothing was changed.\n");
    let unallowed: Vec<&(String, String)> = g
        .blockers
        .iter()
        .filter(|(id, _)| !allow.contains(id))
        .collect();
    if g.blockers.is_empty() {
        out.push_str("Preflight gate: no blockers.\n");
    } else {
        for (id, title) in &g.blockers {
            let verdict = if allow.contains(id) {
                "allowed (--allow; a real cutover records it in the journal)"
            } else {
                "BLOCKS the cutover"
            };
            out.push_str(&format!("Preflight blocker {id} ({title}): {verdict}\n"));
        }
    }
    if g.calico {
        out.push_str(
            "Calico node: each wave waits for calico-node to restart after kube-ipvs0 exists.\n",
        );
    }
    out.push_str(&format!(
        "Soak per wave: {}\n",
        soak_secs.map_or("the daemon's configured soak".to_owned(), |s| format!(
            "{s} s"
        ))
    ));
    let mut so_far: Vec<String> = Vec::new();
    for (n, w) in waves.iter().enumerate() {
        so_far.extend(w.iter().cloned());
        let plan = crate::node::plan_for(&i, BackendArg::Auto, &so_far, &[], 0)?;
        out.push_str(&format!(
            "Wave {} ({}): with the waves before it, {} virtual server(s), {} address(es); {} service(s) stay on iptables\n",
            n + 1,
            w.join(", "),
            plan.virtual_servers.len(),
            plan.addresses.len(),
            plan.left_on_iptables.len(),
        ));
    }
    print!("{out}");
    if unallowed.is_empty() {
        Ok(ExitCode::Ok)
    } else {
        Ok(ExitCode::NotReady)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_waves_file_gives_the_namespace_groups_in_order() {
        let w =
            parse_waves("waves:\n  - namespaces: [shop]\n  - namespaces: [auth, cart]\n").unwrap();
        assert_eq!(
            w,
            [vec!["shop".to_owned()], vec!["auth".into(), "cart".into()]]
        );
    }

    #[test]
    fn an_allow_that_names_no_check_is_a_usage_error_before_anything_else() {
        let e = cutover_cmd(
            Path::new("/nonexistent-state"),
            &["shop".to_owned()],
            None,
            None,
            &["kernel-modulez".to_owned()],
            true,
        )
        .unwrap_err();
        assert_eq!(e.code, ExitCode::Usage);
        assert!(
            e.message.contains("no preflight check has that id"),
            "{}",
            e.message
        );
        assert!(e.message.contains("kernel-modules"), "{}", e.message);
    }

    #[test]
    fn bad_waves_files_say_what_is_wrong() {
        let check = |text: &str, needle: &str| {
            let e = parse_waves(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        };
        check("waves: []", "no waves");
        check("waves:\n  - namespaces: []", "wave 1 has no namespaces");
        check(
            "waves:\n  - namespaces: [a]\n  - namespaces: [b, a]",
            "wave 2: namespace a is in an earlier wave",
        );
        check("waves:\n  - namespaces: [Shop]", "not a namespace name");
        check(
            "waves:\n  - namespaces: [a, a]",
            "wave 1: namespace a is twice in this wave",
        );
        check(
            "waves:\n  - namespaces: [\"a;rm -rf\"]",
            "not a namespace name",
        );
        check("waves:\n  - names: [a]", "unknown field");
        check("wave: []", "unknown field");
        check("- a", "");
    }
}
