//! The agent's own probes through IPVS: a TCP connect from the node to a virtual server with
//! the probe mark (SO_MARK) set, so that only these packets pass the hybrid's probe-stage
//! admission rule (docs/hybrid.md). A connect that completes reached a real server; "refused"
//! is what a virtual server without real servers answers (an ICMP port-unreachable, as
//! iptables' REJECT did).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The connection was established (and is closed again at once).
    Connected,
    /// Refused (RST or ICMP port-unreachable).
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Anything else, with the error.
    Failed(String),
}

/// One TCP connect to `addr` with `SO_MARK = mark`.
pub fn tcp(addr: SocketAddr, mark: u32, timeout: Duration) -> Outcome {
    let sock = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    if let Err(e) = sock.set_mark(mark) {
        return Outcome::Failed(format!("SO_MARK (needs CAP_NET_ADMIN): {e}"));
    }
    match sock.connect_timeout(&SockAddr::from(addr), timeout) {
        Ok(()) => Outcome::Connected,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
            Outcome::TimedOut
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Probes run at once at most.
pub const PARALLEL: usize = 32;

/// [`tcp`] to every address, up to [`PARALLEL`] at a time (a round of probes that time out
/// takes about one timeout per [`PARALLEL`] addresses, not one per address); outcomes and how
/// long each took, in order.
pub fn tcp_many(addrs: &[SocketAddr], mark: u32, timeout: Duration) -> Vec<(Outcome, Duration)> {
    let mut out = Vec::with_capacity(addrs.len());
    for chunk in addrs.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|a| {
                    s.spawn(move || {
                        let t = std::time::Instant::now();
                        (tcp(*a, mark, timeout), t.elapsed())
                    })
                })
                .collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    (
                        Outcome::Failed("probe thread panicked".into()),
                        Duration::ZERO,
                    )
                }));
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_loopback_connects_and_a_closed_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // SO_MARK needs CAP_NET_ADMIN; the test suite runs as root (scripts/test.sh).
        assert_eq!(
            tcp(addr, 0x10_0000, Duration::from_secs(2)),
            Outcome::Connected
        );
        drop(l);
        assert_eq!(
            tcp(addr, 0x10_0000, Duration::from_secs(2)),
            Outcome::Refused
        );
    }

    #[test]
    fn many_probes_keep_their_order_and_run_side_by_side() {
        let open: Vec<std::net::TcpListener> = (0..40)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut addrs: Vec<SocketAddr> = open.iter().map(|l| l.local_addr().unwrap()).collect();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        addrs.insert(7, closed);
        let got = tcp_many(&addrs, 0, Duration::from_secs(2));
        assert_eq!(got.len(), 41);
        for (i, (o, _)) in got.iter().enumerate() {
            let want = if i == 7 {
                Outcome::Refused
            } else {
                Outcome::Connected
            };
            assert_eq!(*o, want, "probe {i}");
        }
    }
}
