//! A minimal blocking HTTP/1.0 GET over `std::net::TcpStream`, for the few plain-HTTP
//! endpoints the agent reads: kube-proxy's `/healthz` and `/proxyMode` on the node, and a
//! Prometheus server's query API. No TLS, no redirects, no keep-alive, no chunked encoding
//! (an HTTP/1.0 request gets a body delimited by the connection's close, RFC 1945 §7.2.2).
//!
//! Every call is bounded: connect timeout, one deadline for the whole exchange (a server that
//! trickles a byte at a time cannot hold the caller), and a cap on the response size. It is
//! not a general client and must not grow into one; the daemon's server side is axum.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bounds of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connect, send and receive together.
    pub timeout: Duration,
    /// Largest response accepted, headers included.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 2 s and 1 MiB: loopback answers of a few hundred bytes.
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(2),
            max_bytes: 1 << 20,
        }
    }
}

/// A response: status and body (headers are read and dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a GET gave no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://HOST[:PORT][/PATH]` URL.
    #[error("{url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The host name did not resolve.
    #[error("{host}: cannot resolve: {message}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        message: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("{addr}: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("{addr}: no complete answer within {timeout:?}")]
    Timeout {
        /// The server.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The answer is larger than the cap.
    #[error("{addr}: the answer is larger than {max_bytes} bytes")]
    TooLarge {
        /// The server.
        addr: SocketAddr,
        /// The limit.
        max_bytes: usize,
    },
    /// Not an HTTP response.
    #[error("{addr}: not an HTTP response: {message}")]
    Malformed {
        /// The server.
        addr: SocketAddr,
        /// What is wrong.
        message: String,
    },
}

/// A parsed `http://HOST[:PORT][/PATH]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path prefix without a trailing `/` (`""` for none).
    pub path: String,
}

impl Url {
    /// Parses `url`; `https://`, user info, queries and fragments are refused.
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let bad = |m: &str| HttpError::Url {
            url: url.to_owned(),
            message: m.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported (no TLS in this client)"))?;
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@')
            || path.contains(['?', '#'])
            || path.contains(char::is_whitespace)
        {
            return Err(bad(
                "user info, queries, fragments and spaces are not allowed",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        Ok(Url {
            host: host.to_owned(),
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The first address the host resolves to (blocking: `getaddrinfo`).
    pub fn resolve(&self) -> Result<SocketAddr, HttpError> {
        let err = |message: String| HttpError::Resolve {
            host: self.host.clone(),
            message,
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| err(e.to_string()))?
            .next()
            .ok_or_else(|| err("no address".into()))
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `GET target` (a path with its query, `/healthz`) from `addr`, with `host` as the `Host`
/// header, within `limits`.
pub fn get(
    addr: SocketAddr,
    host: &str,
    target: &str,
    limits: Limits,
) -> Result<Response, HttpError> {
    let start = Instant::now();
    let timeout = || HttpError::Timeout {
        addr,
        timeout: limits.timeout,
    };
    // A socket timeout (SO_RCVTIMEO/SO_SNDTIMEO give EAGAIN, connect ETIMEDOUT) is the
    // deadline passing; anything else is the connection's failure.
    let fail = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timeout(),
        _ => HttpError::Io { addr, source },
    };
    let remaining = || {
        limits
            .timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(timeout)
    };
    let mut s = TcpStream::connect_timeout(&addr, limits.timeout).map_err(fail)?;
    s.set_write_timeout(Some(remaining()?)).map_err(fail)?;
    let req = format!(
        "GET {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ipvs-migrate\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(fail)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(remaining()?)).map_err(fail)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if buf.len() + n > limits.max_bytes {
                    return Err(HttpError::TooLarge {
                        addr,
                        max_bytes: limits.max_bytes,
                    });
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    parse_response(&buf).map_err(|message| HttpError::Malformed { addr, message })
}

/// Status line, headers, body. `Content-Length`, when present, must match what arrived.
fn parse_response(buf: &[u8]) -> Result<Response, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "headers are not UTF-8")?;
    let body = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Err(format!("status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("header line {h:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity")
        {
            return Err(format!("Transfer-Encoding {value} to an HTTP/1.0 request"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("Content-Length {value:?}"))?;
            if n != body.len() {
                return Err(format!(
                    "Content-Length {n} but {} bytes arrived",
                    body.len()
                ));
            }
        }
    }
    Ok(Response {
        status,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests;
