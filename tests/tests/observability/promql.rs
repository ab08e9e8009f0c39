//! The metric names a PromQL expression reads, for checking dashboards and rules against the
//! agent's exported metrics (tests/tests/observability_names.rs). A tokenizer, not a parser:
//! it knows PromQL's lexical structure (Prometheus docs, "Querying basics" and "Operators";
//! promql/parser/lex.go for the token classes) well enough to tell a metric name from a
//! function, an aggregation, a keyword, a label name or a Grafana variable. It never
//! evaluates anything, and it refuses what it cannot classify (an unknown function, a regex
//! on `__name__`) instead of guessing.

/// PromQL's functions (Prometheus docs, "Query functions"), `@`'s `start()`/`end()` included.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregation operators (Prometheus docs, "Operators": aggregation operators).
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limit_ratio",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a parenthesised list of label names (or, for group_left/right, an
/// optional one).
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords: binary set operators, `bool`, `offset`, `atan2`.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];

/// The metric names `expr` reads, in order of appearance, each once.
pub fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(&c, i)?;
        } else if ch == '{' {
            let (end, name) = label_matchers(&c, i)?;
            if let Some(n) = name {
                push(n);
            }
            i = end;
        } else if ch == '[' {
            i = skip_to(&c, i, ']')?;
        } else if ch == '$' {
            i = skip_variable(&c, i);
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = skip_number(&c, i);
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = next_non_space(&c, i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if next.map(|j| c[j]) == Some('(') {
                    i = skip_to(&c, next.unwrap_or(i), ')')?;
                }
            } else if KEYWORDS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str()) {
                // An aggregation's argument list is an ordinary expression: read on.
            } else if lower == "inf" || lower == "nan" {
                // Number literals (case-insensitive, promql/parser/lex.go).
            } else if next.map(|j| c[j]) == Some('(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("{word}(: not a PromQL function"));
                }
            } else {
                push(word);
            }
        } else {
            // Operators, parentheses, commas, `@`.
            i += 1;
        }
    }
    Ok(names)
}

fn next_non_space(c: &[char], mut i: usize) -> Option<usize> {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    (i < c.len()).then_some(i)
}

/// Past the string literal opening at `i` (`"…"` and `'…'` with backslash escapes, `` `…` ``
/// raw).
fn skip_string(c: &[char], i: usize) -> Result<usize, String> {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if c[j] == quote {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err(format!("unterminated string from offset {i}"))
}

/// Past the `close` matching the opener at `i`, strings skipped (no nesting: `[...]` and
/// label lists do not nest).
fn skip_to(c: &[char], i: usize, close: char) -> Result<usize, String> {
    let mut j = i + 1;
    while j < c.len() {
        if matches!(c[j], '"' | '\'' | '`') {
            j = skip_string(c, j)?;
            continue;
        }
        if c[j] == close {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err(format!("no {close:?} closes the {:?} at offset {i}", c[i]))
}

/// A label matcher list `{…}` at `i`: its end, and the metric name if it sets `__name__`.
fn label_matchers(c: &[char], i: usize) -> Result<(usize, Option<String>), String> {
    let end = skip_to(c, i, '}')?;
    let inner: String = c[i + 1..end - 1].iter().collect();
    let Some(at) = inner.find("__name__") else {
        return Ok((end, None));
    };
    let rest = inner[at + "__name__".len()..].trim_start();
    if rest.starts_with("=~") || rest.starts_with("!") {
        return Err(format!(
            "{{{inner}}}: a __name__ matcher other than = cannot be checked"
        ));
    }
    let value = rest
        .strip_prefix('=')
        .map(str::trim_start)
        .and_then(|v| {
            let q = v.chars().next()?;
            let body = v.get(1..)?;
            body.find(q).map(|e| body[..e].to_owned())
        })
        .ok_or_else(|| format!("{{{inner}}}: __name__ without a quoted value"))?;
    Ok((end, Some(value)))
}

/// Past a Grafana variable: `${…}` or `$name` (`$__rate_interval`, `$node`).
fn skip_variable(c: &[char], i: usize) -> usize {
    if c.get(i + 1) == Some(&'{') {
        return skip_to(c, i + 1, '}').unwrap_or(c.len());
    }
    let mut j = i + 1;
    while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_') {
        j += 1;
    }
    j
}

/// Past a number or duration literal: `10`, `0.01`, `1e-3`, `0x1F`, `5m`, `1h30m`.
fn skip_number(c: &[char], i: usize) -> usize {
    let mut j = i;
    while j < c.len() {
        let d = c[j];
        let exponent_sign = matches!(d, '+' | '-')
            && j > i
            && matches!(c[j - 1], 'e' | 'E')
            && !c[i..j].iter().any(|x| matches!(x, 'x' | 'X'))
            && c.get(j + 1).is_some_and(char::is_ascii_digit);
        if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
            j += 1;
        } else {
            break;
        }
    }
    j
}
