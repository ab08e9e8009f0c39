//! Fast parsers for the addresses and ports of a dump, used before the standard library's.
//!
//! A 20,000-service dump holds 200,000 IPv4 addresses and 100,000 ports in the shapes
//! kube-proxy writes (`10.128.0.7`, `8080`). `str::parse` handles every notation and checks
//! IPv6 too, which costs several times more than reading four octets. These parsers accept
//! only a strict subset of what `str::parse` accepts — and give the same value for it — and
//! answer `None` for everything else, so callers fall back to `str::parse` and keep its
//! exact behaviour (the tests compare the two).

use std::net::Ipv4Addr;

/// Dotted-quad IPv4 as `Ipv4Addr::from_str` reads it: four decimal octets of one to three
/// digits, no leading zero, each at most 255. `None` means "ask `str::parse`", not "invalid".
pub fn ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0usize;
    for (n, slot) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while let Some(&c) = s.get(i) {
            if !c.is_ascii_digit() || i - start == 3 {
                break;
            }
            v = v * 10 + u32::from(c - b'0');
            i += 1;
        }
        let len = i - start;
        // std rejects a leading zero ("01") and more than three digits.
        if len == 0 || (len > 1 && s[start] == b'0') || v > 255 {
            return None;
        }
        *slot = v as u8;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// A port of one to five decimal digits, as `u16::from_str` reads it (which also takes a
/// leading `+`: that and anything else is left to it).
pub fn port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    u16::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_std_wherever_it_answers() {
        let cases = [
            "10.128.0.7",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4 ",
            "1..2.3",
            "1.2.3.1000",
            "1234.1.1.1",
            "+1.2.3.4",
            "",
            "fd00::1",
            "::ffff:1.2.3.4",
            "1.2.3.4/32",
            "10.0.0.10",
            "100.200.30.4",
        ];
        for c in cases {
            let ours = ipv4(c.as_bytes());
            let std = c.parse::<Ipv4Addr>().ok();
            if ours.is_some() {
                assert_eq!(ours, std, "{c:?}");
            }
        }
        assert_eq!(ipv4(b"10.128.0.7"), Some(Ipv4Addr::new(10, 128, 0, 7)));
        for c in [
            "80", "0", "65535", "65536", "080", "+80", "", "123456", "8a", "-1",
        ] {
            let ours = port(c.as_bytes());
            if ours.is_some() {
                assert_eq!(ours, c.parse::<u16>().ok(), "{c:?}");
            }
        }
        assert_eq!(port(b"8080"), Some(8080));
        assert_eq!(port(b"65536"), None);
    }

    #[test]
    fn every_ipv4_octet_agrees_with_std() {
        for a in 0..=1000u32 {
            for text in [
                format!("{a}.0.0.1"),
                format!("1.2.3.{a:03}"),
                format!("9.{a}.9.9"),
            ] {
                let ours = ipv4(text.as_bytes());
                let std = text.parse::<Ipv4Addr>().ok();
                assert!(ours.is_none() || ours == std, "{text}");
                // Canonical text is always read here, never left to std.
                if std.is_some_and(|ip| ip.to_string() == text) {
                    assert_eq!(ours, std, "{text}");
                }
            }
        }
    }
}
