//! Bad input gets a clear error naming the file and line, and the documented exit code
//! (DESIGN.md): 65 bad data, 66 missing input, 69 tool unavailable, 2 usage. Never a panic.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn run(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipvs-migrate"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    if let (Some(mut si), Some(data)) = (child.stdin.take(), stdin) {
        let _ = si.write_all(data);
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

fn check(input: &[u8], code: i32, needle: &str) {
    let out = run(&["inventory", "--iptables-save", "-"], Some(input), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_dump_without_commit_is_truncated_data() {
    check(
        b"*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\n",
        65,
        "-: table nat opened at line 1 has no COMMIT",
    );
}

#[test]
fn garbage_bytes_are_bad_data_with_their_line() {
    check(
        b"*nat\n:KUBE-SERVICES - [0:0]\n\xff\xfe\x00garbage\nCOMMIT\n",
        65,
        "-:3: unrecognised line",
    );
}

#[test]
fn an_absurdly_long_line_is_bad_data() {
    let mut v = b"*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES ".to_vec();
    v.extend(std::iter::repeat_n(b'x', 10 << 20));
    v.extend(b"\nCOMMIT\n");
    check(&v, 65, "-:3: line is longer than 65536 bytes");
}

#[test]
fn a_rule_in_an_undeclared_chain_is_bad_data() {
    check(
        b"*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-NOPE -j RETURN\nCOMMIT\n",
        65,
        "-:3: rule appended to chain KUBE-NOPE, which is not declared",
    );
}

#[test]
fn a_jump_to_an_undeclared_chain_is_bad_data() {
    check(
        b"*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"a/b cluster IP\" -p tcp -d 10.0.0.1 --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA\nCOMMIT\n",
        65,
        "-:3: rule jumps to chain KUBE-SVC-AAAAAAAAAAAAAAAA, which is not declared",
    );
}

#[test]
fn an_unterminated_quote_in_a_kube_rule_is_bad_data() {
    check(
        b"*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"open\nCOMMIT\n",
        65,
        "-:3: chain KUBE-SERVICES: unterminated quote",
    );
}

#[test]
fn a_missing_file_is_missing_input() {
    let out = run(
        &["inventory", "--iptables-save", "/nonexistent/dump.txt"],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dump.txt"));
}

#[test]
fn a_missing_file_under_json_output_is_a_json_error_on_stderr() {
    let out = run(
        &[
            "inventory",
            "--iptables-save",
            "/nonexistent/dump.txt",
            "-o",
            "json",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(66));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("stderr is not JSON: {e}"));
    assert_eq!(v["apiVersion"], "ipvs-migrate/v1");
    assert_eq!(v["kind"], "Error");
    assert_eq!(v["exitCode"], 66);
    assert!(out.stdout.is_empty());
}

#[test]
fn no_usable_iptables_binary_is_unavailable() {
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = empty.path().display().to_string();
    let out = run(&["inventory"], None, &[("IPVS_MIGRATE_TOOLS_PATH", &path)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("no usable iptables-save binary"), "{err}");
}

#[test]
fn a_usage_error_exits_2() {
    let out = run(&["inventory", "--no-such-flag"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["rollback", "--all", "--namespace", "a"], None, &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn other_tables_and_non_kube_chains_are_passed_over() {
    let dump = b"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j CT --notrack\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A DOCKER -m weird --stuff \"x y\" -j RETURN\nCOMMIT\n";
    let out = run(
        &["inventory", "--iptables-save", "-", "-o", "json"],
        Some(dump),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["kind"], "Inventory");
    // Nothing of kube-proxy's is there: the one warning says so, nothing else is reported.
    let codes: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert_eq!(codes, ["no-kube-proxy-rules"]);
}

#[test]
fn the_demo_audit_names_itself_a_demo_and_lists_the_inventory() {
    let out = run(&["audit", "--demo"], None, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("DEMO"), "{s}");
    assert!(s.contains("service ports in"), "{s}");
    let out = run(&["audit", "--demo", "-o", "json"], None, &[]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["kind"], "Audit");
    assert!(v["summary"]["servicePorts"].as_u64().unwrap_or(0) > 200);
    // The demo's rules are text: the equivalence check runs and decides the verdict.
    assert_eq!(v["verdict"]["status"], "ready", "{}", v["verdict"]);
    assert!(v["verification"]["cases"].as_u64().unwrap_or(0) > 500);
    assert_eq!(
        v["verification"]["mismatches"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn preflight_exits_1_with_blockers_and_0_without() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/preflight/");
    let out = run(
        &[
            "preflight",
            "--offline",
            "--host-root",
            &format!("{fixtures}centos-7-flannel"),
        ],
        None,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("BLOCKER  os-unsupported"));
    let out = run(
        &[
            "preflight",
            "--offline",
            "--host-root",
            &format!("{fixtures}ubuntu-22.04-calico"),
            "-o",
            "json",
        ],
        None,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "Preflight");
    assert_eq!(v["ready"], true);
    let out = run(
        &["preflight", "--offline", "--host-root", "/nonexistent"],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(66));
}

#[test]
fn a_malformed_kube_proxy_config_is_bad_data_and_a_missing_one_is_missing_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("kp.yaml");
    std::fs::write(&bad, "ipvs:\n  strictARP: [oops\n").unwrap();
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/preflight/ubuntu-22.04-calico"
    );
    let out = run(
        &[
            "preflight",
            "--offline",
            "--host-root",
            fixtures,
            "--kube-proxy-config",
            bad.to_str().unwrap(),
        ],
        None,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("kp.yaml: not a KubeProxyConfiguration"),
        "{err}"
    );
    let out = run(
        &[
            "preflight",
            "--offline",
            "--host-root",
            fixtures,
            "--kube-proxy-config",
            "/nonexistent/kp.yaml",
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(66));
}

#[test]
fn plan_writes_kube_proxys_ipvs_configuration_and_needs_the_current_one() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dump = format!("{root}/agent/engine/tests/golden/overall/restore.txt");
    let out = run(
        &["plan", "--iptables-save", &dump, "-o", "kube-proxy-config"],
        None,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kp = format!("{root}/tests/preflight/flatcar-cilium/kube-proxy-config.yaml");
    let host = format!("{root}/tests/preflight/rhel-8-loadable-modules");
    let out = run(
        &[
            "plan",
            "--iptables-save",
            &dump,
            "--offline",
            "--host-root",
            &host,
            "--kube-proxy-config",
            &kp,
            "-o",
            "kube-proxy-config",
        ],
        None,
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\nmode: ipvs\n"), "{text}");
    assert!(
        text.contains("192.168.10.100/32"),
        "the fixture's foreign virtual server is excluded: {text}"
    );
    let out = run(
        &[
            "plan",
            "--iptables-save",
            &dump,
            "--node-ip",
            "192.168.0.2",
            "-o",
            "json",
        ],
        None,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "IpvsPlan");
    assert_eq!(
        v["plan"]["virtualServers"].as_array().map(|a| a.len()),
        Some(13)
    );
}

#[test]
fn preflight_shows_the_plans_behaviour_changes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = run(
        &[
            "preflight",
            "--offline",
            "--host-root",
            &format!("{root}/tests/preflight/ubuntu-22.04-calico"),
            "--iptables-save",
            &format!("{root}/agent/engine/tests/golden/overall/restore.txt"),
            "-o",
            "json",
        ],
        None,
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    // The overall fixture: ns2/svc2 is eTP=Local without a local endpoint; localhost NodePorts
    // are on; ns2 and ns5 have LB IPs that become bound locally: three kinds of difference.
    assert_eq!(
        ids.iter().filter(|i| **i == "behaviour-change").count(),
        3,
        "{ids:?}"
    );
}

#[test]
fn an_ipv6_dump_passed_as_ipv4_is_rejected_with_the_flag_to_use() {
    let dump = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../agent/engine/tests/golden/ipv6/restore.txt"
    );
    let out = run(&["plan", "--iptables-save", dump], None, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("pass this dump with --ip6tables-save"),
        "{err}"
    );
}

#[test]
fn apply_rollback_and_status_refuse_what_they_cannot_do_safely() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let st = state.to_str().unwrap();
    let code_and_err = |args: &[&str]| {
        let out = run(args, None, &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (
            out.status.code(),
            err,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // No daemon refreshes the dead man's switch in this build: --no-watch is required.
    let (code, err, _) = code_and_err(&["apply", "--namespace", "shop", "--state-dir", st]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--no-watch"), "{err}");
    assert!(!state.exists(), "nothing was written");
    // Nothing is migrated: status says so, rollback of a namespace is a usage error.
    let (code, _, out) = code_and_err(&["status", "--state-dir", st]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Nothing migrated"), "{out}");
    let (code, _, out) = code_and_err(&["status", "-o", "json", "--state-dir", st]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "MigrationStatus");
    assert_eq!(v["owned"]["namespaces"].as_array().unwrap().len(), 0);
    let (code, err, _) = code_and_err(&["rollback", "--namespace", "shop", "--state-dir", st]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not migrated"), "{err}");
    let (code, err, _) = code_and_err(&["rollback", "--state-dir", st]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err, _) = code_and_err(&["rollback", "--all", "--drain", "soon", "--state-dir", st]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("duration"), "{err}");
}

#[test]
fn plan_verify_exits_0_when_equivalent_1_on_a_mismatch_and_2_without_files() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let golden = |case: &str| format!("{root}/agent/engine/tests/golden/{case}/live-nft.txt");
    let overall = golden("overall");
    let base = [
        "plan",
        "--iptables-save",
        &overall,
        "--node-ip",
        "192.168.0.2",
    ];
    let out = run(&[&base[..], &["--verify"]].concat(), None, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("0 mismatches"), "{text}");
    assert!(text.contains("etp-local-no-local-endpoints"), "{text}");

    let out = run(
        &[&base[..], &["--verify", "--namespace", "ns5", "-o", "json"]].concat(),
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "HybridPlan");
    assert_eq!(v["verification"]["plan"], "hybrid");
    assert_eq!(
        v["verification"]["mismatches"].as_array().map(Vec::len),
        Some(0)
    );

    // The warnings fixture's foreign rate-limited masquerade rule is not carried over.
    let warnings = golden("warnings");
    let out = run(
        &[
            "plan",
            "--iptables-save",
            &warnings,
            "--namespace",
            "ns1",
            "--verify",
        ],
        None,
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ns1/svc1:p80  masquerade"), "{text}");

    let out = run(&["plan", "--verify"], None, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--verify needs the rules as files"), "{err}");
    let out = run(
        &[&base[..], &["--verify", "-o", "ipvsadm"]].concat(),
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn finalize_refuses_a_metrics_url_it_cannot_query_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for (url, needle) in [
        ("https://127.0.0.1:10249", "expected http://HOST:PORT"),
        ("http://192.0.2.1:10249", "not a loopback address"),
        ("http://127.0.0.1", "the port is missing"),
        ("http://127.0.0.1:10249/metrics", "with no path"),
    ] {
        let out = run(
            &[
                "finalize",
                "--kube-proxy-metrics",
                url,
                "--state-dir",
                state.to_str().unwrap(),
            ],
            None,
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(needle), "{url}: expected {needle:?} in {err}");
        assert!(!state.join("journal.jsonl").exists(), "no journal written");
    }
}
