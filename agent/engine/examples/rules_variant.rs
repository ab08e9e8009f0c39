//! Writes a variant of rules/ipvs-migrate.rules.yml to stdout: the very same rules
//! ([`ipvsmig_engine::rules::render`]) with other parameters, for end-to-end tests that cannot
//! wait five minutes for a `rate()` window (tests/vm/alerting-e2e.sh gives them to a real
//! Prometheus). It renders only; it never edits the checked-in rules.
//!
//! ```text
//! cargo run -q -p ipvsmig-engine --example rules_variant -- --window 20s --for 5s
//! ```
//!
//! Options (each optional, defaults = rules/): `--window D`, `--for D`, `--for-slow D`
//! (Prometheus durations such as `20s`, `1m`), `--rate X` (> 0), `--ratio X` (in (0, 1]),
//! `--no-annotations`. A bad option or value: a message naming it on stderr, exit 2.

use std::process::ExitCode;

use ipvsmig_engine::rules::{Params, render};

/// A Prometheus duration as the rules use it: a number and one unit (`ms`, `s`, `m`, `h`, `d`).
fn duration(flag: &str, v: &str) -> Result<String, String> {
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &v[digits.len()..];
    let number_ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if number_ok && matches!(unit, "ms" | "s" | "m" | "h" | "d") {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{flag}: {v:?} is not a Prometheus duration like 20s or 5m"
        ))
    }
}

/// A number > 0, and <= 1 when `at_most_one` (a ratio).
fn number(flag: &str, v: &str, at_most_one: bool) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() && (!at_most_one || x <= 1.0) => Ok(x),
        _ if at_most_one => Err(format!("{flag}: {v:?} is not a ratio in (0, 1]")),
        _ => Err(format!("{flag}: {v:?} is not a number > 0")),
    }
}

fn parse(args: &[String]) -> Result<Params, String> {
    let mut p = Params::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--no-annotations" {
            p.annotations = false;
            continue;
        }
        if !matches!(
            flag.as_str(),
            "--window" | "--for" | "--for-slow" | "--rate" | "--ratio"
        ) {
            return Err(format!("unknown option {flag:?}"));
        }
        let Some(v) = it.next() else {
            return Err(format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--window" => p.window = duration(flag, v)?,
            "--for" => p.for_ = duration(flag, v)?,
            "--for-slow" => p.for_slow = duration(flag, v)?,
            "--rate" => p.rate = number(flag, v, false)?,
            _ => p.ratio = number(flag, v, true)?,
        }
    }
    Ok(p)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(p) => {
            print!("{}", render(&p));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rules_variant: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn no_option_gives_the_checked_in_rules_parameters() {
        assert_eq!(parse(&[]), Ok(Params::default()));
    }

    #[test]
    fn options_set_window_for_and_thresholds() {
        let p = parse(&args(&[
            "--window",
            "20s",
            "--for",
            "5s",
            "--for-slow",
            "10s",
            "--rate",
            "2.5",
            "--ratio",
            "0.5",
            "--no-annotations",
        ]));
        let want = Params {
            window: "20s".into(),
            for_: "5s".into(),
            for_slow: "10s".into(),
            rate: 2.5,
            ratio: 0.5,
            annotations: false,
            ..Params::default()
        };
        assert_eq!(p, Ok(want));
    }

    #[test]
    fn bad_values_are_refused_with_the_option_named() {
        for (a, needle) in [
            (&["--window", "20"][..], "--window"),
            (&["--window", "s"][..], "--window"),
            (&["--for", "5x"][..], "--for"),
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "inf"][..], "--rate"),
            (&["--ratio", "1.5"][..], "--ratio"),
            (&["--ratio"][..], "--ratio needs a value"),
            (&["--bogus", "1"][..], "unknown option"),
        ] {
            match parse(&args(a)) {
                Err(e) => assert!(e.contains(needle), "{a:?}: {e}"),
                Ok(p) => panic!("{a:?} accepted: {p:?}"),
            }
        }
    }
}
