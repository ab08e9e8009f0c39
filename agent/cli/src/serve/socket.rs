//! The daemon's local socket (DESIGN.md "Who runs it"): CLI commands that change state hand
//! their request to the running `serve` over `STATE_DIR/agent.sock` instead of taking the
//! journal's lock themselves. One JSON request line in, one JSON response line out; the
//! socket is root-only (0600 in a 0700 directory), so whoever can write the journal can ask.
//! This module does the framing and the client; the reconcile loop (agent.rs) answers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};

use serde::{Deserialize, Serialize};

use super::agent::Msg;
use crate::exit::{CliError, ExitCode};

/// The socket's file name in the state directory.
pub const SOCKET: &str = "agent.sock";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 1 << 20;
/// The first line of every answer: the daemon's socket thread read the request (the loop may
/// then take minutes — a rollback's drain).
pub const ACK: &str = "{\"ack\":true}";
/// How long the CLI waits for [`ACK`]: a daemon that does not acknowledge is stopped or hung.
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the CLI asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// `apply --namespace NS... [--exclude NS/SVC]...`: migrate now (probed, then admitted).
    Apply {
        /// Namespaces to add.
        namespaces: Vec<String>,
        /// `NS/SVC` kept on iptables.
        exclude: Vec<String>,
    },
    /// `rollback`.
    Rollback {
        /// Namespaces (empty with `all`).
        namespaces: Vec<String>,
        /// Every migrated namespace.
        all: bool,
        /// The drain, seconds; `None`: the daemon's configured one.
        drain_secs: Option<u64>,
    },
    /// `cutover`.
    Cutover {
        /// Namespace groups, in order.
        waves: Vec<Vec<String>>,
        /// Soak per wave, seconds; `None`: the daemon's configured one.
        soak_secs: Option<u64>,
        /// Blockers deliberately allowed.
        allow: Vec<String>,
    },
    /// `finalize` (not `--dry-run`, which only reads and runs in the CLI): hand the node to
    /// kube-proxy's IPVS mode with the daemon's journal (finalize.rs).
    Finalize {
        /// kube-proxy's metrics endpoint (`--kube-proxy-metrics`).
        kube_proxy_metrics: String,
        /// Where to write the manifests (absolute).
        manifests: Option<PathBuf>,
        /// `--node-name`.
        node_name: Option<String>,
        /// `--kube-proxy-image`.
        kube_proxy_image: Option<String>,
        /// The node's rules saved before the switch (absolute; `--iptables-save`).
        iptables_save: Option<PathBuf>,
        /// The same for IPv6 (`--ip6tables-save`).
        ip6tables_save: Option<PathBuf>,
        /// The report as JSON (`-o json`).
        json: bool,
        /// `--kubernetes-version` (the `KubeProxyIPVS` gate and the image tag depend on it);
        /// absent from an older CLI's request.
        #[serde(default)]
        kubernetes_version: Option<String>,
    },
}

/// The daemon's answer: the exit code the CLI should end with, and what to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Exit code (DESIGN.md's table).
    pub code: u8,
    /// Text for the user.
    pub message: String,
    /// A report for stdout, printed whatever the code (finalize's: a refusal still shows what
    /// was checked); the message then says why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl Response {
    /// Success with a message.
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            code: ExitCode::Ok.code(),
            message: message.into(),
            output: String::new(),
        }
    }
    /// The answer for an error.
    pub fn error(e: &CliError) -> Response {
        Response {
            code: e.code.code(),
            message: e.message.clone(),
            output: String::new(),
        }
    }
}

/// The socket's path.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Listens on the state directory's socket and hands each request to the loop through
/// `inbox`; returns when the listener fails. A stale socket file (a daemon that died) is
/// replaced: the caller holds the journal's lock, so no other daemon can be listening.
pub fn listen(state_dir: &Path, inbox: Sender<Msg>) -> Result<(), CliError> {
    let p = path(state_dir);
    if p.exists() {
        std::fs::remove_file(&p).map_err(|e| {
            CliError::new(
                ExitCode::OperationFailed,
                format!("removing the stale socket {}: {e}", p.display()),
            )
        })?;
    }
    let listener = UnixListener::bind(&p).map_err(|e| {
        CliError::new(
            ExitCode::OperationFailed,
            format!("listening on {}: {e}", p.display()),
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        CliError::new(
            ExitCode::OperationFailed,
            format!("chmod {}: {e}", p.display()),
        )
    })?;
    std::thread::Builder::new()
        .name("socket".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        let inbox = inbox.clone();
                        let _ = std::thread::Builder::new()
                            .name("socket-conn".into())
                            .spawn(move || answer(c, &inbox));
                    }
                    Err(e) => tracing::warn!(error = %e, "local socket: accept failed"),
                }
            }
        })
        .map_err(|e| CliError::new(ExitCode::OperationFailed, format!("socket thread: {e}")))?;
    Ok(())
}

