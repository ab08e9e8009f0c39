//! serve's optional TLS (docs/serve.md#security): the certificate and key read from PEM files,
//! a rustls server configuration on the ring provider, and [`TlsListener`], an axum listener
//! that hands the router connections whose handshake is done. Plain HTTP stays the default
//! (Prometheus scrapes inside the cluster); this module never decides who may call what — the
//! router does (http.rs).
//!
//! Exactly one rustls crypto provider is compiled in (ring; shared/reference/rust-crates.md):
//! the provider is named explicitly rather than taken from a process-wide default, so another
//! crate installing one cannot change what serve uses. The files are read again when their
//! modification time changes (cert-manager rotates a Secret's files in place through the
//! kubelet's atomic symlink swap), checked at each new connection; a pair that does not load
//! keeps the previous one and is logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A handshake taking longer than this is dropped: a client that connects and sends nothing
/// must not hold a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is done and not yet taken by the server.
const READY_QUEUE: usize = 64;

/// The `tls` configuration key: where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls.certFile`).
    pub cert_file: PathBuf,
    /// The private key: PKCS#8, PKCS#1 or SEC1 (`tls.keyFile`).
    pub key_file: PathBuf,
}

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM section of the kind wanted.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refuses the pair (a key that does not match the certificate, say).
    #[error("{cert} with {key}: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        message: String,
    },
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads the PEM files and builds the server configuration (TLS 1.2 and 1.3, HTTP/1.1).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = (&files.cert_file, &files.key_file);
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE section"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        file_error(
            key,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: cert.clone(),
        key: key.clone(),
        message: e.to_string(),
    };
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(pair)?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(pair)?;
    // The server speaks HTTP/1 only (axum's `http1` feature).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The server configuration, read again when either file's modification time changes.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    current: Arc<ServerConfig>,
}

impl Reloading {
    /// Loads the files once; an error here stops the daemon (exit 66 or 65 by the caller).
    pub fn new(files: TlsFiles) -> Result<Reloading, TlsError> {
        let stamp = stamp(&files);
        let current = server_config(&files)?;
        Ok(Reloading {
            files,
            stamp,
            current,
        })
    }

    /// The configuration for the next handshake: reloaded if a file changed since the last
    /// load; the previous one (and a warning) when the new pair does not load — a half-written
    /// rotation is retried at the next connection.
    pub fn current(&mut self) -> Arc<ServerConfig> {
        let now = stamp(&self.files);
        if now != self.stamp {
            match server_config(&self.files) {
                Ok(cfg) => {
                    tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                    self.current = cfg;
                    self.stamp = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load: keeping the previous certificate");
                }
            }
        }
        Arc::clone(&self.current)
    }
}

fn stamp(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    // metadata() follows symlinks: the kubelet's `..data` swap changes the target's time.
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert_file), m(&files.key_file))
}

/// An axum listener serving TLS: a task accepts TCP connections and runs each handshake on its
/// own task (a slow client delays no one), and `accept` yields finished ones.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` with `certs`.
    pub fn new(tcp: TcpListener, certs: Reloading) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, certs, tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    mut certs: Reloading,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, as axum's own listener does.
                tracing::warn!(error = %e, "accepting a TLS connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let acceptor = TlsAcceptor::from(certs.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only ends when this receiver is gone; never here.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests;
