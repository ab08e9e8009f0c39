//! docs/metrics.md's table, generated from the metrics registry: every family the daemon
//! serves, its type, labels (with the values of closed label sets) and HELP text, read back
//! from the registry's own OpenMetrics encoding — so the table can only list what `/metrics`
//! serves, described as `/metrics` describes it. It renders text; it never registers or
//! changes a metric. The test that keeps the file in step is
//! `metrics_reference_in_docs_is_generated_from_the_registry` (serve/tests.rs).

use std::collections::BTreeSet;

/// The line before the generated table in docs/metrics.md.
pub const BEGIN: &str = "<!-- BEGIN generated from the metrics registry (agent/cli/src/serve/metrics/reference.rs): IPVSMIG_UPDATE_DOCS=1 cargo test -p ipvs-migrate metrics_reference -->";
/// The line after it.
pub const END: &str = "<!-- END generated -->";

/// One metric family as the encoding shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Family {
    /// The family's name (`# TYPE` line; counters without `_total`).
    pub name: String,
    /// counter, gauge, histogram, …
    pub kind: String,
    /// The HELP text.
    pub help: String,
    /// Label names in order of first appearance, each with the values seen.
    pub labels: Vec<(String, BTreeSet<String>)>,
}

impl Family {
    /// The name a query uses: counters carry `_total` (OpenMetrics).
    pub fn series_name(&self) -> String {
        if self.kind == "counter" {
            format!("{}_total", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Label pairs of a sample line (`name{a="x",b="y"} 1` → [(a, x), (b, y)]); escapes per the
/// OpenMetrics text format (`\\`, `\"`, `\n`).
fn sample_labels(line: &str) -> Vec<(String, String)> {
    let Some(start) = line.find('{') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = line[start + 1..].chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim_start_matches(',').trim().to_owned();
        if name.is_empty() || name.starts_with('}') || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => return out,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name, value));
    }
}

/// The families of an OpenMetrics text, in order.
pub fn families(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                ..Family::default()
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match out.last_mut() {
                Some(f) if f.name == name => f.kind = kind.to_owned(),
                _ => out.push(Family {
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    ..Family::default()
                }),
            }
        } else if !line.starts_with('#')
            && let Some(f) = out.last_mut()
        {
            for (name, value) in sample_labels(line) {
                // A histogram's bucket bound is not a label of the family.
                if name == "le" {
                    continue;
                }
                match f.labels.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => {
                        values.insert(value);
                    }
                    None => f.labels.push((name, BTreeSet::from([value]))),
                }
            }
        }
    }
    out
}

/// The markdown table of `populated` (every family given a series), listing as closed sets the
/// label values a `fresh` registry already exports (those are created at start, closed by
/// construction: metrics.rs).
pub fn table(populated: &str, fresh: &str) -> String {
    let fresh = families(fresh);
    let mut s = String::from("| metric | type | labels | help |\n|---|---|---|---|\n");
    for f in families(populated) {
        let closed = fresh.iter().find(|g| g.name == f.name);
        let labels: Vec<String> = f
            .labels
            .iter()
            .map(|(name, _)| {
                let values = closed
                    .and_then(|g| g.labels.iter().find(|(n, _)| n == name))
                    .map(|(_, v)| v)
                    .filter(|_| name != "node");
                match values {
                    Some(v) => format!(
                        "{name} ({})",
                        v.iter()
                            .map(|x| format!("`{x}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => name.clone(),
                }
            })
            .collect();
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.series_name(),
            f.kind,
            labels.join(", "),
            f.help.replace('|', "\\|")
        ));
    }
    s
}

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by `table`.
pub fn splice(doc: &str, table: &str) -> Result<String, String> {
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        return Err(format!("the markers {BEGIN:?} and {END:?} are missing"));
    };
    if e < b {
        return Err("the END marker comes before BEGIN".into());
    }
    Ok(format!("{}{BEGIN}\n{table}{}", &doc[..b], &doc[e..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const TEXT: &str = "# HELP reqs Requests.\n# TYPE reqs counter\nreqs_total{node=\"n\",reason=\"a\"} 1\nreqs_total{node=\"n\",reason=\"b\\\"q\"} 0\n# HELP d Duration.\n# TYPE d histogram\nd_bucket{node=\"n\",le=\"0.1\"} 0\nd_sum{node=\"n\"} 0\n# EOF\n";

    #[test]
    fn families_read_help_type_and_labels_without_le() {
        let f = families(TEXT);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].series_name(), "reqs_total");
        assert_eq!(f[0].help, "Requests.");
        assert_eq!(
            f[0].labels,
            vec![
                ("node".to_owned(), BTreeSet::from(["n".to_owned()])),
                (
                    "reason".to_owned(),
                    BTreeSet::from(["a".to_owned(), "b\"q".to_owned()])
                ),
            ]
        );
        assert_eq!(f[1].kind, "histogram");
        assert_eq!(f[1].labels.len(), 1);
    }

    #[test]
    fn closed_label_sets_are_listed_with_their_values() {
        let t = table(TEXT, TEXT);
        assert!(
            t.contains("| `reqs_total` | counter | node, reason (`a`, `b\"q`) | Requests. |"),
            "{t}"
        );
        let open = table(TEXT, "");
        assert!(open.contains("| node, reason |"), "{open}");
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let doc = format!("intro\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(
            splice(&doc, "new\n").unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        assert!(splice("no markers", "x").is_err());
    }
}
