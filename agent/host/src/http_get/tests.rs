//! URL parsing and response parsing (RFC 1945 / RFC 9112 message shapes). The exchanges over
//! real sockets (slow, silent, oversize, refused) are in kube_proxy.rs's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[test]
fn urls_give_host_port_and_path_prefix() {
    let check = |s: &str, host: &str, port: u16, path: &str, authority: &str| {
        let u = url(s);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            (host, port, path),
            "{s}"
        );
        assert_eq!(u.authority(), authority, "{s}");
    };
    check(
        "http://prometheus:9090",
        "prometheus",
        9090,
        "",
        "prometheus:9090",
    );
    check(
        "http://p.monitoring/",
        "p.monitoring",
        80,
        "",
        "p.monitoring:80",
    );
    check(
        "http://10.0.0.1:9090/prom/",
        "10.0.0.1",
        9090,
        "/prom",
        "10.0.0.1:9090",
    );
    check("http://[::1]:9090/x", "::1", 9090, "/x", "[::1]:9090");
}

#[test]
fn unsupported_urls_are_refused_with_the_reason() {
    let check = |s: &str, needle: &str| {
        let e = Url::parse(s).unwrap_err().to_string();
        assert!(e.contains(needle), "{s}: {e}");
    };
    check("https://p:9090", "only http://");
    check("p:9090", "only http://");
    check("http://user:pw@p:9090", "user info");
    check("http://p:9090/?q=1", "queries");
    check("http://:9090", "no host");
    check("http://p:99999", "bad port");
    check("http://[::1:9090", "unclosed");
}

#[test]
fn a_response_gives_status_and_body() {
    let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    assert_eq!(
        r,
        Response {
            status: 503,
            body: b"{}".to_vec()
        }
    );
    let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nipvs").unwrap();
    assert_eq!(r.body, b"ipvs");
}

#[test]
fn responses_that_are_not_http_or_not_complete_are_refused() {
    let check = |raw: &[u8], needle: &str| {
        let e = parse_response(raw).unwrap_err();
        assert!(e.contains(needle), "{e}");
    };
    check(b"SSH-2.0-OpenSSH_9.2\r\n", "no end of headers");
    check(b"ICY 200 OK\r\n\r\n", "status line");
    check(b"HTTP/1.1 abc OK\r\n\r\n", "status line");
    check(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "Content-Length 10 but 5",
    );
    check(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "chunked",
    );
    check(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line");
}