/// One connection: read the request, wait for the loop's answer, write it.
fn answer(conn: UnixStream, inbox: &Sender<Msg>) {
    let mut line = String::new();
    let read = BufReader::new(std::io::Read::take(&conn, MAX_REQUEST)).read_line(&mut line);
    if matches!(read, Ok(0)) {
        return; // a liveness check (`daemon_listening`): connected and closed
    }
    let resp = match read.map_err(|e| e.to_string()).and_then(|_| {
        serde_json::from_str::<Request>(&line).map_err(|e| format!("not a request: {e}"))
    }) {
        Err(e) => {
            tracing::warn!(error = %e, "local socket: request refused");
            Response {
                code: ExitCode::Usage.code(),
                message: e,
                output: String::new(),
            }
        }
        Ok(req) => {
            tracing::info!(?req, "request from the CLI");
            let mut w = &conn;
            let _ = w
                .write_all(ACK.as_bytes())
                .and_then(|()| w.write_all(b"\n"));
            let (tx, rx) = channel();
            if inbox.send(Msg::Request { req, reply: tx }).is_err() {
                Response {
                    code: ExitCode::OperationFailed.code(),
                    message: "the daemon is shutting down".into(),
                    output: String::new(),
                }
            } else {
                rx.recv().unwrap_or(Response {
                    code: ExitCode::OperationFailed.code(),
                    message: "the daemon stopped before answering".into(),
                    output: String::new(),
                })
            }
        }
    };
    let mut w = &conn;
    let text = serde_json::to_string(&resp).unwrap_or_default();
    let _ = w
        .write_all(text.as_bytes())
        .and_then(|()| w.write_all(b"\n"));
}

/// Whether a daemon listens on the state directory's socket.
pub fn daemon_listening(state_dir: &Path) -> bool {
    UnixStream::connect(path(state_dir)).is_ok()
}

/// Sends `req` to the daemon of `state_dir` and waits for its answer; `None` when no daemon
/// listens there (no socket file, or nobody behind it).
pub fn call(state_dir: &Path, req: &Request) -> Result<Option<Response>, CliError> {
    call_with(state_dir, req, ACK_TIMEOUT)
}

/// [`call`], waiting `ack_timeout` for the acknowledgement.
pub fn call_with(
    state_dir: &Path,
    req: &Request,
    ack_timeout: std::time::Duration,
) -> Result<Option<Response>, CliError> {
    let p = path(state_dir);
    let conn = match UnixStream::connect(&p) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(CliError::new(
                ExitCode::OperationFailed,
                format!("connecting to the daemon at {}: {e}", p.display()),
            ));
        }
    };
    let failed = |what: &str, e: String| {
        CliError::new(
            ExitCode::OperationFailed,
            format!("{what} the daemon at {}: {e}", p.display()),
        )
    };
    let mut text =
        serde_json::to_string(req).map_err(|e| failed("encoding a request for", e.to_string()))?;
    text.push('\n');
    (&conn)
        .write_all(text.as_bytes())
        .map_err(|e| failed("writing to", e.to_string()))?;
    // The socket thread acknowledges at once; a daemon that does not is stopped (SIGSTOP) or
    // hung, and waiting for it would hang the operator too.
    let hung = || {
        CliError::new(
            ExitCode::OperationFailed,
            format!(
                "the ipvs-migrate daemon at {} took the request but did not acknowledge it within {:.1} s: it is stopped or hung. Its admission entries expire by themselves within its switchTimeout (traffic goes back to kube-proxy's iptables rules); to act now, stop it (its pid is in {}) and run this command again, which then runs in this process",
                p.display(),
                ack_timeout.as_secs_f64(),
                state_dir.join(ipvsmig_host::journal::LOCK_FILE).display()
            ),
        )
    };
    conn.set_read_timeout(Some(ack_timeout))
        .map_err(|e| failed("setting a timeout on", e.to_string()))?;
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(_) if line.trim_end() == ACK => {}
        Ok(0) => return Err(failed("no answer from", "the connection closed".into())),
        Ok(_) => {
            return Err(failed(
                "an answer without acknowledgement from",
                line.trim_end().to_owned(),
            ));
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(hung());
        }
        Err(e) => return Err(failed("reading from", e.to_string())),
    }
    // Acknowledged: the answer may take as long as the work (a drain of minutes).
    conn.set_read_timeout(None)
        .map_err(|e| failed("clearing the timeout on", e.to_string()))?;
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(|e| failed("reading from", e.to_string()))?;
    if line.is_empty() {
        return Err(failed("no answer from", "the connection closed".into()));
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| failed("a garbled answer from", e.to_string()))
}

