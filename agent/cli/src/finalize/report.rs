//! `finalize`'s report: the JSON document (apiVersion ipvs-migrate/v1, kind FinalizeReport;
//! docs/finalize.md) and its table rendering. Renders only; decides nothing.

use ipvsmig_engine::inventory::IpFamily;
use ipvsmig_engine::plan::leftovers::TableCleanup;
use serde::Serialize;

use crate::cli::Format;
use crate::exit::{CliError, ExitCode};

/// One table's iptables-mode leftovers: the jumps deleted and the chains flushed and deleted.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeftoverDoc {
    pub(crate) family: &'static str,
    pub(crate) table: String,
    pub(crate) unhooked: Vec<String>,
    pub(crate) chains: Vec<String>,
}

/// `finalize -o json` (docs/finalize.md "Output").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FinalizeDoc {
    pub(crate) api_version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) node: String,
    pub(crate) dry_run: bool,
    /// finalized | refused | dry-run
    pub(crate) outcome: &'static str,
    pub(crate) proxy_mode: String,
    pub(crate) state_differences: Vec<String>,
    pub(crate) exclude_cidrs: Vec<String>,
    pub(crate) manifest_files: Vec<String>,
    pub(crate) commands: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) our_tables: Vec<String>,
    pub(crate) sets: Vec<String>,
    pub(crate) leftovers: Vec<LeftoverDoc>,
    pub(crate) handed_over_virtual_servers: usize,
    pub(crate) handed_over_addresses: usize,
}

pub(crate) fn leftover_docs(l: &[(IpFamily, TableCleanup)]) -> Vec<LeftoverDoc> {
    l.iter()
        .map(|(f, c)| LeftoverDoc {
            family: f.as_str(),
            table: c.table.clone(),
            unhooked: c
                .unhook
                .iter()
                .map(|(ch, r)| format!("-A {ch} {r}"))
                .collect(),
            chains: c.chains.clone(),
        })
        .collect()
}

/// The report as text or JSON (`refused`: the refusal line of a dry run or of a daemon's
/// answer; the CLI's own refusal goes to stderr).
pub(crate) fn render(
    doc: &FinalizeDoc,
    output: Format,
    manifests: &str,
    refused: Option<&str>,
) -> Result<String, CliError> {
    if output == Format::Json {
        return serde_json::to_string_pretty(doc)
            .map(|s| s + "\n")
            .map_err(|e| CliError::new(ExitCode::OperationFailed, e.to_string()));
    }
    let mut t = String::new();
    match doc.outcome {
        "finalized" => t.push_str(&format!(
            "Finalized node {}: kube-proxy in IPVS mode runs it now.\n",
            doc.node
        )),
        "dry-run" => t.push_str(&format!(
            "Dry run: nothing was changed. Finalize on node {} would{}:\n",
            doc.node,
            if refused.is_some() {
                " REFUSE (see below); once it may go on, it would"
            } else {
                ""
            }
        )),
        _ => t.push_str(&format!(
            "Finalize refused on node {}: nothing was changed.\n",
            doc.node
        )),
    }
    t.push_str(&format!("  kube-proxy /proxyMode: {}\n", doc.proxy_mode));
    t.push_str(&format!(
        "  IPVS against the full IPVS-mode plan: {}\n",
        if doc.state_differences.is_empty() {
            "equal".to_owned()
        } else {
            format!("{} difference(s)", doc.state_differences.len())
        }
    ));
    for d in doc.state_differences.iter().take(10) {
        t.push_str(&format!("    {d}\n"));
    }
    let verb = if doc.outcome == "finalized" {
        "removed"
    } else {
        "remove"
    };
    t.push_str(&format!(
        "  {verb} ipvs-migrate's hooks and IPVSMIG- chains in: {}\n",
        list(&doc.our_tables)
    ));
    t.push_str(&format!(
        "  {verb} ipvs-migrate's sets (after the rules): {}\n",
        list(&doc.sets)
    ));
    t.push_str(&format!(
        "  hand over to kube-proxy (kept, forgotten by the journal): {} virtual server(s), {} kube-ipvs0 address(es), kube-ipvs0, the IPVS sysctls\n",
        doc.handed_over_virtual_servers, doc.handed_over_addresses
    ));
    for l in &doc.leftovers {
        t.push_str(&format!(
            "  {verb} kube-proxy iptables-mode leftovers ({} {}):\n",
            l.family, l.table
        ));
        for u in &l.unhooked {
            t.push_str(&format!("    jump {u}\n"));
        }
        t.push_str(&format!("    chains {}\n", l.chains.join(" ")));
    }
    if doc.leftovers.is_empty() {
        t.push_str("  kube-proxy iptables-mode leftovers: none\n");
    }
    if !doc.exclude_cidrs.is_empty() {
        t.push_str(&format!(
            "  foreign virtual servers (ipvs.excludeCIDRs): {}\n",
            doc.exclude_cidrs.join(", ")
        ));
    }
    for f in &doc.manifest_files {
        t.push_str(&format!("  wrote {f}\n"));
    }
    if !doc.commands.is_empty() {
        t.push_str("  the switch, in order:\n");
        for c in &doc.commands {
            t.push_str(&format!("    {c}\n"));
        }
    }
    for n in &doc.notes {
        t.push_str(&format!("  note: {n}\n"));
    }
    if let Some(r) = refused {
        t.push_str(&format!("  REFUSED: {r}\n"));
    }
    t.push_str(manifests);
    Ok(t)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}
