//! Helpers shared by the end-to-end suites in tests/tests/*.rs.
#![allow(clippy::panic)] // test helpers: a failed precondition is a test failure

use std::path::PathBuf;
use std::process::Command;

/// The `ipvs-migrate` binary built next to the running test (`cargo test --workspace` builds
/// it; `.ci/run` builds it first). Panics with a clear message if it is missing.
pub fn ipvs_migrate_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    let bin = dir.join("ipvs-migrate");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p ipvs-migrate), as .ci/run does",
        bin.display()
    );
    bin
}

/// Whether this process may create network namespaces (root with CAP_SYS_ADMIN).
/// When it cannot, a test prints SKIP with the reason, unless `IPVSMIG_REQUIRE_ALL=1`
/// (set by the README's test command and CI), where a missing capability is a failure.
pub fn netns_available(test: &str) -> bool {
    let ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let why = "cannot create a network namespace (needs root and unshare(1))";
        assert!(
            std::env::var("IPVSMIG_REQUIRE_ALL").as_deref() != Ok("1"),
            "{test}: {why}, and IPVSMIG_REQUIRE_ALL=1"
        );
        eprintln!("SKIP {test}: {why}");
    }
    ok
}

/// Whether a tool is installed (for the same SKIP/fail rule as [`netns_available`]).
pub fn tool_available(test: &str, tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("IPVSMIG_REQUIRE_ALL").as_deref() != Ok("1"),
            "{test}: {tool} is not installed, and IPVSMIG_REQUIRE_ALL=1"
        );
        eprintln!("SKIP {test}: {tool} is not installed");
    }
    ok
}