/// The CLI side: the daemon's answer turned into this process's result (its message printed).
pub fn finish(resp: Response) -> Result<ExitCode, CliError> {
    let code = ExitCode::from_code(resp.code);
    if !resp.output.is_empty() {
        print!("{}", resp.output);
    }
    if code == ExitCode::Ok {
        if !resp.message.is_empty() {
            println!("{}", resp.message.trim_end());
        }
        Ok(ExitCode::Ok)
    } else {
        Err(CliError::new(code, resp.message))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn rollback() -> Request {
        Request::Rollback {
            namespaces: vec![],
            all: true,
            drain_secs: Some(0),
        }
    }

    #[test]
    fn a_finalize_request_carries_the_kubernetes_version_and_an_older_one_without_it_still_reads() {
        let line = r#"{"request":"finalize","kube_proxy_metrics":"http://127.0.0.1:10249","manifests":null,"node_name":null,"kube_proxy_image":null,"iptables_save":null,"ip6tables_save":null,"json":false,"kubernetes_version":"1.37.1"}"#;
        let Request::Finalize {
            kubernetes_version, ..
        } = serde_json::from_str(line).unwrap()
        else {
            panic!("not a finalize request")
        };
        assert_eq!(kubernetes_version.as_deref(), Some("1.37.1"));
        let older = line.replace(r#","kubernetes_version":"1.37.1""#, "");
        let Request::Finalize {
            kubernetes_version, ..
        } = serde_json::from_str(&older).unwrap()
        else {
            panic!("not a finalize request")
        };
        assert_eq!(kubernetes_version, None);
    }

    #[test]
    fn no_socket_means_no_daemon() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(call(d.path(), &rollback()).unwrap(), None);
    }

    #[test]
    fn a_daemon_that_never_acknowledges_is_reported_hung_not_waited_for() {
        let d = tempfile::tempdir().unwrap();
        // Listening (the kernel accepts) but never reading: a stopped or hung daemon.
        let _l = UnixListener::bind(path(d.path())).unwrap();
        let t = std::time::Instant::now();
        let e =
            call_with(d.path(), &rollback(), std::time::Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(e.code, ExitCode::OperationFailed);
        assert!(e.message.contains("stopped or hung"), "{}", e.message);
    }

    #[test]
    fn the_answer_after_the_acknowledgement_may_take_longer_than_the_ack_timeout() {
        let d = tempfile::tempdir().unwrap();
        let (inbox, rx) = std::sync::mpsc::channel();
        listen(d.path(), inbox).unwrap();
        // The loop answers after longer than the ack timeout.
        std::thread::spawn(move || {
            if let Ok(Msg::Request { req, reply }) = rx.recv() {
                assert!(matches!(req, Request::Rollback { all: true, .. }));
                std::thread::sleep(std::time::Duration::from_millis(600));
                let _ = reply.send(Response::ok("Rolled back."));
            }
        });
        let r = call_with(d.path(), &rollback(), std::time::Duration::from_millis(300))
            .unwrap()
            .unwrap();
        assert_eq!(r.code, 0);
        assert_eq!(r.message, "Rolled back.");
        // A line that is not a request is refused with a usage answer (after no ack).
        let mut c = UnixStream::connect(path(d.path())).unwrap();
        c.write_all(b"rm -rf /\n").unwrap();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(resp.code, ExitCode::Usage.code());
    }
}
