//! The readiness report as one self-contained HTML page (docs/report.md): `audit -o html` and
//! the daemon's `/`. It renders the engine's report value (`report::Document`), the very value
//! `-o json` and `/api/v1/report` serialize, so the page and the JSON cannot disagree.
//!
//! The page loads nothing: inline CSS, inline SVG charts (chart.rs), no script, no font, no
//! image, no URL with a scheme (clusters are often air-gapped). Runbook links are relative
//! (`docs/runbooks/preflight.md#ID`, resolved against an ipvs-migrate source tree or release
//! docs; docs/report.md). Every value from outside — namespaces, comments, evidence — goes
//! through [`esc`]. At 20k services it stays small: per-namespace summaries, never per rule.

pub mod chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipvsmig_engine::preflight::{Finding, Severity};
use ipvsmig_engine::report::{Audit, Document, Migration};

use crate::migrate::human;

/// Behaviour differences listed per id before "… and N more".
const LIST_MAX: usize = 20;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px 40px;color:#1b1b1b}
h1{font-size:1.6em;margin:.6em 0 .2em}h2{border-bottom:2px solid #ddd;margin-top:1.6em}
.verdict{padding:10px 16px;border-radius:6px;border:2px solid}.ready{background:#e8f5e9;border-color:#2e7d32}
.not-ready{background:#fdecea;border-color:#c62828}.not-evaluated{background:#fff8e1;border-color:#f9a825}
.demo{background:#e3f2fd;padding:6px 12px;border-radius:4px}
.finding{border-left:5px solid #999;padding:4px 12px;margin:10px 0;background:#fafafa}
.finding.blocker{border-color:#c62828}.finding.warning{border-color:#f9a825}.finding.info{border-color:#1565c0}
.sev{font-weight:bold;text-transform:uppercase;font-size:.85em;margin-right:6px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f0f0}
code{background:#f3f3f3;padding:0 3px}svg.chart{font:12px system-ui,sans-serif;max-width:100%;height:auto;display:block;margin:8px 0}
dt{font-weight:bold}dd{margin:0 0 6px 16px}footer{margin-top:2em;color:#555;font-size:.9em}";

/// The whole page.
pub fn page(doc: &Document<'_>) -> String {
    let a = doc.audit;
    let mut o = String::with_capacity(64 * 1024);
    let subject = match doc.migration {
        Some(m) => format!("node {}", m.node),
        None if a.demo => "demo snapshot".to_owned(),
        None => "this node".to_owned(),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>ipvs-migrate readiness report — {}</title><style>{STYLE}</style></head><body>\n",
        esc(&subject)
    );
    let _ = write!(
        o,
        "<header><h1>ipvs-migrate readiness report</h1><p>{} · <code>{}</code> <code>kind: {}</code>{}</p>",
        esc(&subject),
        esc(doc.api_version),
        esc(doc.kind),
        doc.migration
            .map(|m| format!(" · generated {}", utc(m.generated_at)))
            .unwrap_or_default()
    );
    if a.demo {
        o.push_str("<p class=\"demo\" id=\"demo\">DEMO: the node snapshot bundled with ipvs-migrate, not this node.</p>");
    }
    o.push_str("</header>\n");
    verdict(&mut o, a);
    // On the agent's page, where the node's move stands comes right after the verdict.
    if let Some(m) = doc.migration {
        migration(&mut o, m);
    }
    findings(&mut o, &a.findings);
    deprecation(&mut o, a);
    inventory(&mut o, a);
    plan(&mut o, a);
    equivalence(&mut o, a);
    o.push_str("<footer><p>Runbook links are relative: <code>docs/runbooks/preflight.md#ID</code> in the ipvs-migrate source tree or release documentation (the id is the check's id). This page loads nothing from anywhere: no script, no external style, font or image. The same content as JSON: <code>ipvs-migrate audit -o json</code>, or <code>/api/v1/report</code> on the agent.</p></footer>\n</body></html>\n");
    o
}

fn verdict(o: &mut String, a: &Audit) {
    let title = match a.verdict.status {
        "ready" => "READY",
        "not-ready" => "NOT READY",
        _ => "NOT EVALUATED",
    };
    let _ = write!(
        o,
        "<section id=\"verdict\" class=\"verdict {}\"><h2>Verdict: {title}</h2><ul>",
        esc(a.verdict.status)
    );
    for r in &a.verdict.reasons {
        let _ = write!(o, "<li>{}</li>", esc(r));
    }
    o.push_str("</ul></section>\n");
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Blocker => "blocker",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

fn findings(o: &mut String, fs: &[Finding]) {
    let count = |s| fs.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        o,
        "<section id=\"findings\"><h2>Findings</h2><p>{} blocker(s), {} warning(s), {} note(s); blockers first.</p>",
        count(Severity::Blocker),
        count(Severity::Warning),
        count(Severity::Info)
    );
    let mut notes_open = false;
    for f in fs {
        let sev = severity(f.severity);
        // Notes are context: folded (still in the page, readable without script).
        if f.severity == Severity::Info && !notes_open {
            notes_open = true;
            let _ = writeln!(
                o,
                "<details id=\"notes\"><summary>{} note(s): what the checks found in order</summary>",
                count(Severity::Info)
            );
        }
        let _ = write!(
            o,
            "<article class=\"finding {sev}\" id=\"finding-{id}\"><h3><span class=\"sev\">{sev}</span><code>{id}</code> — {title}</h3><dl>",
            id = esc(&f.id),
            title = esc(&f.title)
        );
        if !f.evidence.is_empty() {
            o.push_str("<dt>Evidence</dt><dd><ul>");
            for e in &f.evidence {
                let _ = write!(o, "<li><code>{}</code></li>", esc(e));
            }
            o.push_str("</ul></dd>");
        }
        let _ = writeln!(
            o,
            "<dt>Remediation</dt><dd>{}</dd><dt>Runbook</dt><dd><a href=\"{r}\">{r}</a></dd></dl></article>",
            esc(&f.remediation),
            r = esc(&f.runbook)
        );
    }
    if notes_open {
        o.push_str("</details>");
    }
    o.push_str("</section>\n");
}

fn deprecation(o: &mut String, a: &Audit) {
    o.push_str("<section id=\"deprecation\"><h2>Deprecation verdict</h2>");
    match a.deprecation() {
        Some(f) => {
            let _ = write!(
                o,
                "<p><strong>{}</strong></p><p>{}</p>",
                esc(&f.title),
                esc(&f.remediation)
            );
        }
        None => o.push_str(
            "<p>Not evaluated: the preflight did not report the deprecation timeline.</p>",
        ),
    }
    o.push_str("</section>\n");
}

fn migration(o: &mut String, m: &Migration) {
    let _ = write!(
        o,
        "<section id=\"migration\"><h2>Migration status</h2><p>Node <code>{}</code>; {}; {}.</p>",
        esc(&m.node),
        if m.finalized {
            "finalized: kube-proxy runs in IPVS mode and owns the virtual servers"
        } else if m.watched {
            "watched by the daemon (admission entries expire unless refreshed)"
        } else {
            "not watched (nothing migrated, or applied with --no-watch)"
        },
        format_args!(
            "rejection history since {} (kept in memory, restarts empty with the daemon)",
            utc(m.history_since)
        )
    );
    if let Some(c) = &m.cutover {
        let _ = write!(
            o,
            "<p id=\"cutover\">Cutover: wave {} of {} (<code>{}</code>), phase <strong>{}</strong> since {}{}{}</p>",
            c.wave,
            c.waves.len(),
            esc(&c
                .waves
                .get(c.wave.saturating_sub(1))
                .map(|w| w.join(", "))
                .unwrap_or_default()),
            esc(&c.phase),
            utc(c.since),
            match (&c.detail, c.soak_until) {
                (Some(d), _) => format!(": {}", esc(d)),
                (None, Some(u)) => format!(
                    "; the soak ends {} (in {})",
                    utc(u),
                    human(u.saturating_sub(m.generated_at))
                ),
                (None, None) => String::new(),
            },
            if c.allowed.is_empty() {
                String::new()
            } else {
                format!("; blockers allowed: {}", esc(&c.allowed.join(", ")))
            }
        );
    }
    if m.namespaces.is_empty() {
        o.push_str("<p>No namespace migrated, in a cutover or rolled back on this node.</p>");
    } else {
        o.push_str("<table id=\"namespaces\"><thead><tr><th>namespace</th><th>phase</th><th>since</th><th>probes</th><th>rejected</th><th>rejected/s (last interval)</th><th>rejected share (history)</th></tr></thead><tbody>");
        for n in &m.namespaces {
            let _ = write!(
                o,
                "<tr data-namespace=\"{ns}\"><td>{ns}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&n.phase),
                n.since
                    .map(|s| format!(
                        "{} ({} ago)",
                        utc(s),
                        human(m.generated_at.saturating_sub(s))
                    ))
                    .unwrap_or_else(|| "—".into()),
                n.probes,
                n.rejected,
                n.rejection_rate
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "—".into()),
                n.rejection_ratio
                    .map(|r| format!("{:.1} %", r * 100.0))
                    .unwrap_or_else(|| "—".into()),
                ns = esc(&n.namespace)
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("<h3>Rejection rate per namespace, last hour</h3>");
    let (series, left_out) = chart::rejection_series(&m.rejections);
    o.push_str(&chart::rejection_chart(&series, left_out, m.generated_at));
    o.push_str("<h3>Rollback history</h3>");
    if m.rollbacks.is_empty() {
        o.push_str("<p id=\"rollbacks\">No rollback recorded.</p>");
    } else {
        o.push_str("<table id=\"rollbacks\"><thead><tr><th>when</th><th>namespaces</th><th>reason</th><th>source</th></tr></thead><tbody>");
        for r in &m.rollbacks {
            let _ = write!(
                o,
                "<tr><td>{} ({} ago)</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                utc(r.at),
                human(m.generated_at.saturating_sub(r.at)),
                esc(&r.namespaces.join(", ")),
                esc(&r.reason),
                esc(&r.source)
            );
        }
        o.push_str("</tbody></table>");
    }
    if let Some(f) = &m.last_failure {
        let _ = write!(o, "<p>Last failure: {}</p>", esc(f));
    }
    o.push_str("</section>\n");
}

fn inventory(o: &mut String, a: &Audit) {
    let s = &a.summary;
    let _ = write!(
        o,
        "<section id=\"inventory\"><h2>Inventory</h2><p>{} service ports in {} namespaces, {} endpoints, {} without endpoints; {} KUBE-* rules; {} warning(s) (rules or chains not understood).</p>",
        s.service_ports, s.namespaces, s.endpoints, s.without_endpoints, s.kube_rules, s.warnings
    );
    o.push_str(&chart::rules_chart(s));
    o.push_str("<table id=\"per-namespace\"><thead><tr><th>namespace</th><th>service ports</th><th>endpoints</th><th>iptables rules (placing its services)</th></tr></thead><tbody>");
    for (ns, c) in &s.per_namespace {
        let _ = write!(
            o,
            "<tr data-namespace=\"{ns}\"><td>{ns}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            c.service_ports,
            c.endpoints,
            c.iptables_rules,
            ns = esc(ns)
        );
    }
    o.push_str("</tbody></table>");
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for w in &a.inventory.warnings {
        *by_code.entry(w.code.as_str()).or_default() += 1;
    }
    if !by_code.is_empty() {
        o.push_str("<p>Warnings by code: ");
        let parts: Vec<String> = by_code
            .iter()
            .map(|(c, n)| format!("<code>{}</code> {n}", esc(c)))
            .collect();
        o.push_str(&parts.join(", "));
        o.push_str(" (<code>ipvs-migrate inventory</code> lists each with its line).</p>");
    }
    o.push_str("</section>\n");
}

fn plan(o: &mut String, a: &Audit) {
    let p = &a.plan;
    let _ = write!(
        o,
        "<section id=\"plan\"><h2>Plan</h2><p>kube-proxy's IPVS mode would program {} virtual servers with {} real servers and bind {} addresses on kube-ipvs0.</p>",
        p.virtual_servers, p.real_servers, p.addresses
    );
    let mut by_id: BTreeMap<&str, Vec<&ipvsmig_engine::plan::PlanFinding>> = BTreeMap::new();
    for f in &p.findings {
        by_id.entry(f.id.as_str()).or_default().push(f);
    }
    if by_id.is_empty() {
        o.push_str("<p>No behaviour difference.</p>");
    } else {
        o.push_str("<h3>Behaviour differences per service</h3><table id=\"behaviour\"><thead><tr><th>difference</th><th>services</th><th>what differs</th></tr></thead><tbody>");
        for (id, fs) in &by_id {
            let mut services: Vec<String> =
                fs.iter().take(LIST_MAX).map(|f| esc(&f.service)).collect();
            if fs.len() > LIST_MAX {
                services.push(format!("… and {} more", fs.len() - LIST_MAX));
            }
            let _ = write!(
                o,
                "<tr><td><code>{}</code> ({})</td><td>{}</td><td>{}</td></tr>",
                esc(id),
                fs.len(),
                services.join(", "),
                fs.first().map(|f| esc(&f.message)).unwrap_or_default()
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");
}

fn equivalence(o: &mut String, a: &Audit) {
    o.push_str("<section id=\"equivalence\"><h2>Equivalence check</h2>");
    match &a.verification {
        None => o.push_str("<p>Not run: it needs kube-proxy's rules as text (<code>audit --iptables-save FILE</code>).</p>"),
        Some(v) => {
            let _ = write!(
                o,
                "<p><strong>{}</strong>: {} case(s) traced, {} mismatch(es), {} documented IPVS-mode difference(s).</p>",
                if v.mismatches.is_empty() { "equivalent" } else { "NOT equivalent" },
                v.cases,
                v.mismatches.len(),
                v.tolerated.len()
            );
            if !v.mismatches.is_empty() {
                o.push_str("<table id=\"mismatches\"><thead><tr><th>service</th><th>case</th><th>kind</th></tr></thead><tbody>");
                for m in v.mismatches.iter().take(LIST_MAX) {
                    let _ = write!(
                        o,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&m.service),
                        esc(&m.case),
                        m.kind.as_str()
                    );
                }
                o.push_str("</tbody></table>");
            }
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for t in &v.tolerated {
                *by.entry(t.tolerance.as_str()).or_default() += 1;
            }
            for (t, n) in by {
                let _ = write!(o, "<p>Tolerated <code>{}</code>: {n} case(s).</p>", esc(t));
            }
            for n in &v.notes {
                let _ = write!(o, "<p>Note: {}</p>", esc(n));
            }
        }
    }
    o.push_str("</section>\n");
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss UTC`: the engine's `metav1.Time` form
/// (`rollout::time::format_time`, one calendar conversion in the project) made readable.
pub fn utc(secs: u64) -> String {
    let t = ipvsmig_engine::rollout::time::format_time(secs);
    format!("{} UTC", t.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests;
