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

/// A running `serve` child and the address it announced.
struct Daemon {
    child: std::process::Child,
    addr: String,
    seen: String,
    stderr: Option<BufReader<std::process::ChildStderr>>,
}

// The child is waited for in `Daemon::terminate` (or here, when it never announces itself).
#[allow(clippy::zombie_processes)]
fn start(state: &std::path::Path) -> Daemon {
    start_with(&["--listen", "127.0.0.1:0"], state, "http")
}

// As `start`.
#[allow(clippy::zombie_processes)]
fn start_with(args: &[&str], state: &std::path::Path, scheme: &str) -> Daemon {
    let mut child = serve(args, state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // "ipvs-migrate: serving on http://127.0.0.1:PORT for node node-test"
    let mut seen = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(rest) = line.split(&format!("serving on {scheme}://")).nth(1)
            && let Some(addr) = rest.split_whitespace().next()
        {
            return Daemon {
                addr: addr.to_owned(),
                child,
                seen,
                stderr: Some(stderr),
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no listen address on stderr: {seen}");
}

impl Daemon {
    /// SIGTERM by PID; the exit status (within `limit`) and the rest of stderr.
    fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        // Keep draining stderr so the child never blocks on a full pipe.
        let mut stderr = self.stderr.take().unwrap();
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + limit;
        let exit = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (exit, format!("{}{}", self.seen, drain.join().unwrap()))
    }
}

#[test]
fn serve_answers_healthz_on_a_real_socket_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    assert!(d.seen.contains("for node node-test"), "{}", d.seen);
    let resp = http_get(&d.addr, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok\n"), "{resp}");
    let resp = http_get(&d.addr, "/readyz");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let (exit, log) = d.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "stderr: {log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn a_damaged_journal_keeps_serve_up_but_not_ready_with_the_reason_and_a_second_serve_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    // A journal whose first line is no journal header: damage, not a torn tail.
    std::fs::write(dir.path().join("journal.jsonl"), "garbage\n{\"v\":1}\n").unwrap();
    let d = start(dir.path());
    let resp = http_get(&d.addr, "/readyz");
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("journal"), "{resp}");
    // No socket: the CLI does not hand requests to a daemon that cannot act on them.
    assert!(!dir.path().join("agent.sock").exists());
    let (exit, log) = d.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "stderr: {log}");
    assert!(log.contains("cannot be read"), "{log}");

    // A healthy state dir held by a running daemon: a second one exits 3 before listening.
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let out = serve(&["--listen", "127.0.0.1:0"], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another ipvs-migrate"),
        "{out:?}"
    );
    let (exit, _) = first.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_client_holding_a_request_open_does_not_keep_serve_alive_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    // Half a request: the connection is busy, never idle.
    let mut s = TcpStream::connect(&d.addr).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let (exit, log) = d.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "stderr: {log}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(log.contains("after the grace period"), "{log}");
    drop(s);
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
    ); // A YAML error says "error:" once, with the file and the key.
    check(
        Some("soak: 5m\nsoak: 6m\n"),
        65,
        "serve.yaml: soak: line 2 column 1: duplicate",
    );
    check(
        Some("tls:\n  certFile: /nonexistent/tls.crt\n  keyFile: /nonexistent/tls.key\n"),
        66,
        "tls: /nonexistent/tls.crt",
    );
    check(
        Some("hostRoot: host\n"),
        65,
        "hostRoot: \"host\" is not an absolute path",
    );
}

#[test]
fn a_yaml_error_says_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("serve.yaml");
    std::fs::write(&cfg, "thresholds: 5\n").unwrap();
    let out = serve(&["--config", cfg.to_str().unwrap()], dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert_eq!(err.matches("error").count(), 1, "{err}");
    assert!(err.contains("thresholds: line 1 column 13"), "{err}");
}

/// A serve.yaml in `dir`: `extra` keys, then `tls` naming `cert` and `key` written beside it.
/// Returns (config path, certificate path).
fn tls_config(
    dir: &std::path::Path,
    extra: &str,
    cert: &str,
    key: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (crt, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let cfg = dir.join("serve.yaml");
    let text = format!(
        "{extra}tls:\n  certFile: {}\n  keyFile: {}\n",
        crt.display(),
        key_file.display()
    );
    std::fs::write(&cfg, text).unwrap();
    (cfg, crt)
}

#[test]
fn a_tls_certificate_that_is_not_pem_exits_65_and_bad_node_ips_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, crt) = tls_config(dir.path(), "", "not a certificate\n", "not a key\n");
    let out = serve(&["--config", cfg.to_str().unwrap()], dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains(&format!("tls: {}: no CERTIFICATE section", crt.display())),
        "{err}"
    );

    let out = serve(&["--listen", "127.0.0.1:0"], dir.path())
        .env("NODE_IPS", "10.0.0.5,node-a")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("NODE_IPS: \"node-a\" is not an IP address"),
        "{err}"
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

#[test]
fn with_tls_configured_serve_answers_https_with_its_certificate() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cfg, _) = tls_config(
        dir.path(),
        "listen: 127.0.0.1:0\n",
        &ck.cert.pem(),
        &ck.signing_key.serialize_pem(),
    );
    let state = dir.path().join("state");
    let d = start_with(&["--config", cfg.to_str().unwrap()], &state, "https");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let tcp = TcpStream::connect(&d.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    // The server closes after the answer; rustls may report the close as an error after the
    // data (no close_notify from hyper): what was read is what counts.
    let _ = tls.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok\n"), "{resp}");
    // Plain HTTP on the same port gets no HTTP answer.
    let mut plain = TcpStream::connect(&d.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!raw.starts_with(b"HTTP/"), "{raw:?}");
    let (exit, log) = d.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "stderr: {log}");
}
