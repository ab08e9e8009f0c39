//! Building the API client (a kubeconfig file, `KUBECONFIG`, or the pod's service account) and
//! running one request with a deadline, mapping its failure to a [`KubeError`] that names the
//! server and the call.
//!
//! Must not: retry (callers decide; the daemon is best-effort and rate-limited), or read
//! anything but the kubeconfig and the service account files kube-client reads.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Call, KubeError};

/// The default deadline of one request. The agent's writes are best-effort, and a CLI user
/// should hear about an unreachable server in seconds, not after the OS's TCP timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// A kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, then the in-cluster service
    /// account (kube-client's `Config::infer` order).
    pub kubeconfig: Option<PathBuf>,
    /// Deadline of each request (connect, write and read; and the whole call).
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            kubeconfig: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A connected client: kube-client's `Client`, the server's URL (for messages) and the
/// per-request deadline.
#[derive(Clone)]
pub struct ApiClient {
    client: kube::Client,
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ApiClient {
    /// Loads the configuration and builds the client. Nothing is sent yet: an unreachable
    /// server shows up on the first call.
    pub async fn connect(opts: &ClientOptions) -> Result<ApiClient, KubeError> {
        let mut config = match &opts.kubeconfig {
            Some(path) => {
                let kc =
                    kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Config {
                        message: format!("--kubeconfig {}: {e}", path.display()),
                    })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| KubeError::Config {
                        message: format!("--kubeconfig {}: {e}", path.display()),
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| KubeError::Config {
                message: e.to_string(),
            })?,
        };
        config.connect_timeout = Some(opts.timeout);
        config.read_timeout = Some(opts.timeout);
        config.write_timeout = Some(opts.timeout);
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config {
            message: format!("{server}: {e}"),
        })?;
        Ok(ApiClient {
            client,
            server,
            timeout: opts.timeout,
        })
    }

    /// Wraps a client built elsewhere (tests: the mock API server).
    pub fn from_client(client: kube::Client, server: &str, timeout: Duration) -> ApiClient {
        ApiClient {
            client,
            server: server.to_owned(),
            timeout,
        }
    }

    /// kube-client's client, for `Api::<K>` handles.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The server's URL, as messages name it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Runs one request under the deadline and maps its failure. `call` says what it is, for
    /// the message (a 403 names the verb, resource and namespace RBAC must allow).
    pub async fn run<T>(
        &self,
        call: Call,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = KubeError::from_kube(&self.server, call, e);
                // hyper's own read/connect timeouts surface as connection errors.
                Err(match err {
                    KubeError::Unreachable {
                        server,
                        call,
                        message,
                    } if message.contains("timed out") || message.contains("deadline") => {
                        KubeError::Timeout {
                            server,
                            call,
                            timeout: self.timeout,
                        }
                    }
                    other => other,
                })
            }
            Err(_elapsed) => Err(KubeError::Timeout {
                server: self.server.clone(),
                call,
                timeout: self.timeout,
            }),
        }
    }
}
