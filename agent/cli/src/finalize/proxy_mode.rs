//! Which mode kube-proxy runs in, for finalize's first check: `--kube-proxy-metrics` parsed
//! and asked for `/proxyMode` through the host crate's reader (`ipvsmig_host::kube_proxy`,
//! bounded HTTP/1.0 GET on loopback; kube-proxy-facts.md: "`/proxyMode` on the metrics port
//! 10249"), and its answer sorted into what finalize needs to know. Asks nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use ipvsmig_host::http_get::{Limits, Url};
use ipvsmig_host::kube_proxy;

/// Default `--kube-proxy-metrics` (kube-proxy's `metricsBindAddress` default port).
pub const DEFAULT_URL: &str = "http://127.0.0.1:10249";

/// What the endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// `ipvs`.
    Ipvs,
    /// Another mode's name (`iptables`, `nftables`).
    Other(String),
    /// No usable answer: no listener, a timeout, an HTTP error, a body that is no mode name.
    NoAnswer(String),
}

/// `http://HOST:PORT` (no path) on a loopback address: where this node's kube-proxy serves
/// `/proxyMode` (its metrics endpoints are unauthenticated; finalize reads its own node's).
/// A bare `HOST:PORT` is read as `http://HOST:PORT`, the form serve.yaml's
/// `kubeProxyMetrics` takes, so the same value works in both places.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let with_scheme;
    let url = if url.contains("://") {
        url
    } else {
        with_scheme = format!("http://{url}");
        &with_scheme
    };
    let u = Url::parse(url).map_err(|e| format!("{e} (expected http://HOST:PORT)"))?;
    if !u.path.is_empty() {
        return Err(format!("{url:?}: expected http://HOST:PORT with no path"));
    }
    if !url.trim_end_matches('/').ends_with(&format!(":{}", u.port)) {
        return Err(format!(
            "{url:?}: the port is missing (kube-proxy's default is 10249)"
        ));
    }
    let addr = u.resolve().map_err(|e| e.to_string())?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{url:?}: {addr} is not a loopback address; finalize reads this node's kube-proxy on loopback (its metrics bind address, 127.0.0.1:10249 by default)"
        ));
    }
    Ok(addr)
}

/// GETs `/proxyMode` from `addr`, all of it within `timeout`.
pub fn query(addr: SocketAddr, timeout: Duration) -> ProxyMode {
    let limits = Limits {
        timeout,
        ..Limits::default()
    };
    match kube_proxy::proxy_mode(addr, limits) {
        Ok(m) if m == "ipvs" => ProxyMode::Ipvs,
        Ok(m) => ProxyMode::Other(m),
        Err(e) => ProxyMode::NoAnswer(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    use super::*;

    /// A one-shot server on a loopback port answering `reply` (after `delay`).
    fn server(reply: &'static [u8], delay: Duration) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            std::thread::sleep(delay);
            let _ = s.write_all(reply);
        });
        (addr, h)
    }

    fn ask(reply: &'static [u8]) -> ProxyMode {
        let (addr, h) = server(reply, Duration::ZERO);
        let got = query(addr, Duration::from_secs(2));
        let _ = h.join();
        got
    }

    // kube-proxy's handler writes the mode's name as the whole body (cmd/kube-proxy/app/
    // server.go); only `ipvs` lets finalize go on.
    #[test]
    fn ipvs_other_modes_and_unusable_answers_are_told_apart() {
        assert_eq!(
            ask(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nipvs"),
            ProxyMode::Ipvs
        );
        assert_eq!(
            ask(b"HTTP/1.0 200 OK\r\n\r\niptables"),
            ProxyMode::Other("iptables".into())
        );
        assert_eq!(
            ask(b"HTTP/1.0 200 OK\r\n\r\nnftables\n"),
            ProxyMode::Other("nftables".into())
        );
        assert!(matches!(
            ask(b"HTTP/1.0 404 Not Found\r\n\r\nipvs"),
            ProxyMode::NoAnswer(m) if m.contains("404")
        ));
        assert!(matches!(
            ask(b"HTTP/1.0 200 OK\r\n\r\n<html>ipvs</html>"),
            ProxyMode::NoAnswer(_)
        ));
        assert!(matches!(ask(b"\x00\x01garbage"), ProxyMode::NoAnswer(_)));
        assert!(matches!(ask(b""), ProxyMode::NoAnswer(_)));
    }

    #[test]
    fn no_listener_is_no_answer() {
        // Bind, note the address, close: nothing listens there now.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            query(addr, Duration::from_secs(1)),
            ProxyMode::NoAnswer(_)
        ));
    }

    #[test]
    fn a_slow_listener_is_no_answer_within_the_timeout() {
        let (addr, h) = server(b"HTTP/1.0 200 OK\r\n\r\nipvs", Duration::from_millis(1500));
        let t = Instant::now();
        let got = query(addr, Duration::from_millis(300));
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(got, ProxyMode::NoAnswer(_)), "{got:?}");
        let _ = h.join();
    }

    #[test]
    fn urls_are_http_host_port_or_host_port_on_loopback_only() {
        assert_eq!(
            parse_url(DEFAULT_URL).unwrap(),
            "127.0.0.1:10249".parse().unwrap()
        );
        assert_eq!(
            parse_url("http://[::1]:10249/").unwrap(),
            "[::1]:10249".parse().unwrap()
        );
        // serve.yaml's form, HOST:PORT, means the same.
        assert_eq!(
            parse_url("127.0.0.1:10249").unwrap(),
            "127.0.0.1:10249".parse().unwrap()
        );
        for bad in [
            "https://127.0.0.1:10249",
            "http://127.0.0.1",
            "http://127.0.0.1:x",
            "http://127.0.0.1:1/metrics",
            "127.0.0.1",
            "http://:10249",
            "http://192.0.2.1:10249",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
