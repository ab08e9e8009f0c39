//! Which mode kube-proxy runs in, from its `/proxyMode` endpoint on the metrics port
//! (pkg/proxy/metrics server: the body is the mode's name, e.g. `ipvs`; kube-proxy-facts.md:
//! "`/proxyMode` on the metrics port 10249"). Plain HTTP/1.0 on a std `TcpStream` with
//! timeouts: kube-proxy serves it on loopback without TLS, and one GET does not justify an HTTP
//! client dependency. Never follows redirects, never sends anything but the GET.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Default `--kube-proxy-metrics` (kube-proxy's `metricsBindAddress` default port).
pub const DEFAULT_URL: &str = "http://127.0.0.1:10249";

/// Longest answer read (the body is one word).
const MAX_ANSWER: usize = 4096;

/// What the endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// `ipvs`.
    Ipvs,
    /// Another mode (`iptables`, `nftables`) or an unexpected body, trimmed and shortened.
    Other(String),
    /// No usable answer: no listener, a timeout, an HTTP error, a malformed response.
    NoAnswer(String),
}

/// `http://HOST:PORT` (an optional trailing `/`): the host and port to connect to.
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: expected http://HOST:PORT (kube-proxy serves /proxyMode over plain HTTP)")
    })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(format!("{url:?}: expected http://HOST:PORT with no path"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?}: the port is missing (kube-proxy's default is 10249)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing"));
    }
    Ok((host.to_owned(), port))
}

/// GETs `/proxyMode` from `host:port`, all of it (connect, write, read) within `timeout`.
pub fn query(host: &str, port: u16, timeout: Duration) -> ProxyMode {
    let start = Instant::now();
    let addrs: Vec<_> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return ProxyMode::NoAnswer(format!("{host}: {e}")),
    };
    let Some(addr) = addrs.first() else {
        return ProxyMode::NoAnswer(format!("{host}: no address"));
    };
    let mut s = match TcpStream::connect_timeout(addr, timeout) {
        Ok(s) => s,
        Err(e) => return ProxyMode::NoAnswer(format!("connect {addr}: {e}")),
    };
    let left = |start: Instant| {
        timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1))
    };
    let _ = s.set_write_timeout(Some(left(start)));
    let req = format!(
        "GET /proxyMode HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: ipvs-migrate\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return ProxyMode::NoAnswer(format!("{addr}: {e}"));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if start.elapsed() >= timeout {
            return ProxyMode::NoAnswer(format!(
                "{addr}: no complete answer within {} ms",
                timeout.as_millis()
            ));
        }
        let _ = s.set_read_timeout(Some(left(start)));
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_ANSWER {
                    return ProxyMode::NoAnswer(format!(
                        "{addr}: answer longer than {MAX_ANSWER} bytes"
                    ));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return ProxyMode::NoAnswer(format!(
                    "{addr}: no complete answer within {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return ProxyMode::NoAnswer(format!("{addr}: {e}")),
        }
    }
    interpret(&buf)
}

/// Reads an HTTP/1.x response: a 200 whose body is `ipvs` is IPVS mode.
pub fn interpret(resp: &[u8]) -> ProxyMode {
    let text = String::from_utf8_lossy(resp);
    let Some((head, body)) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
    else {
        return ProxyMode::NoAnswer("not an HTTP response".into());
    };
    let status = head.lines().next().unwrap_or_default();
    let mut words = status.split_whitespace();
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return ProxyMode::NoAnswer(format!("not an HTTP status line: {status:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return ProxyMode::NoAnswer(format!("not an HTTP/1 status line: {status:?}"));
    }
    if code != "200" {
        return ProxyMode::NoAnswer(format!("HTTP {code} for /proxyMode"));
    }
    match body.trim() {
        "ipvs" => ProxyMode::Ipvs,
        other => ProxyMode::Other(other.chars().take(40).collect()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server on a loopback port answering `reply` (after `delay`).
    fn server(reply: &'static [u8], delay: Duration) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).unwrap_or(0);
            std::thread::sleep(delay);
            let _ = s.write_all(reply);
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        (port, h)
    }

    fn check(reply: &'static [u8], expect: &ProxyMode) {
        let (port, h) = server(reply, Duration::ZERO);
        let got = query("127.0.0.1", port, Duration::from_secs(2));
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /proxyMode HTTP/1.0\r\n"), "{req}");
        assert_eq!(&got, expect, "{}", String::from_utf8_lossy(reply));
    }

    #[test]
    fn ipvs_iptables_and_garbage_answers_are_told_apart() {
        check(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nipvs",
            &ProxyMode::Ipvs,
        );
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nipvs\n",
            &ProxyMode::Ipvs,
        );
        check(
            b"HTTP/1.0 200 OK\r\n\r\niptables",
            &ProxyMode::Other("iptables".into()),
        );
        check(
            b"HTTP/1.0 200 OK\r\n\r\nipvsx",
            &ProxyMode::Other("ipvsx".into()),
        );
        assert!(matches!(
            query_reply(b"HTTP/1.0 404 Not Found\r\n\r\nipvs"),
            ProxyMode::NoAnswer(m) if m.contains("404")
        ));
        assert!(matches!(
            query_reply(b"\x00\x01garbage"),
            ProxyMode::NoAnswer(_)
        ));
        assert!(matches!(query_reply(b""), ProxyMode::NoAnswer(_)));
    }

    fn query_reply(reply: &'static [u8]) -> ProxyMode {
        let (port, h) = server(reply, Duration::ZERO);
        let got = query("127.0.0.1", port, Duration::from_secs(2));
        let _ = h.join();
        got
    }

    #[test]
    fn no_listener_is_no_answer() {
        // Bind, note the port, close: nothing listens there now.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(
            matches!(query("127.0.0.1", port, Duration::from_secs(1)), ProxyMode::NoAnswer(m) if m.contains("connect"))
        );
    }

    #[test]
    fn a_slow_listener_is_no_answer_within_the_timeout() {
        let (port, h) = server(b"HTTP/1.0 200 OK\r\n\r\nipvs", Duration::from_millis(1500));
        let t = Instant::now();
        let got = query("127.0.0.1", port, Duration::from_millis(300));
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );
        assert!(
            matches!(got, ProxyMode::NoAnswer(ref m) if m.contains("within")),
            "{got:?}"
        );
        let _ = h.join();
    }

    #[test]
    fn urls_are_http_host_port_only() {
        assert_eq!(parse_url(DEFAULT_URL).unwrap(), ("127.0.0.1".into(), 10249));
        assert_eq!(
            parse_url("http://[::1]:10249/").unwrap(),
            ("::1".into(), 10249)
        );
        for bad in [
            "https://127.0.0.1:10249",
            "http://127.0.0.1",
            "http://127.0.0.1:x",
            "http://h:1/metrics",
            "127.0.0.1:10249",
            "http://:10249",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
