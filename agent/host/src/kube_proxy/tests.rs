//! kube-proxy's endpoints played by a loopback listener thread: the healthz bodies are written
//! from proxy_health.go's format string (`{"lastUpdated": %q,"currentTime": %q}` with Go's
//! `time.Time.String()`), and every failure the client must bound: refused, silent, trickling,
//! oversize, not HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// One connection served by `answer` on a loopback port; the request head is sent back on the
/// channel.
fn serve(
    answer: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        answer(&mut s);
    });
    (addr, rx)
}

fn reply(raw: &'static str) -> impl FnOnce(&mut TcpStream) + Send + 'static {
    move |s| {
        let _ = s.write_all(raw.as_bytes());
    }
}

fn quick() -> Limits {
    Limits {
        timeout: Duration::from_secs(1),
        max_bytes: 64 * 1024,
    }
}

#[test]
fn a_200_is_healthy_and_the_request_is_a_plain_http_1_0_get() {
    let (addr, rx) = serve(reply(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\r\n\
         {\"lastUpdated\": \"2026-11-24 22:42:06.5 +0000 UTC m=+1.500000001\",\"currentTime\": \"2026-11-24 22:42:06.5 +0000 UTC m=+1.500000001\"}",
    ));
    let h = healthz(addr, quick()).unwrap();
    assert!(h.healthy);
    // 2026-11-24 22:42:06 UTC = 1795560126 (date -u -d '2026-11-24 22:42:06' +%s).
    assert_eq!(h.last_updated_unix, Some(1_795_560_126.5));
    let head = rx.recv().unwrap();
    assert!(head.starts_with("GET /healthz HTTP/1.0\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
}

#[test]
fn a_503_is_unhealthy_with_the_last_sync_time() {
    let (addr, _rx) = serve(reply(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n\
         {\"lastUpdated\": \"2026-11-24 23:42:06.25 +0100 CET m=+1.2\",\"currentTime\": \"2026-11-24 22:50:00 +0000 UTC m=+500.0\"}",
    ));
    let h = healthz(addr, quick()).unwrap();
    assert!(!h.healthy);
    assert_eq!(h.node_eligible, None);
    // +0100: the same instant as 22:42:06.25 UTC.
    assert_eq!(h.last_updated_unix, Some(1_795_560_126.25));
    assert!(h.last_updated.starts_with("2026-11-24 23:42:06.25"));
}

#[test]
fn a_node_being_drained_is_a_503_healthz_with_node_eligible_false_and_livez_still_healthy() {
    // v1.28+ (KEP-3836): `{"lastUpdated": %q,"currentTime": %q, "nodeEligible": %v}`.
    let (addr, _rx) = serve(reply(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n\
         {\"lastUpdated\": \"2026-11-24 22:42:06 +0000 UTC m=+1.0\",\"currentTime\": \"2026-11-24 22:42:07 +0000 UTC m=+2.0\", \"nodeEligible\": false}",
    ));
    let h = healthz(addr, quick()).unwrap();
    assert_eq!((h.healthy, h.node_eligible), (false, Some(false)));
    let (addr, rx) = serve(reply(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
         {\"lastUpdated\": \"2026-11-24 22:42:07 +0000 UTC m=+2.0\",\"currentTime\": \"2026-11-24 22:42:07 +0000 UTC m=+2.0\"}",
    ));
    let h = livez(addr, quick()).unwrap();
    assert!(h.healthy);
    assert!(rx.recv().unwrap().starts_with("GET /livez HTTP/1.0\r\n"));
    // Before v1.28 there is no /livez: Go's mux answers 404.
    let (addr, _rx) = serve(reply("HTTP/1.1 404 Not Found\r\n\r\n404 page not found\n"));
    let e = livez(addr, quick()).unwrap_err().to_string();
    assert!(e.contains("/livez") && e.contains("status 404"), "{e}");
}

#[test]
fn go_zero_time_and_unknown_forms_have_no_unix_time() {
    // Before the first sync kube-proxy reports the zero time.
    assert_eq!(go_time_unix("0001-01-01 00:00:00 +0000 UTC"), None);
    assert_eq!(go_time_unix("2026-11-24T22:42:06Z"), None);
    assert_eq!(go_time_unix("1970-01-01 00:00:00 +0000 UTC"), Some(0.0));
    // 2000-03-01 (after a leap day): 951868800 (date -u -d 2000-03-01 +%s).
    assert_eq!(
        go_time_unix("2000-03-01 00:00:00 -0000 UTC"),
        Some(951_868_800.0)
    );
}

#[test]
fn an_answer_that_is_not_kube_proxys_is_an_error() {
    let (addr, _rx) = serve(reply("HTTP/1.1 200 OK\r\n\r\nhello"));
    let e = healthz(addr, quick()).unwrap_err().to_string();
    assert!(e.contains("/healthz") && e.contains("lastUpdated"), "{e}");
    let (addr, _rx) = serve(reply("HTTP/1.1 404 Not Found\r\n\r\n404 page not found\n"));
    let e = healthz(addr, quick()).unwrap_err().to_string();
    assert!(e.contains("status 404"), "{e}");
    let (addr, _rx) = serve(reply("garbage, not HTTP at all\r\n\r\n"));
    let e = healthz(addr, quick()).unwrap_err();
    assert!(
        matches!(
            e,
            KubeProxyError::Http {
                source: HttpError::Malformed { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn no_listener_is_a_connection_error() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = healthz(addr, quick()).unwrap_err();
    assert!(
        matches!(
            e,
            KubeProxyError::Http {
                source: HttpError::Io { .. },
                ..
            }
        ),
        "{e}"
    );
}

/// The call ends within the timeout plus slack, whatever the server does.
fn assert_bounded(addr: SocketAddr) {
    let t = Instant::now();
    let e = healthz(addr, quick()).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(
            e,
            KubeProxyError::Http {
                source: HttpError::Timeout { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    let (addr, _rx) = serve(|_s| thread::sleep(Duration::from_secs(4)));
    assert_bounded(addr);
}

#[test]
fn a_listener_that_trickles_bytes_cannot_hold_the_caller() {
    // One byte every 50 ms: each read succeeds, only the overall deadline ends it.
    let (addr, _rx) = serve(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        for _ in 0..100 {
            if s.write_all(b"X").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    assert_bounded(addr);
}

#[test]
fn an_oversize_answer_is_refused() {
    let (addr, _rx) = serve(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let block = [b'x'; 8192];
        for _ in 0..32 {
            if s.write_all(&block).is_err() {
                return;
            }
        }
    });
    let e = healthz(addr, quick()).unwrap_err();
    assert!(
        matches!(
            e,
            KubeProxyError::Http {
                source: HttpError::TooLarge {
                    max_bytes: 65536,
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn only_loopback_addresses_are_asked() {
    let e = healthz("10.0.0.1:10256".parse().unwrap(), quick()).unwrap_err();
    assert!(matches!(e, KubeProxyError::NotLoopback(_)), "{e}");
    let e = proxy_mode("[2001:db8::1]:10249".parse().unwrap(), quick()).unwrap_err();
    assert!(matches!(e, KubeProxyError::NotLoopback(_)), "{e}");
}

#[test]
fn proxy_mode_is_the_body_text() {
    let (addr, rx) = serve(reply(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nipvs",
    ));
    assert_eq!(proxy_mode(addr, quick()).unwrap(), "ipvs");
    assert!(
        rx.recv()
            .unwrap()
            .starts_with("GET /proxyMode HTTP/1.0\r\n")
    );
    let (addr, _rx) = serve(reply("HTTP/1.0 200 OK\r\n\r\niptables\n"));
    assert_eq!(proxy_mode(addr, quick()).unwrap(), "iptables");
    let (addr, _rx) = serve(reply("HTTP/1.0 200 OK\r\n\r\n<html>hi</html>"));
    let e = proxy_mode(addr, quick()).unwrap_err().to_string();
    assert!(e.contains("not a proxy mode name"), "{e}");
    let (addr, _rx) = serve(reply("HTTP/1.0 500 Internal Server Error\r\n\r\n"));
    let e = proxy_mode(addr, quick()).unwrap_err().to_string();
    assert!(e.contains("status 500"), "{e}");
}
