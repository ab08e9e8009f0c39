//! TLS on loopback with certificates made at test time (rcgen, ring), checked by a rustls
//! client that trusts only the certificate it was given: the handshake, the HTTP answer behind
//! it, a reload after the files change, and the errors for unusable files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
    let files = TlsFiles {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    };
    std::fs::write(&files.cert_file, cert).unwrap();
    std::fs::write(&files.key_file, key).unwrap();
    files
}

/// Moves both files' modification time `secs` ahead, so a rewrite within the file system's
/// timestamp granularity still counts as a change.
fn touch(files: &TlsFiles, secs: u64) {
    let t = SystemTime::now() + Duration::from_secs(secs);
    for p in [&files.cert_file, &files.key_file] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// A client that trusts `cert_pem` alone.
fn client(cert_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Serves a one-route router over TLS on a loopback port.
async fn serve(files: TlsFiles) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, Reloading::new(files).unwrap()).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// GET /healthz over TLS trusting `cert_pem`: the raw HTTP answer, or the handshake error.
async fn get_healthz(addr: SocketAddr, cert_pem: &str) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = client(cert_pem).connect(name, tcp).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn a_client_trusting_the_certificate_gets_the_http_answer_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed();
    let addr = serve(write_pair(dir.path(), &pair)).await;
    let answer = get_healthz(addr, &pair.0).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
}

#[tokio::test]
async fn a_client_trusting_another_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(write_pair(dir.path(), &self_signed())).await;
    let other = self_signed();
    let err = get_healthz(addr, &other.0).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(write_pair(dir.path(), &self_signed())).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server drops the connection on a failed handshake (or answers with a TLS alert).
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

#[tokio::test]
async fn new_files_are_served_from_the_next_connection_on() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    let files = write_pair(dir.path(), &first);
    let addr = serve(files.clone()).await;
    assert!(get_healthz(addr, &first.0).await.is_ok());
    let second = self_signed();
    write_pair(dir.path(), &second);
    touch(&files, 5);
    let answer = get_healthz(addr, &second.0).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(get_healthz(addr, &first.0).await.is_err());
}

#[tokio::test]
async fn files_that_stop_loading_keep_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed();
    let files = write_pair(dir.path(), &first);
    let addr = serve(files.clone()).await;
    // A rotation caught half-written: the key file is empty for a moment.
    std::fs::write(&files.key_file, "").unwrap();
    touch(&files, 5);
    let answer = get_healthz(addr, &first.0).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

fn load_error(files: &TlsFiles) -> String {
    server_config(files).unwrap_err().to_string()
}

#[test]
fn unusable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed();
    let files = write_pair(dir.path(), &pair);
    assert!(server_config(&files).is_ok());

    let missing = TlsFiles {
        cert_file: dir.path().join("absent.crt"),
        ..files.clone()
    };
    let e = load_error(&missing);
    assert!(
        e.starts_with(&format!("{}: ", missing.cert_file.display())),
        "{e}"
    );

    // A key where the certificate should be: PEM, but no CERTIFICATE section.
    let swapped = TlsFiles {
        cert_file: files.key_file.clone(),
        key_file: files.key_file.clone(),
    };
    let e = load_error(&swapped);
    assert!(e.contains("no CERTIFICATE section"), "{e}");

    std::fs::write(dir.path().join("empty.key"), "").unwrap();
    let no_key = TlsFiles {
        key_file: dir.path().join("empty.key"),
        ..files.clone()
    };
    let e = load_error(&no_key);
    assert!(
        e.starts_with(&format!(
            "{}: no usable private key",
            no_key.key_file.display()
        )),
        "{e}"
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let files = write_pair(dir.path(), &(cert, other_key));
    let e = load_error(&files);
    assert!(e.contains("tls.crt with"), "{e}");
}
