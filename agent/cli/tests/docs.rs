//! docs/cli.md is generated from the CLI definition (each command's `--help`); this test fails
//! when they drift. Regenerate with `IPVSMIG_UPDATE_DOCS=1 cargo test -p ipvs-migrate --test docs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["audit"],
    &["inventory"],
    &["preflight"],
    &["plan"],
    &["apply"],
    &["cutover"],
    &["rollback"],
    &["status"],
    &["finalize"],
    &["serve"],
    &["fleet", "status"],
];

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ipvs-migrate"))
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn render() -> String {
    let mut s = String::from(
        "# ipvs-migrate command line\n\nGenerated from the CLI definition (`agent/cli/src/cli.rs`) by `agent/cli/tests/docs.rs`; do not edit.\n\
         Exit codes, JSON conventions and the commands' status: README.md; JSON schemas: docs/schemas/.\n",
    );
    for args in COMMANDS {
        let title = if args.is_empty() {
            "ipvs-migrate".to_owned()
        } else {
            format!("ipvs-migrate {}", args.join(" "))
        };
        s.push_str(&format!("\n## {title}\n\n```text\n{}```\n", help(args)));
    }
    s
}

#[test]
fn the_cli_reference_matches_the_cli_definition() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let want = render();
    if std::env::var("IPVSMIG_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{e}"));
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md is out of date: run IPVSMIG_UPDATE_DOCS=1 cargo test -p ipvs-migrate --test docs"
    );
}
