//! `ipvs-migrate serve` as a real process: it listens, answers on a real socket, and shuts down
//! cleanly (exit 0) on SIGTERM; a missing or bad config exits 66 / 65 naming the key. The
//! HTTP surface in detail is tested in-process (agent/cli/src/serve/tests.rs).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve(args: &[&str], state: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipvs-migrate"));
    cmd.arg("serve")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("NODE_NAME", "node-test")
        .env_remove("RUST_LOG");
    cmd
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_answers_healthz_on_a_real_socket_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(&["--listen", "127.0.0.1:0"], dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // "ipvs-migrate: serving on http://127.0.0.1:PORT for node node-test"
    let mut addr = None;
    let mut seen = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("serving on http://").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("no listen address on stderr: {seen}");
    };
    assert!(seen.contains("for node node-test"), "{seen}");
    let resp = http_get(&addr, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok\n"), "{resp}");
    let resp = http_get(&addr, "/readyz");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest = drain.join().unwrap();
    assert_eq!(exit.code(), Some(0), "stderr: {seen}{rest}");
    assert!(rest.contains("shutting down"), "{rest}");
}

fn check(config: Option<&str>, code: i32, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.yaml");
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap();
    }
    let out = serve(&["--config", path.to_str().unwrap()], dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{config:?}: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_missing_config_exits_66_and_a_bad_one_65_naming_the_key() {
    check(None, 66, "serve.yaml");
    check(
        Some("thresholds:\n  ratio: lots\n"),
        65,
        "thresholds.ratio: \"lots\"",
    );
    check(Some("tresholds:\n  ratio: 0.1\n"), 65, "tresholds");
    check(Some("listen: nowhere\n"), 65, "listen:");
    check(
        Some("tokenFile: /nonexistent/ipvs-migrate-token\n"),
        66,
        "tokenFile",
    );
}

#[test]
fn an_empty_token_file_exits_65() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "\n").unwrap();
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(&cfg, format!("tokenFile: {}\n", token.display())).unwrap();
    let out = serve(&["--config", cfg.to_str().unwrap()], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn a_bad_listen_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(&["--listen", "localhost"], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
